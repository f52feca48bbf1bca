"""Engine replicas placed as Ray actors, behind the same :class:`~runtime.engines.base.Engine` interface.

Multi-machine serving uses Ray (an existing distributed runtime), not a
home-made one: each replica's engine is built and run inside an asyncio Ray
actor (``_EngineActor``) placed by Ray's scheduler on any node of the cluster
with the requested resources (``num_cpus``, ``num_gpus``); the orchestrator
keeps talking to a local :class:`RayEngine` proxy, so pools, routing, hedging,
failover and metrics work unchanged.

* ``generate`` sends the request to the actor and awaits its result; cancelling
  the awaiting task aborts the request in the remote engine (and cancels the
  Ray task).
* A dead actor (its process or node lost) surfaces as
  :class:`~runtime.engines.base.EngineError`, which takes the replica out of
  rotation: the orchestrator retries the call on another replica.
* ``metrics()`` stays cheap and synchronous: a background task refreshes a
  snapshot from the actor every ``metrics_interval_s``.
* The proxy keeps the inner engine's label (``simulated`` stays ``simulated``) and, once
  started, reports the inner engine's capabilities among those a request can carry across the
  actor boundary (:data:`PROXIED`: request features and output constraints, not ``stream``); it
  refuses a request its engine cannot honour itself, so a refusal never looks like a dead replica.

Use :func:`ray_engine_factory` to wrap any engine factory; ``ray.init()`` must
have been called (``ray.init()`` alone starts a local cluster, as the tests do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from runtime.build.spec import LLMPoolSpec, ReplicaSpec, RuntimeSpec
from runtime.engines.base import (
    Engine, EngineError, EngineHealth, EngineLabel, EngineMetrics, EngineNotRunning, GenerationRequest,
    GenerationResult,
)
from runtime.orchestrator.engines import EngineFactory


class _EngineActor:
    """Hosts one engine in a Ray actor process (decorated with ``ray.remote`` on first use)."""

    def __init__(self, build: Callable[[], Engine]) -> None:
        self.engine = build()

    async def start(self) -> tuple[str, list[str]]:
        await self.engine.start()
        return self.engine.label, sorted(self.engine.capabilities)

    async def stop(self) -> None:
        await self.engine.stop()

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        result = await self.engine.generate(GenerationRequest.model_validate(request))
        return result.model_dump(mode="json")

    async def abort(self, request_id: str) -> bool:
        return await self.engine.abort(request_id)

    def metrics(self) -> dict[str, Any]:
        return self.engine.metrics().model_dump(mode="json")

    async def health(self) -> dict[str, Any]:
        return (await self.engine.health()).model_dump(mode="json")


_REMOTE: Any = None

PROXIED = frozenset({"priority", "prefix_cache", "abort", "metrics", "seed", "response_format", "tools", "logprobs",
                     "constraint:json", "constraint:regex", "constraint:grammar"})
"""What a request can ask through the proxy: everything the request carries across the actor boundary.
Not ``stream``: the actor returns whole results, so deltas do not cross it."""


def _actor_class() -> Any:
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = ray.remote(_EngineActor)
    return _REMOTE


class RayEngine(Engine):
    """A local proxy of an engine running in a Ray actor (see module docstring)."""

    label = "simulated"  # replaced per instance by the inner engine's label at start()
    capabilities = PROXIED
    """Before start, what the proxy can forward (it cannot know the inner engine yet); from start on,
    the inner engine's capabilities among those (see :data:`PROXIED`)."""

    def __init__(self, build: Callable[[], Engine], *, name: str, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 label: EngineLabel = "simulated", metrics_interval_s: float = 0.5) -> None:
        self.build = build
        self.name = name
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.label = label  # type: ignore[misc]
        self.metrics_interval_s = metrics_interval_s
        self.actor: Any = None
        self._snapshot = EngineMetrics(label=label)
        self._refresh: asyncio.Task[None] | None = None
        self._state = "stopped"
        self._detail = ""

    async def start(self) -> None:
        if self.actor is not None:
            return
        self._state = "starting"
        self.actor = _actor_class().options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                            max_concurrency=1024).remote(self.build)
        try:
            self.label, inner = await self.actor.start.remote()  # type: ignore[misc]
        except Exception as exc:
            self._state, self._detail = "failed", f"{type(exc).__name__}: {exc}"
            self._kill()
            raise EngineError(f"Ray replica {self.name} failed to start: {exc}") from exc
        self.capabilities = PROXIED & frozenset(inner)  # type: ignore[misc]
        self._state, self._detail = "ready", f"Ray actor for {self.name}"
        self._refresh = asyncio.create_task(self._refresh_metrics())

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
            self._refresh = None
        if self.actor is not None:
            try:
                await asyncio.wait_for(self.actor.stop.remote(), 30)
            except Exception:  # the actor may be gone already; it is killed below either way
                pass
            self._kill()
        self._state = "stopped"

    def _kill(self) -> None:
        import ray

        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)
            self.actor = None

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if self.actor is None or self._state != "ready":
            raise EngineNotRunning(f"Ray replica {self.name} is not running ({self._state})")
        from ray.exceptions import RayError

        self.check_request(request)  # here, not in the actor: a refusal must not look like a dead replica
        ref = self.actor.generate.remote(request.model_dump(mode="json"))
        try:
            return GenerationResult.model_validate(await ref)
        except asyncio.CancelledError:
            actor = self.actor
            if actor is not None:
                try:
                    await asyncio.shield(actor.abort.remote(request.request_id))
                except RayError:
                    pass
            raise
        except RayError as exc:
            self._state, self._detail = "failed", f"{type(exc).__name__}: {exc}"
            raise EngineError(f"Ray replica {self.name} failed: {type(exc).__name__}") from exc

    async def abort(self, request_id: str) -> bool:
        if self.actor is None:
            return False
        from ray.exceptions import RayError

        try:
            return bool(await self.actor.abort.remote(request_id))
        except RayError:
            return False

    def metrics(self) -> EngineMetrics:
        return self._snapshot

    async def health(self) -> EngineHealth:
        if self.actor is None or self._state != "ready":
            return EngineHealth(state=self._state, detail=self._detail)  # type: ignore[arg-type]
        from ray.exceptions import RayError

        try:
            return EngineHealth.model_validate(await asyncio.wait_for(self.actor.health.remote(), 10))
        except (RayError, TimeoutError) as exc:
            self._state, self._detail = "failed", f"{type(exc).__name__}: {exc}"
            return EngineHealth(state="failed", detail=self._detail)

    async def _refresh_metrics(self) -> None:
        from ray.exceptions import RayError

        while self.actor is not None:
            try:
                self._snapshot = EngineMetrics.model_validate(await self.actor.metrics.remote())
            except RayError:
                return
            await asyncio.sleep(self.metrics_interval_s)


def ray_engine_factory(inner: EngineFactory, *, num_cpus: float = 1.0, num_gpus_per_tp: float | None = None,
                       metrics_interval_s: float = 0.5) -> EngineFactory:
    """Wrap ``inner`` so each replica's engine is built and run in a Ray actor.

    ``num_gpus_per_tp``: GPUs the actor reserves per tensor-parallel rank (default: 1 on GPU
    devices, 0 on CPU replicas).
    """

    def build(spec: RuntimeSpec, pool: LLMPoolSpec, rep: ReplicaSpec) -> Engine:
        gpus = (num_gpus_per_tp if num_gpus_per_tp is not None else (0.0 if rep.device == "CPU" else 1.0)) * rep.tp
        return RayEngine(lambda: inner(spec, pool, rep), name=rep.replica_id, num_cpus=num_cpus, num_gpus=gpus,
                         metrics_interval_s=metrics_interval_s)

    return build
