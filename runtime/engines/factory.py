"""Building an engine from a backend label (the plan renderer's entry point)."""

from __future__ import annotations

from planner.profiles import LatencyProfile
from runtime.engines.base import Engine, EngineLabel, EngineSpec


def make_engine(
    backend: EngineLabel,
    spec: EngineSpec,
    *,
    profile: LatencyProfile | None = None,
    kv_bytes_per_token: int | None = None,
    weight_bytes: int = 0,
    base_url: str | None = None,
    api_key: str | None = None,
    speedup: float = 1.0,
) -> Engine:
    """An unstarted engine of kind ``backend`` for ``spec``.

    ``simulated`` needs ``profile`` and ``kv_bytes_per_token`` (its KV capacity
    is ``spec.kv_cache_bytes`` or what the profile leaves after ``weight_bytes``,
    divided by the bytes per token); ``openai-remote`` needs ``base_url``. vLLM backends are imported
    only when asked for, so simulated runs never import vLLM.
    """
    if backend == "simulated":
        if profile is None or kv_bytes_per_token is None:
            raise ValueError("a simulated engine needs a latency profile and kv_bytes_per_token")
        from runtime.engines.simulated import SimulatedEngine

        if spec.kv_cache_bytes is not None:
            capacity = spec.kv_cache_bytes // kv_bytes_per_token
        else:
            capacity = profile.kv_capacity_tokens(weight_bytes, kv_bytes_per_token)
        return SimulatedEngine(
            profile, kv_capacity_tokens=capacity, max_num_seqs=spec.max_num_seqs or 256,
            max_num_batched_tokens=spec.max_num_batched_tokens or 8192,
            enable_prefix_caching=spec.enable_prefix_caching, speedup=speedup, max_context=spec.max_model_len,
        )
    if backend == "vllm-inproc":
        from runtime.engines.vllm_inproc import VllmInProcessEngine

        return VllmInProcessEngine(spec)
    if backend == "vllm-server":
        from runtime.engines.vllm_server import VllmServerEngine

        return VllmServerEngine(spec)
    if backend == "openai-remote":
        if not base_url:
            raise ValueError("an openai-remote engine needs base_url")
        from runtime.engines.openai_remote import OpenAIRemoteEngine

        return OpenAIRemoteEngine(base_url, spec.name, api_key=api_key, max_context=spec.max_model_len)
    raise ValueError(f"unknown engine backend {backend!r}")
