"""The HTTP API (FastAPI): runs, their events, OpenAI-compatible chat for external agents, metrics, health.

Routes:

* ``POST /v1/runs`` ``{"inputs": {...}, "workflow"?, "deadline_s"?, "wait"?}`` -> 202 ``{"run_id", "status"}``
  (200 with the finished run when ``wait`` is true);
* ``GET /v1/runs/{id}`` -> the run's status and, once finished, its result (:class:`RunInfo`);
* ``GET /v1/runs/{id}/events[?tokens=true]`` -> Server-Sent Events: every event of the run, live, until
  it ends; with ``tokens``, also a ``token`` event per piece of text its LLM calls generate;
* ``DELETE /v1/runs/{id}`` -> cancel it (its calls are aborted in the engines);
* ``POST /v1/chat/completions``, ``POST /v1/completions`` (legacy) -> OpenAI-compatible completions
  for external agents (LangGraph, plain OpenAI clients; formats in :mod:`runtime.serve.openai_api`).
  The workflow stage is named by the ``X-Cortex-Stage`` header or ``metadata.cortex_stage``, else by
  the ``model`` (a stage, ``workflow/stage`` or a model name: :mod:`runtime.serve.catalog`), the run
  by ``X-Cortex-Run`` / ``metadata.cortex_run``, the workflow by ``X-Cortex-Workflow`` /
  ``metadata.cortex_workflow``; each of the ``n`` calls is then queued and prioritised as that stage
  of that run, and with ``stream`` its text is sent as the engine generates it; a client that
  disconnects, streaming or not, has its calls cancelled (aborted in the engines);
* ``GET /v1/models``, ``GET /v1/models/{id}`` -> what ``model`` may name, in OpenAI's schema;
* ``GET /v1/workflows`` -> deployed workflows and versions;
* ``GET /metrics`` -> Prometheus text format; ``GET /healthz`` (the process answers);
  ``GET /readyz`` (every pool has a healthy replica; 503 otherwise).

Errors are JSON ``{"error": message, "retryable": bool}`` (on the OpenAI routes in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}, "retryable"}``: :func:`~runtime.serve.errors.openai_error`):
400 bad input (including a request the engine refuses: a prompt plus ``max_tokens`` longer than the
model's context, or an option its engine cannot honour), 401 missing token, 403 foreign
``Host``/``Origin``, 404 unknown run or route, 408 body too slow, 413 body too large, 415 not JSON,
429 overloaded (with ``Retry-After``), 503 no healthy replica. Every request first passes
:class:`~runtime.serve.guard.RequestGuard` (host, token, content type, body size and deadline);
bodies are parsed by :func:`~runtime.serve.json_body.parse_json` (UTF-8, strict JSON,
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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from runtime.engines.base import ChatMessage, GenerationResult, RequestRejected
from runtime.orchestrator import BadRequest, NoHealthyReplica, Orchestrator, Overloaded, UnknownRun
from runtime.serve.catalog import UnknownTarget, model_objects, resolve
from runtime.serve.errors import error_response as _error
from runtime.serve.errors import invalid_request, openai_error
from runtime.serve.guard import BODY_TIMEOUT_S, MAX_BODY_BYTES, GuardSettings, RequestGuard
from runtime.serve.json_body import InvalidBody, parse_json
from runtime.serve.openai_api import (NAME_MAX, Body, ChatCompletionIn, Completion, CompletionIn, CortexMetadata,
                                      Name, Piece, feed)
from runtime.serve.server import check_token

log = logging.getLogger("cortex.serve")

class StartRun(Body):
    inputs: dict[str, Any]
    workflow: Name | None = None
    deadline_s: float | None = Field(default=None, gt=0)
    """Capped at the server's run timeout (the orchestrator's)."""
    wait: bool = False


def _overloaded(exc: Overloaded) -> JSONResponse:
    return _error(429, str(exc), True, {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Server-sent events: never cached, never buffered by a proxy."""


def _refusal(exc: BaseException) -> JSONResponse | None:
    """The HTTP answer for a run or call the orchestrator refused (None: not a refusal)."""
    if isinstance(exc, Overloaded):
        return _overloaded(exc)
    if isinstance(exc, (BadRequest, RequestRejected)):
        return _error(400, str(exc))
    if isinstance(exc, NoHealthyReplica):
        return _error(503, str(exc), True)
    return None


async def _settled(calls: list[asyncio.Future[GenerationResult]]) -> JSONResponse | None:
    """After one turn of the loop, the answer to the first refused call (the others are cancelled).

    Validation and admission run before a call's first suspension, so a refused call has failed by
    then and gets a plain HTTP error, even when streaming."""
    await asyncio.sleep(0)
    for call in calls:
        failure = call.exception() if call.done() and not call.cancelled() else None
        if failure is not None:
            for other in calls:
                other.cancel()
            refused = _refusal(failure)
            if refused is None:
                raise failure
            return refused
    return None


async def _unless_client_leaves(request: Request, calls: list[asyncio.Future[GenerationResult]]
                                ) -> list[GenerationResult] | None:
    """The calls' results, or None (every call cancelled) if the client disconnects first.

    A streamed answer notices a departed client when a write fails; a whole answer is written only
    at the end, so without this a client that sent a costly request (16 choices of thousands of
    tokens) and left would keep the engines busy for nobody. The request body has been read, so
    the next ASGI message is the disconnect."""
    async def departure() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    gathered = asyncio.gather(*calls)
    watcher = asyncio.ensure_future(departure())
    try:
        await asyncio.wait((gathered, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not gathered.done():
        gathered.cancel()  # cancels every call
        for call in calls:
            call.cancel()
        return None
    return list(gathered.result())


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
    created = int(time.time())
    app.state.orchestrator = orchestrator
    app.state.extra_metrics = []
    """More Prometheus text for ``/metrics`` (callables; e.g. the scaler's: runtime.serve.deploy_api)."""
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
            return invalid_request(exc)

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
    async def run_events(run_id: str, request: Request) -> Response:
        tokens = request.query_params.get("tokens", "").lower() in ("1", "true", "yes")
        try:
            orchestrator.get(run_id)
        except UnknownRun as exc:
            return _error(404, str(exc))

        async def stream() -> AsyncIterator[bytes]:
            async for event in orchestrator.events(run_id, tokens=tokens):
                yield f"event: {event.kind}\ndata: {json.dumps(event.as_dict(), default=str)}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers=SSE_HEADERS)

    async def complete(request: Request, req: ChatCompletionIn | CompletionIn) -> Response:
        """Chat and legacy completions: name the stage, start the ``n`` calls (per prompt), answer."""
        why = req.unsupported()
        if why is not None:
            return _error(400, why)
        meta = req.metadata or CortexMetadata()
        stage = request.headers.get("x-cortex-stage") or meta.cortex_stage
        run_id = request.headers.get("x-cortex-run") or meta.cortex_run
        workflow = request.headers.get("x-cortex-workflow") or meta.cortex_workflow
        for what, value in (("stage", stage), ("run", run_id), ("workflow", workflow)):
            if value is not None and (len(value) > NAME_MAX or not value.isprintable()):
                return _error(400, f"the {what} name must be at most {NAME_MAX} printable characters")
        if not stage:
            if not req.model:
                return _error(400, "name the model (a stage, workflow/stage or model: GET /v1/models lists them) "
                                   "or the workflow stage: header X-Cortex-Stage or metadata.cortex_stage")
            try:
                target = resolve(orchestrator, req.model, workflow)
            except UnknownTarget as exc:
                return _error(400, str(exc))
            stage, workflow = target.stage, target.workflow
        if isinstance(req, ChatCompletionIn):
            prompts: list[Any] = [tuple(ChatMessage(role=m.role, content=m.text()) for m in req.messages)]
            max_tokens = req.max_completion_tokens or req.max_tokens
        else:
            prompts, max_tokens = req.prompts(), req.max_tokens
        options = req.engine_options()
        pieces: asyncio.Queue[Piece] = asyncio.Queue()
        calls: list[asyncio.Future[GenerationResult]] = []
        for index, prompt in enumerate(p for p in prompts for _ in range(req.n)):
            sink, done = feed(index, pieces) if req.stream else (None, None)
            seeded = {**options, "seed": options["seed"] + index} if "seed" in options else options
            call = asyncio.ensure_future(orchestrator.chat(
                prompt, stage=str(stage), workflow=workflow, run_id=str(run_id) if run_id else None,
                max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=req.stop_strings(),
                options=seeded, on_token=sink))
            if done is not None:
                call.add_done_callback(done)
            calls.append(call)
        refused = await _settled(calls)
        if refused is not None:
            return refused
        completion = Completion("chat" if isinstance(req, ChatCompletionIn) else "text", req.model or str(stage),
                                str(stage), run_id)
        if req.stream:
            return StreamingResponse(completion.stream(calls, pieces, req.include_usage),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        try:
            results = await _unless_client_leaves(request, calls)
        except Exception as exc:
            for call in calls:
                call.cancel()
            refused = _refusal(exc)
            if refused is None:
                raise
            return refused
        if results is None:  # nobody to answer: the calls are cancelled (aborted in their engines)
            return _error(400, "the client closed the connection before the answer")
        return JSONResponse(completion.whole(results))

    async def completion_route(request: Request, model: type[ChatCompletionIn] | type[CompletionIn]) -> Response:
        req = await body_of(request, model)
        if isinstance(req, JSONResponse):
            return req
        assert isinstance(req, (ChatCompletionIn, CompletionIn))
        return await complete(request, req)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return openai_error(await completion_route(request, ChatCompletionIn))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return openai_error(await completion_route(request, CompletionIn))

    @app.get("/v1/models")
    async def list_models() -> Response:
        return JSONResponse({"object": "list", "data": model_objects(orchestrator, created)})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Response:
        found = next((m for m in model_objects(orchestrator, created) if m["id"] == model_id), None)
        if found is None:
            return openai_error(_error(404, f"no model {model_id[:NAME_MAX]!r} (GET /v1/models lists them)"))
        return JSONResponse(found)

    @app.get("/v1/workflows")
    async def workflows() -> Response:
        return JSONResponse({name: {"version": v.number, "inputs": list(v.workflow.inputs),
                                    "stages": [s.name for s in v.workflow.stages],
                                    "slo_latency_s": v.workflow.slo.latency_s if v.workflow.slo else None}
                             for name, v in orchestrator.versions.items()})

    @app.get("/metrics")
    async def metrics() -> Response:
        text = orchestrator.metrics_text() + "".join(extra() for extra in app.state.extra_metrics)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

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
