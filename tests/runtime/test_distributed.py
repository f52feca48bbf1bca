"""Engine replicas as Ray actors (a local Ray cluster): runs complete, a killed actor fails over."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.orchestrator import Orchestrator, engine_factory
from tests.runtime.orchestrator.conftest import example_spec, run_async, sales_db, sales_db_master  # noqa: F401
from tests.runtime.orchestrator.test_failures import with_replicas

if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is needed (pip install .[distributed])", allow_module_level=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_runs_on_ray_actor_replicas_and_survive_a_killed_actor(ray_cluster: None, sales_db: Path) -> None:
    import ray

    from runtime.distributed import RayEngine, ray_engine_factory

    async def body() -> None:
        spec = with_replicas(example_spec("nl2sql", sales_db), "generate", 2)
        factory = ray_engine_factory(engine_factory("simulated", speedup=20), num_cpus=0.1,
                                     metrics_interval_s=0.05)
        orch = Orchestrator(spec, factory)
        await orch.start()
        try:
            first = await orch.run({"question": "warm-up"})
            assert first.status in ("done", "fail") and first.engines == ["simulated"]
            runs = [await orch.submit({"question": f"q{i}"}) for i in range(8)]
            replicas = orch.pools_by_name["generate"].replicas
            for _ in range(100):  # wait until the calls are in the engines
                if any(r.inflight for r in replicas):
                    break
                await asyncio.sleep(0.01)
            victim = max(replicas, key=lambda r: r.inflight)
            assert isinstance(victim.engine, RayEngine) and victim.inflight > 0  # killed with calls in flight
            ray.kill(victim.engine.actor, no_restart=True)  # the replica's process dies mid-run
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=60) for r in runs))
            await asyncio.sleep(0.2)
            survivor = next(r for r in replicas if r is not victim)
            snapshot = survivor.engine.metrics()
        finally:
            await orch.stop()
        assert all(i.status in ("done", "fail") for i in infos), [(i.status, i.error) for i in infos]
        assert victim.healthy is False
        # generate calls finished on Ray replicas: the generate pool's, or the fix pool's one lent by borrowing
        assert {c.replica for i in infos for c in i.calls if c.stage == "generate"} <= {"generate-0", "generate-1",
                                                                                       "fix-0"}
        assert snapshot.label == "simulated" and snapshot.requests_finished > 0

    run_async(body(), timeout_s=180)


def test_the_proxy_reports_its_engines_capabilities_and_refuses_locally(ray_cluster: None, sales_db: Path) -> None:
    """A constrained workflow on Ray replicas: the proxy reports what its engine honours (checked again
    once started), and a request the engine cannot honour is refused locally, the replica staying healthy."""
    from runtime.distributed import PROXIED, RayEngine, ray_engine_factory
    from runtime.engines.base import GenerationRequest, RequestRejected
    from runtime.engines.simulated import SimulatedEngine

    async def body() -> None:
        factory = ray_engine_factory(engine_factory("simulated", speedup=20), num_cpus=0.1)
        orch = Orchestrator(example_spec("nl2sql_constrained", sales_db), factory)
        await orch.start()
        try:
            info = await orch.run({"question": "How many sales?"})
            engine = next(p for p in orch.pools_by_name.values() if p.kind == "llm").replicas[0].engine
            assert isinstance(engine, RayEngine)
            assert engine.capabilities == PROXIED & SimulatedEngine.capabilities
            assert "constraint:grammar" in engine.capabilities and "stream" not in engine.capabilities
            with pytest.raises(RequestRejected, match="cannot honour logprobs"):
                await engine.generate(GenerationRequest(prompt="q", max_tokens=4, logprobs=1))
            assert (await engine.health()).ok
        finally:
            await orch.stop()
        assert info.status in ("done", "fail") and info.engines == ["simulated"]

    run_async(body())
