"""Headroom mode computes each node latency vector once per workflow model, not once per solve.

Found by the edge fuzz (benchmarks/results/fuzz_plan_edges_seed2.md, inputs 183 and 234): with a fan-out
at ``width = 64 | 32 @ 99% | ... | 1 @ 1%``, `cortex simulate` spent nearly all its time in the headroom
plan its auto layout makes, whose bisection ran ten solves that each recomputed the same vectors
(planner.api.WorkflowModel.problem). Work is counted here (vectors computed), not wall time."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cortexlang.compiler import compile_file
from planner.api import Planner, plan_program
from planner.plan import Plan
from planner.profiles import PROFILE_DIR
from planner.solver import _CACHE_LIMIT, WorkflowProblem
from tests.conftest import EXAMPLES

FUZZ_WIDTH = "64 | 32 @ 99% | 16 @ 98% | 8 @ 97% | 4 @ 96% | 2 @ 95% | 1 @ 1%"  # edge_fuzzing._MANY


def _deep_research(tmp_path: Path, width: str):
    shutil.copytree(EXAMPLES, tmp_path / "ex", ignore=shutil.ignore_patterns("__pycache__"))
    src = tmp_path / "ex" / "deep_research.cortex"
    text = src.read_text()
    assert "width = 4 | 2 @ 90%" in text
    src.write_text(text.replace("width = 4 | 2 @ 90%", f"width = {width}"))
    result = compile_file(src)
    assert result.program is not None, result.diagnostics
    return result.program


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple, tuple]]:
    """Every node latency vector the solver computes (a memo miss), as (the workflow model it belongs to,
    named by its sampled paths and candidate lists, which the planner keeps alive; memo key). Fails if
    a memo reaches its size limit (a second miss would then be a clearance, not a recomputation)."""
    misses: list[tuple[tuple, tuple]] = []
    node_latency = WorkflowProblem.node_latency

    def counted(self: WorkflowProblem, node: str, assign):
        key = (node, tuple([assign.get(s) for s in self.node_stages[node]]))
        if key not in self._cache:
            misses.append(((id(self.paths), tuple(id(self.candidates[s]) for s in self.stages)), key))
        out = node_latency(self, node, assign)
        assert len(self._cache) <= _CACHE_LIMIT
        return out

    monkeypatch.setattr(WorkflowProblem, "node_latency", counted)
    return misses


def test_a_wide_fanouts_headroom_plan_computes_each_vector_once(tmp_path: Path, computed: list,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    solves = [0]
    solve_at = Planner.solve_at

    def counted(self: Planner, *args, **kwargs):
        solves[0] += 1
        return solve_at(self, *args, **kwargs)

    monkeypatch.setattr(Planner, "solve_at", counted)
    plan = plan_program(_deep_research(tmp_path, FUZZ_WIDTH), mode="headroom")
    assert isinstance(plan, Plan) and plan.workflows[0].knobs.fanout_width == {"research": 64}
    assert computed, "the solver computed no vector"
    vectors, distinct = len(computed), len(set(computed))
    assert vectors == distinct, "a node latency vector was computed again for the same model"
    assert len({model for model, _ in computed}) < solves[0]  # models: the first pass's, the second's


def test_every_problem_of_a_model_shares_its_memos_and_they_hold_the_same_values(tmp_path: Path) -> None:
    program = _deep_research(tmp_path, "16 | 8 @ 97%")
    planner = Planner(program, program.inventory, {"deep_research": program.workflows[0].load.rate_per_s},
                      "headroom", 2000, 0, PROFILE_DIR, None)
    model = planner.model(program.workflows[0], 0)
    first, relative = model.problem(), model.problem(relative=True)
    assert first._cache is relative._cache and first._slower is relative._slower
    assert relative.run_scale is not None and first.run_scale is None  # the SLO's unit still differs
    assign = {s: len(first.candidates[s]) - 1 for s in first.stages}
    for node in first.node_stages:
        first.node_latency(node, assign)
    # A vector memoised by one view is the value a view with empty memos computes afresh.
    fresh = WorkflowProblem(first.name, first.candidates, first.paths, relative.slo_latency_s,
                            relative.slo_attainment, run_scale=relative.run_scale)
    for node in first.node_stages:
        assert np.array_equal(relative.node_latency(node, assign), fresh.node_latency(node, assign))
