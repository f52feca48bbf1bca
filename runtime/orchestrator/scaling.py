"""Resizing a running orchestrator's LLM pools: add a replica, drain one out.

:class:`PoolScaler` works on the live :class:`~runtime.orchestrator.pools.Pool`
objects of an :class:`~runtime.orchestrator.orchestrator.Orchestrator`, for every
backend, through the orchestrator's own engine factory (simulated, vLLM
in-process or server, OpenAI-compatible endpoints, Ray actors when the factory
is Ray's):

* **scale out** (:meth:`PoolScaler.add_replica`): build the engine off the event
  loop, start it, wait until its health check answers ready, then
  :meth:`Pool.add_replica` puts it in rotation and hands it the waiting calls.
  An engine that fails to start or to become ready is stopped and the pool is
  left as it was (:class:`ScalingError`). Engines of one pool start
  concurrently (:meth:`PoolScaler.resize` starts all the replicas it adds at
  once, so reaching the size a load step needs takes one engine start, not one
  per replica); each enters rotation as soon as it is ready.
* **scale in** (:meth:`PoolScaler.remove_replica`): :meth:`Pool.detach_replica`
  stops routing to it at once (it is gone from the pool's rotation, views and
  metrics); its calls in flight finish and release normally; once none is left
  (or after ``drain_timeout_s``: the engine is then stopped and the executor's
  failover retries those calls on the remaining replicas) the engine stops. The
  last replica in rotation is never removed.

Changes to one pool's replicas are serialised (one lock per pool: choosing a new
replica's id, putting it in rotation, taking one out); engine start-ups are not
(an id chosen for an engine still starting is reserved); different pools scale
concurrently. The scaler keeps the *live* :class:`LLMPoolSpec` of every pool it
resized (its replica list as it is now) and tells the orchestrator
(:meth:`Orchestrator.adopt_pool_spec`), so a later deploy of a spec describing the
pool as it now is keeps its engines. Every action is recorded as a
:class:`ScaleEvent` (kept in ``events`` and passed to ``listeners``: logs,
metrics, SSE). A new replica is the pool's next unused ``inventory`` replica when one
is given (e.g. one bound to a free core), else a copy of its last replica: CPU
replicas copied share the cores of the replica they copy (core bindings are
assigned at build time, for the whole machine).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.build.spec import LLMPoolSpec, ReplicaSpec, RuntimeSpec
from runtime.orchestrator.engines import EngineSetupError, replica_profile
from runtime.orchestrator.metrics import PromText
from runtime.orchestrator.prewarm import warm, warm_up_requests
from runtime.orchestrator.pools import Pool, Replica

if TYPE_CHECKING:
    from runtime.orchestrator.orchestrator import Orchestrator

log = logging.getLogger("cortex.scaling")

DRAIN_TIMEOUT_S = 300.0
"""How long a removed replica may keep finishing its calls before its engine is stopped anyway."""
READY_TIMEOUT_S = 600.0
"""How long a new engine may take to start and answer ready (vLLM loads weights and compiles)."""
EVENTS_KEPT = 1000


class ScalingError(RuntimeError):
    """A pool could not be resized; the message says why; the pool is as it was."""


@dataclass(frozen=True)
class ScaleEvent:
    """One scaling action (or its failure), for logs, metrics and SSE."""

    t: float
    """Wall-clock time (seconds since the epoch)."""
    pool: str
    action: str
    """``scale_out``, ``scale_in``, ``scale_out_failed``, ``scale_in_forced``."""
    replica: str
    replicas: int
    """Replicas in rotation after the action."""
    reason: str = ""
    duration_s: float = 0.0
    """Engine start-to-ready time (scale out) or drain time (scale in)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PoolScaler:
    """Adds and removes replicas of a running orchestrator's LLM pools (see module docstring)."""

    def __init__(self, orchestrator: "Orchestrator", *, drain_timeout_s: float = DRAIN_TIMEOUT_S,
                 ready_timeout_s: float = READY_TIMEOUT_S, poll_s: float = 0.01,
                 inventory: Mapping[str, Sequence[ReplicaSpec]] | None = None) -> None:
        self.orchestrator = orchestrator
        self.inventory = dict(inventory or {})
        """Pool -> the replicas a scale-out may start, in order (before copying the last replica)."""
        self.drain_timeout_s = drain_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.poll_s = poll_s
        self.events: collections.deque[ScaleEvent] = collections.deque(maxlen=EVENTS_KEPT)
        self.listeners: list[Callable[[ScaleEvent], None]] = []
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        """(pool, action) -> how many times it happened (exported as metrics)."""
        self._live: dict[str, LLMPoolSpec] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._starting: dict[str, set[str]] = {}
        """Pool -> ids of the replicas whose engines are starting (reserved: not chosen again)."""
        self._draining: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lookup
    def pool(self, name: str) -> Pool:
        pool = self.orchestrator.pools_by_name.get(name)
        if pool is None or pool.kind != "llm":
            llm = [p.name for p in self.orchestrator.pools_by_name.values() if p.kind == "llm"]
            raise ScalingError(f"no LLM pool {name!r} (pools: {', '.join(llm) or 'none'})")
        return pool

    def owner_spec(self, pool: Pool) -> tuple[RuntimeSpec, LLMPoolSpec]:
        """The runtime spec of a current version served by ``pool``, and the pool's live spec."""
        for version in self.orchestrator.versions.values():
            for stage, p in version.pools.items():
                if p is pool:
                    lp = self._live.get(pool.name) or version.spec.pool_of_stage(stage)
                    assert isinstance(lp, LLMPoolSpec)
                    return version.spec, lp
        raise ScalingError(f"pool {pool.name!r} serves no current version (it is being retired)")

    def live_spec(self, name: str) -> LLMPoolSpec:
        """The pool's spec as it is now (its replicas in rotation)."""
        return self.owner_spec(self.pool(name))[1]

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # ------------------------------------------------------------------ scale out
    async def add_replica(self, name: str, rep: ReplicaSpec | None = None, *, reason: str = "") -> Replica:
        """Start one more replica of pool ``name`` (``rep``, else its next unused ``inventory`` replica, else
        a copy of its last replica with the next free id), wait until it is ready, put it in rotation;
        :class:`ScalingError` if it cannot start (its engine is stopped, the pool is as it was). Several may
        start at once: the id is reserved under the pool's lock, the engine starts outside it."""
        async with self._lock(name):
            pool = self.pool(name)
            spec, lp = self.owner_spec(pool)
            rep = rep or self._next_replica(pool, lp)
            starting = self._starting.setdefault(name, set())
            if rep.replica_id in starting or any(r.replica_id == rep.replica_id for r in pool.replicas):
                raise ScalingError(f"pool {name!r} already has a replica {rep.replica_id!r} (in rotation or starting)")
            starting.add(rep.replica_id)
        try:
            return await self._start_and_admit(name, pool, spec, lp, rep, reason)
        finally:
            starting.discard(rep.replica_id)

    async def _start_and_admit(self, name: str, pool: Pool, spec: RuntimeSpec, lp: LLMPoolSpec, rep: ReplicaSpec,
                               reason: str) -> Replica:
        started = time.monotonic()
        engine = None
        try:
            engine = await asyncio.to_thread(self.orchestrator.build_engine, spec, lp, rep, pool.name)
            async with asyncio.timeout(self.ready_timeout_s):
                await engine.start()
                health = await engine.health()
            if not health.ok:
                raise ScalingError(f"engine answered {health.state}: {health.detail}")
            # The plan's prewarm decisions apply to a new replica too: its prefixes before its first call.
            await warm(engine, warm_up_requests(spec.program.workflow(spec.workflow), lp.prewarm), rep.replica_id)
        except (Exception, asyncio.CancelledError) as exc:
            if engine is not None:
                await asyncio.gather(engine.stop(), return_exceptions=True)
            why = "timed out waiting for it to become ready" if isinstance(exc, TimeoutError) else str(exc)
            self._record(pool, "scale_out_failed", rep.replica_id, reason=f"{reason}; {why}" if reason else why,
                         duration_s=time.monotonic() - started)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ScalingError(f"replica {rep.replica_id} of pool {name!r} did not start: {why}") from exc
        try:
            profile = replica_profile(rep)
        except EngineSetupError:  # no latency profile for it: routed without one, as at start
            profile = None
        replica = Replica(rep.replica_id, pool.name, rep.engine.max_num_seqs or 16, model=lp.model,
                          device=rep.device, engine=engine, kv_capacity_tokens=rep.kv_capacity_tokens,
                          profile=profile)
        try:
            async with self._lock(name):
                # The live spec as it is now: other replicas may have entered or left while this one started.
                _, live = self.owner_spec(self.pool(name))
                pool.add_replica(replica)
                self.adopt(pool, live.model_copy(update={"replicas": (*live.replicas, rep)}))
        except (Exception, asyncio.CancelledError) as exc:  # the pool was retired meanwhile: nothing to join
            await asyncio.gather(engine.stop(), return_exceptions=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ScalingError(f"replica {rep.replica_id} of pool {name!r} started but could not join: {exc}") \
                from exc
        self._record(pool, "scale_out", rep.replica_id, reason=reason, duration_s=time.monotonic() - started)
        return replica

    def _next_replica(self, pool: Pool, lp: LLMPoolSpec) -> ReplicaSpec:
        taken = ({r.replica_id for r in lp.replicas} | {r.replica_id for r in pool.replicas}
                 | self._starting.get(pool.name, set()))
        spare = [r for r in self.inventory.get(pool.name, ()) if r.replica_id not in taken]
        if spare:
            return spare[0]
        n = next(i for i in range(len(taken) + 1) if f"{lp.name}-{i}" not in taken)
        return lp.replicas[-1].model_copy(update={"replica_id": f"{lp.name}-{n}"})

    # ------------------------------------------------------------------ scale in
    async def remove_replica(self, name: str, replica_id: str | None = None, *, reason: str = "",
                             wait: bool = True) -> str:
        """Take a replica of pool ``name`` out of rotation (``replica_id``, else the one with the fewest calls
        in flight, the newest on ties), let its calls finish, stop its engine; the replica id.

        ``wait=False`` returns once it is out of rotation (the drain and the stop continue in the
        background; :meth:`stop` waits for them)."""
        async with self._lock(name):
            pool = self.pool(name)
            _, lp = self.owner_spec(pool)
            if replica_id is None:
                if len(pool.replicas) <= 1:
                    raise ScalingError(f"pool {name!r} has one replica: it cannot scale in")
                order = {r.replica_id: i for i, r in enumerate(pool.replicas)}
                # An unhealthy replica first (it serves nothing), then the least busy, the newest on ties.
                replica_id = min(pool.replicas, key=lambda r: (r.healthy, r.inflight, -order[r.replica_id])).replica_id
            try:
                replica = pool.detach_replica(replica_id)
            except ValueError as exc:
                raise ScalingError(str(exc)) from None
            self.adopt(pool, lp.model_copy(update={
                "replicas": tuple(r for r in lp.replicas if r.replica_id != replica_id) or lp.replicas[:1]}))
        task = asyncio.get_running_loop().create_task(self._drain(pool, replica, reason), name=f"drain:{replica_id}")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        if wait:
            await asyncio.shield(task)
        return replica_id

    async def _drain(self, pool: Pool, replica: Replica, reason: str) -> None:
        started = time.monotonic()
        forced = True  # unless its calls all finish: cancelled (stop) or timed out, they fail over
        try:
            deadline = started + self.drain_timeout_s
            while replica.inflight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(self.poll_s)
            forced = replica.inflight > 0
        finally:
            await self.orchestrator.prober.forget_replica(pool, replica)
            if replica.engine is not None:
                try:
                    await replica.engine.stop()
                except Exception:  # the replica is out of rotation either way
                    log.exception("stopping engine of replica %s failed", replica.replica_id)
            self._record(pool, "scale_in_forced" if forced else "scale_in", replica.replica_id, reason=reason,
                         duration_s=time.monotonic() - started)

    # ------------------------------------------------------------------ resize
    async def resize(self, name: str, replicas: int, *, target: LLMPoolSpec | None = None, reason: str = "") -> int:
        """Bring pool ``name`` to ``replicas`` replicas in rotation (the replicas ``target`` names first, when
        given); the number of replicas added (negative: removed). The replicas missing start at once; when
        some fail the others still join and :class:`ScalingError` names the first failure (the pool is
        consistent: what started is in rotation and in its live spec). Replicas are removed one at a time."""
        if replicas < 1:
            raise ScalingError(f"pool {name!r}: at least one replica is needed (asked for {replicas})")
        pool = self.pool(name)
        start = len(pool.replicas)
        wanted = [r for r in (target.replicas if target else ()) if r.replica_id not in
                  {x.replica_id for x in pool.replicas}]
        missing = replicas - len(pool.replicas)
        if missing > 0:
            picks = [wanted.pop(0) if wanted else None for _ in range(missing)]
            results = await asyncio.gather(*(self.add_replica(name, rep, reason=reason) for rep in picks),
                                           return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0] if isinstance(failed[0], ScalingError) else ScalingError(str(failed[0]))
        keep = {r.replica_id for r in target.replicas} if target else set()
        while len(pool.replicas) > replicas:
            extra = [r for r in pool.replicas if target and r.replica_id not in keep]
            await self.remove_replica(name, min(extra, key=lambda r: r.inflight).replica_id if extra else None,
                                      reason=reason)
        return len(pool.replicas) - start

    # ------------------------------------------------------------------ bookkeeping
    def adopt(self, pool: Pool, lp: LLMPoolSpec) -> None:
        """Record ``lp`` as ``pool``'s live spec (its replicas as they are now), here and in the orchestrator."""
        self._live[pool.name] = lp
        self.orchestrator.adopt_pool_spec(pool, lp)

    def _record(self, pool: Pool, action: str, replica: str, *, reason: str, duration_s: float) -> None:
        event = ScaleEvent(time.time(), pool.name, action, replica, len(pool.replicas), reason, round(duration_s, 6))
        self.events.append(event)
        self.counts[(pool.name, action)] += 1
        (log.warning if action.endswith(("failed", "forced")) else log.info)(
            "pool %s: %s %s -> %d replicas (%.3f s)%s", pool.name, action, replica, event.replicas, duration_s,
            f": {reason}" if reason else "")
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break scaling
                log.exception("scale listener %r failed", listener)

    async def stop(self, *, wait_s: float | None = None) -> None:
        """Wait for the replicas being drained (their engines stop); after ``wait_s`` (None: no limit)
        stop the ones still draining at once (shutdown: the orchestrator is ending every run anyway)."""
        tasks = list(self._draining)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=wait_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def replica_count(self, name: str) -> int:
        return len(self.pool(name).replicas)

    def metrics_text(self) -> str:
        """Prometheus text: replicas in rotation per LLM pool, scaling actions per pool and action."""
        out = PromText()
        out.family("cortex_pool_replicas", "gauge", "Replicas in rotation (resized live by scaling).")
        for pool in self.orchestrator.pools_by_name.values():
            if pool.kind == "llm":
                out.sample("cortex_pool_replicas", len(pool.replicas), pool=pool.name)
        out.family("cortex_pool_scaling_actions_total", "counter", "Replicas added, drained out, or failing to start.")
        for (pool_name, action), n in sorted(self.counts.items()):
            out.sample("cortex_pool_scaling_actions_total", n, pool=pool_name, action=action)
        return out.text()


__all__ = ["PoolScaler", "ScaleEvent", "ScalingError"]
