"""Per-stage pools: replicas with call slots, a policy-keyed wait queue, admission, routing.

A :class:`Pool` owns the replicas of one stage (LLM engine replicas, or one
executor "replica" holding a SQL/tool stage's slots). A call first *acquires a
slot* (:meth:`Pool.acquire`), then runs on the granted replica, then
:meth:`Pool.release`-s it. Invariants:

* A replica runs at most ``slots`` calls at once (``max_num_seqs`` for an
  engine: the orchestrator, not the engine, holds the excess, so it can order
  it workflow-aware and route it late).
* A call waits only when every healthy own replica is full. Waiters form a
  heap keyed by ``Policy.priority`` (lower first, FIFO on ties); keys are
  recomputed every ``Policy.requeue_interval_s`` when the policy asks for it.
  A released slot goes straight to the best waiter (no dispatcher task: one
  future per waiting call, nothing per running call).
* The wait queue is bounded (``max_queue``): an admission-checked acquire on a
  full queue raises :class:`~runtime.orchestrator.errors.Overloaded` (retryable)
  instead of growing. Calls of runs already admitted are not refused: their
  number is bounded by the orchestrator's cap on runs in flight.
* Routing: among own replicas with a free slot the policy picks
  (``Policy.route``; prefix/KV affinity is in the views: ``resident_prefixes``,
  KV use, the replica's latency profile). When no own replica is idle and the
  policy borrows, idle replicas of other pools serving the same model (with
  ``borrow_spare``: any with a free slot and no queue), with KV use below the
  borrowing threshold, are offered too (``ReplicaView.borrowed``).
* Pools are resizable while serving (:mod:`runtime.orchestrator.scaling`):
  :meth:`Pool.add_replica` puts a started engine in rotation and hands it the
  waiters; :meth:`Pool.detach_replica` takes one out of rotation *draining*: it
  gets no new call, its calls in flight finish and release normally.
* A replica that fails is taken out of rotation (``on_replica_failed`` is told,
  so it can be probed and brought back with :meth:`Pool.restore_replica`, which
  hands its free slots to the waiters); when a pool has no healthy replica left,
  its waiters fail with :class:`NoHealthyReplica` at once (nothing hangs).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from planner.profiles import LatencyProfile
from runtime.engines.base import Engine
from runtime.orchestrator.errors import NoHealthyReplica, Overloaded
from runtime.policies.base import CallView, Policy, ReplicaView, Route, StageLoad, least_backlog_route

RESIDENT_PREFIXES = 64
"""Prefix keys remembered per replica (an LRU); a proxy for what its prefix cache holds."""

_VIEW_EXTRAS = frozenset(ReplicaView.__dataclass_fields__) & {"profile", "pending_decode_tokens",
                                                              "queued_prefill_tokens"}
"""Optional load details the policy interface accepts (filled when present, so older views still work)."""


class Replica:
    """One engine replica (or an executor's slot group) and its live load."""

    __slots__ = ("replica_id", "pool", "model", "device", "engine", "slots", "inflight", "healthy", "failure",
                 "kv_capacity_tokens", "resident", "speed", "served", "borrowed_served", "profile", "recoveries",
                 "draining")

    def __init__(self, replica_id: str, pool: str, slots: int, *, model: str | None = None, device: str = "CPU",
                 engine: Engine | None = None, kv_capacity_tokens: int = 0, speed: float = 1.0,
                 profile: LatencyProfile | None = None) -> None:
        self.replica_id = replica_id
        self.pool = pool
        self.model = model
        self.device = device
        self.engine = engine
        self.slots = slots
        self.inflight = 0
        self.healthy = True
        self.failure: str | None = None
        self.kv_capacity_tokens = kv_capacity_tokens
        self.resident: OrderedDict[str, None] = OrderedDict()
        self.speed = speed
        self.served = 0
        self.borrowed_served = 0
        self.profile = profile
        """The replica's latency model, for profile-aware routing (None: unknown)."""
        self.recoveries = 0
        """Times it was brought back into rotation after a failure."""
        self.draining = False
        """Detached from its pool (scale-in): takes no new call, finishes those it holds."""

    @property
    def free(self) -> bool:
        return self.healthy and not self.draining and self.inflight < self.slots

    def kv_usage(self) -> float:
        """Used fraction of the engine's KV blocks (0 for executors)."""
        return self.engine.metrics().kv_cache_usage if self.engine is not None else 0.0

    def remember_prefix(self, key: str | None) -> None:
        if key is None:
            return
        self.resident[key] = None
        self.resident.move_to_end(key)
        if len(self.resident) > RESIDENT_PREFIXES:
            self.resident.popitem(last=False)

    def view(self, *, queue_len: int, expected_s: float, borrowed: bool = False,
             call_tokens: tuple[int, int] = (0, 0)) -> ReplicaView:
        """The policy's view; ``call_tokens`` = (input, output) tokens of a typical call of the pool.

        Running calls are assumed half done (the orchestrator does not see token progress).
        """
        used = int(self.kv_usage() * self.kv_capacity_tokens) if self.engine is not None else 0
        extras = {"profile": self.profile, "pending_decode_tokens": self.inflight * call_tokens[1] // 2,
                  "queued_prefill_tokens": queue_len * call_tokens[0]}
        return ReplicaView(
            replica_id=self.replica_id, device=self.device, model=self.model,
            stages=frozenset({self.pool}), queue_len=queue_len, running=self.inflight, slots=self.slots,
            kv_used_tokens=used, kv_capacity_tokens=self.kv_capacity_tokens,
            resident_prefixes=frozenset(self.resident), speed=self.speed,
            backlog_s=(queue_len + self.inflight) * expected_s / max(self.slots, 1) / max(self.speed, 1e-9),
            borrowed=borrowed, **{k: v for k, v in extras.items() if k in _VIEW_EXTRAS},
        )


class _Waiter:
    __slots__ = ("future", "call", "cancelled")

    def __init__(self, future: asyncio.Future[Replica], call: CallView) -> None:
        self.future = future
        self.call = call
        self.cancelled = False


class Pool:
    """The slots, queue and routing of one stage's replicas (see module docstring)."""

    def __init__(self, name: str, kind: str, replicas: Sequence[Replica], *, policy: Policy, max_queue: int,
                 model: str | None = None, clock: Callable[[], float] = time.monotonic,
                 borrow: bool = True, borrow_max_kv_usage: float = 0.5) -> None:
        if not replicas:
            raise ValueError(f"pool {name!r} has no replica")
        self.name = name
        self.kind = kind
        self.model = model
        self.replicas = list(replicas)
        self.policy = policy
        self.max_queue = max_queue
        self.clock = clock
        self.borrow = borrow
        """The deployment allows borrowing (the policy's ``borrow_idle`` must also ask for it)."""
        self.borrow_max_kv_usage = borrow_max_kv_usage
        self.peers: list[Pool] = []
        """Other pools serving the same model: this pool may borrow their idle replicas."""
        self.expected_s = 0.0
        """Expected standalone service time of one call (for backlog estimates)."""
        self.call_tokens = (0, 0)
        """(input, output) tokens of a typical call (for profile-aware estimates)."""
        self._heap: list[tuple[tuple[float, ...], int, _Waiter]] = []
        self._seq = itertools.count()
        self._waiting = 0
        self._last_rekey = 0.0
        self.rejected = 0
        self.borrowed = 0
        self.on_replica_failed: Callable[[Pool, Replica], None] | None = None
        """Told of every replica taken out of rotation (the orchestrator's prober watches it)."""

    # ------------------------------------------------------------------ load
    @property
    def queued(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return sum(r.inflight for r in self.replicas)

    @property
    def slots(self) -> int:
        return sum(r.slots for r in self.replicas if r.healthy)

    @property
    def healthy(self) -> bool:
        return any(r.healthy for r in self.replicas)

    def load(self, models: tuple[str, ...] = ()) -> StageLoad:
        slots = max(self.slots, 1)
        return StageLoad(
            stage=self.name, queued=self._waiting, running=self.running,
            replicas=sum(1 for r in self.replicas if r.healthy),
            expected_wait_s=self._waiting * self.expected_s / slots, models=models or (
                (self.model,) if self.model else ()),
        )

    def full(self) -> bool:
        """True when a new admission-checked call would be refused."""
        return self._waiting >= self.max_queue

    # ------------------------------------------------------------------ acquire / release
    async def acquire(self, call: CallView, *, admission: bool = False) -> tuple[Replica, bool]:
        """A replica with a slot reserved for ``call``, and whether it was borrowed.

        ``admission``: refuse with :class:`Overloaded` when the wait queue is full.
        Cancelling the awaiting task withdraws the call (a slot granted meanwhile is released).
        """
        if not self.healthy:
            raise NoHealthyReplica(self._no_replica_message())
        if not self._waiting:
            got = self._pick(call)
            if got is not None:
                return got
        if admission and self._waiting >= self.max_queue:
            self.rejected += 1
            raise Overloaded(
                f"stage {self.name!r} is overloaded: {self._waiting} calls are waiting (limit {self.max_queue}); "
                "retry later", retry_after_s=max(self.load().expected_wait_s, 0.05), stage=self.name)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), call)
        call.enqueued_s = self.clock()
        call.now_s = call.enqueued_s
        heapq.heappush(self._heap, (self.policy.priority(call), next(self._seq), waiter))
        self._waiting += 1
        try:
            replica = await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self.release(waiter.future.result())
            elif not waiter.cancelled:
                waiter.cancelled = True
                self._waiting -= 1
            raise
        return replica, replica.pool != self.name

    def try_acquire(self, call: CallView, exclude: frozenset[str] = frozenset()) -> Replica | None:
        """A free own replica now (not in ``exclude``), or None; never waits (used for hedge candidates)."""
        free = [r for r in self.replicas if r.free and r.replica_id not in exclude]
        if not free or self._waiting:
            return None
        replica = self._route(call, free, ())
        replica.inflight += 1
        return replica

    def release(self, replica: Replica) -> None:
        """Return ``replica``'s slot; the owner pool's best waiter gets it."""
        replica.inflight -= 1
        owner = self if replica.pool == self.name else next((p for p in self.peers if p.name == replica.pool), None)
        if owner is not None:
            owner._grant(replica)

    def _grant(self, replica: Replica) -> None:
        if not replica.free or not self._waiting:
            return
        if self.policy.requeue_interval_s is not None:
            now = self.clock()
            if now - self._last_rekey >= self.policy.requeue_interval_s:
                self._rekey(now)
        while self._heap:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.cancelled:
                continue
            self._waiting -= 1
            waiter.cancelled = True  # no longer in the queue
            if waiter.future.done():
                # Its task was cancelled (the future with it) but has not run its handler yet: a slot
                # granted now would be lost with the task (set_result raises on a cancelled future).
                continue
            replica.inflight += 1
            replica.served += 1
            waiter.future.set_result(replica)
            return

    def _rekey(self, now: float) -> None:
        entries = []
        for _, seq, waiter in self._heap:
            if waiter.cancelled:
                continue
            waiter.call.now_s = now
            entries.append((self.policy.priority(waiter.call), seq, waiter))
        heapq.heapify(entries)
        self._heap = entries
        self._last_rekey = now

    # ------------------------------------------------------------------ routing
    def _pick(self, call: CallView) -> tuple[Replica, bool] | None:
        own = [r for r in self.replicas if r.free]
        borrowable: list[Replica] = []
        if self.borrow and self.policy.borrow_idle and self.peers and not any(r.inflight == 0 for r in own):
            spare = getattr(self.policy, "borrow_spare", False)  # free slot, not only idle
            borrowable = [r for p in self.peers if not p._waiting for r in p.replicas
                          if r.healthy and (r.free if spare else r.inflight == 0) and r.model == call.model
                          and r.kv_usage() <= self.borrow_max_kv_usage]
        if not own and not borrowable:
            return None
        replica = own[0] if len(own) == 1 and not borrowable else self._route(call, own, borrowable)
        replica.inflight += 1
        replica.served += 1
        borrowed = replica.pool != self.name
        if borrowed:
            replica.borrowed_served += 1
            self.borrowed += 1
        return replica, borrowed

    def _route(self, call: CallView, own: Sequence[Replica], borrowable: Sequence[Replica]) -> Replica:
        by_id = {r.replica_id: r for r in (*own, *borrowable)}
        views = [r.view(queue_len=self._waiting, expected_s=self.expected_s, call_tokens=self.call_tokens)
                 for r in own]
        views += [r.view(queue_len=0, expected_s=self.expected_s, borrowed=True, call_tokens=self.call_tokens)
                  for r in borrowable]
        route: Route | None = self.policy.route(call, views)
        if route is None or route.replica_id not in by_id:
            route = least_backlog_route(views)
        return by_id[route.replica_id]

    # ------------------------------------------------------------------ failures
    def fail_replica(self, replica: Replica, reason: str) -> None:
        """Take ``replica`` out of rotation; if none is left, fail every waiter (see module docstring)."""
        if not replica.healthy:
            return
        replica.healthy = False
        replica.failure = reason
        if self.on_replica_failed is not None:
            self.on_replica_failed(self, replica)
        if self.healthy:
            return
        error = NoHealthyReplica(self._no_replica_message())
        while self._heap:
            _, _, waiter = heapq.heappop(self._heap)
            if not waiter.cancelled and not waiter.future.done():
                waiter.cancelled = True
                self._waiting -= 1
                waiter.future.set_exception(error)

    def restore_replica(self, replica: Replica) -> None:
        """Put a failed ``replica`` back into rotation and hand its free slots to the best waiters."""
        if replica.healthy:
            return
        replica.healthy = True
        replica.failure = None
        replica.recoveries += 1
        self._hand_out(replica)

    # ------------------------------------------------------------------ resizing
    def add_replica(self, replica: Replica) -> None:
        """Put a started, warmed ``replica`` in rotation and hand its slots to the best waiters."""
        if any(r.replica_id == replica.replica_id for r in self.replicas):
            raise ValueError(f"pool {self.name!r} already has a replica {replica.replica_id!r}")
        self.replicas.append(replica)
        self._hand_out(replica)

    def detach_replica(self, replica_id: str) -> Replica:
        """Take a replica out of rotation, draining (see module docstring); the caller stops its engine
        once ``inflight`` is 0. Refused (ValueError) for the last replica in rotation: a pool never
        empties itself by scaling in."""
        replica = next((r for r in self.replicas if r.replica_id == replica_id), None)
        if replica is None:
            raise ValueError(f"pool {self.name!r} has no replica {replica_id!r}")
        if not any(r.healthy for r in self.replicas if r is not replica):
            raise ValueError(f"pool {self.name!r} would have no healthy replica left without {replica_id!r}")
        replica.draining = True
        self.replicas.remove(replica)
        return replica

    def _hand_out(self, replica: Replica) -> None:
        while replica.free and self._waiting:
            granted = replica.inflight
            self._grant(replica)
            if replica.inflight == granted:  # nobody left to take it
                return

    def _no_replica_message(self) -> str:
        reasons = "; ".join(f"{r.replica_id}: {r.failure}" for r in self.replicas if r.failure)
        return f"no healthy replica left in the pool of stage {self.name!r}" + (f" ({reasons})" if reasons else "")
