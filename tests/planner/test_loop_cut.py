"""Long loops: the planner's chain is cut where runs no longer reach, so its size does not grow with
a loop's budget (cortexlang.semantics.Semantics.expand_bounded; found by the edge fuzz: a retry loop at
``max 10000`` took 12 s to plan and simulate)."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import IntKnob, Loop, Workflow
from cortexlang.semantics import CUT_PROBE, CUT_TOLERANCE, Semantics
from planner.synthetic import edge, llm, nl2sql_program
from planner.visits import build_chain, expected_stage_visits, stage_visit_distribution


@pytest.fixture
def expanded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the run states every expansion visits (the work, whatever the machine's speed)."""
    count = [0]
    successors = Semantics.successors

    def counted(self: Semantics, state, include_unplanned: bool = False):
        count[0] += 1
        return successors(self, state, include_unplanned)

    monkeypatch.setattr(Semantics, "successors", counted)
    return count


def test_a_huge_retry_budget_costs_what_its_runs_reach(expanded: list[int]) -> None:
    # execute fails with q = 0.3 and retries through fix; q^k (1 - q) for k retries, cut where q^k < 1e-12.
    q = 0.3
    chain = build_chain(nl2sql_program(retries=10_000).workflow())
    assert chain.loop_budget == {"repair": 10_000}  # the plan still reports the declared budget
    assert expanded[0] <= 3 * (2 * CUT_PROBE + 1) + 3  # one probe (b = 16) or two (b = 32), not 10,000 iterations
    assert len(chain.states) < 2 * (2 * CUT_PROBE + 1) + 2
    pmf = stage_visit_distribution(chain, "execute")
    exact = np.array([0.0] + [q ** (k - 1) * (1 - q) for k in range(1, len(pmf))])
    np.testing.assert_allclose(pmf, exact, rtol=0, atol=CUT_TOLERANCE)
    assert chain.p_done() == pytest.approx(1.0, abs=CUT_TOLERANCE)
    assert expected_stage_visits(chain)["execute"] == pytest.approx(1 / (1 - q), abs=1e-10)


def test_the_cut_does_not_depend_on_the_budget(expanded: list[int]) -> None:
    sizes = []
    for budget in (100, 1_000, 10_000):
        before = expanded[0]
        sizes.append((len(build_chain(nl2sql_program(retries=budget).workflow()).states), expanded[0] - before))
    assert sizes[0] == sizes[1] == sizes[2]


def test_a_cut_chain_is_within_the_tolerance_of_the_full_one() -> None:
    # q = 0.5: the full chain has 200 iterations; the cut one stops near log2(1e12) = 40.
    wf = nl2sql_program(retries=200, error_p=0.4, empty_p=0.1).workflow()
    sem = Semantics(wf)
    full, cut = sem.expand(), sem.expand_bounded(CUT_TOLERANCE)
    assert len(cut.states) < len(full.states) // 2
    for chain in (full, cut):
        assert abs(sum(chain.reach()[-2:]) - 1.0) < 1e-12
    reach_full, reach_cut = full.reach(), cut.reach()
    assert abs(reach_full[full.done_index] - reach_cut[cut.done_index]) <= CUT_TOLERANCE


def test_tolerance_zero_is_the_full_expansion() -> None:
    sem = Semantics(nl2sql_program(retries=40, error_p=0.4, empty_p=0.1).workflow())
    assert sem.expand_bounded(0.0) == sem.expand()


def test_small_budgets_are_never_cut() -> None:
    # Every example's loops allow at most 10 iterations: their chains (and plans) are unchanged.
    sem = Semantics(nl2sql_program(retries=CUT_PROBE, error_p=0.9, empty_p=0.05).workflow())
    assert sem.expand_bounded(CUT_TOLERANCE) == sem.expand()


def test_a_loop_that_always_iterates_is_expanded_in_full() -> None:
    # a -> a (loop "again", always taken) 300 times, then done: every run makes 301 visits; no cut is possible.
    wf = Workflow(name="again", stages=(llm("a"),), entry="a", edges=(edge("a", "a", 1.0, loop="again"),),
                  loops=(Loop(name="again", max_iterations=IntKnob.fixed(300), on_exhausted="done"),))
    chain = build_chain(wf)
    assert len(chain.states) == 301
    assert expected_stage_visits(chain)["a"] == pytest.approx(301)


def test_nested_huge_loops_are_cut_each(expanded: list[int]) -> None:
    # A retry loop (q = 0.3) inside an outer loop (q = 0.25), both allowed 10,000 iterations: 10^8 states in full.
    wf = Workflow(
        name="nested", stages=(llm("a"), llm("b"), llm("c")), entry="a",
        edges=(edge("a", "b"), edge("b", "c", 0.7, "ok"), edge("b", "b", 0.3, "error", loop="inner"),
               edge("c", "done", 0.75, "ok"), edge("c", "a", 0.25, "error", loop="outer")),
        loops=(Loop(name="outer", max_iterations=IntKnob.fixed(10_000), on_exhausted="fail"),
               Loop(name="inner", max_iterations=IntKnob.fixed(10_000), parent="outer", on_exhausted="c")))
    chain = build_chain(wf)
    assert expanded[0] < 20_000
    assert chain.p_done() == pytest.approx(1.0, abs=CUT_TOLERANCE)
    assert expected_stage_visits(chain)["a"] == pytest.approx(1 / 0.75, abs=1e-10)
    assert expected_stage_visits(chain)["b"] == pytest.approx(1 / 0.75 / 0.7, abs=1e-10)
