"""OpenAI's chat and legacy completion formats: request bodies in, completions and chunks out.

Request bodies are pydantic models that ignore fields this server does not know
(clients send ``user``, ``store``, ...) but refuse, with a 400 naming them, the
ones that would change the answer and cannot be honoured (:meth:`_Generation.unsupported`).
``n``, ``seed``, ``response_format``, ``tools``/``tool_choice`` and ``logprobs`` become
engine options (:meth:`_Generation.engine_options`); an engine that cannot honour one
refuses the call before it is queued (:meth:`runtime.engines.base.Engine.check_request`).

:class:`Completion` renders the results of one request's ``n`` calls, whole or as
server-sent events: the role chunk at once, then every piece of text as the engine
generates it, tagged with its choice's index (with ``logprobs``, each piece's chunk carries
its tokens' log-probabilities, as the engine streams them), the finish reason per choice, the usage
(with ``stream_options.include_usage``) and ``[DONE]``. SSE comments keep proxies from
timing out while the calls wait; a failure after the first byte is an ``error`` event.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from runtime.engines.base import GenerationResult, TokenDelta, TokenSink

NAME_MAX = 128
Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX)]
"""A workflow, stage or run name as a client gives it."""
MAX_CHOICES = 16
"""The most completions one request may ask for (``n`` x prompts)."""
STREAM_KEEPALIVE_S = 10.0
"""While a streamed call waits or runs, an SSE comment this often keeps proxies from timing out."""


class Body(BaseModel):
    """A request body: strict about numbers (no NaN or infinities: answers are strict JSON too)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Open(Body):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class ContentPart(_Open):
    type: str = "text"
    text: str = ""


class ChatMessageIn(_Open):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if part.type == "text")


class CortexMetadata(Body):
    """OpenAI's free-form ``metadata``; the ``cortex_*`` keys, when given, must be names."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    cortex_stage: Name | None = None
    cortex_run: Name | None = None
    cortex_workflow: Name | None = None


class JsonSchemaFormat(_Open):
    name: str = "response"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {\"name\": ..., \"schema\": {...}}")
        return self


class FunctionDef(_Open):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(Body):
    type: Literal["function"]
    function: FunctionDef


class _Generation(_Open):
    """What chat and legacy completions share."""

    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = Field(default=None, max_length=16)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    metadata: CortexMetadata | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @property
    def include_usage(self) -> bool:
        """OpenAI's ``stream_options.include_usage``: a last chunk with the token usage."""
        return bool((self.stream_options or {}).get("include_usage"))

    def stop_strings(self) -> tuple[str, ...] | None:
        return (self.stop,) if isinstance(self.stop, str) else (tuple(self.stop) if self.stop else None)

    def unsupported(self) -> str | None:
        """Why this request cannot be honoured as asked (None: it can)."""
        if self.presence_penalty or self.frequency_penalty or self.logit_bias:
            return "presence_penalty, frequency_penalty and logit_bias are not supported"
        return None

    def engine_options(self) -> dict[str, Any]:
        """Optional :class:`~runtime.engines.base.GenerationRequest` fields this request sets."""
        return {"seed": self.seed} if self.seed is not None else {}


class ChatCompletionIn(_Generation):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def unsupported(self) -> str | None:
        if self.tool_choice is not None and not self.tools:
            return "tool_choice needs tools"
        if self.top_logprobs is not None and not self.logprobs:
            return "top_logprobs needs logprobs: true"
        return super().unsupported()

    def engine_options(self) -> dict[str, Any]:
        options = super().engine_options()
        if self.response_format is not None and self.response_format.type != "text":
            options["response_format"] = self.response_format.model_dump(by_alias=True, exclude_none=True)
        if self.tools and self.tool_choice != "none":
            options["tools"] = tuple(t.model_dump(exclude_none=True) for t in self.tools)
            options["tool_choice"] = self.tool_choice
        if self.logprobs:
            options["logprobs"] = self.top_logprobs or 0
        return options


class CompletionIn(_Generation):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> str | None:
        if self.echo or self.suffix or (self.best_of or 1) > self.n:
            return "echo, suffix and best_of are not supported"
        if len(self.prompts()) * self.n > MAX_CHOICES:
            return f"at most {MAX_CHOICES} completions per request (prompts x n)"
        return super().unsupported()

    def engine_options(self) -> dict[str, Any]:
        options = super().engine_options()
        if self.logprobs is not None:
            options["logprobs"] = self.logprobs
        return options


def _finish_reason(result: GenerationResult) -> str:
    if result.tool_calls:
        return "tool_calls"
    return {"stop": "stop", "length": "length"}.get(result.finish_reason, "stop")


def _legacy_logprobs(entries: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Chat-style logprob entries in the legacy completions layout."""
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


class Completion:
    """One request's completions (``chat`` or legacy ``text``), whole or streamed."""

    def __init__(self, kind: Literal["chat", "text"], model: str, stage: str, run_id: str | None) -> None:
        self.kind = kind
        prefix, self.object = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
        self.chunk_object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.head = {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model}
        self.stage = stage
        self.run_id = run_id

    @staticmethod
    def usage(results: list[GenerationResult]) -> dict[str, int]:
        prompt = sum(r.prompt_tokens for r in results)
        output = sum(r.output_tokens for r in results)
        return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}

    def _cortex(self, results: list[GenerationResult]) -> dict[str, Any]:
        return {"engine": results[0].engine, "stage": self.stage, "run_id": self.run_id,
                "aborted": any(r.finish_reason == "abort" for r in results)}

    def _choice(self, index: int, result: GenerationResult) -> dict[str, Any]:
        if self.kind == "text":
            return {"index": index, "text": result.text, "finish_reason": _finish_reason(result),
                    "logprobs": _legacy_logprobs(result.logprobs) if result.logprobs is not None else None}
        message: dict[str, Any] = {"role": "assistant", "content": result.text or (None if result.tool_calls else "")}
        if result.tool_calls:
            message["tool_calls"] = list(result.tool_calls)
        return {"index": index, "message": message, "finish_reason": _finish_reason(result),
                "logprobs": {"content": list(result.logprobs)} if result.logprobs is not None else None}

    def whole(self, results: list[GenerationResult]) -> dict[str, Any]:
        return {**self.head, "object": self.object, "choices": [self._choice(i, r) for i, r in enumerate(results)],
                "usage": self.usage(results), "cortex": self._cortex(results)}

    # ------------------------------------------------------------------ streaming
    def _piece_template(self, include_usage: bool) -> tuple[str, str, str]:
        """A text piece's chunk around its index and text, which are all the hot path (one chunk per
        generated token) serialises: ``prefix + index + middle + json(text) + suffix``."""
        head = json.dumps({**self.head, "object": self.chunk_object})[:-1]
        usage = ', "usage": null' if include_usage else ""
        if self.kind == "chat":
            return f'data: {head}, "choices": [{{"index": ', ', "delta": {"content": ', \
                f'}}, "finish_reason": null}}]{usage}}}\n\n'
        return f'data: {head}, "choices": [{{"index": ', ', "text": ', \
            f', "finish_reason": null, "logprobs": null}}]{usage}}}\n\n'

    def _event(self, choices: list[dict[str, Any]], include_usage: bool, **fields: Any) -> bytes:
        body = {**self.head, "object": self.chunk_object, "choices": choices,
                **({"usage": None} if include_usage else {}), **fields}
        return f"data: {json.dumps(body)}\n\n".encode()

    def _delta(self, index: int, text: str | None = None, finish: str | None = None,
               logprobs: tuple[dict[str, Any], ...] | None = None, **delta: Any) -> dict[str, Any]:
        if self.kind == "text":
            return {"index": index, "text": text or "", "finish_reason": finish,
                    "logprobs": _legacy_logprobs(logprobs) if logprobs else None}
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "finish_reason": finish,
                **({"logprobs": {"content": list(logprobs)}} if logprobs else {})}

    async def stream(self, calls: list[asyncio.Future[GenerationResult]],
                     pieces: asyncio.Queue[Piece],
                     include_usage: bool) -> AsyncIterator[bytes]:
        """Server-sent events for ``calls`` (choice ``i`` is ``calls[i]``), whose token sinks and
        results arrive on ``pieces`` as ``(i, item)`` (see :func:`feed`). Closing the stream (the
        client went away) cancels every call still running, which aborts it in its engine."""
        results: list[GenerationResult | None] = [None] * len(calls)
        try:
            if self.kind == "chat":
                yield self._event([self._delta(i, "", role="assistant") for i in range(len(calls))], include_usage)
            prefix, middle, suffix = self._piece_template(include_usage)
            left = len(calls)
            while left:
                try:
                    index, item = pieces.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        async with asyncio.timeout(STREAM_KEEPALIVE_S):  # no task per wait, unlike wait_for
                            index, item = await pieces.get()
                    except TimeoutError:
                        yield b": waiting for the engine\n\n"
                        continue
                if isinstance(item, TokenDelta):
                    if item.logprobs:  # the slow path: only requests that asked for logprobs
                        yield self._event([self._delta(index, item.text, logprobs=item.logprobs)], include_usage)
                    elif item.text:
                        yield (prefix + str(index) + middle + json.dumps(item.text) + suffix).encode()
                    continue
                if isinstance(item, BaseException):
                    error = {"message": str(item) or type(item).__name__, "type": type(item).__name__}
                    yield f"data: {json.dumps({'error': error})}\n\n".encode()
                    yield b"data: [DONE]\n\n"
                    return
                results[index], left = item, left - 1
                if item.tool_calls and self.kind == "chat":
                    calls_delta = [{"index": k, **c} for k, c in enumerate(item.tool_calls)]
                    yield self._event([self._delta(index, tool_calls=calls_delta)], include_usage)
                yield self._event([self._delta(index, finish=_finish_reason(item))], include_usage,
                                  cortex=self._cortex([item]))
            if include_usage:
                yield self._event([], include_usage, usage=self.usage([r for r in results if r is not None]))
            yield b"data: [DONE]\n\n"
        finally:
            for call in calls:
                if not call.done():
                    call.cancel()


Piece = tuple[int, "TokenDelta | BaseException | GenerationResult"]
"""What a streamed request's calls put on its queue: the choice index and a delta, failure or result."""


CallDone = Callable[["asyncio.Future[GenerationResult]"], None]


def feed(index: int, pieces: asyncio.Queue[Piece]) -> tuple[TokenSink, CallDone]:
    """A token sink for choice ``index`` and a done-callback that puts the call's result or failure
    on ``pieces`` after its last delta (a cancelled call puts nothing: the stream is closing)."""

    def sink(delta: TokenDelta) -> None:
        pieces.put_nowait((index, delta))

    def done(call: asyncio.Future[GenerationResult]) -> None:
        if not call.cancelled():
            pieces.put_nowait((index, call.exception() or call.result()))

    return sink, done
