"""A prefill/decode-disaggregated pool in the orchestrator: its prefill engines start with the pool, prefill
every call of its decode replicas (scaled-out ones included), share one private KV store, and stop with it;
an engine without a KV connector is refused at start. Simulated engines stand in for vLLM here (labelled
as such where the test needs a connector); the real hand-over is tested in tests/runtime/engines/test_vllm_real.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from runtime.build.spec import LLMPoolSpec, RuntimeSpec
from runtime.engines.disaggregated import STORAGE_PATH_KEY, DisaggregatedEngine
from runtime.engines.simulated import SimulatedEngine
from runtime.orchestrator.errors import OrchestratorError
from runtime.orchestrator.scaling import PoolScaler

from .conftest import example_spec, run_async, sim_factory, split_pool, started


def labelled(label: str, built: list[tuple[str, Any]]):  # type: ignore[no-untyped-def]
    """The simulated factory, its engines labelled ``label``; records (replica id, kv_transfer) per build."""
    inner = sim_factory()

    def build(spec: RuntimeSpec, pool: LLMPoolSpec, rep: Any) -> SimulatedEngine:
        engine = inner(spec, pool, rep)
        engine.label = label  # type: ignore[misc]
        built.append((rep.replica_id, rep.engine.kv_transfer))
        return engine

    return build


def test_prefill_engines_serve_every_call_of_the_decode_replicas(sales_db: Path) -> None:
    built: list[tuple[str, Any]] = []

    async def body() -> None:
        spec = split_pool(example_spec("nl2sql", sales_db, borrow_idle=False), "generate", prefill=2, decode=1)
        orch = await started(spec, labelled("vllm-server", built))
        try:
            pool = orch.pools_by_name["generate"]
            (decoder,) = pool.replicas
            assert isinstance(decoder.engine, DisaggregatedEngine)
            group = decoder.engine.group
            store = group.storage
            assert store is not None and store.is_dir()
            infos = await asyncio.gather(*(orch.run({"question": f"how many customers {i}"}) for i in range(6)))
            # finished either way: the planned responder spends the repair budget now and then (a `fail`)
            assert all(i.status in ("done", "fail") for i in infos)
            calls = [c for i in infos for c in i.calls if c.stage == "generate"]
            prefilled = sum(e.metrics().requests_finished for e in group.engines)
            decoded = decoder.engine.decode.metrics().requests_finished  # the calls and the plan's prewarm request
            assert decoded >= len(calls) and prefilled == decoded
            assert all(e.metrics().requests_finished > 0 for e in group.engines)
            assert {c.replica for c in calls} == {"generate-0"}
            text = orch.metrics_text()  # the prefill engines are in the metrics beside the decode replica
            for replica in ("generate-0", "generate-prefill-0", "generate-prefill-1"):
                assert f'cortex_replica_requests_running{{pool="generate",replica="{replica}"' in text
            # a replica added while serving is a decode replica on the same prefill engines
            scaled = await PoolScaler(orch).add_replica("generate", reason="test")
            assert isinstance(scaled.engine, DisaggregatedEngine) and scaled.engine.group is group
        finally:
            await orch.stop()
        assert not store.exists()  # the pool's KV store goes with it
        states = [(await e.health()).state for e in group.engines]
        assert states == ["stopped"] * len(group.engines)  # stopped with the pool
        # every engine of the pool was pointed at the same private store, with its role
        roles = {rid: kv for rid, kv in built if kv is not None}
        assert {kv["kv_role"] for rid, kv in roles.items() if "prefill" in rid} == {"kv_producer"}
        assert {kv["kv_role"] for rid, kv in roles.items() if "prefill" not in rid} == {"kv_consumer"}
        assert {kv["kv_connector_extra_config"][STORAGE_PATH_KEY] for kv in roles.values()} == {str(store)}

    run_async(body())


def test_an_engine_without_a_kv_connector_is_refused_in_one_line(sales_db: Path) -> None:
    async def body() -> None:
        spec = split_pool(example_spec("nl2sql", sales_db), "generate", prefill=1, decode=1)
        with pytest.raises(OrchestratorError, match="prefill/decode-disaggregated, which needs vLLM engines") as err:
            await started(spec, sim_factory())
        assert "\n" not in str(err.value) and "cortex simulate --layout plan" in str(err.value)

    run_async(body())
