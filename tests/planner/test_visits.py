"""Visit counts: expected values and full distributions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import SLO, IntKnob, Load, Loop, SQLStage, Workflow
from planner.synthetic import edge, llm, nl2sql_program, research_program
from planner.visits import (
    ChainError, build_chain, expected_stage_visits, stage_visit_distribution,
)


def test_nl2sql_retry_distribution_matches_hand_computation() -> None:
    # execute fails (error or empty) with q = 0.3; fix -> execute at most 3 times, then fail.
    wf = nl2sql_program(error_p=0.2, empty_p=0.1, retries=3).workflow()
    chain = build_chain(wf)
    q = 0.3
    execute = stage_visit_distribution(chain, "execute")
    fix = stage_visit_distribution(chain, "fix")
    expected_execute = [0, 1 - q, q * (1 - q), q**2 * (1 - q), q**3]
    expected_fix = [1 - q, q * (1 - q), q**2 * (1 - q), q**3 * (1 - q), q**4]
    np.testing.assert_allclose(execute, expected_execute, atol=1e-12)
    np.testing.assert_allclose(fix, expected_fix, atol=1e-12)
    assert chain.p_fail() == pytest.approx(q**4)
    assert chain.p_done() == pytest.approx(1 - q**4)
    visits = expected_stage_visits(chain)
    assert visits["generate"] == pytest.approx(1.0)
    assert visits["execute"] == pytest.approx(sum(k * p for k, p in enumerate(expected_execute)))
    assert visits["fix"] == pytest.approx(sum(k * p for k, p in enumerate(expected_fix)))


def test_loop_budget_override_changes_the_tail() -> None:
    wf = nl2sql_program(retries=(3, 1)).workflow()
    chain = build_chain(wf, {"repair": 1})
    np.testing.assert_allclose(stage_visit_distribution(chain, "execute"), [0, 0.7, 0.3], atol=1e-12)
    assert chain.p_fail() == pytest.approx(0.09)


def test_nested_loop_counter_resets_when_the_outer_loop_iterates() -> None:
    # a -> b; b: ok (0.5) -> c, error -> b (inner, max 1); c: ok (0.5) -> done, error -> a (outer, max 1).
    wf = Workflow(
        name="nested", stages=(llm("a"), llm("b"), llm("c")), entry="a",
        edges=(edge("a", "b"), edge("b", "c", 0.5, "ok"), edge("b", "b", 0.5, "error", loop="inner"),
               edge("c", "done", 0.5, "ok"), edge("c", "a", 0.5, "error", loop="outer")),
        loops=(Loop(name="outer", max_iterations=IntKnob.fixed(1)),
               Loop(name="inner", max_iterations=IntKnob.fixed(1), parent="outer")),
        slo=SLO(latency_s=10, attainment=0.9), load=Load(rate_per_s=1))
    chain = build_chain(wf)
    # Per pass b runs once (p .5, then reaches c) or twice (p .5, reaches c w.p. .5, else fail).
    # A second pass follows when c errors: P = .5*.5 (b once) + .5*.5*.5 (b twice) = .375,
    # and its inner counter starts again at 0. Total b visits:
    #   1: .5 - .25 = .25            2: (.5 - .125) + .25*.5 = .5
    #   3: .25*.5 + .125*.5 = .1875  4: .125*.5 = .0625
    dist_b = stage_visit_distribution(chain, "b")
    p2 = 0.375
    np.testing.assert_allclose(dist_b, [0, 0.25, 0.5, 0.1875, 0.0625], atol=1e-12)
    assert dist_b.sum() == pytest.approx(1.0)
    assert chain.expected_node_visits()["a"] == pytest.approx(1 + p2)


def test_fan_out_branch_stages_are_visited_once_per_copy() -> None:
    wf = research_program().workflow()
    chain = build_chain(wf)
    visits = expected_stage_visits(chain, {"gather": 3})
    assert visits["search"] == pytest.approx(3.0)
    assert visits["answer"] == pytest.approx(0.95)
    np.testing.assert_allclose(stage_visit_distribution(chain, "summarise", {"gather": 2}), [0, 0, 1.0])


def test_cycle_without_loop_edge_is_reported() -> None:
    wf = Workflow(name="bad", stages=(llm("a"), SQLStage(name="b", database="d")), entry="a",
                  edges=(edge("a", "b"), edge("b", "a")))
    with pytest.raises(ChainError, match="cycle"):
        build_chain(wf)
