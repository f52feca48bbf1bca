"""The solver's reuse of work gives the very floats it would compute afresh (planning is byte-identical).

Covers: node latencies evaluated from the node's own stages' tables (``WorkflowProblem.node_latency``),
run latencies from partial sums (``WorkflowProblem.run_latency_from``), stages visited once per run
skipping ``np.bincount`` (``Visits.each_once``) and ``attainment`` by counting.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.latency import attainment, sample_paths
from planner.solver import WorkflowProblem
from planner.synthetic import nl2sql_program, research_program
from planner.visits import build_chain
from tests.planner.test_solver import _random_candidates


def _problem(seed: int) -> tuple[WorkflowProblem, np.random.Generator]:
    """A problem with random candidates on one workflow's paths (a fan-out's in the research program)."""
    rng = np.random.default_rng(seed)
    wf = (research_program() if seed % 2 else nl2sql_program()).workflow()
    paths = sample_paths(build_chain(wf), 1500, seed=seed)
    cands = {s.name: _random_candidates(rng, s.name) for s in wf.stages}
    return WorkflowProblem("a", cands, paths, None, None), rng


@pytest.mark.parametrize("seed", range(6))
def test_node_latency_reads_only_its_stages(seed: int) -> None:
    p, rng = _problem(seed)
    for _ in range(6):
        assign = {s: (None if rng.random() < 0.2 else int(rng.integers(0, len(p.candidates[s])))) for s in p.stages}
        for node in p.node_stages:  # the full tables and splits, as the paths would be given them
            want = p.paths.node_latency(node, p._tables(assign), p._splits(assign))
            assert p.node_latency(node, assign).tobytes() == want.tobytes()


@pytest.mark.parametrize("seed", range(6))
def test_run_latency_from_partial_sums_is_run_latency(seed: int) -> None:
    a, rng = _problem(seed)
    assign = {s: 0 for s in a.stages}
    partial: list = []
    for _ in range(25):  # one stage moved per step, as the greedy moves one unit
        s = a.stages[int(rng.integers(0, len(a.stages)))]
        assign[s] = int(rng.integers(0, len(a.candidates[s])))
        assert a.run_latency_from(partial, assign).tobytes() == a.run_latency(assign).tobytes()


@pytest.mark.parametrize("program", [nl2sql_program, research_program])
def test_once_visited_stages_skip_bincount_with_the_same_floats(program) -> None:
    wf = program().workflow()
    paths = sample_paths(build_chain(wf), 2000, seed=3)
    rng = np.random.default_rng(0)
    once = 0
    for name, v in paths.stage_visits.items():
        table = np.sort(rng.gamma(2.0, 1.0, 67))
        got = paths.node_latency(name, {name: table})
        assert got.tobytes() == np.bincount(v.runs, weights=v.values(table), minlength=paths.n).tobytes()
        once += v.each_once == paths.n
    assert once > 0  # the shortcut is taken somewhere


def test_attainment_counts_as_mean_does() -> None:
    rng = np.random.default_rng(5)
    for n in (1, 999, 10_000):
        x = rng.gamma(2.0, 10.0, n)
        for target in (0.0, 5.0, float(np.median(x)), 1e9):
            assert attainment(x, target) == float(np.mean(x <= target))
