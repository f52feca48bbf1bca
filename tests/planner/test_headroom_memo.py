"""Headroom mode computes each node latency vector once per search, not once per solve.

Found by the edge fuzz (benchmarks/results/fuzz_plan_edges_seed2.md, inputs 183 and 234): with a fan-out
at ``width = 64 | 32 @ 99% | ... | 1 @ 1%``, `cortex simulate` spent nearly all its time in the headroom
plan its auto layout makes, whose bisection ran ten solves, each on fresh solver views that recomputed
the same vectors (planner.api.Planner.run keeps one view per model for the search now). Work is counted
here (vectors computed), not wall time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planner.api import Planner, plan_program
from planner.plan import Plan
from planner.solver import _CACHE_LIMIT, WorkflowProblem
from tests.conftest import deep_research_with_width

FUZZ_WIDTH = "64 | 32 @ 99% | 16 @ 98% | 8 @ 97% | 4 @ 96% | 2 @ 95% | 1 @ 1%"  # edge_fuzzing._MANY




class Search:
    """What the headroom search (the solves at relative SLO scales) computes and with which views."""

    def __init__(self) -> None:
        self.relative = False  # inside a solve at a relative scale
        self.solves = 0
        self.views: set[int] = set()  # ids of the views solved (kept alive in ``keep``)
        self.keep: list[WorkflowProblem] = []
        self.computed: list[tuple[tuple, tuple]] = []  # (the model: its paths and candidate lists, memo key)


@pytest.fixture
def search(monkeypatch: pytest.MonkeyPatch) -> Search:
    seen = Search()
    solve_at = Planner.solve_at
    node_latency = WorkflowProblem.node_latency

    def solving(self: Planner, models, scale, *args, **kwargs):
        seen.relative = kwargs.get("relative", False)
        try:
            if seen.relative:
                seen.solves += 1
                views = kwargs.get("problems") or []
                seen.keep += views
                seen.views.update(id(v) for v in views)
            return solve_at(self, models, scale, *args, **kwargs)
        finally:
            seen.relative = False

    def counted(self: WorkflowProblem, node: str, assign):
        key = (node, tuple([assign.get(s) for s in self.node_stages[node]]))
        if seen.relative and key not in self._cache:
            seen.computed.append(((id(self.paths), tuple(id(self.candidates[s]) for s in self.stages)), key))
        out = node_latency(self, node, assign)
        assert len(self._cache) <= _CACHE_LIMIT  # never cleared: a second miss is a recomputation
        return out

    monkeypatch.setattr(Planner, "solve_at", solving)
    monkeypatch.setattr(WorkflowProblem, "node_latency", counted)
    return seen


def test_a_wide_fanouts_headroom_search_computes_each_vector_once(tmp_path: Path, search: Search) -> None:
    plan = plan_program(deep_research_with_width(tmp_path, FUZZ_WIDTH), mode="headroom")
    assert isinstance(plan, Plan) and plan.workflows[0].knobs.fanout_width == {"research": 64}
    assert search.solves >= 5 and search.computed
    vectors, distinct = len(search.computed), len(set(search.computed))
    assert vectors == distinct, "a node latency vector was computed again in the headroom search"
    assert len(search.views) == 1  # one workflow: one view, solved at every scale


def test_the_views_memoised_vectors_are_what_fresh_views_compute(tmp_path: Path, search: Search) -> None:
    plan = plan_program(deep_research_with_width(tmp_path, "16 | 8 @ 97%"), mode="headroom")
    assert isinstance(plan, Plan) and search.keep
    view = search.keep[0]
    fresh = WorkflowProblem(view.name, view.candidates, view.paths, view.slo_latency_s, view.slo_attainment,
                            run_scale=view.run_scale)
    assert len(view._cache) > 10
    for (node, chosen), vec in list(view._cache.items())[:: max(1, len(view._cache) // 40)]:
        assign = dict(zip(view.node_stages[node], chosen))
        assert np.array_equal(vec, fresh.node_latency(node, assign))
