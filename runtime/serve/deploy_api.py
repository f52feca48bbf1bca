"""HTTP routes for the live deployment: inspect it, apply a plan to it, watch scaling.

Installed on an app made by :func:`~runtime.serve.app.create_app` (so every request
passes its :class:`~runtime.serve.guard.RequestGuard`: Host/Origin checks, the token,
JSON-only bodies with size and time limits):

* ``GET /v1/deployment[?workflow=W]`` -> the running deployment
  (:meth:`Deployment.describe`: pools and replicas as they are now, knobs, the live
  plan, ``revision``);
* ``POST /v1/deployment/apply`` ``{"plan": {...}, "workflow"?, "dry_run"?, "revision"?}``
  -> with ``dry_run`` the steps it would take (JSON); else the apply, streamed as
  JSON lines (``application/x-ndjson``): ``{"step": {...}}`` at every step's status
  change, then ``{"result": {"status": "applied" | "failed", "steps": [...],
  "deployment": {...}}}``. Refused before anything changes: 400 (not a plan, or one
  that does not fit the deployed program), 403 (the server has no API token: changing
  the deployment always needs one), 409 (``revision`` is not the current one: the
  diff the client showed is stale);
* ``GET /metrics`` gains ``cortex_pool_replicas`` and ``cortex_pool_scaling_actions_total``;
* ``GET /v1/scaling/events`` -> Server-Sent Events: the last scaling actions, then
  live ones (``scale_out``, ``scale_in``, ``scale_out_failed``, the monitor's
  ``decision``s).
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field, ValidationError

from planner.plan import Plan
from runtime.orchestrator import Orchestrator
from runtime.orchestrator.autoscaler import Autoscaler, AutoscalerConfig
from runtime.orchestrator.deployment import ApplyError, Deployment, Step
from runtime.orchestrator.scaling import PoolScaler
from runtime.serve.app import create_app
from runtime.serve.errors import error_response, invalid_request
from runtime.serve.json_body import InvalidBody, parse_json
from runtime.serve.openai_api import NAME_MAX, Body, Name

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RECENT_EVENTS = 100
"""Scaling events a new ``/v1/scaling/events`` subscriber gets first."""


class ApplyIn(Body):
    plan: dict[str, Any]
    workflow: Name | None = None
    dry_run: bool = False
    revision: str | None = Field(default=None, max_length=64)
    """Apply only if the deployment is still at this revision (the one the client's diff was made against)."""


def install_deployment_routes(app: FastAPI, deployment: Deployment,
                              listeners: Sequence[list[Callable[[Any], None]]] = ()) -> None:
    """Add the routes above to ``app``. Scaling events reach ``/v1/scaling/events`` through the
    scaler's listeners and each list in ``listeners`` (e.g. the monitor's), which get a callback
    taking any event with an ``as_dict()``."""
    subscribers: list[asyncio.Queue[dict[str, Any]]] = []
    recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_EVENTS)
    applying: set[asyncio.Task[None]] = set()

    def publish(event: Any) -> None:
        data = event.as_dict()
        recent.append(data)
        for queue in subscribers:
            queue.put_nowait(data)

    for source in (deployment.scaler.listeners, *listeners):
        source.append(publish)
    app.state.extra_metrics.append(deployment.scaler.metrics_text)

    @app.get("/v1/deployment")
    async def get_deployment(workflow: str | None = None) -> Response:
        if workflow is not None and (len(workflow) > NAME_MAX or not workflow.isprintable()):
            return error_response(400, f"the workflow name must be at most {NAME_MAX} printable characters")
        try:
            return JSONResponse(deployment.describe(workflow))
        except ApplyError as exc:
            return error_response(400, str(exc))

    @app.post("/v1/deployment/apply")
    async def apply(request: Request) -> Response:
        if app.state.guard.token is None:
            return error_response(403, "changing the deployment needs the server's API token: restart "
                                       "`cortex serve` with --token (or CORTEX_API_TOKEN)")
        try:
            req = ApplyIn.model_validate(parse_json(await request.body()))
            plan = Plan.model_validate(req.plan)
            target = deployment.target(plan, req.workflow)
        except InvalidBody as exc:
            return error_response(400, str(exc))
        except ValidationError as exc:
            return invalid_request(exc)
        except ApplyError as exc:
            return error_response(400, f"the plan does not fit the deployment: {exc}")
        revision = deployment.revision(target.workflow)
        if req.revision is not None and req.revision != revision:
            return error_response(409, f"the deployment changed since the diff was made (revision {revision}, "
                                       f"expected {req.revision}); look again", True)
        if req.dry_run:
            return JSONResponse({"revision": revision, "steps": [s.as_dict() for s in deployment.steps(target)]})
        lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def run() -> None:
            def progress(step: Step) -> None:
                lines.put_nowait({"step": step.as_dict()})

            try:
                steps = await deployment.apply(target, expect_revision=req.revision, on_step=progress)
                ok = all(s.status == "done" for s in steps)
                lines.put_nowait({"result": {"status": "applied" if ok else "failed",
                                             "steps": [s.as_dict() for s in steps],
                                             "deployment": deployment.describe(target.workflow)}})
            except ApplyError as exc:  # raced with another apply: nothing changed
                lines.put_nowait({"result": {"status": "refused", "error": str(exc), "steps": []}})
            finally:
                lines.put_nowait(None)

        # The apply runs to its end even if the client goes away: stopping half way is what it avoids.
        task = asyncio.get_running_loop().create_task(run(), name="deployment-apply")
        applying.add(task)
        task.add_done_callback(applying.discard)

        async def stream() -> AsyncIterator[bytes]:
            while (line := await lines.get()) is not None:
                yield (json.dumps(line, default=str) + "\n").encode()

        return StreamingResponse(stream(), media_type="application/x-ndjson", headers=SSE_HEADERS)

    @app.get("/v1/scaling/events")
    async def scaling_events() -> Response:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        backlog = list(recent)
        subscribers.append(queue)

        async def stream() -> AsyncIterator[bytes]:
            try:
                for event in backlog:
                    yield _sse(event)
                while True:
                    yield _sse(await queue.get())
            finally:
                subscribers.remove(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


SHUTDOWN_DRAIN_S = 5.0
"""At shutdown, replicas still draining get this long before their engines stop (as runs get)."""


def scalable_app(orchestrator: Orchestrator, *, token: str | None = None,
                 autoscale: AutoscalerConfig | None = None) -> FastAPI:
    """:func:`create_app` with the routes above, a :class:`PoolScaler`, and with ``autoscale`` the
    monitor (started and stopped with the app; its decisions on ``/v1/scaling/events`` and ``/metrics``)."""
    scaler = PoolScaler(orchestrator)
    monitor = Autoscaler(orchestrator, scaler, autoscale) if autoscale is not None else None

    async def startup() -> None:
        if monitor is not None:
            await monitor.start()

    async def shutdown() -> None:
        if monitor is not None:
            await monitor.stop()
        await scaler.stop(wait_s=SHUTDOWN_DRAIN_S)

    app = create_app(orchestrator, token=token, on_startup=startup, on_shutdown=shutdown)
    install_deployment_routes(app, Deployment(orchestrator, scaler), [monitor.listeners] if monitor else [])
    if monitor is not None:
        app.state.extra_metrics.append(monitor.metrics_text)
    return app


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event.get('action', 'scaling')}\ndata: {json.dumps(event, default=str)}\n\n".encode()


__all__ = ["install_deployment_routes", "scalable_app"]
