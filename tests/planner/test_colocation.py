"""Shared pools (co-location) in the search space: brute force agrees with the solver on seeded random
workflows, the optimum is never costlier than the all-isolated and all-shared layouts, and the plan
records which stages share a pool (and still reads plans written before co-location)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from cortexlang.ir import Program
from planner.api import build_model, plan_program, scenarios
from planner.candidates import Candidate
from planner.colocation import MAX_EXHAUSTIVE, blocks, preferred_blocks
from planner.plan import Plan
from planner.profiles import PROFILE_DIR
from planner.render import render_plan
from planner.solver import WorkflowProblem, solve
from planner.synthetic import llm, nl2sql_program, random_program, research_program
from tests.planner.brute_force_check import assert_matches_brute_force

DATA = Path(__file__).parent / "data"


def _sample(rng: np.random.Generator, cands: dict[str, list[Candidate]]) -> dict[str, list[Candidate]]:
    """At most 3 dedicated candidates per stage and 4 groups (all members of a kept group): small enough
    for brute force."""
    keys = sorted({c.group for cs in cands.values() for c in cs if c.group is not None})
    kept = set(rng.choice(keys, size=min(4, len(keys)), replace=False)) if keys else set()
    out = {}
    for s, cs in cands.items():
        own = [c for c in cs if c.group is None]
        pick = sorted(rng.choice(len(own), size=min(3, len(own)), replace=False))
        out[s] = [own[i] for i in pick] + [c for c in cs if c.group in kept]
    return out


def _random_problem(seed: int) -> tuple[WorkflowProblem, dict[str, int]]:
    rng = np.random.default_rng(seed + 1000)
    program = random_program(seed)
    wf = program.workflow()
    model = build_model(program, wf, scenarios(wf)[0], wf.load.rate_per_s, program.inventory, 2000, seed,
                        PROFILE_DIR)
    cands = _sample(rng, {s: sc.candidates for s, sc in model.stages.items()})
    probe = WorkflowProblem("w", cands, model.paths, None, None)
    some = next(a for a in (dict(zip(probe.stages, combo))
                            for combo in itertools.product(*(range(len(cands[s])) for s in probe.stages)))
                if probe.consistent(a))
    target = float(np.quantile(probe.run_latency(some), 0.9)) * rng.uniform(0.8, 1.4)
    limits = {"H100": int(rng.integers(2, 9)), "A100": int(rng.integers(0, 9)), "CPU": 16}
    return WorkflowProblem("w", cands, model.paths, target, 0.9), limits


@pytest.mark.parametrize("seed", range(30))
def test_solver_matches_brute_force_with_shared_pools(seed: int) -> None:
    assert_matches_brute_force(*_random_problem(seed))


def test_some_random_instances_choose_a_shared_pool() -> None:
    """The property test is not vacuous: sharing wins in a good share of the instances."""
    shared = 0
    for seed in range(30):
        problem, limits = _random_problem(seed)
        result = solve([problem], limits, time_limit_s=30.0)
        if result.assignments is not None:
            shared += any(problem.candidates[s][i].group for s, i in result.assignments[0].items())
    assert shared >= 5


@pytest.mark.parametrize("program", [
    nl2sql_program(rate=0.5, slo_s=8.0), nl2sql_program(rate=60.0, slo_s=2.5),
    research_program(rate=0.5, slo_s=20.0), research_program(rate=2.0, slo_s=15.0),
], ids=["nl2sql-low", "nl2sql-high", "research-low", "research-high"])
def test_the_optimum_is_never_costlier_than_all_isolated_or_all_shared(program: Program) -> None:
    plans = {layout: plan_program(program, layout=layout, samples=4000) for layout in ("search", "isolated", "shared")}
    best = plans["search"]
    assert isinstance(best, Plan)
    for layout in ("isolated", "shared"):
        if isinstance(plans[layout], Plan):
            assert best.cost_per_hour <= plans[layout].cost_per_hour + 1e-9, layout
            assert best.workflow().slo_attainment >= best.workflow().slo.attainment
    assert plans["isolated"].workflow().layout == "isolated"


def test_low_load_stages_of_one_model_share_a_pool_and_the_plan_says_so() -> None:
    plan = plan_program(research_program(rate=0.5, slo_s=20.0), samples=4000)
    wp = plan.workflow()
    shared = [p for p in wp.llm_pools if p.shared]
    assert shared and wp.layout in ("shared", "mixed")
    pool = shared[0]
    assert pool.stages[0] == pool.stage and list(pool.stages[1:]) == sorted(pool.stages[1:])
    for stage in pool.stages:  # every co-located stage keeps its knobs and its own latency
        assert wp.pool(stage) is pool and stage in wp.knobs.max_tokens
    assert Plan.from_json(plan.canonical_json()) == plan
    text = render_plan(plan)
    assert f"layout: {wp.layout}; {' + '.join(pool.stages)} share {pool.model}" in text
    assert f"in {pool.stage}'s pool" in text


def test_plans_written_before_co_location_load_as_dedicated_pools() -> None:
    legacy = (DATA / "plan_before_colocation.json").read_text()
    assert '"colocated"' not in legacy
    plan = Plan.from_json(legacy)
    wp = plan.workflow()
    assert wp.layout == "isolated" and all(p.stages == (p.stage,) for p in wp.llm_pools)
    assert wp.pool("generate").stage == "generate"


def test_blocks_are_every_subset_up_to_the_limit_then_runs_and_the_preferred_block() -> None:
    few = [llm(f"s{i}") for i in range(MAX_EXHAUSTIVE)]
    assert len(blocks(few, [s.name for s in few])) == 2 ** MAX_EXHAUSTIVE - MAX_EXHAUSTIVE - 1
    many = [llm(f"s{i}", output_tokens=10 * (i + 1)) for i in range(8)]
    found = blocks(many, ["s0", "s7"])
    assert ("s0", "s7") in found and tuple(s.name for s in many) in found
    assert ("s0", "s1") in found and ("s0", "s2") not in found  # neighbours in call size only
    assert preferred_blocks(nl2sql_program().workflow()) == [("fix", "generate")]


def test_the_all_shared_pool_is_offered_at_the_mixs_mean_context_cap_too() -> None:
    """NL2SQL (Llama-3-8B, H100, 20 runs/s): the longest member's p99 context caps a shared replica at
    26 sequences, the mix's mean context at 32; at 32 three replicas run ~84% busy and meet a 11.5 s p99
    SLO (the simulator agrees: benchmarks/cost_at_equal_slo.py), so the plan needs 3 GPUs, not 4."""
    from cortexlang.ir import SLO, CpuResource, GpuResource, Inventory
    from planner.colocation import BATCH_CAPS, Member, batch_cap
    from planner.profiles import get_profile
    from runtime.simulator.workloads import nl2sql, program

    wf = nl2sql().model_copy(update={"slo": SLO(latency_s=11.5, attainment=0.99)})
    prog = program(wf)
    spec = prog.model("llama8b")
    members = [Member(stage=s, rate_per_s=20.0, max_tokens=s.max_tokens.preferred, hedge=1, prewarm=True)
               for s in wf.stages if s.kind == "llm"]
    prof = get_profile(spec.profile, "H100", 1)
    assert BATCH_CAPS == ("tail", "mean")
    assert batch_cap(spec, prof, members, 1.5, "mean") > batch_cap(spec, prof, members, 1.5, "tail")
    inv = Inventory(gpus=(GpuResource(kind="H100", count=16, cost_per_hour=2.99),), cpu=CpuResource(slots=512))
    plan = plan_program(prog, inv, rate=20.0, mode="cost")
    assert isinstance(plan, Plan)
    (pool,) = plan.workflows[0].llm_pools
    assert pool.shared and pool.replicas == 3
    assert pool.max_num_seqs == batch_cap(spec, prof, members, 1.5, "mean")


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_dominance_check_matches_candidate_by_candidate(seed: int) -> None:
    """_beaten_by_isolated compares each shared-pool member against its stage's dedicated candidates in one
    stacked pass (colocation._Rivals); it must agree with Candidate.slower_or_equal one pair at a time."""
    from planner.colocation import _Rivals

    program = random_program(seed)
    wf = program.workflow()
    model = build_model(program, wf, scenarios(wf)[0], wf.load.rate_per_s, program.inventory, 2000, seed,
                        PROFILE_DIR)
    isolated = {s: [c for c in sc.candidates if c.group is None] for s, sc in model.stages.items()}
    members = [c for sc in model.stages.values() for c in sc.candidates if c.group is not None]
    rivals = _Rivals(isolated)
    checked = 0
    for m in members:
        expected = [m.slower_or_equal(c) for c in isolated[m.stage]]
        assert rivals.no_faster(m) == expected
        checked += len(expected)
    assert checked > 0 or not members


@pytest.mark.parametrize("smallest,limit", [(5, 3), (5, 5), (5, 40), (1, 8), (33, 20), (33, 100)])
def test_replica_range_builds_each_count_once(smallest: int, limit: int) -> None:
    """replica_range returns what a search without memoisation returns and builds each count at most once."""
    from planner.candidates import replica_range

    class Point:
        def __init__(self, n: int) -> None:
            self.n = n

        def quantile(self, q: float) -> float:
            return 10.0 / self.n

        def quantile_above(self, q: float, bound: float) -> bool:
            return self.quantile(q) > bound

    built: list[int] = []

    def make(n: int) -> Point | None:
        built.append(n)
        return Point(n) if n >= smallest else None

    got, first = replica_range(make, limit)
    assert first == smallest
    assert len(built) == len(set(built))
    if smallest > limit:
        assert got == []
    else:
        assert got[0].n == smallest
        # the plain search: from the smallest stable count while p99 improves by more than FLAT_IMPROVEMENT
        from planner.candidates import FLAT_IMPROVEMENT, MAX_EXTRA
        want = [smallest]
        for k in range(smallest + 1, min(limit, smallest + MAX_EXTRA) + 1):
            if 10.0 / k > (1.0 - FLAT_IMPROVEMENT) * 10.0 / want[-1]:
                break
            want.append(k)
        assert [p.n for p in got] == want


def test_shared_point_builds_member_tables_on_demand() -> None:
    """A shared pool's point builds a member's table when it is first read, once, and the same table
    as llm_service_table gives for its arguments; quantile_above stops at the first member above."""
    from planner.candidates import llm_service_table
    from planner.colocation import Member, shared_point
    from planner.profiles import get_profile
    from planner.synthetic import LLAMA_8B

    prof = get_profile("llama-3-8b", "H100", 1, PROFILE_DIR)
    members = [Member(stage=llm("a", output_tokens=40), rate_per_s=4.0, max_tokens=96, hedge=1, prewarm=False),
               Member(stage=llm("b", output_tokens=120), rate_per_s=2.0, max_tokens=256, hedge=1, prewarm=False)]
    point = shared_point(LLAMA_8B, prof, members, 2)
    assert point is not None and not point._built
    assert list(point.table_args) == ["b", "a"]  # the longest mean call first
    assert point.quantile_above(0.99, 0.0) and list(point._built) == ["b"]
    assert point.table("b") is point.table("b")
    for s, table in point.tables.items():
        np.testing.assert_array_equal(table, llm_service_table(*point.table_args[s]))
    assert not point.quantile_above(0.99, 1e9)
