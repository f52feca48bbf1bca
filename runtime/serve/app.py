"""The HTTP API (FastAPI): runs, their events, OpenAI-compatible chat for external agents, metrics, health.

Routes:

* ``POST /v1/runs`` ``{"inputs": {...}, "workflow"?, "deadline_s"?, "wait"?}`` -> 202 ``{"run_id", "status"}``
  (200 with the finished run when ``wait`` is true);
* ``GET /v1/runs/{id}`` -> the run's status and, once finished, its result (:class:`RunInfo`);
* ``GET /v1/runs/{id}/events`` -> Server-Sent Events: every event of the run, live, until it ends;
* ``DELETE /v1/runs/{id}`` -> cancel it (its calls are aborted in the engines);
* ``POST /v1/chat/completions`` -> OpenAI-compatible chat completion for external agents
  (LangGraph, plain OpenAI clients). The workflow stage is named by the ``X-Cortex-Stage`` header or
  ``metadata.cortex_stage`` (or a ``model`` equal to a stage name), the run by ``X-Cortex-Run`` /
  ``metadata.cortex_run``, the workflow by ``X-Cortex-Workflow`` / ``metadata.cortex_workflow``;
  the call is then queued and prioritised as that stage of that run;
* ``GET /v1/workflows`` -> deployed workflows and versions;
* ``GET /metrics`` -> Prometheus text format; ``GET /healthz`` (the process answers);
  ``GET /readyz`` (every pool has a healthy replica; 503 otherwise).

Errors are JSON ``{"error": message, "retryable": bool}``: 400 bad input (including a request the
engine refuses: a prompt plus ``max_tokens`` longer than the model's context), 401 missing token,
403 foreign ``Host``/``Origin``, 404 unknown run or route, 408 body too slow, 413 body too large,
415 not JSON, 429 overloaded (with ``Retry-After``), 503 no healthy replica. Every request first
passes :class:`~runtime.serve.guard.RequestGuard` (host, token, content type, body size and
deadline); bodies are parsed by :func:`~runtime.serve.json_body.parse_json` (UTF-8, strict JSON,
bounded depth). With an API token configured every route except the health checks needs
``Authorization: Bearer <token>``; ``/readyz`` names failed replicas but says why only to a caller
with the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.exceptions import HTTPException

from runtime.engines.base import ChatMessage, GenerationResult, RequestRejected
from runtime.orchestrator import BadRequest, NoHealthyReplica, Orchestrator, Overloaded, UnknownRun
from runtime.serve.errors import error_response as _error
from runtime.serve.guard import BODY_TIMEOUT_S, MAX_BODY_BYTES, GuardSettings, RequestGuard
from runtime.serve.json_body import InvalidBody, parse_json
from runtime.serve.server import check_token

log = logging.getLogger("cortex.serve")

NAME_MAX = 128
Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX)]
"""A workflow, stage or run name as a client gives it."""


class _Body(BaseModel):
    """A request body: strict about numbers (no NaN or infinities: answers are strict JSON too)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StartRun(_Body):
    inputs: dict[str, Any]
    workflow: Name | None = None
    deadline_s: float | None = Field(default=None, gt=0)
    """Capped at the server's run timeout (the orchestrator's)."""
    wait: bool = False


class ContentPart(_Body):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: str = "text"
    text: str = ""


class ChatMessageIn(_Body):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if part.type == "text")


class CortexMetadata(_Body):
    """OpenAI's free-form ``metadata``; the ``cortex_*`` keys, when given, must be names."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    cortex_stage: Name | None = None
    cortex_run: Name | None = None
    cortex_workflow: Name | None = None


class ChatCompletionIn(_Body):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = Field(default=None, max_length=16)
    stream: bool = False
    """Answer as ``chat.completion.chunk`` events (the whole text in one chunk once done)."""
    stream_options: dict[str, Any] | None = None
    metadata: CortexMetadata | None = None

    @property
    def include_usage(self) -> bool:
        """OpenAI's ``stream_options.include_usage``: a last chunk with the token usage."""
        return bool((self.stream_options or {}).get("include_usage"))


def _overloaded(exc: Overloaded) -> JSONResponse:
    return _error(429, str(exc), True, {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Server-sent events: never cached, never buffered by a proxy."""

STREAM_KEEPALIVE_S = 10.0
"""While a streamed call waits or runs, an SSE comment this often keeps proxies from timing out."""


def _refusal(exc: BaseException) -> JSONResponse | None:
    """The HTTP answer for a run or call the orchestrator refused (None: not a refusal)."""
    if isinstance(exc, Overloaded):
        return _overloaded(exc)
    if isinstance(exc, (BadRequest, RequestRejected)):
        return _error(400, str(exc))
    if isinstance(exc, NoHealthyReplica):
        return _error(503, str(exc), True)
    return None


class _Completion:
    """One chat completion in OpenAI's formats, whole or as ``chat.completion.chunk`` events."""

    def __init__(self, model: str, stage: str, run_id: str | None) -> None:
        self.head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model}
        self.stage = stage
        self.run_id = run_id

    def _parts(self, result: GenerationResult) -> tuple[str, dict[str, int], dict[str, Any]]:
        finish = {"stop": "stop", "length": "length"}.get(result.finish_reason, "stop")
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.output_tokens,
                 "total_tokens": result.prompt_tokens + result.output_tokens}
        cortex = {"engine": result.engine, "stage": self.stage, "run_id": self.run_id,
                  "aborted": result.finish_reason == "abort"}
        return finish, usage, cortex

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        finish, usage, cortex = self._parts(result)
        return {**self.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": finish}],
                "usage": usage, "cortex": cortex}

    async def stream(self, call: asyncio.Future[GenerationResult], include_usage: bool) -> AsyncIterator[bytes]:
        """The role chunk at once (headers and a first byte go out before the engine is done), SSE
        comments every :data:`STREAM_KEEPALIVE_S` while waiting, then the whole text in one chunk
        (Cortex schedules a call as one unit: no earlier tokens to send), the finish reason, the
        usage when asked for (other chunks then carry ``"usage": null``, as OpenAI's do), and
        ``[DONE]``. A failure after the first byte is an ``error`` event. A client that goes away
        cancels the call."""
        extra = {"usage": None} if include_usage else {}

        def event(choices: list[dict[str, Any]], **fields: Any) -> bytes:
            body = {**self.head, "object": "chat.completion.chunk", "choices": choices, **extra, **fields}
            return f"data: {json.dumps(body)}\n\n".encode()

        try:
            yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            while True:
                try:
                    result = await asyncio.wait_for(asyncio.shield(call), STREAM_KEEPALIVE_S)
                    break
                except asyncio.TimeoutError:
                    yield b": waiting for the engine\n\n"
                except Exception as exc:
                    message = str(exc) if _refusal(exc) is not None else f"{type(exc).__name__}: {exc}"
                    yield f"data: {json.dumps({'error': {'message': message, 'type': type(exc).__name__}})}\n\n".encode()
                    yield b"data: [DONE]\n\n"
                    return
            finish, usage, cortex = self._parts(result)
            yield event([{"index": 0, "delta": {"content": result.text}, "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "finish_reason": finish}], cortex=cortex)
            if include_usage:
                yield event([], usage=usage)
            yield b"data: [DONE]\n\n"
        finally:
            if not call.done():
                call.cancel()


def create_app(orchestrator: Orchestrator, *, token: str | None = None, manage_lifecycle: bool = True,
               on_startup: Callable[[], Awaitable[None]] | None = None,
               on_shutdown: Callable[[], Awaitable[None]] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S) -> FastAPI:
    """The API over ``orchestrator`` (started and stopped with the app when ``manage_lifecycle``).

    ``token`` (at least 16 characters: ValueError otherwise) guards every route but the health
    checks. ``app.state.guard`` holds the request guard's settings (:mod:`runtime.serve.guard`);
    :func:`~runtime.serve.server.serve` sets the host names it answers to.
    """
    check_token(token or None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await orchestrator.start()
        if on_startup is not None:
            await on_startup()
        try:
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown()
            if manage_lifecycle:
                await orchestrator.stop(drain_s=5.0)

    app = FastAPI(title="Cortex runtime", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.orchestrator = orchestrator
    guard = app.state.guard = GuardSettings(token=token or None, max_body_bytes=max_body_bytes,
                                            body_timeout_s=body_timeout_s)
    app.add_middleware(RequestGuard, settings=guard)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:  # unknown route, wrong method
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:  # a bug: logged, never shown
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error (logged on the server)")

    async def body_of(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
        try:
            return model.model_validate(parse_json(await request.body()))
        except InvalidBody as exc:
            return _error(400, str(exc))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(400, f"invalid request: {where}: {first['msg']}")

    @app.post("/v1/runs")
    async def start_run(request: Request) -> Response:
        req = await body_of(request, StartRun)
        if isinstance(req, JSONResponse):
            return req
        assert isinstance(req, StartRun)
        try:
            run = await orchestrator.submit(req.inputs, workflow=req.workflow, deadline_s=req.deadline_s)
        except (Overloaded, BadRequest, NoHealthyReplica) as exc:
            refused = _refusal(exc)
            assert refused is not None  # every one of these is a refusal
            return refused
        if req.wait:
            await run.finished.wait()
            return JSONResponse(run.info.model_dump(mode="json"))
        return JSONResponse({"run_id": run.run_id, "status": run.info.status}, status_code=202,
                            headers={"Location": f"/v1/runs/{run.run_id}"})

    @app.get("/v1/runs/{run_id}")
    async def get_run(run_id: str) -> Response:
        try:
            return JSONResponse(orchestrator.status(run_id).model_dump(mode="json"))
        except UnknownRun as exc:
            return _error(404, str(exc))

    @app.delete("/v1/runs/{run_id}")
    async def cancel_run(run_id: str) -> Response:
        try:
            cancelled = await orchestrator.cancel(run_id)
            return JSONResponse({"run_id": run_id, "cancelled": cancelled,
                                 "status": orchestrator.status(run_id).status})
        except UnknownRun as exc:
            return _error(404, str(exc))

    @app.get("/v1/runs/{run_id}/events")
    async def run_events(run_id: str) -> Response:
        try:
            orchestrator.get(run_id)
        except UnknownRun as exc:
            return _error(404, str(exc))

        async def stream() -> AsyncIterator[bytes]:
            async for event in orchestrator.events(run_id):
                yield f"event: {event.kind}\ndata: {json.dumps(event.as_dict(), default=str)}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers=SSE_HEADERS)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = await body_of(request, ChatCompletionIn)
        if isinstance(req, JSONResponse):
            return req
        assert isinstance(req, ChatCompletionIn)
        meta = req.metadata or CortexMetadata()
        stage = request.headers.get("x-cortex-stage") or meta.cortex_stage or req.model
        run_id = request.headers.get("x-cortex-run") or meta.cortex_run
        workflow = request.headers.get("x-cortex-workflow") or meta.cortex_workflow
        if not stage:
            return _error(400, "name the workflow stage: header X-Cortex-Stage or metadata.cortex_stage")
        for what, value in (("stage", stage), ("run", run_id), ("workflow", workflow)):
            if value is not None and (len(value) > NAME_MAX or not value.isprintable()):
                return _error(400, f"the {what} name must be at most {NAME_MAX} printable characters")
        stop = (req.stop,) if isinstance(req.stop, str) else (tuple(req.stop) if req.stop else None)
        messages = tuple(ChatMessage(role=m.role, content=m.text()) for m in req.messages)
        call = asyncio.ensure_future(orchestrator.chat(
            messages, stage=str(stage), workflow=workflow, run_id=str(run_id) if run_id else None,
            max_tokens=req.max_completion_tokens or req.max_tokens, temperature=req.temperature,
            top_p=req.top_p, stop=stop))
        # Validation and admission run before the call's first suspension: after one turn of the
        # loop a refused call has failed already, and gets a plain HTTP error even when streaming.
        await asyncio.sleep(0)
        failure = call.exception() if call.done() else None
        if failure is not None:
            refused = _refusal(failure)
            if refused is None:
                raise failure
            return refused
        completion = _Completion(req.model or str(stage), str(stage), run_id)
        if req.stream:
            return StreamingResponse(completion.stream(call, req.include_usage), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        try:
            result = await call
        except Exception as exc:
            refused = _refusal(exc)
            if refused is None:
                raise
            return refused
        return JSONResponse(completion.whole(result))

    @app.get("/v1/workflows")
    async def workflows() -> Response:
        return JSONResponse({name: {"version": v.number, "inputs": list(v.workflow.inputs),
                                    "stages": [s.name for s in v.workflow.stages],
                                    "slo_latency_s": v.workflow.slo.latency_s if v.workflow.slo else None}
                             for name, v in orchestrator.versions.items()})

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(orchestrator.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        if orchestrator.ready():
            return JSONResponse({"status": "ready"})
        # Failure texts can hold engine URLs and internals: only a caller with the token reads them.
        detailed = guard.authorized({b"authorization": request.headers.get("authorization", "").encode()})
        down = [f"{p.name}: {r.replica_id}" + (f" {r.failure}" if detailed else "")
                for p in orchestrator.pools_by_name.values() for r in p.replicas if not r.healthy]
        return JSONResponse({"status": "not ready", "unhealthy": down}, status_code=503)

    return app


__all__ = ["create_app"]
