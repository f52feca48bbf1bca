"""The scheduling-policy interface shared by the simulator and the real orchestrator.

A *policy* is pure decision logic. It never awaits, never sleeps, never reads a
clock and never touches engine or simulator internals: an *executor* (the
discrete-event simulator in ``runtime.simulator`` or the asyncio orchestrator in
``runtime``) describes the situation with the plain views below and acts on the
answer. The same policy object therefore behaves identically in simulation and
in production, which is what makes the simulator's verdicts transferable.

Vocabulary
----------
*run*      one workflow request walking its call graph.
*call*     one execution of one stage (LLM, SQL or tool) within a run.
*replica*  one engine (an LLM engine on ``tp`` devices, or a CPU executor slot
           group) that serves calls.
*pool*     the replicas eligible for a stage: the stage's own isolated replicas
           and/or generic replicas (``ReplicaView.stages is None``).

Decision points and their contract
----------------------------------
The executor asks, in this order, for every call it creates:

1. :meth:`Policy.admit` -- once per run, when the run arrives (``call`` describes
   its entry call). ``Admission(admit=False, reason=..., retry_after_s=...)``
   rejects the whole run with a *retryable* reason; the executor counts it as
   rejected, never silently drops it.
2. :meth:`Policy.adapt` -- malleability, before the call is queued: optionally a
   lighter model (one of ``StageLoad.models``), and a hedge degree. The executor
   ignores a model with no replica.
3. :meth:`Policy.route` -- dispatch: given the eligible replicas it returns a
   :class:`Route` (a replica, and for disaggregated pools a decode replica), or
   ``None`` to let the executor fall back to its default (least backlog).
4. :meth:`Policy.priority` -- the call's key in its replica's waiting queue.
   **Lower keys run first**; the executor breaks ties by arrival order (FIFO).
   Keys are computed when the call is queued; when ``requeue_interval_s`` is set
   the executor recomputes waiting calls' keys (with fresh ``now_s`` and attained
   service) at least that often, which is how aging / anti-starvation works.
5. :meth:`Policy.prune_retry` -- when a run is about to take a loop edge (a
   retry), the policy may cut the loop short: the executor then follows the
   loop's ``on_exhausted`` target, as if the budget were spent.

``borrow_idle`` asks the executor to add idle replicas of other stages' pools
(serving the same model) to the candidates, flagged ``borrowed``; ``borrow_spare``
widens that to replicas of other pools with a free batch slot and an empty queue
(spare capacity of a continuously batching engine). Executors that do not
implement ``borrow_spare`` treat it as ``borrow_idle``.

``preemptive`` tells the engine model whether a waiting call may evict a running
one when the batch or KV cache is full, as :meth:`Policy.preempts` decides (by
default: a strictly lower key; the evicted call is re-queued and recomputes its
prefill, as vLLM does).

Views are read-only for policies. Executors may reuse and update a view object
in place between calls (the simulator does, for speed), so a policy must not
keep references to views across calls.

Times are seconds on the executor's clock (simulated or monotonic); a deadline
is absolute on the same clock. Service estimates are *standalone* times (idle
engine, batch of one) from ``planner.profiles``; ``remaining_critical_path_s``
is the expected standalone time of the longest remaining path from this call
(inclusive) to ``done``, with branches weighted by their probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from planner.profiles import LatencyProfile

try:
    import cython  # Cython's shadow module when interpreted: ``compiled`` is False
    _COMPILED = cython.compiled
except ImportError:  # no Cython, so no compiled build
    _COMPILED = False

PriorityKey = tuple[float, ...]
"""A queue key: compared lexicographically, lower runs first."""

Role = Literal["mixed", "prefill", "decode"]
"""What a replica does: both phases (the usual engine), or one side of a
prefill/decode-disaggregated pair."""


@dataclass  # not slots=True: the compiled build makes it a C struct (base.pxd), which Cython's
class CallView:  # dataclass does not combine with ``slots``; the fields are the same either way
    """A pending call, as a policy sees it."""

    run_id: int
    workflow: str
    stage: str
    kind: Literal["llm", "sql", "tool"]
    model: str | None
    """The model the call will run (LLM calls), else None."""
    run_arrival_s: float
    now_s: float
    deadline_s: float | None
    """Absolute SLO deadline of the run (arrival + SLO latency), None without SLO."""
    stage_expected_s: float
    """Expected standalone service time of this call."""
    remaining_critical_path_s: float
    """Expected standalone time from this call (inclusive) to the end of the run."""
    remaining_std_s: float
    """Standard deviation of the remaining time (branch and service variance)."""
    attained_service_s: float
    """Sum of service times of the run's finished calls (Autellix PLAS)."""
    critical_path_service_s: float
    """Longest chain of finished service times leading to this call (Autellix ATLAS)."""
    prefix_key: str | None
    """Identifies the shared prompt prefix (resident-cache affinity), None if none."""
    input_tokens: int
    output_tokens: int
    attempt: int = 0
    """How many loop iterations this run has spent so far (0 = first try)."""
    enqueued_s: float = 0.0
    """When the call entered its queue (the executor sets it)."""
    last_replica_id: str | None = None
    """Replica that ran the run's previous call of the same model (program locality)."""
    prefix_tokens: int = 0
    """Tokens of ``input_tokens`` that are the stage's shared prefix (cacheable per replica)."""


@dataclass  # not slots=True: a C struct in the compiled build (base.pxd), as CallView
class ReplicaView:
    """One candidate engine or executor, as a policy sees it."""

    replica_id: str
    device: str
    """Device kind: 'A100', 'H100', 'H200', 'CPU', ..."""
    model: str | None
    """Model served (None for SQL/tool executors)."""
    stages: frozenset[str] | None
    """Stages this replica is dedicated to; None = generic shared pool."""
    role: Role = "mixed"
    queue_len: int = 0
    running: int = 0
    """Calls in the running batch (or busy executor slots)."""
    slots: int = 1
    """Maximum concurrent calls (max batch size, or executor slots)."""
    kv_used_tokens: int = 0
    kv_capacity_tokens: int = 0
    resident_prefixes: frozenset[str] = frozenset()
    speed: float = 1.0
    """Relative speed: reference standalone time / this replica's (higher = faster)."""
    backlog_s: float = 0.0
    """Expected seconds of work queued plus remaining in the running batch."""
    kv_bytes_per_token: int = 0
    link_bytes_per_s: float = 0.0
    """KV transfer bandwidth to peers (disaggregation); 0 = not connected."""
    borrowed: bool = False
    """True when offered to a stage it is not dedicated to (idle-engine borrowing)."""
    profile: "LatencyProfile | None" = None
    """The replica's latency model (``planner.profiles``), when the executor knows it; lets a
    policy estimate completion times (:mod:`runtime.policies.placement`). None = unknown."""
    pending_decode_tokens: int = 0
    """Output tokens the running sequences still have to generate."""
    queued_prefill_tokens: int = 0
    """Prompt tokens of the waiting calls."""
    busy_until_s: float = 0.0
    """When the iteration in progress ends, if it cannot be cut short (a prefill iteration): a new
    call joins the batch no earlier. Absolute, on the executor's clock; 0 when unknown or when the
    engine can take a call at its next decode step. The simulator knows it; the real orchestrator
    leaves it 0 (vLLM does not report the iteration in progress)."""
    estimate_cache: object | None = field(default=None, init=False, repr=False, compare=False)
    """Scratch space of :func:`runtime.policies.placement.estimate` (its call-independent terms for
    this view). Policies ignore it; an executor that updates a view in place resets it to None
    (``dataclasses.replace`` starts a copy without it)."""
    profile_cache: object | None = field(default=None, init=False, repr=False, compare=False)
    """Scratch space of :mod:`runtime.policies.placement`: ``profile``'s constants, read once
    (checked against ``profile`` by identity, so a replaced profile is read again)."""

    @property
    def kv_free_tokens(self) -> int:
        return max(self.kv_capacity_tokens - self.kv_used_tokens, 0)

    @property
    def idle(self) -> bool:
        return self.queue_len == 0 and self.running == 0


@dataclass(frozen=True)  # not slots=True: a C struct in the compiled build (base.pxd), as Route
class StageLoad:
    """Load on the pool of one stage, for admission and malleability."""

    stage: str
    queued: int
    running: int
    replicas: int
    expected_wait_s: float
    """Estimated queueing delay for a new call of this stage."""
    models: tuple[str, ...] = ()
    """Models with at least one eligible replica for this stage (lighter options included)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Admission verdict for a run. A rejection is retryable and says why."""

    admit: bool
    reason: str | None = None
    retry_after_s: float | None = None

    @classmethod
    def accept(cls) -> "Admission":
        # One shared verdict (it is frozen): a policy admits every arrival, and building a frozen
        # dataclass costs an object.__setattr__ per field.
        return _ACCEPT if cls is Admission else cls(True)

    @classmethod
    def reject(cls, reason: str, retry_after_s: float | None = None) -> "Admission":
        return cls(False, reason, retry_after_s)


@dataclass(frozen=True)  # not slots=True: a C struct in the compiled build (base.pxd), as Route
class Adaptation:
    """Malleability decision for one call: model swap and hedge degree."""

    model: str | None = None
    """Run on this model instead of the stage's preferred one; None = unchanged."""
    hedge: int = 1
    """Copies to launch; the first to finish wins and the others are cancelled."""


_ACCEPT = Admission(True)
KEEP = Adaptation()


@dataclass(frozen=True)  # not slots=True: a C struct in the compiled build (base.pxd), as CallView
class Route:
    """Where a call runs: one replica, plus a decode replica when disaggregated."""

    replica_id: str
    decode_replica_id: str | None = None


_ROUTES: dict[str, Route] = {}
""":func:`route_to`'s routes by replica id. A route is a frozen value, so the one made for a replica
serves every call routed there (a dictionary look-up costs less than making and freeing one)."""


def route_to(replica_id: str) -> Route:
    """``Route(replica_id)`` (every colocated dispatch of a routing policy): an equal value, shared
    (:data:`_ROUTES`; cleared when it holds 4096, so that ever new ids cannot grow it without bound)."""
    r = _ROUTES.get(replica_id)
    if r is None:
        if len(_ROUTES) >= 4096:
            _ROUTES.clear()
        r = _ROUTES[replica_id] = _new_route(replica_id)
    return r


def _new_route(replica_id: str) -> Route:
    """``Route(replica_id)``. Compiled, a bare C struct with its field stored, instead of the frozen
    dataclass constructor's argument parsing; frozen means read-only for Python code, and C code
    sets the field here, before anyone sees it."""
    if _COMPILED:
        r = Route.__new__(Route)
        r.replica_id = replica_id
        r.decode_replica_id = None
        return r
    return Route(replica_id)


@dataclass
class Policy:
    """Base policy: FCFS order, least-backlog dispatch, admit everything, no adaptation.

    Subclasses override the decision methods they change. All methods must be
    deterministic functions of their arguments and the policy's configuration.
    """

    name: str = "fcfs"
    preemptive: bool = False
    requeue_interval_s: float | None = None
    borrow_idle: bool = False
    """When True the executor also offers idle replicas dedicated to *other* stages
    (same model), flagged ``ReplicaView.borrowed``, to :meth:`route`."""
    borrow_spare: bool = False
    """With ``borrow_idle``: also offer other pools' replicas that have a free batch slot and
    no queue (not only fully idle ones)."""
    description: str = field(default="First come, first served; least-backlog dispatch.")

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        """Whether a new run (whose entry call is ``call``) is accepted."""
        return Admission.accept()

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        """Malleability for ``call`` under ``load`` on its stage."""
        return KEEP

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        """Pick replicas among ``candidates`` (non-empty, all eligible for the call)."""
        return least_backlog_route(candidates)

    def priority(self, call: CallView) -> PriorityKey:
        """Queue key of ``call``; lower runs first."""
        return (call.enqueued_s,)

    def prune_retry(self, call: CallView, loop: str, iteration: int, load: StageLoad) -> bool:
        """True to skip the retry about to start (``call`` is the retry's call)."""
        return False

    def preempts(self, waiting: PriorityKey, running: PriorityKey) -> bool:
        """With ``preemptive``: whether a waiting call keyed ``waiting`` may evict a running call
        keyed ``running`` when the batch or KV cache is full. Default: a strictly lower key."""
        return waiting < running

    def decisions(self) -> "Decisions":
        """The object an executor asks for this policy's per-call decisions (:class:`Decisions`):
        by default one that calls :meth:`adapt`, :meth:`route` and :meth:`priority`. A policy
        may return a subclass that makes the same decisions faster (:mod:`runtime.policies.cortex`)."""
        return Decisions(self)


class Decisions:
    """A policy's decisions (:meth:`Policy.admit`, :meth:`Policy.adapt`, :meth:`Policy.route`,
    :meth:`Policy.priority`, :meth:`Policy.prune_retry`) as the simulator asks them on every arrival,
    dispatch and retry.

    Contract: every method returns what the policy's method of the same name returns for the same
    arguments; :meth:`admit_without_load` and :meth:`adapt_without_load` return :meth:`Policy.admit`'s
    and :meth:`Policy.adapt`'s answer when no load can change it (else None, and the executor
    measures the loads and asks :meth:`admit` or :meth:`adapt`; :meth:`prune_without_load` likewise
    for :meth:`Policy.prune_retry`), and :meth:`admit_without_queue` the
    answer under any load without a standing queue, so an executor may skip measuring loads that
    the decision would not read. This base class calls the policy's methods (any policy, any override)
    and never answers without a load. Why an object: the compiled build makes it a C class
    (base.pxd) whose methods the simulator calls as C calls, and a subclass whose methods call the
    policy's typed module functions directly skips a Python call per decision."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def admit_without_load(self, call: CallView) -> Admission | None:
        """:meth:`Policy.admit`'s answer for ``call`` if no stage load can change it, else None."""
        return None

    def admit_without_queue(self, call: CallView) -> Admission | None:
        """:meth:`Policy.admit`'s answer for ``call`` under every load in which no stage has a
        *standing queue* (``queued >= max(replicas, 1)``, :class:`StageLoad`'s counts), if that alone
        decides it; else None. The executor asks it when :meth:`admit_without_load` gave None and then
        measures the loads only where some stage has a standing queue."""
        return None

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        return self.policy.admit(call, load)

    def adapt_without_load(self, call: CallView, models: tuple[str, ...]) -> Adaptation | None:
        """:meth:`Policy.adapt`'s answer for ``call`` if no load of its stage (offering ``models``)
        can change it, else None."""
        return None

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        return self.policy.adapt(call, load)

    def route(self, call: CallView, candidates: list[ReplicaView]) -> Route | None:
        return self.policy.route(call, candidates)

    def prune_without_load(self, call: CallView) -> bool | None:
        """:meth:`Policy.prune_retry`'s answer for the retry's ``call`` if no load of its stage can change
        it, else None (the executor then measures the load and asks :meth:`prune_retry`)."""
        return None

    def prune_retry(self, call: CallView, loop: str, iteration: int, load: StageLoad) -> bool:
        return bool(self.policy.prune_retry(call, loop, iteration, load))

    def pick(self, call: CallView, own: list[ReplicaView], lenders: list[ReplicaView]) -> int:
        """:meth:`route` among ``own + lenders`` (the lenders offered as ``borrowed``, not flagged
        so here) where every replica of ``own`` runs both phases (``role == "mixed"``; lenders
        always do), as an index into ``own + lenders``; or :data:`PICK_NONE` where route would
        return None, or :data:`PICK_ASK` where this object cannot tell without the flagged list
        (then the executor flags the lenders and asks :meth:`route`). Lets an executor skip the
        flags, the concatenated list and the :class:`Route`. The base always answers PICK_ASK."""
        return PICK_ASK

    def priority(self, call: CallView) -> PriorityKey:
        return self.policy.priority(call)


PICK_NONE = -1
""":meth:`Decisions.pick`: no replica (route would return None: the executor falls back to least backlog)."""
PICK_ASK = -2
""":meth:`Decisions.pick`: no answer without the flagged candidate list (the executor asks route)."""


def uses_method(policy: Policy, name: str, cls: type) -> bool:
    """Whether ``policy.<name>`` is ``cls``'s own method (not overridden by a subclass of ``cls``,
    not replaced on the instance)."""
    return getattr(getattr(policy, name), "__func__", None) is getattr(cls, name)


def least_backlog_route(candidates: Sequence[ReplicaView]) -> Route:
    """Default dispatch: the least-backlogged replica (for disaggregated candidates, the
    least-backlogged prefill replica and the least-backlogged decode replica, most free KV among
    equals: sending every decode to the replica with the most free KV piled them on the largest
    GPUs and made FCFS collapse on P/D layouts, a routing default rather than its queue)."""
    best = _least_backlog(candidates, skip_decode=True) or _least_backlog(candidates, skip_decode=False)
    assert best is not None, "route() needs at least one candidate"
    if best.role != "prefill":
        return Route(best.replica_id)
    decoders = [r for r in candidates if r.role == "decode"]
    if not decoders:
        return Route(best.replica_id)
    dec = min(decoders, key=lambda r: (r.backlog_s, -r.kv_free_tokens, r.running, r.replica_id))
    return Route(best.replica_id, dec.replica_id)


def _least_backlog(candidates: Sequence[ReplicaView], skip_decode: bool) -> ReplicaView | None:
    """The minimum of ``(backlog_s, queue_len + running, replica_id)`` (a hot path: no key tuples
    unless backlogs tie)."""
    best: ReplicaView | None = None
    bb = math.inf
    for r in candidates:
        b = r.backlog_s
        if b > bb:  # cannot win: skip the other tests (most candidates)
            continue
        if skip_decode and r.role == "decode":
            continue
        if best is None or b < bb or (b == bb and (r.queue_len + r.running, r.replica_id)
                                      < (best.queue_len + best.running, best.replica_id)):
            best, bb = r, b
    return best
