"""Fixtures for orchestrator tests: compiled examples, a private copy of the sales database,
simulated engines (fast clock) with scripted answers, and a runner for async test bodies."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cortexlang.compiler import compile_file
from cortexlang.ir import Program
from runtime.orchestrator.prewarm import is_warm_up
from runtime.build.layout import default_spec
from runtime.build.spec import LLMPoolSpec, RuntimeSpec
from runtime.engines.base import GenerationRequest
from runtime.engines.simulated import SimulatedEngine
from runtime.orchestrator import Orchestrator
from runtime.orchestrator.engines import replica_profile
from runtime.orchestrator.simulated import planned_responder, request_stage

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
SPEEDUP = 2000.0
"""Simulated engines run this much faster than the SmolLM2 CPU profile says (tests stay fast)."""

Script = Callable[[str, str], str]
"""(stage, prompt text) -> the text a simulated engine answers."""


@pytest.fixture(scope="session")
def sales_db_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.data.build_sales_db import DEFAULT_DB, build

    target = tmp_path_factory.mktemp("db") / "sales.db"
    if DEFAULT_DB.exists():
        shutil.copy(DEFAULT_DB, target)
        return target
    return build(target)


@pytest.fixture
def sales_db(sales_db_master: Path, tmp_path: Path) -> Path:
    """A private copy per test (destructive-SQL tests compare it byte for byte)."""
    path = tmp_path / "sales.db"
    shutil.copy(sales_db_master, path)
    return path


def compile_example(name: str) -> Program:
    result = compile_file(EXAMPLES / f"{name}.cortex")
    assert result.program is not None, result.diagnostics
    return result.program


def example_spec(name: str, db: Path | None = None, **orchestrator: Any) -> RuntimeSpec:
    """The default layout of an example, its database pointed at ``db``."""
    spec = default_spec(compile_example(name), base_dir=EXAMPLES, backend="simulated")
    if db is not None:
        spec = spec.model_copy(update={"databases": tuple(
            d.model_copy(update={"url": f"sqlite:///{db}"}) for d in spec.databases)})
    if orchestrator:
        spec = spec.model_copy(update={"orchestrator": spec.orchestrator.model_copy(update=orchestrator)})
    return spec


def one_small_vllm_engine(name: str, db: Path, **orchestrator: Any) -> RuntimeSpec:
    """An example's LLM stages on one shared vLLM-CPU engine small enough for a CI machine: bound to
    core 0, 256 MiB of KV cache, 8 sequences (the slow real-engine tests)."""
    from runtime.build import share_engines

    spec = share_engines(example_spec(name, db, **orchestrator))
    (pool,) = spec.llm_pools
    rep = pool.replicas[0]
    engine = rep.engine.model_copy(update={"kv_cache_bytes": 256 << 20, "cpu_threads_bind": "0", "max_num_seqs": 8})
    pool = pool.model_copy(update={"replicas": (rep.model_copy(update={
        "engine": engine, "kv_capacity_tokens": (256 << 20) // 46080}),)})
    return spec.model_copy(update={"llm_pools": (pool,)})


def scripted(script: Script) -> Callable[[GenerationRequest], str]:
    """A responder answering each run call with ``script(stage, prompt)``; warm-ups (the plan's prewarm
    requests, runtime/orchestrator/prewarm.py) get an empty answer and never reach the script."""
    def respond(request: GenerationRequest) -> str:
        if is_warm_up(request):
            return ""
        prompt = request.prompt if isinstance(request.prompt, str) else request.prompt[-1].content
        return script(request_stage(request.request_id) or "", prompt)

    return respond


def sim_factory(script: Script | None = None, speedup: float = SPEEDUP,
                engines: list[SimulatedEngine] | None = None) -> Callable[..., SimulatedEngine]:
    """Simulated engines answering with ``script`` (default: the planned responder)."""

    def build(spec: RuntimeSpec, pool: Any, rep: Any) -> SimulatedEngine:
        responder = scripted(script) if script else planned_responder(spec.program.workflow(spec.workflow))
        engine = SimulatedEngine(replica_profile(rep), kv_capacity_tokens=rep.kv_capacity_tokens,
                                 max_num_seqs=rep.engine.max_num_seqs or 16, responder=responder, speedup=speedup)
        if engines is not None:
            engines.append(engine)
        return engine

    return build


def run_async(coro: Any, timeout_s: float = 60.0) -> Any:
    """Run a test coroutine with a hard timeout (a hang fails the test instead of the suite)."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


async def started(spec: RuntimeSpec, factory: Callable[..., Any], **kwargs: Any) -> Orchestrator:
    orch = Orchestrator(spec, factory, **kwargs)
    await orch.start()
    return orch


def split_pool(spec: RuntimeSpec, pool: str, prefill: int, decode: int) -> RuntimeSpec:
    """``pool`` as a P/D pool of ``prefill`` prefill and ``decode`` decode replicas (as spec_from_plan builds it)."""
    from runtime.engines.disaggregated import kv_transfer_config

    pools: list[LLMPoolSpec] = []
    for p in spec.llm_pools:
        if p.name == pool:
            rep = p.replicas[0]

            def role(replica_id: str, kv_role: str):  # type: ignore[no-untyped-def]
                engine = rep.engine.model_copy(update={"kv_transfer": kv_transfer_config(kv_role)})
                return rep.model_copy(update={"replica_id": replica_id, "engine": engine})

            p = p.model_copy(update={
                "replicas": tuple(role(f"{pool}-{i}", "kv_consumer") for i in range(decode)),
                "prefill_replicas": tuple(role(f"{pool}-prefill-{i}", "kv_producer") for i in range(prefill))})
        pools.append(p)
    return spec.model_copy(update={"llm_pools": tuple(pools)})
