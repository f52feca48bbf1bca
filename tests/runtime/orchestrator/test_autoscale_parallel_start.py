"""A scale-out by several replicas starts their engines at once: the pool reaches the size a load step needs
after one engine start, not one per replica; a failure among them leaves the others serving and the pool
consistent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.build.spec import RuntimeSpec
from runtime.engines.base import EngineHealth
from runtime.orchestrator.scaling import PoolScaler, ScalingError

from .conftest import example_spec, run_async, sim_factory, started
from .test_failures import long_answer

START_S = 0.4


def slow_starting(fail_ids: set[str] | None = None, speedup: float = 200) -> Any:
    """Simulated engines that take ``START_S`` to start (a real engine loads weights); those built while
    their id is in ``fail_ids`` never get ready."""
    fail_ids = set() if fail_ids is None else fail_ids
    good = sim_factory(long_answer, speedup=speedup)

    def factory(spec: RuntimeSpec, lp: Any, rep: Any) -> Any:
        engine = good(spec, lp, rep)
        start = engine.start

        async def slow_start() -> None:
            await asyncio.sleep(START_S)
            await start()

        engine.start = slow_start  # type: ignore[method-assign]
        if rep.replica_id in fail_ids:
            async def not_ready() -> EngineHealth:
                return EngineHealth(state="failed", detail="no weights")
            engine.health = not_ready  # type: ignore[method-assign]
        return engine

    return factory


def test_a_scale_out_by_three_takes_one_engine_start_and_serves_under_load(sales_db: Path) -> None:
    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db, borrow_idle=False), slow_starting(speedup=10))
        scaler = PoolScaler(orch)
        pool = orch.pools_by_name["generate"]
        try:
            runs = [await orch.submit({"question": f"how many customers {i}"}) for i in range(30)]
            await asyncio.sleep(0.01)
            assert pool.queued > 0  # one replica: calls wait
            t0 = time.monotonic()
            assert await scaler.resize("generate", 4) == 3
            took = time.monotonic() - t0
            assert took < 2 * START_S  # concurrent starts (one after another: >= 3 x START_S)
            ids = [r.replica_id for r in pool.replicas]
            assert ids[0] == "generate-0" and sorted(ids[1:]) == ["generate-1", "generate-2", "generate-3"]
            assert sorted(r.replica_id for r in scaler.live_spec("generate").replicas) == sorted(ids)
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=30) for r in runs))
            assert [i.status for i in infos] == ["done"] * len(infos)
            assert sum(1 for r in pool.replicas if r.served > 0) >= 2  # the new replicas took calls
            assert [e.action for e in scaler.events] == ["scale_out"] * 3
        finally:
            await scaler.stop()
            await orch.stop()

    run_async(body())


def test_one_failing_start_among_several_leaves_the_others_serving(sales_db: Path) -> None:
    async def body() -> None:
        failing = {"generate-2"}
        orch = await started(example_spec("nl2sql", sales_db), slow_starting(failing))
        scaler = PoolScaler(orch)
        pool = orch.pools_by_name["generate"]
        try:
            with pytest.raises(ScalingError, match="generate-2 .*no weights"):
                await scaler.resize("generate", 4)
            ids = sorted(r.replica_id for r in pool.replicas)
            assert ids == ["generate-0", "generate-1", "generate-3"]  # what started is in rotation
            assert sorted(r.replica_id for r in scaler.live_spec("generate").replicas) == ids  # and in the spec
            assert sorted(e.action for e in scaler.events) == ["scale_out", "scale_out", "scale_out_failed"]
            info = await orch.run({"question": "how many customers"})
            assert info.status == "done"
            failing.clear()  # the failed id is free again: the next scale-out takes it
            assert await scaler.resize("generate", 4) == 1
            assert sorted(r.replica_id for r in pool.replicas) == ["generate-0", "generate-1", "generate-2",
                                                                   "generate-3"]
        finally:
            await scaler.stop()
            await orch.stop()

    run_async(body())
