"""A simulated LLM engine: continuous batching in real (asyncio) time, no model.

Everything it returns is labelled ``simulated``. It exists so the orchestrator,
its tests and scale experiments can run without a model, with iteration times
taken from the same :class:`planner.profiles.LatencyProfile` the planner uses.

The model of one engine replica (a simplified vLLM V1 scheduler):

* Tokens: text is counted at ``CHARS_PER_TOKEN`` characters per token (its
  tokenizer). A request whose prompt plus ``max_tokens`` exceeds
  ``max_context``, or whose prompt alone cannot fit the KV cache, is refused
  with :class:`~runtime.engines.base.RequestRejected` before it is queued.
* Admission: waiting requests are ordered by (priority, arrival); the head is
  admitted while fewer than ``max_num_seqs`` run, its prompt fits the
  iteration's token budget (``max_num_batched_tokens``) and its KV blocks
  (``ceil((prompt + 1) / block_size)``) fit the free blocks.
* Prefix cache: prompts are hashed block by block (a chain hash, like vLLM);
  blocks seen before (LRU, bounded by the KV capacity) need no prefill.
* One iteration lasts ``profile.iteration_s(prefill_tokens, decode_batch,
  kv_tokens)`` (prefill-only iterations ``profile.prefill_s``); every admitted
  request gets its first token at the end of its prefill iteration and every
  running one a token per decode iteration.
* Preemption: when a decode step needs a block and none is free, the most
  recently admitted request is preempted (recompute: it goes back to the
  front of its priority class and is prefilled again), as in vLLM.
* Streaming: each token's text (``CHARS_PER_TOKEN`` characters of the answer)
  goes to the request's token sink at the end of the iteration that produced it.
  ``seed`` is accepted (the answers are deterministic anyway); ``response_format``,
  ``tools`` and ``logprobs`` are refused (it has no model to constrain or score).
* Output constraints (a stage's ``constrain { ... }``) are accepted but not enforced: the
  responder's text is checked against the constraint (:mod:`runtime.engines.constraint_check`)
  and the result labelled ``satisfied``, ``violated`` or ``unchecked`` in ``result.constraint``.

* CPU contention: engines built with one :class:`~runtime.engines.shared_cores.SharedCores`
  share a machine; an iteration lasts the profile's time under the contention of the other
  engines busy when it starts (:meth:`LatencyProfile.under_contention`).

``speedup`` divides every sleep; reported timings are in model seconds (wall
seconds times ``speedup``), so results do not depend on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from planner.profiles import LatencyProfile
from runtime.engines.constraint_check import check_text
from runtime.engines.shared_cores import SharedCores
from runtime.engines.base import (
    ConstraintCheck,
    Engine,
    EngineError,
    EngineHealth,
    EngineMetrics,
    EngineNotRunning,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    GenerationTiming,
    RequestRejected,
    TokenDelta,
    TokenSink,
    check_context,
    token_sink,
)

CHARS_PER_TOKEN = 4

Responder = Callable[[GenerationRequest], str]
"""Produces the full text a simulated request would generate (before stop/max_tokens)."""


CONTENTION_SLICE_S = 0.05
"""Model seconds between two reads of the other engines' state during a contended iteration."""


def count_tokens(text: str) -> int:
    """Simulated token count: ``ceil(len(text) / CHARS_PER_TOKEN)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_text(request: GenerationRequest) -> str:
    """The prompt as one string (chat messages as ``role: content`` lines)."""
    if isinstance(request.prompt, str):
        return request.prompt
    return "".join(f"{m.role}: {m.content}\n" for m in request.prompt)


def placeholder_responder(tokens: int) -> Responder:
    """Deterministic filler of ``tokens`` simulated tokens, derived from the prompt."""

    def respond(request: GenerationRequest) -> str:
        seed = hashlib.sha256(prompt_text(request).encode()).digest()
        # Every word is exactly CHARS_PER_TOKEN characters including its space.
        return "".join(f"s{seed[i % len(seed)] % 100:02d} " for i in range(tokens))

    return respond


def _apply_limits(text: str, request: GenerationRequest) -> tuple[str, FinishReason]:
    """Cut ``text`` at the first stop string (excluded) and at ``max_tokens``."""
    reason: FinishReason = "stop"
    cut = min((i for i in (text.find(s) for s in request.stop if s) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    limit = request.max_tokens * CHARS_PER_TOKEN
    if count_tokens(text) > request.max_tokens:
        text, reason = text[:limit], "length"
    return text, reason


@dataclass(eq=False)
class _Sequence:
    request: GenerationRequest
    target: str
    finish: FinishReason
    prompt_tokens: int
    prompt_blocks: tuple[bytes, ...]
    arrival: float
    future: asyncio.Future[GenerationResult]
    order: int
    generated: int = 0
    prefilled: bool = False
    cached_tokens: int = 0
    admitted_at: float | None = None
    first_token_at: float | None = None
    blocks: int = 0
    abort_requested: bool = False
    sink: TokenSink | None = None
    constraint: ConstraintCheck | None = None  # the whole answer checked against the request's constraint

    @property
    def target_tokens(self) -> int:
        return count_tokens(self.target)

    @property
    def kv_tokens(self) -> int:
        return self.prompt_tokens + self.generated


@dataclass
class _Counters:
    preemptions: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    iterations: int = 0
    busy_s: float = 0.0


class SimulatedEngine(Engine):
    """A real-time simulation of one continuous-batching engine replica (see module docstring)."""

    label = "simulated"
    capabilities = frozenset({"priority", "prefix_cache", "abort", "metrics", "stream", "seed",
                              "constraint:json", "constraint:regex", "constraint:grammar"})

    def __init__(
        self,
        profile: LatencyProfile,
        *,
        kv_capacity_tokens: int,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        responder: Responder | None = None,
        default_output_tokens: int = 32,
        speedup: float = 1.0,
        max_context: int | None = None,
        cores: SharedCores | None = None,
        width: int = 1,
    ) -> None:
        if kv_capacity_tokens < block_size:
            raise ValueError(f"kv_capacity_tokens={kv_capacity_tokens} holds less than one block")
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.profile = profile
        self.block_size = block_size
        self.total_blocks = kv_capacity_tokens // block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.enable_prefix_caching = enable_prefix_caching
        self.responder = responder or placeholder_responder(default_output_tokens)
        self.speedup = speedup
        self.max_context = max_context
        """The model's context in tokens (prompt + output); None: unchecked."""
        self.cores = cores
        """The machine's CPU engines (contention), or None: this engine computes alone."""
        self.width = width
        self._waiting: list[tuple[int, int, _Sequence]] = []
        self._running: list[_Sequence] = []
        self._by_id: dict[str, _Sequence] = {}
        self._prefix_lru: OrderedDict[bytes, None] = OrderedDict()
        self._seq = itertools.count()
        self._counters = _Counters()
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._state: str = "stopped"
        self._detail = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._loop_task is not None:
            return
        self._wakeup = asyncio.Event()
        self._state = "ready"
        if self.cores is not None:
            self.cores.join(self, self.width)  # a running engine shares the machine
        self._loop_task = asyncio.create_task(self._run(), name="simulated-engine")

    async def stop(self) -> None:
        task, self._loop_task = self._loop_task, None
        self._state = "stopped"
        if self.cores is not None:
            self.cores.leave(self)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for seq in list(self._by_id.values()):
            self._finish(seq, "abort")

    async def health(self) -> EngineHealth:
        return EngineHealth(state=self._state, detail=self._detail or "simulated engine")  # type: ignore[arg-type]

    # ------------------------------------------------------------------ requests
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if self._loop_task is None:
            raise EngineNotRunning("simulated engine is not started")
        if request.request_id in self._by_id:
            raise EngineError(f"request id {request.request_id!r} is already in flight")
        self.check_request(request)
        text = prompt_text(request)
        prompt_tokens = max(count_tokens(text), 1)
        check_context(prompt_tokens, request.max_tokens, self.max_context)
        if self._blocks_for(prompt_tokens + 1) > self.total_blocks:
            raise RequestRejected(
                f"prompt of {prompt_tokens} tokens does not fit the KV cache "
                f"({self.total_blocks * self.block_size} tokens)"
            )
        target, finish = _apply_limits(self.responder(request), request)
        seq = _Sequence(
            request=request, target=target, finish=finish, prompt_tokens=prompt_tokens,
            constraint=check_text(request.constraint, target) if request.constraint is not None else None,
            prompt_blocks=self._block_hashes(text), arrival=self._now(),
            future=asyncio.get_running_loop().create_future(), order=next(self._seq), sink=token_sink(),
        )
        self._by_id[request.request_id] = seq
        heapq.heappush(self._waiting, (request.priority, seq.order, seq))
        self._wakeup.set()
        try:
            return await asyncio.shield(seq.future)
        except asyncio.CancelledError:
            await self.abort(request.request_id)
            raise

    async def abort(self, request_id: str) -> bool:
        seq = self._by_id.get(request_id)
        if seq is None:
            return False
        self._finish(seq, "abort")
        return True

    def metrics(self) -> EngineMetrics:
        c = self._counters
        used = sum(s.blocks for s in self._running)
        return EngineMetrics(
            label="simulated",
            kv_cache_usage=used / self.total_blocks,
            running=len(self._running),
            waiting=len(self._waiting),
            prefix_cache_hit_rate=(c.prefix_hits / c.prefix_queries) if c.prefix_queries else None,
            preemptions=c.preemptions,
            prompt_tokens_total=c.prompt_tokens,
            generation_tokens_total=c.generation_tokens,
            requests_finished=c.finished,
        )

    # ------------------------------------------------------------------ the scheduler loop
    def _now(self) -> float:
        return asyncio.get_running_loop().time() * self.speedup

    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def _block_hashes(self, text: str) -> tuple[bytes, ...]:
        """Chain hashes of the prompt's full blocks (a block's hash covers its whole prefix)."""
        step = self.block_size * CHARS_PER_TOKEN
        hashes, prev = [], b""
        for start in range(0, len(text) - step + 1, step):
            prev = hashlib.blake2b(prev + text[start:start + step].encode(), digest_size=16).digest()
            hashes.append(prev)
        return tuple(hashes)

    def _free_blocks(self) -> int:
        return self.total_blocks - sum(s.blocks for s in self._running)

    def _cached_prefix_tokens(self, seq: _Sequence) -> int:
        if not self.enable_prefix_caching:
            return 0
        hits = 0
        for h in seq.prompt_blocks:
            if h not in self._prefix_lru:
                break
            hits += 1
        # vLLM always recomputes at least the last prompt token.
        return min(hits * self.block_size, seq.prompt_tokens - 1)

    def _remember_prefix(self, seq: _Sequence) -> None:
        if not self.enable_prefix_caching:
            return
        for h in seq.prompt_blocks:
            self._prefix_lru[h] = None
            self._prefix_lru.move_to_end(h)
        while len(self._prefix_lru) > self.total_blocks:
            self._prefix_lru.popitem(last=False)

    def _admit(self) -> list[tuple[_Sequence, int]]:
        """Admit waiting requests for this iteration; returns (sequence, tokens to prefill)."""
        admitted: list[tuple[_Sequence, int]] = []
        budget = self.max_num_batched_tokens
        while self._waiting and len(self._running) < self.max_num_seqs:
            seq = self._waiting[0][2]
            need = self._blocks_for(seq.kv_tokens + 1)
            cached = self._cached_prefix_tokens(seq) if seq.generated == 0 else 0
            compute = seq.kv_tokens - cached
            if need > self._free_blocks() or (admitted and compute > budget):
                break
            heapq.heappop(self._waiting)
            seq.blocks = need
            seq.prefilled = False
            if seq.admitted_at is None:
                seq.admitted_at = self._now()
                self._counters.prefix_queries += seq.prompt_tokens
                self._counters.prefix_hits += cached
                seq.cached_tokens = cached
            self._running.append(seq)
            admitted.append((seq, compute))
            budget -= compute
        return admitted

    def _preempt_for_decode(self) -> None:
        """Free blocks for the coming decode step by preempting the newest requests."""
        while self._running:
            need = sum(
                max(self._blocks_for(s.kv_tokens + 1) - s.blocks, 0) for s in self._running if s.prefilled
            )
            if need <= self._free_blocks():
                return
            victim = max(self._running, key=lambda s: s.admitted_at or 0.0)
            self._running.remove(victim)
            victim.blocks = 0
            self._counters.preemptions += 1
            heapq.heappush(self._waiting, (victim.request.priority, -1 - victim.order, victim))

    async def _run(self) -> None:
        while True:
            if not self._waiting and not self._running:
                if self.cores is not None:
                    self.cores.set_busy(self, False)
                self._wakeup.clear()
                await self._wakeup.wait()
            self._preempt_for_decode()
            decoding = [s for s in self._running if s.prefilled]
            admitted = self._admit()
            prefill_tokens = sum(t for _, t in admitted)
            kv_tokens = sum(s.kv_tokens for s in decoding)
            if self.cores is None:
                duration = self.profile.iteration_s(prefill_tokens, len(decoding), kv_tokens)
                await asyncio.sleep(duration / self.speedup)
            else:
                duration = await self._contended_iteration(prefill_tokens, len(decoding), kv_tokens)
            self._counters.iterations += 1
            self._counters.busy_s += duration
            self._counters.prompt_tokens += prefill_tokens
            for seq in decoding:
                if seq.request.request_id in self._by_id:
                    self._emit_token(seq)
            for seq, _ in admitted:
                if seq.request.request_id in self._by_id:
                    seq.prefilled = True
                    self._remember_prefix(seq)
                    self._emit_token(seq)

    async def _contended_iteration(self, prefill_tokens: int, batch: int, kv_tokens: int) -> float:
        """Run one iteration on a shared machine; returns its duration in model seconds. The iteration's
        work (its time alone) progresses at ``1 / contention_factor`` of the other engines busy *now*,
        re-read every :data:`CONTENTION_SLICE_S` (:meth:`LatencyProfile.contention_factor`)."""
        assert self.cores is not None
        self.cores.set_busy(self, True)
        decode, prefill = self.profile.iteration_parts(prefill_tokens, batch, kv_tokens)
        work, elapsed = decode + prefill, 0.0
        while work > 1e-12:
            factor = self.profile.contention_factor(decode, prefill, self.cores.busy_others(self))
            step = min(work * factor, CONTENTION_SLICE_S)
            await asyncio.sleep(step / self.speedup)
            work -= step / factor
            elapsed += step
        return elapsed

    def _emit_token(self, seq: _Sequence) -> None:
        if seq.generated >= seq.target_tokens:
            self._finish(seq, seq.finish)  # e.g. an empty answer: EOS right after prefill
            return
        seq.generated += 1
        seq.blocks = max(seq.blocks, self._blocks_for(seq.kv_tokens))
        self._counters.generation_tokens += 1
        if seq.first_token_at is None:
            seq.first_token_at = self._now()
        if seq.sink is not None:
            end = seq.generated * CHARS_PER_TOKEN
            seq.sink(TokenDelta(request_id=seq.request.request_id, text=seq.target[end - CHARS_PER_TOKEN:end]))
        if seq.generated >= seq.target_tokens:
            self._finish(seq, seq.finish)

    def _finish(self, seq: _Sequence, reason: FinishReason) -> None:
        rid = seq.request.request_id
        if self._by_id.pop(rid, None) is None:
            return
        if seq in self._running:
            self._running.remove(seq)
        self._waiting = [w for w in self._waiting if w[2] is not seq]
        heapq.heapify(self._waiting)
        self._counters.finished += 1
        now = self._now()
        text = seq.target if reason != "abort" else seq.target[: seq.generated * CHARS_PER_TOKEN]
        result = GenerationResult(
            request_id=rid,
            text=text,
            prompt_tokens=seq.prompt_tokens,
            output_tokens=seq.generated,
            finish_reason=reason,
            timing=GenerationTiming(
                queue_s=None if seq.admitted_at is None else seq.admitted_at - seq.arrival,
                ttft_s=None if seq.first_token_at is None else seq.first_token_at - seq.arrival,
                total_s=now - seq.arrival,
            ),
            engine="simulated",
            cached_prompt_tokens=seq.cached_tokens,
            constraint=seq.constraint,
        )
        if not seq.future.done():
            seq.future.set_result(result)
