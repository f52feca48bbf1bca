"""Alike output lengths (an LLM stage's ``output_correlation``): the planner's copula on its per-visit
quantiles, and what ``cortexc plan --observed`` learns from a trace (planner/latency.py, planner/observed.py)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from cortexlang.ir import Program, Workflow
from planner.api import plan_program
from planner.candidates import U_GRID
from planner.latency import correlated_uniforms, sample_paths
from planner.observed import observe
from planner.plan import Plan
from planner.visits import build_chain
from runtime.simulator.workloads import LLAMA8B, edge, llm

ND = NormalDist()


def _two_calls(r: float) -> Workflow:
    return Workflow(name="two", stages=(llm("a", 400, 60).model_copy(update={"output_correlation": r}),
                                        llm("b", 400, 60).model_copy(update={"output_correlation": r})),
                    entry="a", edges=(edge("a", "b"), edge("b", "done")))


def test_correlated_uniforms_stay_uniform_and_share_the_normal() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal(20000)
    u1 = correlated_uniforms(rng.random(20000), z, 0.7)
    u2 = correlated_uniforms(rng.random(20000), z, 0.7)
    for u in (u1, u2):  # uniform marginals: deciles within sampling error
        assert np.allclose(np.quantile(u, np.linspace(0.1, 0.9, 9)), np.linspace(0.1, 0.9, 9), atol=0.015)
    s1 = np.array([ND.inv_cdf(x) for x in u1])
    s2 = np.array([ND.inv_cdf(x) for x in u2])
    assert np.corrcoef(s1, s2)[0, 1] == pytest.approx(0.7, abs=0.02)
    assert np.allclose(correlated_uniforms(u1, z, 0.0), u1, rtol=0.0, atol=1e-12)  # r = 0: the same uniforms


def test_paths_give_alike_visits_the_declared_correlation_and_leave_others_independent() -> None:
    for r, expect in ((0.6, 0.6), (0.0, 0.0)):
        wf = _two_calls(r)
        paths = sample_paths(build_chain(wf, {}), 20000, seed=1)
        va, vb = paths.stage_visits["a"], paths.stage_visits["b"]
        assert np.array_equal(va.runs, vb.runs)
        grid = np.linspace(0.0, 1.0, 1001)
        ua, ub = va.values(grid), vb.values(grid)  # the identity table reads each visit's uniform back
        sa = np.array([ND.inv_cdf(min(max(x, 1e-12), 1 - 1e-12)) for x in ua])
        sb = np.array([ND.inv_cdf(min(max(x, 1e-12), 1 - 1e-12)) for x in ub])
        assert np.corrcoef(sa, sb)[0, 1] == pytest.approx(expect, abs=0.04)


def test_alike_calls_widen_the_planned_run_latency_at_both_ends() -> None:
    plans = {}
    for r in (0.0, 0.8):
        program = Program(models=(LLAMA8B,), workflows=(_two_calls(r).model_copy(update={"slo": None}),))
        plan = plan_program(program, rate=1.0, inventory=_inventory())
        assert isinstance(plan, Plan)
        plans[r] = plan.workflows[0].latency
    # Same pools (no SLO binds), same marginals: the sum of two alike calls spreads wider.
    assert plans[0.8].p99 > plans[0.0].p99 * 1.02
    assert plans[0.8].mean == pytest.approx(plans[0.0].mean, rel=0.02)


def _inventory():
    from cortexlang.ir import GpuResource, Inventory

    return Inventory(gpus=(GpuResource(kind="H100", count=4, cost_per_hour=2.99),))


def _trace(r: float, runs: int, seed: int) -> list[dict]:
    """Runs of `_two_calls` whose output lengths follow the copula with correlation ``r``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(runs):
        z = rng.standard_normal()
        calls = []
        for i, stage in enumerate(("a", "b", "b")):
            e = rng.standard_normal()
            tokens = int(round(math.exp(3.8 + 0.5 * (math.sqrt(r) * z + math.sqrt(1 - r) * e))))
            calls.append({"id": f"c{i}", "stage": stage, "kind": "llm", "parents": [f"c{i - 1}"] if i else [],
                          "outcome": "ok", "input_tokens": 400, "output_tokens": max(tokens, 1), "latency_s": 1.0})
        out.append({"run_id": f"r{k}", "workflow": "two", "arrival_s": float(k), "status": "done",
                    "latency_s": 3.0, "calls": calls})
    return out


@pytest.mark.parametrize("r", [0.0, 0.7])
def test_observe_learns_each_stages_loading_from_the_runs_pairs(r: float) -> None:
    program = Program(models=(LLAMA8B,), workflows=(_two_calls(0.0),))
    learnt = observe(program, _trace(r, 600, seed=9)).program.workflow()
    # `b` repeats within a run: its own pairs give r; `a` gets c^2 / r_b from its pairs with b (= r).
    assert learnt.stage("b").output_correlation == pytest.approx(r, abs=0.08)
    assert learnt.stage("a").output_correlation == pytest.approx(r, abs=0.12)


def test_too_few_runs_with_pairs_leave_the_declared_value() -> None:
    program = Program(models=(LLAMA8B,), workflows=(_two_calls(0.25),))
    observed = observe(program, _trace(0.9, 3, seed=1))
    assert observed.program.workflow().stage("b").output_correlation == 0.25
    assert any("output length correlation" in e.what and not e.applied for e in observed.estimates)
