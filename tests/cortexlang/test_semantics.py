"""The run rules of :mod:`cortexlang.semantics` on hand-checked cases."""

from __future__ import annotations

import pytest

from cortexlang.ir import SLO, IntKnob, Load, Loop, ToolStage, Workflow
from cortexlang.passes.slo import fastest_path_s, success_probability
from cortexlang.semantics import Semantics, SemanticsError, join_succeeds, join_waits_for_all
from planner.synthetic import edge


def _tool(name: str, service_s: float = 0.1) -> ToolStage:
    return ToolStage(name=name, entry="m:f", service_s=service_s)


def repetition(times: int = 3) -> Workflow:
    """``a -> b``, ``b -> a loop l max N then c``, ``c -> done``: a and b run N + 1 times, always."""
    return Workflow(name="rep", stages=(_tool("a"), _tool("b"), _tool("c")), entry="a",
                    edges=(edge("a", "b"), edge("b", "a", loop="l"), edge("c", "done")),
                    loops=(Loop(name="l", max_iterations=IntKnob.fixed(times), on_exhausted="c"),),
                    slo=SLO(latency_s=10, attainment=0.9), load=Load(rate_per_s=1))


def three_levels() -> Workflow:
    """outer > middle > inner, each iterating once from its own stage."""
    return Workflow(
        name="nest", stages=(_tool("a"), _tool("b"), _tool("c")), entry="a",
        edges=(edge("a", "b", 0.5, "ok"), edge("a", "a", 0.5, "error", loop="inner"),
               edge("b", "c", 0.5, "ok"), edge("b", "a", 0.5, "error", loop="middle"),
               edge("c", "done", 0.5, "ok"), edge("c", "a", 0.5, "error", loop="outer")),
        loops=(Loop(name="outer", max_iterations=IntKnob.fixed(1)),
               Loop(name="middle", max_iterations=IntKnob.fixed(1), parent="outer"),
               Loop(name="inner", max_iterations=IntKnob.fixed(1), parent="middle")))


def test_taking_a_loop_edge_counts_resets_nested_loops_transitively_and_exhausts() -> None:
    wf = three_levels()
    sem = Semantics(wf)
    assert sem.nested == {"outer": ("middle", "inner"), "middle": ("inner",), "inner": ()}
    by = {(e.source, e.target): e for e in wf.edges}
    step = sem.take((0, 1, 1), by[("c", "a")])
    assert step == ("a", (1, 0, 0), "outer", 1, None)  # the grandchild resets too
    spent = sem.take((1, 0, 0), by[("c", "a")])
    assert spent == ("fail", (1, 0, 0), None, 0, "outer")
    assert sem.exhaust((0, 0, 0), by[("a", "a")]) == ("fail", (0, 0, 0), None, 0, "inner")
    assert sem.take((0, 0, 0), by[("a", "b")]).target == "b"


def test_knobs_override_budgets_and_widths() -> None:
    wf = repetition(3)
    assert Semantics(wf).budget == {"l": 3}
    assert Semantics(wf, loop_budget={"l": 1, "unknown": 9}).budget == {"l": 1}
    chain = Semantics(wf, loop_budget={"l": 1}).expand()
    assert [node for node, _ in chain.states] == ["a", "b", "a", "b", "c"]


def test_fixed_repetition_reaches_done_through_the_exhaustion_exit() -> None:
    """Regression: the fastest-path floor did not follow exhaustion edges (a false CX501)."""
    wf = repetition(3)
    assert success_probability(wf) == pytest.approx(1.0)
    floor, path = fastest_path_s(wf)
    assert path == ["a", "b"] * 4 + ["c", "done"]
    assert floor == pytest.approx(0.9)


def test_expansion_drops_counters_of_loops_that_cannot_iterate_again() -> None:
    wf = Workflow(name="two", stages=(_tool("a"), _tool("b")), entry="a",
                  edges=(edge("a", "b", 0.5, "ok"), edge("a", "a", 0.5, "error", loop="first"),
                         edge("b", "done", 0.5, "ok"), edge("b", "b", 0.5, "error", loop="second")),
                  loops=(Loop(name="first", max_iterations=IntKnob.fixed(2)),
                         Loop(name="second", max_iterations=IntKnob.fixed(2))))
    chain = Semantics(wf).expand()
    # b's states no longer carry a's counter: three a states, three b states.
    assert sorted(chain.states) == [("a", (0, 0)), ("a", (1, 0)), ("a", (2, 0)),
                                    ("b", (0, 0)), ("b", (0, 1)), ("b", (0, 2))]
    assert chain.reach()[chain.done_index] == pytest.approx((1 - 0.5**3) ** 2)


def test_cycles_without_loop_edges_and_state_limits_are_errors() -> None:
    wf = Workflow(name="bad", stages=(_tool("a"), _tool("b")), entry="a", edges=(edge("a", "b"), edge("b", "a")))
    with pytest.raises(SemanticsError, match="cycle"):
        Semantics(wf).expand()
    with pytest.raises(SemanticsError, match="more than 2"):
        Semantics(repetition(5)).expand(max_states=2)


def test_joins() -> None:
    assert join_succeeds("all", [True, True]) and not join_succeeds("all", [True, False])
    assert join_succeeds("first", [False, True]) and not join_succeeds("vote", [False, False])
    assert join_succeeds("best", [False, True])
    assert not join_waits_for_all("first") and join_waits_for_all("vote")
