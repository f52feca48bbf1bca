"""The solver's reuse of work gives the very floats it would compute afresh (planning is byte-identical).

Covers: node latencies shared between problems on the same paths (``WorkflowProblem.shared``), run
latencies from partial sums (``WorkflowProblem.run_latency_from``), stages visited once per run
skipping ``np.bincount`` (``Visits.each_once``) and ``attainment`` by counting.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.latency import attainment, sample_paths
from planner.solver import WorkflowProblem, solve
from planner.synthetic import nl2sql_program, research_program
from planner.visits import build_chain
from tests.planner.test_solver import _random_candidates, _random_instance


def _problems(seed: int, shared: dict | None) -> tuple[WorkflowProblem, WorkflowProblem, np.random.Generator]:
    """Two problems on one workflow's paths (a fan-out's in the research program), the second with
    half its stages' candidate lists replaced by fresh ones."""
    rng = np.random.default_rng(seed)
    wf = (research_program() if seed % 2 else nl2sql_program()).workflow()
    paths = sample_paths(build_chain(wf), 1500, seed=seed)
    cands = {s.name: _random_candidates(rng, s.name) for s in wf.stages}
    other = {s: (cs if i % 2 else _random_candidates(rng, s)) for i, (s, cs) in enumerate(sorted(cands.items()))}
    return (WorkflowProblem("a", cands, paths, None, None, shared=shared),
            WorkflowProblem("b", other, paths, None, None, shared=shared), rng)


def _assignments(p: WorkflowProblem, rng: np.random.Generator, n: int) -> list[dict[str, int | None]]:
    return [{s: (None if rng.random() < 0.2 else int(rng.integers(0, len(p.candidates[s])))) for s in p.stages}
            for _ in range(n)]


@pytest.mark.parametrize("seed", range(6))
def test_shared_node_latencies_are_the_unshared_ones(seed: int) -> None:
    shared: dict = {}
    a, b, rng = _problems(seed, shared)
    plain_a, plain_b, _ = _problems(seed, None)
    for p, plain in ((a, plain_a), (b, plain_b), (a, plain_a)):
        for assign in _assignments(p, rng, 8):
            for node in p.node_stages:
                got, want = p.node_latency(node, assign), plain.node_latency(node, assign)
                assert got.tobytes() == want.tobytes()
    # A new problem whose candidates are a's objects where b kept them: the node latencies a evaluated
    # there are found, not evaluated again.
    same = {s: 0 for s in b.stages if b.candidates[s] is a.candidates[s]}
    nodes = [n for n in a.node_stages if all(s in same for s in a.node_stages[n])]
    assert nodes
    for node in nodes:
        a.node_latency(node, same)
    size = len(shared)
    fresh = WorkflowProblem("c", b.candidates, b.paths, None, None, shared=shared)
    for node in nodes:
        assert fresh.node_latency(node, same) is a.node_latency(node, same)
    assert len(shared) == size


@pytest.mark.parametrize("seed", range(6))
def test_run_latency_from_partial_sums_is_run_latency(seed: int) -> None:
    a, _, rng = _problems(seed, None)
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


@pytest.mark.parametrize("seed", range(8))
def test_solve_is_the_same_with_shared_node_latencies(seed: int) -> None:
    problems, limits = _random_instance(seed)
    shared: dict = {}
    again = [WorkflowProblem(p.name, p.candidates, p.paths, p.slo_latency_s, p.slo_attainment, shared=shared)
             for p in problems]
    first, second = solve(problems, limits), solve(again, limits)
    assert (first.assignments, first.status, first.iterations) == \
        (second.assignments, second.status, second.iterations)
