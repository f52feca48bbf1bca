"""Prefill-heavy LLM pools: the planner's call latency against the discrete-event simulator (an
independent model of the same engine profile: vLLM-style iterations, not the planner's formulas)."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import SLO, Load, Program, Workflow
from planner.api import plan_program
from planner.candidates import (NO_STALL, U_GRID, PrefillStall, _coadmitted_prefill, llm_service_table,
                                prefill_stall, stall_deviation)
from planner.plan import Plan
from planner.profiles import get_profile
from planner.synthetic import LLAMA_8B, LLAMA_70B, edge, gpu_inventory, llm
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import layout_from_plan
from runtime.simulator.sim import SimConfig, Simulator, Stream


def _one_stage(input_tokens: int, output_tokens: int, rate: float) -> Program:
    wf = Workflow(name="one", stages=(llm("s", "llama8b", input_tokens=input_tokens, output_tokens=output_tokens,
                                          max_tokens=256),),
                  entry="s", edges=(edge("s", "done"),), slo=SLO(latency_s=600.0, attainment=0.9),
                  load=Load(rate_per_s=rate))
    return Program(models=(LLAMA_70B, LLAMA_8B), workflows=(wf,), inventory=gpu_inventory(h100=1, cpu_slots=8))


@pytest.mark.parametrize("input_tokens,output_tokens,rate", [(1400, 40, 20.0), (200, 150, 12.0)])
def test_one_pools_p99_agrees_with_the_simulator(input_tokens: int, output_tokens: int, rate: float) -> None:
    """1,400-token prompts, 40 out (prefill takes ~55% of the replica's time) and a decode-heavy
    control: planned p99 within 10% of the simulated one (the prefill-heavy case was 29% low
    before prefill stalls were modelled)."""
    prog = _one_stage(input_tokens, output_tokens, rate)
    plan = plan_program(prog, mode="headroom")
    assert isinstance(plan, Plan)
    wp = plan.workflows[0]
    res = Simulator(prog, layout_from_plan(plan, "one"), make_policy("fcfs"), [Stream("one", rate)],
                    SimConfig(runs=6000, seed=1), knobs={"one": wp.knobs}).run()
    simulated = float(np.quantile(res.latency(), 0.99))
    assert wp.llm_pools[0].latency.p99 == pytest.approx(simulated, rel=0.10)


def test_stalls_widen_the_tail_not_the_median_and_vanish_without_prefill() -> None:
    prof = get_profile("llama-3-8b", "H100", 1)
    stall = prefill_stall(prof, [(20.0, 1400)])
    assert 0.4 < stall.share < 0.7 and stall.m2 > 0
    base = llm_service_table(0.08, 0.02, 0.0, 0.0, 40, 256, 1, 1e-4, 18.0, 32)
    with_stall = llm_service_table(0.08, 0.02, 0.0, 0.0, 40, 256, 1, 1e-4, 18.0, 32, stall)
    assert with_stall[-3] > 1.15 * base[-3]  # the tail (U_GRID near 0.999) widens
    assert np.interp(0.5, U_GRID, with_stall) == pytest.approx(np.interp(0.5, U_GRID, base), rel=0.15)
    assert np.array_equal(llm_service_table(0.08, 0.02, 0.0, 0.0, 40, 256, 1, 1e-4, 18.0, 32, NO_STALL), base)
    assert prefill_stall(prof, []) == PrefillStall()



def test_a_pool_of_three_replicas_agrees_with_the_simulator() -> None:
    """Three replicas behind the pool's least-backlog router, prefill-heavy (x ~ 0.55). Taking the
    router's spreading as perfect (a third of the stall variance) looked right on two random plans
    and on 3-replica pools at x >= 0.8 but put this pool's p99 14-15% low; the planner spreads only
    the share ``x`` of the time a replica has prefill work the router can see
    (:func:`planner.candidates.llm_service_table`), which holds here and at x >= 0.8."""
    rate = 45.0
    prog = _one_stage(1400, 40, rate)
    prog = prog.model_copy(update={"inventory": gpu_inventory(h100=3, cpu_slots=8)})
    plan = plan_program(prog, mode="headroom")
    assert isinstance(plan, Plan) and plan.workflows[0].llm_pools[0].replicas == 3
    wp = plan.workflows[0]
    res = Simulator(prog, layout_from_plan(plan, "one"), make_policy("fcfs"), [Stream("one", rate)],
                    SimConfig(runs=8000, seed=1), knobs={"one": wp.knobs}).run()
    simulated = float(np.quantile(res.latency(), 0.99))
    assert wp.llm_pools[0].latency.p99 == pytest.approx(simulated, rel=0.10)


def _first_passage(d0: float, lam: float, sizes: np.ndarray, trials: int, seed: int) -> np.ndarray:
    """Monte Carlo of a decode stay: ``T = d0 + A(T)``, ``A`` the prompts (sizes drawn uniformly
    from ``sizes``) arriving as a Poisson stream at ``lam`` per second while the stay lasts."""
    rng = np.random.default_rng(seed)
    horizon = np.full(trials, d0)
    clock = np.zeros(trials)
    active = np.ones(trials, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        clock[idx] += rng.exponential(1.0 / lam, idx.size)
        arrived = clock[idx] <= horizon[idx]
        horizon[idx[arrived]] += rng.choice(sizes, int(arrived.sum()))
        active[idx[~arrived]] = False
    return horizon


@pytest.mark.parametrize("d0,lam,sizes", [(0.45, 4.0, (0.105,)), (1.0, 6.0, (0.05, 0.15)),
                                          (0.2, 8.0, (0.06, 0.02, 0.1))])
def test_the_skewed_stall_matches_a_simulated_first_passage(d0: float, lam: float, sizes: tuple) -> None:
    """``stall_deviation`` (three cumulants, shifted Gamma) against a Monte Carlo first passage of
    the compound-Poisson prefill work: p90/p99/p99.9 within 4% and the median within 6% (a stay
    this short sees a few whole prompts: a lattice the continuous law only smooths); the normal with
    the same mean and variance (the model before) puts the p99 20-30% low on these stays."""
    p = np.asarray(sizes)
    x, m2, m3 = lam * p.mean(), lam * (p ** 2).mean(), lam * (p ** 3).mean()
    simulated = _first_passage(d0, lam, p, 200_000, seed=5)
    assert simulated.mean() == pytest.approx(d0 / (1 - x), rel=0.01)
    z = np.random.default_rng(3).standard_normal(200_000)
    planned = d0 / (1 - x) + stall_deviation(z, np.full(z.size, d0 * 1.0), x, m2, m3)
    for q in (0.9, 0.99, 0.999):
        assert np.quantile(planned, q) == pytest.approx(np.quantile(simulated, q), rel=0.04)
    assert np.quantile(planned, 0.5) == pytest.approx(np.quantile(simulated, 0.5), rel=0.06)
    normal = d0 / (1 - x) + np.sqrt(d0 * m2 / (1 - x) ** 3) * 2.326
    assert normal < 0.85 * np.quantile(simulated, 0.99)


def test_coadmitted_prompts_match_a_gated_iteration_model() -> None:
    """The calls admitted with a new one (:func:`_coadmitted_prefill`) against a simulation of
    vLLM's admission: each iteration lasts the decode step ``d`` plus the prefill of every prompt
    that arrived during the previous one; an arrival is admitted in the next iteration with all the
    others of its iteration. Mean count of those others: within 5% of ``lam (t_iter + m2 / (1 - x^2))``."""
    rng = np.random.default_rng(9)
    lam, p, d = 6.0, 0.105, 0.012
    x = lam * p
    lengths, others = [], []
    length = d / (1 - x)
    for _ in range(200_000):
        arrivals = rng.poisson(lam * length)
        others.extend([arrivals - 1] * arrivals)  # each arrival sees the rest of its iteration
        lengths.append(length)
        length = d + p * arrivals
    stall = PrefillStall(share=x, m2=lam * p * p, m3=lam * p ** 3, m2_poisson=lam * p * p)
    t_iter = float(np.mean(lengths))
    assert t_iter == pytest.approx(d / (1 - x), rel=0.02)
    planned = _coadmitted_prefill(stall, d / (1 - x))
    assert float(np.mean(planned)) / p == pytest.approx(float(np.mean(others)), rel=0.05)


def test_a_config_built_from_its_precomputed_fixed_part_is_the_same_candidate() -> None:
    """llm_candidates computes a configuration's replica-independent part once per replica search
    (candidates._config_fixed) and the stall with its replica count directly: the same candidate,
    table bit for bit, as _llm_config computing both itself."""
    from dataclasses import replace

    from planner.candidates import Device, StageLoad, _config_fixed, _llm_config

    prof = get_profile("llama-3-8b", "A100", 1)
    stage = llm("a", "llama8b", input_tokens=1400, output_tokens=120, max_tokens=256)
    load = StageLoad(12.0, 1.0, burst=1.3, batch=3)
    fixed = _config_fixed(stage, LLAMA_8B, prof, 256)
    assert _llm_config(stage, LLAMA_8B, prof, Device("A100", 1.0, 64), load, 256, 1, 1.0, 1) is None  # unstable
    for replicas in (3, 4, 6):
        alone = _llm_config(stage, LLAMA_8B, prof, Device("A100", 1.0, 64), load, 256, 1, 1.0, replicas)
        given = _llm_config(stage, LLAMA_8B, prof, Device("A100", 1.0, 64), load, 256, 1, 1.0, replicas,
                            fixed=fixed)
        assert alone is not None and given is not None
        assert np.array_equal(alone.table, given.table) and alone.table is given.table  # one cache entry
        assert replace(alone, table=None) == replace(given, table=None)
    classes, burst = [(6.0, 1400)], [1.5]
    assert prefill_stall(prof, classes, burst, 3) == replace(prefill_stall(prof, classes, burst), replicas=3)
