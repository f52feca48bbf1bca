"""The flow pass: edges, conditions, probabilities, loops, fan-outs, and flow errors."""

from __future__ import annotations

import pytest

from cortexlang.ir import SubFlow
from tests.cortexlang.helpers import codes, llm, workflow

SQL = "sql q { database = db }\n"


def test_probabilities_split_the_rest_evenly() -> None:
    result = workflow(llm("g") + llm("f") + SQL + """flow {
      g -> q
      on q { ok -> done  error (30%) -> f  empty -> f }
      f -> q loop r max 2
    }""")
    wf = result.program.workflows[0]
    probs = {e.condition.values: e.probability for e in wf.out_edges("q")}
    assert probs == {("empty",): pytest.approx(0.35), ("error",): pytest.approx(0.3), ("ok",): pytest.approx(0.35)}
    assert codes(result) == []


def test_else_of_an_outcome_branch_lists_what_it_catches() -> None:
    wf = workflow(llm("g") + SQL + "flow { g -> q  on q { ok (90%) -> done  else -> fail } }").program.workflows[0]
    (else_edge,) = [e for e in wf.edges if e.condition.kind == "else"]
    assert else_edge.condition.values == ("empty", "error")
    assert else_edge.probability == pytest.approx(0.1)


def test_field_branch_on_json_output() -> None:
    result = workflow(llm("route", "output = json") + llm("a") + """flow {
      on route.kind { "sql" (60%) -> a  else -> done }
      a -> done
    }""")
    wf = result.program.workflows[0]
    (field_edge,) = [e for e in wf.edges if e.condition.kind == "field"]
    assert (field_edge.condition.field, field_edge.condition.values) == ("kind", ("sql",))
    assert wf.entry == "route"


def test_loops_nesting_and_exhaustion_target() -> None:
    result = workflow(llm("plan") + llm("step") + """flow {
      plan -> step
      on step { ok (50%) -> plan loop outer max 3 then done
                error -> step loop inner max 2 then done within outer }
    }""")
    loops = {lp.name: lp for lp in result.program.workflows[0].loops}
    assert loops["inner"].parent == "outer" and loops["inner"].on_exhausted == "done"
    assert loops["outer"].max_iterations.preferred == 3


def test_fanout_each_with_width() -> None:
    result = workflow("""tool search { entry = "m:f"  service = 50ms }
      tool summarize { entry = "m:g"  service = 20ms }
      fanout many { each = [search, summarize]  width = 4 | 2 @ 90%  join = all }
      flow { many -> done }""")
    (fo,) = result.program.workflows[0].fanouts
    assert fo.branches == (SubFlow.chain(("search", "summarize")),)  # a chain is a sub-flow
    assert fo.branch_count() == 4 and fo.branch_count(2) == 2
    assert result.program.workflows[0].nodes == ("many",)


@pytest.mark.parametrize("flow, code", [
    ("g -> q", "CX401"),                                         # q has no way out
    ("g -> q  g -> done  q -> done", "CX402"),                   # two ways out of g
    ("g -> q  on q { ok -> done  error -> done }", "CX403"),     # `empty` not handled
    ("g -> q  on q { ok -> done  oops -> done  else -> fail }", "CX404"),
    ("g -> q  on q { ok (70%) -> done  error (40%) -> done  else -> fail }", "CX405"),
    ("g -> q  on q { ok (70%) -> done  error (20%) -> done  empty (5%) -> fail }", "CX405"),
    ("g -> q  on q { ok -> done  else -> g }", "CX406"),           # a retry cycle without a budget
    ("g -> q  q -> done  x -> done", "CX301"),
    ("g -> q  on q { ok -> done  else -> g loop r }", "CX408"),     # no budget
    ("g -> q  on q { ok -> done  else -> g loop r max 2 then g }", "CX406"),  # exhaustion loops back
    ("g -> done  q -> done", "CX407"),                          # q is unreachable
    ("done -> g", "CX302"),
])
def test_flow_errors(flow: str, code: str) -> None:
    result = workflow(llm("g") + SQL + "flow { " + flow + " }")
    assert not result.ok
    assert code in codes(result), codes(result)


def test_all_independent_errors_reported_in_one_run() -> None:
    result = workflow(llm("g") + 'llm h { model = m  prompt = "p"  max_token = 5  input_tokens = 1  output_tokens = 1 }\n'
                      "slo { latency = 8sec  attainment = 99% }\nflow { g -> hh }")
    assert {"CX102", "CX202", "CX301"} <= set(codes(result))
