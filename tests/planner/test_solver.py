"""CP-SAT with latency cuts reaches the brute-force optimum on small seeded instances."""

from __future__ import annotations

import numpy as np
import pytest

from planner.api import Planner, inventory_limits, scenarios
from planner.candidates import U_GRID, Candidate
from planner.latency import sample_paths
from planner.profiles import PROFILE_DIR
from planner.solver import (MIN_SOLVES, SOLVE_BUDGET_STAGES, WorkflowProblem, _BoundProgress, brute_force,
                            objective_milli, solve, solve_budget)
from planner.synthetic import gpu_inventory, nl2sql_program, research_program
from planner.visits import build_chain


def _random_candidates(rng: np.random.Generator, stage: str) -> list[Candidate]:
    out = []
    for _ in range(int(rng.integers(2, 5))):
        scale = rng.uniform(0.05, 1.5)
        kind = str(rng.choice(["A", "B"]))
        units = int(rng.integers(1, 4))
        out.append(Candidate(
            stage=stage, kind="llm", device=kind, units=units,
            cost_per_hour=round(units * (1.0 if kind == "A" else 1.7) + rng.uniform(0, 0.5), 3),
            resources={kind: units}, quality=float(rng.choice([1.0, 1.0, 0.9])),
            table=np.sort(rng.gamma(2.0, scale / 2.0, len(U_GRID))),
            utilisation=0.5, arrival_rate_per_s=1.0, visits_per_run=1.0))
    return out


def _random_instance(seed: int) -> tuple[list[WorkflowProblem], dict[str, int]]:
    rng = np.random.default_rng(seed)
    programs = [nl2sql_program(), research_program()]
    problems = []
    for w in range(int(rng.integers(1, 3))):
        wf = programs[int(rng.integers(0, 2))].workflow()
        chain = build_chain(wf)
        paths = sample_paths(chain, 2000, seed=seed + w)
        cands = {s.name: _random_candidates(rng, s.name) for s in wf.stages}
        probe = WorkflowProblem(f"w{w}", cands, paths, None, None)
        some = {s: int(rng.integers(0, len(c))) for s, c in cands.items()}
        target = float(np.quantile(probe.run_latency(some), 0.9)) * rng.uniform(0.75, 1.4)
        problems.append(WorkflowProblem(f"w{w}", cands, paths, target, 0.9))
    limits = {"A": int(rng.integers(5, 16)), "B": int(rng.integers(3, 12))}
    return problems, limits


@pytest.mark.parametrize("seed", range(40))
def test_cp_sat_matches_brute_force_on_random_instances(seed: int) -> None:
    problems, limits = _random_instance(seed)
    reference = brute_force(problems, limits)
    result = solve(problems, limits)
    if reference is None:
        assert result.assignments is None
        return
    assert result.assignments is not None and result.status == "optimal"
    assert all(p.feasible(a) for p, a in zip(problems, result.assignments))
    assert objective_milli(problems, result.assignments) == objective_milli(problems, reference[1])


@pytest.mark.parametrize("rate,slo_s", [(30.0, 2.5), (120.0, 3.0), (60.0, 2.2)])
def test_real_tables_match_brute_force(rate: float, slo_s: float) -> None:
    program = nl2sql_program(rate=rate, slo_s=slo_s, inventory=gpu_inventory(h100=3, a100=4, h200=2))
    planner = Planner(program, program.inventory, {"nl2sql": rate}, "cost", 4000, 0, PROFILE_DIR, None)
    wf = program.workflow()
    assert scenarios(wf)[0].retry_depth == {"repair": 3}
    model = planner.model(wf, 0)
    problem = model.problem()
    limits = inventory_limits(program.inventory)
    reference = brute_force([problem], limits)
    result = solve([problem], limits)
    assert (reference is None) == (result.assignments is None)
    if reference is not None:
        assert objective_milli([problem], result.assignments) == objective_milli([problem], reference[1])


def test_latency_cut_monotonicity_holds_for_elementwise_slower_tables() -> None:
    """The property the cuts rely on: slower tables never raise attainment (common random numbers)."""
    rng = np.random.default_rng(5)
    wf = research_program().workflow()
    paths = sample_paths(build_chain(wf, {}), 3000, seed=1, fanout_width={"gather": 3})
    for _ in range(20):
        fast = {s.name: np.sort(rng.gamma(2.0, 0.5, len(U_GRID))) for s in wf.stages}
        slow = {s: t + rng.uniform(0, 0.3) * rng.random(len(U_GRID)).cumsum() / len(U_GRID) for s, t in fast.items()}
        slow = {s: np.maximum.accumulate(t) for s, t in slow.items()}
        assert np.all(paths.run_latency(slow) >= paths.run_latency(fast) - 1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_repair_reaches_the_slo_from_the_cheapest_point(seed: int) -> None:
    """The loop's primal heuristic: from an infeasible point, a plan that meets the SLO within the
    limits (or None), and every point it passed on the way misses the SLO (so each is a valid cut)."""
    problems, limits = _random_instance(seed)
    p = problems[0]
    allowed = {s: set(range(len(cs))) for s, cs in p.candidates.items()}
    cheapest = {s: min(range(len(cs)), key=lambda i: cs[i].cost_per_hour) for s, cs in p.candidates.items()}
    passed: list[dict[str, int]] = []
    fixed = p.repair(cheapest, limits, allowed, 1.0, passed)
    if p.feasible(cheapest):
        assert fixed is not None and passed == []
    assert all(not p.feasible(a) for a in passed)
    if fixed is not None:
        assert p.feasible(fixed) and p.consistent(fixed)
        use: dict[str, int] = {}
        for s, i in fixed.items():
            for kind, n in p.candidates[s][i].resources.items():
                use[kind] = use.get(kind, 0) + n
        assert all(n <= limits[kind] for kind, n in use.items())


def test_bound_progress_stops_a_crawling_loop_only() -> None:
    """The early stop, counted in solves: never before STALL_FRACTION of the budget; then when the gap's
    mean closure per solve cannot close it in the solves left; always at the budget."""
    crawl = _BoundProgress(budget=12)  # judged from solve ceil(0.2 x 12) = 3 on
    assert not crawl.stalled(100.0, 200.0)  # the first gap: nothing to extrapolate yet
    assert not crawl.stalled(100.0, 200.0)  # flat, but too early to judge
    assert crawl.stalled(110.0, 200.0)  # 5 closed per solve: the last 90 take 18 solves, 9 left
    climb = _BoundProgress(budget=12)
    for bound in (100.0, 140.0, 160.0):
        assert not climb.stalled(bound, 200.0)  # 30 per solve: the last 40 take 2 of the 9 left
    repaired = _BoundProgress(budget=12)
    for incumbent in (200.0, 150.0, 140.0):
        assert not repaired.stalled(100.0, incumbent)  # a flat bound, but repairs close 30 per solve
    short = _BoundProgress(budget=2)
    assert not short.stalled(100.0, 200.0)
    assert short.stalled(199.0, 200.0)  # the budget is spent, however fast the gap closes
    assert _BoundProgress(budget=1).stalled(100.0, 200.0)  # one relaxation (and its repair) only


def test_solve_budget_scales_with_the_stages() -> None:
    """More stages, fewer solves (each costs more), never fewer than MIN_SOLVES."""
    problems, _ = _random_instance(0)
    stages = sum(len(p.stages) for p in problems)
    assert solve_budget(problems) == max(MIN_SOLVES, round(SOLVE_BUDGET_STAGES / stages))
    assert solve_budget(problems * 100) == MIN_SOLVES


def _hopeless_one_by_one(p: WorkflowProblem, scale: float) -> dict[str, set[int]]:
    env = {s: None for s in p.stages}
    out = {s: set() for s in p.stages}
    for s in p.stages:
        for i in range(len(p.candidates[s])):
            if not p.feasible({**env, s: i}, scale):
                out[s].add(i)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_hopeless_skips_only_candidates_that_pass(seed: int) -> None:
    """The per-candidate bound skips candidates faster than one that passes: same set as checking each."""
    problems, _ = _random_instance(seed)
    for p in problems:
        for scale in (0.6, 0.8, 1.0):
            assert p.hopeless(scale) == _hopeless_one_by_one(p, scale)


def test_hopeless_on_real_tables_with_fanout_splits() -> None:
    program = research_program(rate=2.0, slo_s=15.0)
    planner = Planner(program, program.inventory, {"research": 2.0}, "cost", 2000, 0, PROFILE_DIR, None)
    problem = planner.model(program.workflow(), 0).problem()
    assert problem.split_envelope  # the executor under the fan-out shares its copies' waits
    for scale in (0.4, 0.6, 1.0):
        assert problem.hopeless(scale) == _hopeless_one_by_one(problem, scale)


@pytest.mark.parametrize("seed", range(6))
def test_feasible_near_agrees_with_feasible(seed: int) -> None:
    """Run latencies updated node by node stay within the rounding bound of the full sum, and the bracketed
    verdict is the full sum's, also when the SLO target is exactly some run's latency (the bracket straddles it)."""
    problems, _ = _random_instance(seed)
    rng = np.random.default_rng(seed)
    for p in problems:
        assign = {s: int(rng.integers(0, len(p.candidates[s]))) for s in p.stages}
        latency = mass = p.run_latency(assign)
        for _ in range(25):
            s = p.stages[int(rng.integers(0, len(p.stages)))]
            trial = {**assign, s: int(rng.integers(0, len(p.candidates[s])))}
            moved, moved_mass = p.shifted(latency, mass, assign, trial, (p.paths.node_of(s),))
            exact = p.run_latency(trial)
            assert np.all(np.abs(moved - exact) <= 1e-12 * moved_mass)
            on_a_run = WorkflowProblem(p.name, p.candidates, p.paths, float(np.quantile(exact, 0.9, method="lower")),
                                       0.9)
            for problem in (p, on_a_run):
                for scale in (0.9, 1.0, 1.1):
                    assert problem.feasible_near(trial, moved, moved_mass, scale) == problem.feasible(trial, scale)
            assign, latency, mass = trial, moved, moved_mass
