"""Resizable pools: replicas added and drained out of a running orchestrator, under load, drop no run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.build.spec import RuntimeSpec
from runtime.engines.base import EngineHealth
from runtime.engines.simulated import SimulatedEngine
from runtime.orchestrator.scaling import PoolScaler, ScalingError

from .conftest import example_spec, run_async, sim_factory, started
from .test_failures import long_answer, with_replicas


def test_scale_out_then_in_under_load_drops_no_run(sales_db: Path) -> None:
    engines: list[SimulatedEngine] = []

    async def body() -> None:
        spec = example_spec("nl2sql", sales_db, borrow_idle=False)
        orch = await started(spec, sim_factory(long_answer, speedup=100, engines=engines))
        scaler = PoolScaler(orch)
        events = []
        scaler.listeners.append(events.append)
        try:
            pool = orch.pools_by_name["generate"]
            runs = [await orch.submit({"question": f"how many customers {i}"}) for i in range(40)]
            await asyncio.sleep(0.01)
            assert pool.queued > 0  # one replica: calls wait
            added = await scaler.add_replica("generate", reason="test")
            assert added.replica_id == "generate-1" and [r.replica_id for r in pool.replicas] == [
                "generate-0", "generate-1"]
            await asyncio.sleep(0.02)
            assert added.served > 0  # the new replica took waiting calls
            busy = max(pool.replicas, key=lambda r: r.inflight)
            assert busy.inflight > 0
            removed = await scaler.remove_replica("generate", busy.replica_id, reason="test", wait=False)
            assert removed == busy.replica_id and busy not in pool.replicas and busy.draining
            more = [await orch.submit({"question": f"more customers {i}"}) for i in range(8)]
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=30) for r in runs + more))
            assert [i.status for i in infos] == ["done"] * len(infos)  # nothing dropped or failed
            await scaler.stop()
            assert busy.inflight == 0
            stopped = [e for e in engines if not (await e.health()).ok]
            assert len(stopped) == 1  # the drained engine, and only it, stopped
            drained_calls = [c for i in infos for c in i.calls if c.replica == busy.replica_id]
            assert drained_calls and all(c.outcome != "error" for c in drained_calls)
            assert [e.action for e in events] == ["scale_out", "scale_in"]
            assert events[-1].replicas == 1
        finally:
            await scaler.stop()
            await orch.stop()

    run_async(body())


def test_a_replica_that_does_not_start_leaves_the_pool_as_it_was(sales_db: Path) -> None:
    async def body() -> None:
        spec = example_spec("nl2sql", sales_db)
        good = sim_factory(long_answer, speedup=2000)
        calls = {"n": 0}

        def factory(spec: RuntimeSpec, lp, rep):  # the second engine built (the added one) never gets ready
            calls["n"] += 1
            engine = good(spec, lp, rep)
            if calls["n"] > 1:
                async def not_ready() -> EngineHealth:
                    return EngineHealth(state="failed", detail="no weights")
                engine.health = not_ready  # type: ignore[method-assign]
            return engine

        orch = await started(spec, factory)
        scaler = PoolScaler(orch)
        try:
            with pytest.raises(ScalingError, match="no weights"):
                await scaler.add_replica("generate")
            assert [r.replica_id for r in orch.pools_by_name["generate"].replicas] == ["generate-0"]
            assert scaler.events[-1].action == "scale_out_failed"
            info = await orch.run({"question": "how many customers"})
            assert info.status == "done"
            with pytest.raises(ScalingError, match="one replica"):
                await scaler.remove_replica("generate")
            with pytest.raises(ScalingError, match="no LLM pool"):
                await scaler.add_replica("execute")
        finally:
            await orch.stop()

    run_async(body())


def test_resize_and_a_later_deploy_keeps_the_resized_engines(sales_db: Path) -> None:
    engines: list[SimulatedEngine] = []

    async def body() -> None:
        spec = example_spec("nl2sql", sales_db)
        orch = await started(spec, sim_factory(long_answer, speedup=2000, engines=engines))
        scaler = PoolScaler(orch)
        try:
            assert await scaler.resize("generate", 3) == 2
            assert scaler.live_spec("generate").replicas[-1].replica_id == "generate-2"
            built = len(engines)
            target = with_replicas(spec, "generate", 3)
            version = await orch.deploy(target)
            assert len(engines) == built  # same pools: nothing restarted
            assert version.pools["generate"] is orch.pools_by_name["generate"]
            assert await scaler.resize("generate", 1) == -2
            assert [r.replica_id for r in orch.pools_by_name["generate"].replicas] == ["generate-0"]
        finally:
            await scaler.stop()
            await orch.stop()

    run_async(body())


def test_scale_out_takes_the_inventory_replicas_first_then_copies(sales_db: Path) -> None:
    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(long_answer, speedup=100))
        template = orch.spec.pool_of_stage("generate").replicas[0]
        spare = template.model_copy(update={"replica_id": "generate-core1", "engine": template.engine.model_copy(
            update={"cpu_threads_bind": "1", "max_num_seqs": 3})})
        scaler = PoolScaler(orch, inventory={"generate": (spare,)})
        try:
            first = await scaler.add_replica("generate")
            second = await scaler.add_replica("generate")
            assert (first.replica_id, first.slots) == ("generate-core1", 3)  # the inventory's replica
            assert second.replica_id == "generate-1" and second.slots == 3  # then a copy of the last one
            assert scaler.live_spec("generate").replicas[1].engine.cpu_threads_bind == "1"
        finally:
            await scaler.stop()
            await orch.stop()

    run_async(body())
