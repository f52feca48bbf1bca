"""The monitor: scales a pool out under a load step and back in after it, without flapping or failing runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from planner.queueing import mgc_wait
from runtime.build.spec import RuntimeSpec
from runtime.orchestrator import Overloaded
from runtime.orchestrator.autoscaler import (Autoscaler, AutoscalerConfig, PoolLimits, Signals, declared_config,
                                             parse_limits, size_pool)
from runtime.orchestrator.scaling import PoolScaler

from .conftest import example_spec, run_async, sim_factory, started
from .test_failures import long_answer


def narrow(spec: RuntimeSpec, seqs: int) -> RuntimeSpec:
    """Every LLM replica with ``seqs`` slots (so a modest load needs more replicas)."""
    pools = tuple(p.model_copy(update={"replicas": tuple(
        r.model_copy(update={"engine": r.engine.model_copy(update={"max_num_seqs": seqs})}) for r in p.replicas)})
        for p in spec.llm_pools)
    return spec.model_copy(update={"llm_pools": pools})


async def offer(orch: Any, rate: float, duration_s: float, runs: list[Any]) -> int:
    """Submit runs at ``rate`` per second for ``duration_s``; the number refused (retryable overload)."""
    refused = 0
    for i in range(int(rate * duration_s)):
        try:
            runs.append(await orch.submit({"question": f"how many customers {len(runs)}"}))
        except Overloaded:
            refused += 1
        await asyncio.sleep(1 / rate)
    return refused


def test_a_load_step_scales_out_and_back_in_without_failing_a_run(sales_db: Path) -> None:
    async def body() -> None:
        spec = narrow(example_spec("nl2sql", sales_db, borrow_idle=False, max_active_runs=10_000), 2)
        orch = await started(spec, sim_factory(long_answer, speedup=100))
        scaler = PoolScaler(orch)
        config = AutoscalerConfig(pools={"generate": PoolLimits(1, 4)}, default=PoolLimits(1, 1), interval_s=0.05,
                                  window_s=0.6, fast_window_s=0.4, scale_out_cooldown_s=0.2, scale_in_cooldown_s=0.5,
                                  scale_in_stable_s=0.5)
        monitor = Autoscaler(orch, scaler, config)
        await monitor.start()
        runs: list[Any] = []
        try:
            await offer(orch, 5, 1.5, runs)  # low
            low = len(orch.pools_by_name["generate"].replicas)
            await offer(orch, 25, 3.0, runs)  # 5x
            peak = len(orch.pools_by_name["generate"].replicas)
            await offer(orch, 5, 3.0, runs)  # low again
            await asyncio.sleep(1.5)
            after = len(orch.pools_by_name["generate"].replicas)
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=30) for r in runs))
        finally:
            await monitor.stop()
            await scaler.stop()
            await orch.stop()
        assert low == 1 and peak > 1 and after < peak
        assert all(i.status in ("done", "fail") and i.error is None for i in infos)  # no run lost to scaling
        acted = [d for d in monitor.decisions if d.action != "hold"]
        assert {d.pool for d in acted} == {"generate"}  # only the pool under pressure
        outs = [d for d in acted if d.action == "scale_out"]
        ins = [d for d in acted if d.action == "scale_in"]
        assert outs and ins and all("M/G/c model wants" in d.reason for d in outs)
        assert all(d.signals["arrival_rate"] > 0 for d in outs)
        # No flapping: every scale-in comes after the last scale-out (the step, then the way down).
        assert max(d.t for d in outs) < min(d.t for d in ins)
        assert [e.action for e in scaler.events].count("scale_in") == len(ins)

    run_async(body())


def test_sizing_follows_the_queueing_model_within_the_limits() -> None:
    budget = AutoscalerConfig().wait_budget
    limits = PoolLimits(1, 6)

    def at(rate: float) -> int:
        signals = Signals(arrival_rate=rate, throughput=rate, running=0, queued=0, service_s=0.5, queue_wait_s=0,
                          engine_waiting=0, attainment=None, replicas=1)
        return size_pool(signals, 4, limits, 0.8, budget)

    idle = Signals(arrival_rate=3.0, throughput=3.0, running=0, queued=0, service_s=0.0, queue_wait_s=0,
                   engine_waiting=0, attainment=None, replicas=2)  # calls too short to be seen running
    assert size_pool(idle, 4, limits, 0.8, budget) == 1
    sizes = [at(r) for r in (0.0, 4.0, 8.0, 16.0, 32.0, 1000.0)]
    assert sizes == sorted(sizes) and sizes[0] == 1 and sizes[-1] == 6

    def meets(rate: float, n: int) -> bool:  # the planner's M/G/c model at n replicas of 4 slots, S = 0.5 s
        wait = mgc_wait(4 * n, rate, 0.5, cs2=1.0)
        return rate * 0.5 <= 0.8 * 4 * n and wait is not None and wait.mean <= budget * 0.5

    for rate in (2.0, 6.0, 6.5, 9.0, 13.0, 20.0):
        n = at(rate)
        assert meets(rate, n) and (n == 1 or not meets(rate, n - 1))  # the smallest size that meets it
    assert parse_limits(["min=2,max=5", "fix:max=3", "budget=1.5"]).limits("fix@2") == PoolLimits(2, 3)
    assert parse_limits(["min=2,max=5"]).limits("generate") == PoolLimits(2, 5)
    with pytest.raises(ValueError, match="expected"):
        parse_limits(["most=3"])
    with pytest.raises(ValueError, match="min <= max"):
        parse_limits(["min=3,max=2"])


def test_the_cortex_files_limits_apply_and_the_command_line_overrides_what_it_names() -> None:
    from tests.cortexlang.helpers import llm, workflow

    result = workflow(llm("gen") + llm("fix", "pool = shared") + llm("check", "pool = shared")
                      + "autoscale { replicas = 2..6  budget = $3/h\n pool shared { replicas = 1..2 } }\n"
                      + "flow { gen -> fix -> check -> done }")
    declared = declared_config(result.program.workflows[0])
    assert declared is not None and declared.budget_per_hour == 3.0
    assert declared.limits("gen") == PoolLimits(2, 6)
    assert declared.limits("fix", ["check", "fix"]) == PoolLimits(1, 2)  # the runtime pool serving `shared`
    merged = parse_limits(["gen:max=8", "budget=5"], base=declared)
    assert merged.limits("gen") == PoolLimits(2, 8) and merged.budget_per_hour == 5.0
    assert merged.limits("check", ["check", "fix"]) == PoolLimits(1, 2)  # not named on the command line: kept
    assert parse_limits(["min=1,max=3"], base=declared).default == PoolLimits(1, 3)
    with pytest.raises(ValueError, match="min <= max"):
        parse_limits(["fix:min=3"], base=declared)
    assert declared_config(workflow(llm("gen") + "flow { gen -> done }").program.workflows[0]) is None


def test_a_kv_bound_pool_is_measured_and_scaled_out(sales_db: Path) -> None:
    async def body() -> None:
        spec = narrow(example_spec("nl2sql", sales_db, borrow_idle=False, max_active_runs=10_000), 16)
        # KV for about two prompts per engine: the 16 slots are never the limit, the KV blocks are.
        pools = tuple(p.model_copy(update={"replicas": tuple(r.model_copy(update={"kv_capacity_tokens": 1536})
                                                             for r in p.replicas)}) for p in spec.llm_pools)
        orch = await started(spec.model_copy(update={"llm_pools": pools}), sim_factory(long_answer, speedup=20))
        scaler = PoolScaler(orch)
        config = AutoscalerConfig(pools={"generate": PoolLimits(1, 3)}, default=PoolLimits(1, 1), interval_s=0.05,
                                  window_s=0.6, fast_window_s=0.4, scale_out_cooldown_s=0.2, scale_in_cooldown_s=60,
                                  scale_in_stable_s=60, slo_target=0.0, kv_high=0.6)
        monitor = Autoscaler(orch, scaler, config)
        await monitor.start()
        runs: list[Any] = []
        try:
            await offer(orch, 40, 1.5, runs)
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=60) for r in runs))
        finally:
            await monitor.stop()
            await scaler.stop()
            await orch.stop()
        outs = [d for d in monitor.decisions if d.action == "scale_out"]
        # Calls wait inside the engines for KV blocks: the monitor sees the KV use and grows the pool (from the
        # KV rule, or from the service time that waiting inflates), and never shrinks it while KV is this full.
        assert outs and max(d.signals["kv_usage"] for d in outs) >= 0.5
        assert max(d.signals["engine_waiting"] for d in outs) > 0
        assert not [d for d in monitor.decisions if d.action == "scale_in"]
        assert "cortex_autoscaler_desired_replicas" in monitor.metrics_text()
        assert all(i.status in ("done", "fail") and i.error is None for i in infos)

    run_async(body())
