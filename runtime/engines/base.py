"""The engine interface every LLM backend implements (the runtime's contract).

An :class:`Engine` serves generation requests asynchronously. Backends:
``vllm-inproc`` (vLLM ``AsyncLLM`` in this process), ``vllm-server`` (a
``vllm serve`` subprocess reached over HTTP), ``openai-remote`` (any
OpenAI-compatible endpoint) and ``simulated`` (a real-time model of continuous
batching driven by :mod:`planner.profiles`; its results say ``simulated``).

Contract, for every backend:

* ``await start()`` returns once the engine accepts requests; ``await stop()``
  releases everything and is idempotent. ``async with engine:`` does both.
* ``await generate(request)`` returns one :class:`GenerationResult`; it never
  raises for a request the engine could serve (an aborted request returns with
  ``finish_reason == "abort"``). It raises :class:`EngineNotRunning` before
  ``start()``/after ``stop()`` and :class:`EngineError` when the backend fails.
  A request the engine cannot serve *as asked* (its prompt plus ``max_tokens``
  exceeds the model's context, a parameter the backend refuses, an HTTP 4xx
  from a remote endpoint) raises :class:`RequestRejected` instead: the engine is
  fine, so callers answer the sender with a client error and keep the replica
  in rotation. Engines check the context *before* dispatch (with their own
  tokenizer where they have one, else :func:`estimate_min_tokens`).
* Cancelling the task awaiting ``generate`` aborts the request in the engine
  (its KV blocks are freed) and re-raises :class:`asyncio.CancelledError`.
* ``await abort(request_id)`` aborts an in-flight request; the pending
  ``generate`` returns with ``finish_reason == "abort"`` and the text so far.
  It returns False when the id is unknown (already finished).
* ``metrics()`` is cheap and synchronous: the latest :class:`EngineMetrics`
  snapshot (remote backends refresh it in the background).
* ``priority``: lower values are scheduled first (vLLM's priority scheduling);
  backends without priority scheduling ignore it and say so in ``capabilities``.
* Streaming: ``stream(request)`` yields :class:`TokenDelta` items as tokens are
  generated and then the :class:`GenerationResult` as its last item; the deltas'
  texts concatenate to the result's text. Backends that stream (capability
  ``"stream"``) hand each delta, while ``generate`` runs, to the sink of the
  calling context (:func:`streaming_to`, read once per request with
  :func:`token_sink`); the default ``stream`` of a backend that does not yields
  the whole text once, when it is done. Closing the iterator early aborts the
  request in the engine.
* Optional request features (``response_format``, ``tools``, ``logprobs``,
  ``seed``) are honoured only by backends that list them in ``capabilities``;
  :meth:`Engine.check_request` refuses a request using any other one with
  :class:`RequestRejected` (never silently ignored).
"""

from __future__ import annotations

import abc
import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

EngineLabel = Literal["vllm-inproc", "vllm-server", "openai-remote", "simulated"]
FinishReason = Literal["stop", "length", "abort"]
EngineState = Literal["stopped", "starting", "ready", "failed"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatMessage(_Frozen):
    """One chat message; engines apply the model's chat template."""

    role: Literal["system", "user", "assistant"]
    content: str


ConstraintKind = Literal["json", "regex", "grammar"]
ConstraintCheck = Literal["enforced", "satisfied", "violated", "unchecked"]


class DecodingConstraint(_Frozen):
    """Structured output an engine enforces while decoding (an LLM stage's ``constrain { ... }``).

    ``spec`` is a JSON schema as JSON text (``json``), a regular expression the whole output
    matches (``regex``) or a GBNF grammar (``grammar``). A stage's ``sql`` constraint reaches
    engines as the grammar built from its database's schema; ``source`` says where a constraint
    came from (e.g. ``"sql:sales"``), for messages.
    """

    kind: ConstraintKind
    spec: str = Field(min_length=1)
    source: str | None = None

    @property
    def capability(self) -> str:
        """The capability an engine needs to honour it: ``"constraint:<kind>"``."""
        return f"constraint:{self.kind}"

    def vllm_fields(self) -> dict[str, Any]:
        """vLLM's structured-output fields for it (``StructuredOutputsParams`` in process, the
        ``structured_outputs`` body field of vLLM's OpenAI server): ``json``, ``regex`` or ``grammar``."""
        return {self.kind: json.loads(self.spec) if self.kind == "json" else self.spec}


class GenerationRequest(_Frozen):
    """One generation call.

    ``prompt`` is either raw text (sent as is, no chat template) or chat
    messages (rendered with the model's chat template). ``stop`` strings are
    excluded from the returned text.
    """

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    prompt: str | tuple[ChatMessage, ...]
    max_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    priority: int = Field(default=0, description="Lower is scheduled first.")
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    """OpenAI's ``response_format``: ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
    {"name", "schema", ...}}`` (``{"type": "text"}`` is normalised to None by callers)."""
    tools: tuple[dict[str, Any], ...] | None = None
    """OpenAI's ``tools`` (function definitions), with ``tool_choice`` as the client sent it."""
    tool_choice: str | dict[str, Any] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    """Return the sampled tokens' log-probabilities with this many alternatives each (None: none)."""
    constraint: DecodingConstraint | None = None
    """The stage's declared output constraint; with ``response_format`` too, :meth:`Engine.check_request` refuses it."""

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)

    def features(self) -> tuple[str, ...]:
        """The optional features this request uses (capability names, see :meth:`Engine.check_request`)."""
        used = (("response_format", self.response_format is not None), ("tools", bool(self.tools)),
                ("logprobs", self.logprobs is not None), ("seed", self.seed is not None))
        constraint = (self.constraint.capability,) if self.constraint is not None else ()
        return tuple(name for name, on in used if on) + constraint


class GenerationTiming(_Frozen):
    """Seconds, measured from the moment ``generate`` was called.

    ``queue_s``: until the engine first scheduled the request (None where the
    backend cannot tell); ``ttft_s``: until the first output token;
    ``total_s``: until the result. The engine's own clock, where it reports it (vLLM's
    per-request statistics), splits its part: ``prefill_s`` from scheduling to the first
    token, ``decode_s`` from the first token to the last (None where the backend cannot tell).
    """

    queue_s: float | None = None
    ttft_s: float | None = None
    total_s: float
    prefill_s: float | None = None
    decode_s: float | None = None


class GenerationResult(_Frozen):
    request_id: str
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: FinishReason
    timing: GenerationTiming
    engine: EngineLabel = Field(description="Label of the engine that produced it ('simulated' for the model).")
    cached_prompt_tokens: int | None = Field(default=None, description="Prompt tokens served from the prefix cache.")
    kv_received_tokens: int | None = Field(default=None, description=(
        "In a prefill/decode-disaggregated pool, the prompt tokens the decode engine did not compute (their KV "
        "came from the prefill engine, or was in its own prefix cache); None elsewhere."))
    tool_calls: tuple[dict[str, Any], ...] | None = None
    """Tool calls in OpenAI's format (``{"id", "type": "function", "function": {"name", "arguments"}}``)."""
    logprobs: tuple[dict[str, Any], ...] | None = None
    """Per output token, OpenAI's ``{"token", "logprob", "bytes", "top_logprobs"}`` (when asked for)."""
    constraint: ConstraintCheck | None = None
    """For a constrained request: ``enforced`` (the engine decoded under it), or, from the simulated
    engine, which does not decode, whether its text ``satisfied`` or ``violated`` it (``unchecked``
    where it has no checker for the kind). None for an unconstrained request."""


class TokenDelta(_Frozen):
    """Text generated for one request since its previous delta (see :meth:`Engine.stream`)."""

    request_id: str
    text: str
    tokens: int = Field(default=1, ge=0, description="Output tokens this delta carries.")
    logprobs: tuple[dict[str, Any], ...] | None = None
    """Its tokens' log-probabilities (OpenAI's ``logprobs.content`` entries) when the request asked
    for them and the backend streams them; the deltas' entries concatenate to the result's."""


TokenSink = Callable[[TokenDelta], None]
"""Receives a request's deltas as they are generated; called on the event loop, must not block."""

_token_sink: ContextVar[TokenSink | None] = ContextVar("cortex_token_sink", default=None)


def token_sink() -> TokenSink | None:
    """The sink of the calling context (a streaming engine reads it once, when ``generate`` is called)."""
    return _token_sink.get()


@contextmanager
def streaming_to(sink: TokenSink | None) -> Iterator[None]:
    """Within the block (and tasks created in it), streaming engines hand each delta to ``sink``."""
    reset = _token_sink.set(sink)
    try:
        yield
    finally:
        _token_sink.reset(reset)


class EngineMetrics(_Frozen):
    """A snapshot of an engine's load.

    ``kv_cache_usage`` is the used fraction of KV blocks in [0, 1];
    ``prefix_cache_hit_rate`` is hits/queried prompt tokens since start (None
    before any query or where unknown).
    """

    label: EngineLabel
    kv_cache_usage: float = 0.0
    running: int = 0
    waiting: int = 0
    prefix_cache_hit_rate: float | None = None
    preemptions: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    requests_finished: int = 0


class EngineHealth(_Frozen):
    state: EngineState
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ready"


class EngineSpec(_Frozen):
    """How to start one vLLM engine replica; the plan renderer fills it.

    ``model`` is a local HF folder (resolved by :mod:`runtime.models`).
    ``kv_cache_bytes`` fixes the KV space (vLLM ``kv_cache_memory_bytes``; on
    CPU it becomes ``VLLM_CPU_KVCACHE_SPACE``); None lets vLLM size it from
    ``gpu_memory_utilization``. ``cpu_threads_bind`` is
    ``VLLM_CPU_OMP_THREADS_BIND`` (e.g. "0", "0-1", "auto"); ignored on GPUs.
    ``extra_args`` are passed to vLLM's engine arguments verbatim
    (``--kebab-case`` flags for the server backend). ``kv_transfer`` is vLLM's
    ``KVTransferConfig`` as a dict (``kv_connector``, ``kv_role``, ...): set on
    the engines of a prefill/decode-disaggregated pool
    (:mod:`runtime.engines.disaggregated`), None elsewhere.
    """

    model: str
    served_model_name: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    kv_cache_bytes: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, gt=0)
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    cpu_threads_bind: str | None = None
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    seed: int = 0
    kv_transfer: dict[str, Any] | None = None
    extra_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


class EngineError(RuntimeError):
    """The backend failed (crashed, unreachable, answered with a server error): the replica is suspect."""


class RequestRejected(ValueError):
    """The engine cannot serve this request as asked; the engine itself is healthy.

    Deliberately not an :class:`EngineError`: the orchestrator keeps the replica in
    rotation and the caller gets a client error (HTTP 400) with this message.
    """


ESTIMATE_CHARS_PER_TOKEN = 8
"""Characters per token for :func:`estimate_min_tokens`: BPE tokenizers average 3-5 characters of
text per token (fewer for code and CJK), so dividing by 8 undercounts any realistic prompt."""


def estimate_min_tokens(text: str) -> int:
    """A token count that a real tokenizer will not go below on realistic text (a lower bound).

    For engines without a tokenizer at hand: a pre-dispatch check with it refuses only requests
    that cannot fit; whatever slips through is refused by the engine itself (an HTTP 400, which
    is classified as :class:`RequestRejected` too).
    """
    return -(-len(text) // ESTIMATE_CHARS_PER_TOKEN)


def check_context(prompt_tokens: int, max_tokens: int, max_context: int | None, *, estimated: bool = False) -> None:
    """Raise :class:`RequestRejected` unless ``prompt_tokens + max_tokens`` fits ``max_context``.

    ``max_context`` None means unknown (nothing is checked); ``estimated`` says the prompt count
    is :func:`estimate_min_tokens`' lower bound (the message says "at least").
    """
    if max_context is None or prompt_tokens + max_tokens <= max_context:
        return
    count = f"at least {prompt_tokens}" if estimated else str(prompt_tokens)
    if prompt_tokens >= max_context:
        raise RequestRejected(f"the prompt is {count} tokens long, more than the model's context of "
                              f"{max_context} tokens: shorten the input")
    raise RequestRejected(f"the prompt ({count} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
                          f"context of {max_context} tokens: lower max_tokens to at most "
                          f"{max_context - prompt_tokens} or shorten the input")


class EngineNotRunning(EngineError):
    """``generate`` was called before ``start()`` or after ``stop()``."""


class Engine(abc.ABC):
    """An asynchronous LLM engine. See the module docstring for the contract."""

    label: ClassVar[EngineLabel]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    """Optional features: "priority", "prefix_cache", "abort", "metrics", "stream" (deltas while
    generating), the request features "response_format", "tools", "logprobs", "seed", and the
    output constraints "constraint:json", "constraint:regex", "constraint:grammar"."""

    def require(self, features: "Iterable[str]", what: str) -> None:
        """Raise :class:`EngineError` unless every feature is a capability: for start-up checks
        (a stage's constraint), so a deployment fails before serving, not on its first call."""
        missing = sorted(set(features) - self.capabilities)
        if missing:
            raise EngineError(f"the {self.label} engine cannot honour {', '.join(missing)} ({what})")

    def check_request(self, request: GenerationRequest) -> None:
        """Raise :class:`RequestRejected` naming every feature of ``request`` this backend cannot honour."""
        if request.constraint is not None and request.response_format is not None:
            declared = request.constraint.source or request.constraint.kind
            raise RequestRejected(f"this stage declares an output constraint ({declared}); send the request "
                                  "without response_format")
        missing = [f for f in request.features() if f not in self.capabilities]
        if missing:
            raise RequestRejected(f"the {self.label} engine cannot honour {', '.join(missing)}; "
                                  "send the request without it or to a stage served by an engine that can")

    async def stream(self, request: GenerationRequest) -> AsyncIterator["TokenDelta | GenerationResult"]:
        """Deltas as they are generated, then the result (see the module docstring).

        Runs ``generate`` in a task with a sink on a queue: a backend that streams fills it while
        generating, any other yields its whole text once at the end. Closing the iterator before the
        result cancels the task, which aborts the request in the engine.
        """
        queue: asyncio.Queue[TokenDelta | None] = asyncio.Queue()
        with streaming_to(queue.put_nowait):
            task = asyncio.ensure_future(self.generate(request))  # the task copies the context: the sink
        task.add_done_callback(lambda _: queue.put_nowait(None))
        sent = 0
        try:
            while (delta := await queue.get()) is not None:
                sent += len(delta.text)
                yield delta
            result = task.result()
            if len(result.text) > sent:  # a backend that does not stream, or a tail it did not send
                yield TokenDelta(request_id=request.request_id, text=result.text[sent:],
                                 tokens=result.output_tokens if sent == 0 else 0,
                                 logprobs=result.logprobs if sent == 0 else None)
            yield result
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    @abc.abstractmethod
    async def abort(self, request_id: str) -> bool: ...

    @abc.abstractmethod
    def metrics(self) -> EngineMetrics: ...

    @abc.abstractmethod
    async def health(self) -> EngineHealth: ...

    async def __aenter__(self) -> "Engine":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def parse_cpu_list(spec: str | None) -> set[int] | None:
    """Cores named by a ``VLLM_CPU_OMP_THREADS_BIND`` value such as "0", "0-1" or "0,2-3".

    None for None, "auto", "all" or anything unparsable (then nothing is pinned).
    """
    if spec is None:
        return None
    cores: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            cores.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        return None
    return cores or None
