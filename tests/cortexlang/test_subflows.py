"""Fan-out branches as sub-flows, maps over run-time lists, shared widths, and loops that rejoin
their parent: what the language accepts, the IR it builds, and the errors it reports."""

from __future__ import annotations

import pytest

from cortexlang.ir import SubFlow, WidthShare
from cortexlang.semantics import Semantics
from tests.cortexlang.helpers import codes, llm, workflow

STAGES = (llm("plan", "output = json") + llm("draft") + llm("revise") + llm("pick")
          + 'tool check { entry = "t:check"  service = 100ms }\n'
          + 'tool test { entry = "t:test"  service = 50ms }\n')

CANDIDATES = """fanout candidates {
  over   = plan.ideas
  widths = 2 @ 30% | 3 @ 70%
  width  = 4 | 2 @ 90%
  join   = all
  flow {
    draft -> check
    on check {
      ok          -> done
      error (30%) -> revise
    }
    revise -> check loop fixes max 2 then fail
  }
}
fanout testers {
  over = candidates
  flow { test -> done }
}
"""


def test_a_map_with_a_sub_flow_and_a_fan_out_sharing_its_width() -> None:
    result = workflow(STAGES + CANDIDATES + "flow { plan -> candidates -> testers -> pick -> done }")
    assert result.program is not None, result.diagnostics
    wf = result.program.workflows[0]
    assert wf.nodes == ("candidates", "pick", "plan", "testers")
    candidates, testers = wf.fanout("candidates"), wf.fanout("testers")
    (branch,) = candidates.branches
    assert isinstance(branch, SubFlow) and branch.entry == "draft" and branch.nodes == ("check", "draft", "revise")
    assert [lp.name for lp in branch.loops] == ["fixes"] and wf.loops == ()
    assert candidates.over == "plan.ideas" and candidates.widths == (
        WidthShare(width=2, probability=0.3), WidthShare(width=3, probability=0.7))
    assert testers.over == "candidates" and testers.branches == (SubFlow(
        entry="test", edges=testers.branches[0].edges),)
    sem = Semantics(wf)
    assert sem.width_pmf("candidates") == ((2, 0.3), (3, 0.7))
    assert sem.width_pmf("testers") == ((2, 0.3), (3, 0.7))  # shares candidates' width
    assert Semantics(wf, fanout_width={"candidates": 2}).width_pmf("candidates") == ((2, 1.0),)  # a cap


def test_branch_loop_counts_are_their_own_and_nested_fan_outs_are_allowed() -> None:
    inner = """fanout inner { width = 2  flow { test -> done } }
fanout outer {
  width = 3
  flow {
    draft -> inner -> check
    on check { ok -> done  error (20%) -> draft loop again max 1 then fail }
  }
}
"""
    result = workflow(llm("draft") + 'tool check { entry = "t:c"  service = 10ms }\n'
                      + 'tool test { entry = "t:t"  service = 10ms }\n' + inner + "flow { outer -> done }")
    assert result.program is not None, result.diagnostics
    wf = result.program.workflows[0]
    assert wf.nodes == ("outer",) and wf.branch_owner() == {"draft": "outer", "inner": "outer", "check": "outer",
                                                             "test": "inner"}


@pytest.mark.parametrize("fanout, code", [
    ('fanout f { each = [draft]  width = 2  flow { draft -> done } }', "CX201"),   # two branch shapes
    ('fanout f { over = plan.ideas  flow { draft -> done } }', "CX103"),            # a map needs widths
    ('fanout f { width = 2  widths = 2..3  flow { draft -> done } }', "CX201"),   # widths without a map
    ('fanout f { flow { draft -> done } }', "CX103"),                               # no width, no over
    ('fanout f { over = draft.ideas  widths = 2..3  flow { check -> done } }', "CX409"),  # draft has no fields
    ('fanout f { over = nothing  flow { draft -> done } }', "CX301"),              # not a fan-out
    ('fanout f { width = 2  flow { draft -> check  check -> done } }\n'
     'fanout g { width = 2  flow { check -> done } }', "CX303"),                    # check in two fan-outs
    ('fanout f { width = 2  widths = 2 @ 30% | 3 @ 60%  over = plan.ideas  flow { draft -> done } }', "CX405"),
])
def test_sub_flow_errors(fanout: str, code: str) -> None:
    result = workflow(STAGES + fanout + "\nflow { plan -> f -> pick -> done }")
    assert code in codes(result), [str(d) for d in result.diagnostics]


def test_loop_names_are_unique_across_flows() -> None:
    result = workflow(STAGES + """fanout f { width = 2  flow { draft -> check
      on check { ok -> done  error -> draft loop again max 1 } } }
flow { plan -> f -> pick
  on pick { ok -> done  error -> plan loop again max 2 } }""")
    assert "CX408" in codes(result)


def test_a_spent_inner_loop_rejoins_its_outer_loop() -> None:
    """ReAct: think -> act; act errors retry it twice, and once spent go back to think for a new
    outer iteration (`then think within steps`): no false cycle, and the chain stays finite."""
    result = workflow(llm("think") + 'tool act { entry = "t:a"  service = 10ms }\n' + llm("answer") + """flow {
      think -> act
      on act {
        ok (70%)    -> think loop steps max 4 then answer
        error (30%) -> act loop retry max 2 then think within steps
      }
      answer -> done
    }""")
    assert result.program is not None, [str(d) for d in result.diagnostics]
    wf = result.program.workflows[0]
    retry = wf.loop("retry")
    assert retry.parent == "steps" and retry.rejoin_parent and retry.on_exhausted == "think"
    chain = Semantics(wf).expand()
    assert chain.reach()[chain.done_index] == pytest.approx(1.0)  # every run ends at answer -> done


def test_a_spent_loop_without_an_outer_loop_is_still_a_cycle() -> None:
    result = workflow(llm("think") + 'tool act { entry = "t:a"  service = 10ms }\n' + """flow {
      think -> act
      on act { ok -> done  error -> act loop retry max 2 then think }
    }""")
    assert "CX406" in codes(result)
    (d,) = [d for d in result.diagnostics if d.code == "CX406"]
    assert "within" in (d.hint or "")


def test_an_empty_fan_out_flow_is_a_diagnostic() -> None:
    result = workflow(llm("a") + "fanout f { width = 2  flow { } }\nflow { a -> f -> done }")
    assert "CX110" in codes(result) and "CX901" not in codes(result)
