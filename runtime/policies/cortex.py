"""Policy 4: Cortex -- workflow-aware scheduling on planner-sized, stage-isolated pools.

The policy assumes a stage-isolated layout (one dedicated pool per stage, sized
by the planner: :func:`runtime.simulator.cluster.layout_from_plan`) and adds:

* **SLO-slack priority keyed on the remaining critical path.** A call's latest
  start is ``deadline - remaining_critical_path``; the earliest latest start
  runs first (least slack first; static, since all slacks fall at the same
  rate). A call whose run cannot finish in time even on an idle cluster
  (``now + remaining > deadline``) is *hopeless* and goes behind every call
  that can still make its deadline.
* **Preemption of slack-rich running calls.** When a replica's batch (its
  ``max_num_seqs``) or KV cache is full and a waiting call's latest start is
  more than ``preempt_margin_s`` earlier than a running call's (or the running
  call's run is hopeless), the running call is evicted and re-queued (it
  recomputes its prompt plus the tokens generated, as vLLM's priority
  scheduling does).
* **Completion-time routing with a marginal-slowdown term, prefix/KV affinity.**
  Each candidate is scored ``finish + w x marginal``
  (:func:`runtime.policies.placement.estimate`, from the shared profiles: slot
  wait, prefill of the uncached prompt -- the stage prefix is free where it is
  resident -- and decode at the batch the call joins; ``marginal`` is the
  slowdown the call imposes on the calls already running there). ``w`` is
  ``marginal_weight`` for calls with slack and 0 for urgent ones (slack below
  ``urgent_slack_factor`` x the stage's expected time): an urgent call takes the
  earliest finish, the others also spare their neighbours. Replicas without KV
  room for the call are avoided when others have it.
* **Borrowing.** Replicas of other stages' pools (same model) that are idle or
  have a free batch slot and no queue are offered as candidates; one is taken
  only when its score beats the own pool's best by more than
  ``borrow_margin`` x the call's expected time (``idle_borrow_margin``, 0 by
  default, for a lender with nothing running; ``coarse_borrow_margin`` when
  the executor gives no profile), so isolation holds in the
  common case without giving up statistical multiplexing in bursts.
* **Admission control at a genuine bottleneck.** A run is rejected (retryable)
  only when its most loaded stage has a standing queue (at least one waiting
  call per replica) and the expected wait there already exceeds the run's
  whole slack: it would miss its deadline anyway (a rejection counts as a
  miss), and admitting it would only delay runs that can still make theirs.
  A bottleneck stage that declares a lighter model with replicas degrades
  instead (malleability below): rejection is the last resort.
* **Malleability under pressure.** When a stage's expected wait exceeds the
  call's slack and the stage declares a lighter model with replicas, the call
  swaps to it; a retry is pruned (the loop's ``on_exhausted`` is taken) only
  when the run has already missed its deadline and the retry's stage has a
  queue: a pruned run counts as a miss, so pruning only frees capacity for runs
  that can still make theirs.
* **Hedging.** Executor (SQL/tool) calls are duplicated on an idle second
  executor when ``hedge_executors`` is set (off by default: in the simulator a
  duplicate shares the call's scripted service time, so it cannot win).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.policies.base import (
    KEEP, PICK_ASK, Adaptation, Admission, CallView, Decisions, Policy, PriorityKey, ReplicaView, Route, StageLoad,
    route_to, uses_method,
)
from runtime.policies.disaggregation import best_pair
from runtime.policies.placement import estimate, estimate_at, has_kv_room, kv_need_at, prefill_monotone


def slack_s(call: CallView) -> float:
    """Time the run can still lose: deadline - now - remaining critical path (inf without SLO)."""
    if call.deadline_s is None:
        return float("inf")
    # Read into locals (C doubles in the compiled build, cortex.pxd: the view's times are Python
    # floats, so the same differences without a float object each).
    deadline, now, remaining = call.deadline_s, call.now_s, call.remaining_critical_path_s
    return deadline - now - remaining


@dataclass
class Cortex(Policy):
    name: str = "cortex"
    description: str = ("Cortex: isolated planner-sized pools, SLO-slack priority on remaining critical path, "
                        "prefix affinity, bottleneck admission, borrowing, malleability.")
    borrow_idle: bool = True
    admission: bool = True
    prune_hopeless: bool = True
    hedge_executors: bool = False
    borrow_spare: bool = True
    marginal_weight: float = 1.0
    """Weight of the slowdown a call imposes on calls already running (calls with slack)."""
    urgent_slack_factor: float = 3.0
    """A call whose run's slack is below this many times the stage's expected time is urgent."""
    borrow_margin: float = 0.25
    """A borrowed replica must beat the own pool's best score by this many expected call times."""
    idle_borrow_margin: float = 0.0
    """The margin for a lender with nothing running. Its own stage loses nothing unless its calls
    arrive meanwhile, and then they share the batch: no isolation to protect. Tuned on seed 2
    (`sim_tune.py cortex idle_borrow_margin=...` per cell, against 0.25 = ``borrow_margin``): the
    same in the goal cell, rag and at 0.5/0.9 load; longrag 1.72 -> 1.48 at 99%, 12xH100 1.76 ->
    1.72; deep_research and fan-out one bisection step (2%) worse at 95%; and on the CPU example
    (`cortex simulate examples/nl2sql.cortex`, three seeds) p99 scale 1.18-1.23 -> 1.00-1.11, where
    FCFS on the same two replicas pooled has 1.00: a busy own replica lost to an idle lender."""
    coarse_borrow_margin: float = 1.0
    """The same margin where the executor gives no profile (the estimate is then only backlog-based)."""
    malleable: bool = True
    """Swap a call to its stage's lighter declared model when the stage's wait exceeds the call's
    slack; a run whose bottleneck stage has such a model is then admitted (degraded) rather than
    rejected."""
    preemptive: bool = True
    preempt_margin_s: float = math.inf
    """A waiting call evicts a running one (batch or KV full) only when the running call's latest
    start is at least this much later (it has that much more slack), or its run is hopeless.
    Tuned on seed 2 (goal cell, `sim_tune.py cortex preempt_margin_s=0.3,1,5,inf`): 0.3 / 1 / 5 s give 3.08 / 3.02 / 2.71 at 95% (the recompute of
    1.4-1.9k-token prompts costs more than the reordering gains); inf (evict only hopeless
    runs' calls) 2.54."""

    def preempts(self, waiting: PriorityKey, running: PriorityKey) -> bool:
        if len(waiting) != 3 or len(running) != 3 or waiting[0] > 0.0:
            return False  # no deadline, or the waiting run is hopeless itself
        return running[0] > 0.0 or running[1] - waiting[1] > self.preempt_margin_s

    def priority(self, call: CallView) -> PriorityKey:
        return _latest_start_key(call)

    _knobs = None
    """The routing parameters as one :class:`_RouteKnobs` (not a field: no annotation), made on the
    first route and dropped by every attribute assignment (``__setattr__``)."""

    def __setattr__(self, name: str, value: object) -> None:
        global _last_policy
        object.__setattr__(self, name, value)
        if name != "_knobs":  # a parameter may have changed: route reads them again
            object.__setattr__(self, "_knobs", None)
            if self is _last_policy:
                _last_policy = None

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        return _route(self, call, candidates)

    def _route_disaggregated(self, call: CallView, candidates: Sequence[ReplicaView], w: float) -> Route | None:
        """Joint prefill/decode placement: each side scored ``finish + w x marginal`` on its replica
        (:func:`runtime.policies.disaggregation.best_pair`); decode replicas without KV room for the
        call's context are avoided when others have it; borrowed replicas pay ``borrow_margin``
        (``idle_borrow_margin`` when idle)."""
        decode = [r for r in candidates if r.role == "decode"]
        roomy = {r.replica_id for r in decode if has_kv_room(call, r)}
        usable = [r for r in candidates if r.role == "prefill" or not roomy or r.replica_id in roomy]
        busy_margin = self.borrow_margin * call.stage_expected_s
        idle_margin = self.idle_borrow_margin * call.stage_expected_s

        def side_cost(side: CallView, r: ReplicaView) -> float:
            finish, marginal = estimate(side, r)
            return finish + w * marginal + ((idle_margin if r.idle else busy_margin) if r.borrowed else 0.0)

        pair = best_pair(call, usable, side_cost, side_cost)
        return pair[1] if pair else None

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        return _admit(_knobs(self), call, load)

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        return _adapt(_knobs(self), call, load)

    def prune_retry(self, call: CallView, loop: str, iteration: int, load: StageLoad) -> bool:
        return _prune_retry(_knobs(self), call, load)

    def decisions(self) -> Decisions:
        """:class:`_CortexDecisions` (the module functions, called directly) unless a subclass or
        the instance replaces one of the decisions; then the base's, which calls the methods."""
        own = all(uses_method(self, m, Cortex) for m in ("admit", "adapt", "route", "priority", "prune_retry"))
        return _CortexDecisions(self) if own else Decisions(self)


class _CortexDecisions(Decisions):
    """:class:`Cortex`'s decisions as the module functions its methods call (a C subclass in the
    compiled build, cortex.pxd: the simulator's call reaches them without a Python call)."""

    def admit_without_load(self, call: CallView) -> Admission | None:
        return _admit_without_load(_knobs(self.policy), call)

    def admit_without_queue(self, call: CallView) -> Admission | None:
        return Admission.accept()  # _admit rejects only at a standing queue (its bottleneck's)

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        return _admit(_knobs(self.policy), call, load)

    def adapt_without_load(self, call: CallView, models: tuple[str, ...]) -> Adaptation | None:
        return _adapt_without_load(_knobs(self.policy), call, models)

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        return _adapt(_knobs(self.policy), call, load)

    def route(self, call: CallView, candidates: list[ReplicaView]) -> Route | None:
        return _route(self.policy, call, candidates)

    def prune_without_load(self, call: CallView) -> bool | None:
        return _prune_without_load(_knobs(self.policy), call)

    def prune_retry(self, call: CallView, loop: str, iteration: int, load: StageLoad) -> bool:
        return _prune_retry(_knobs(self.policy), call, load)

    def pick(self, call: CallView, own: list[ReplicaView], lenders: list[ReplicaView]) -> int:
        return _pick(self.policy, call, own, lenders)

    def priority(self, call: CallView) -> PriorityKey:
        return _latest_start_key(call)


class _RouteKnobs:
    """:class:`Cortex`'s parameters read on every decision, read once per policy state (C fields
    when compiled: a decision reads them without an attribute lookup on the policy each)."""

    __slots__ = ("urgent_slack_factor", "marginal_weight", "borrow_margin", "idle_borrow_margin",
                 "coarse_borrow_margin", "malleable", "hedge_executors", "prune_hopeless", "admission")

    def __init__(self, policy: Cortex) -> None:
        self.urgent_slack_factor = policy.urgent_slack_factor
        self.marginal_weight = policy.marginal_weight
        self.borrow_margin = policy.borrow_margin
        self.idle_borrow_margin = policy.idle_borrow_margin
        self.coarse_borrow_margin = policy.coarse_borrow_margin
        self.malleable = bool(policy.malleable)
        self.hedge_executors = bool(policy.hedge_executors)
        self.prune_hopeless = bool(policy.prune_hopeless)
        self.admission = bool(policy.admission)


_last_policy = None
"""The policy whose knobs :func:`_knobs` returned last (``_last_knobs``): a simulation asks one
policy every decision, so an identity test finds them without an attribute lookup on it (a
parameter assignment clears it: ``Cortex.__setattr__``)."""
_last_knobs = None


def _knobs(policy: Cortex) -> _RouteKnobs:
    """``policy._knobs``, made first if a parameter changed since (or never read)."""
    global _last_policy, _last_knobs
    if policy is _last_policy:
        return _last_knobs
    knobs = policy._knobs
    if knobs is None:
        knobs = _RouteKnobs(policy)
        policy._knobs = knobs
    _last_policy, _last_knobs = policy, knobs
    return knobs


def _admit(knobs: _RouteKnobs, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
    """:meth:`Cortex.admit` (typed in the compiled build: C struct reads)."""
    verdict = _admit_without_load(knobs, call)
    if verdict is not None:
        return verdict
    if not load:
        return Admission.accept()
    bottleneck = _bottleneck(load)
    if knobs.malleable and len(bottleneck.models) > 1:
        return Admission.accept()  # degrade (adapt swaps to the lighter model) rather than reject
    wait = bottleneck.expected_wait_s
    standing_queue = bottleneck.queued >= max(bottleneck.replicas, 1)
    if standing_queue and wait > 0.0 and wait > slack_s(call):
        return Admission.reject(
            f"stage {bottleneck.stage!r} is saturated (expected wait {wait:.2f}s exceeds the run's slack)",
            retry_after_s=wait)
    return Admission.accept()


def _admit_without_load(knobs: _RouteKnobs, call: CallView) -> Admission | None:
    """:func:`_admit`'s answer where no load can change it (admission off, or a run without a
    deadline: it is accepted), else None."""
    if not knobs.admission or call.deadline_s is None:
        return Admission.accept()
    return None


def _prune_retry(knobs: _RouteKnobs, call: CallView, load: StageLoad) -> bool:
    """:meth:`Cortex.prune_retry` (typed in the compiled build: C struct reads)."""
    # A pruned run is a miss, so prune only runs that have already missed their deadline (then
    # pruning can never turn a hit into a miss) while the retry's stage has a queue it would
    # lengthen. An earlier rule -- "the retry's expected time alone overruns the deadline" --
    # pruned runs whose retry came in shorter than expected and would have made it: 25 of 540
    # runs in the malleability cell at 0.9 load (scale 2.38 vs 2.28 without pruning, seed 2).
    verdict = _prune_without_load(knobs, call)
    return load.queued > 0 if verdict is None else verdict


def _prune_without_load(knobs: _RouteKnobs, call: CallView) -> bool | None:
    """:func:`_prune_retry`'s answer where the stage's load cannot change it (pruning off, no
    deadline, or a run still within its deadline: False), else None."""
    if not knobs.prune_hopeless or call.deadline_s is None or not call.now_s > call.deadline_s:
        return False
    return None


def _adapt(knobs: _RouteKnobs, call: CallView, load: StageLoad) -> Adaptation:
    """:meth:`Cortex.adapt` (typed in the compiled build: C struct reads)."""
    ad = _adapt_without_load(knobs, call, load.models)
    if ad is not None:
        return ad
    if call.kind == "llm":  # the stage offers a lighter model: swap when its wait exceeds the slack
        return Adaptation(model=load.models[-1]) if load.expected_wait_s > slack_s(call) else KEEP
    return Adaptation(hedge=2) if load.queued == 0 else KEEP  # hedge_executors: only on an idle stage


def _adapt_without_load(knobs: _RouteKnobs, call: CallView, models: tuple[str, ...]) -> Adaptation | None:
    """:func:`_adapt`'s answer where no load of the call's stage (offering ``models``) can change it
    -- an LLM call with no lighter model to swap to, an executor call without hedging -- else None
    (most calls: the simulator then measures no load for them)."""
    if call.kind == "llm":
        if knobs.malleable and len(models) > 1 and call.model == models[0]:
            return None
        return KEEP
    return None if knobs.hedge_executors else KEEP


def _weight(call: CallView, knobs: _RouteKnobs) -> float:
    """The marginal-slowdown weight ``w`` of ``call``: 0 for an urgent call (slack below
    ``urgent_slack_factor`` x its expected time), else ``marginal_weight``."""
    expected = call.stage_expected_s  # (a C double in the compiled build)
    return 0.0 if slack_s(call) < knobs.urgent_slack_factor * expected else knobs.marginal_weight


def _route(policy: Cortex, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
    """:meth:`Cortex.route` (a module function so that the compiled build can type it)."""
    knobs = _knobs(policy)
    w = _weight(call, knobs)
    # A model's replicas are either all colocated or all split (cluster.disaggregate), so the
    # first candidate tells (hot path: no scan of every candidate).
    first = candidates[0]
    if first.role != "mixed":
        return policy._route_disaggregated(call, candidates, w)
    best = _best_colocated(call, candidates, w, knobs)
    return route_to(best.replica_id) if best is not None else None


def _pick(policy: Cortex, call: CallView, own: list[ReplicaView], lenders: list[ReplicaView]) -> int:
    """:meth:`Decisions.pick` for Cortex: :func:`_route`'s choice among ``own`` and the unflagged
    ``lenders`` as an index into ``own + lenders`` (PICK_NONE where it routes nowhere), or PICK_ASK
    for a disaggregated pool (``own``'s first replica is not colocated) or no own replica. A lone
    candidate (one own replica, no lender: a SQL/tool stage's executor group, usually) is taken
    without scoring it: route takes it, or routes nowhere only where its cost is NaN, and then the
    executor's fallback (least backlog among the candidates) takes it too."""
    if not own:
        return PICK_ASK
    first = own[0]  # (typed in cortex.pxd: a C field read)
    if first.role != "mixed":
        return PICK_ASK
    if len(own) == 1 and not lenders:
        return 0
    knobs = _knobs(policy)
    return _pick_colocated(call, own, lenders, _weight(call, knobs), knobs)


def _best_colocated(call: CallView, candidates: Sequence[ReplicaView], w: float,
                    knobs: _RouteKnobs) -> ReplicaView | None:
    """:meth:`Cortex.route` among colocated replicas, the borrowed ones flagged
    (:func:`_pick_colocated` on the unflagged and the flagged ones, each in their order)."""
    own = [r for r in candidates if not r.borrowed]
    lenders = [r for r in candidates if r.borrowed]
    i = _pick_colocated(call, own, lenders, w, knobs)
    if i < 0:
        return None
    return own[i] if i < len(own) else lenders[i - len(own)]


def _pick_colocated(call: CallView, own: list[ReplicaView], lenders: list[ReplicaView], w: float,
                    knobs: _RouteKnobs) -> int:
    """:meth:`Cortex.route` among colocated replicas, as an index into ``own + lenders`` (-1 for
    none: PICK_NONE): the least ``finish + w x marginal`` among the own pool's replicas with KV
    room for the call (all of them if none has), ties to the lower replica id; then a lender (a
    replica of another pool, ``borrowed``) with room wins if it beats that by its margin x the
    call's expected time (``knobs``' margins, read only when a lender is offered). A module
    function so that the compiled build can type it (runtime.accel)."""
    # Hot path (every dispatch, every candidate): the call's fields are read once, and each own
    # replica is visited once -- its prefix residency tested once (kv_need_at and estimate_at:
    # ``has_kv_room`` and ``estimate`` on it) -- keeping two running minima, over the replicas with
    # room and over all of them; the first applies if any replica has room. Each minimum follows
    # the same rule over its subset in the same order as a scan of that subset alone would, so the
    # choice is the same (estimate_at only fills the view's cache, so scoring a replica without
    # room, which the choice then ignores, changes nothing).
    inp, out, pkey, ptoks, now = call.input_tokens, call.output_tokens, call.prefix_key, call.prefix_tokens, call.now_s
    expected = call.stage_expected_s
    n_own = len(own)
    any_room = False  # whether some own replica has room: then only those compete
    best, best_r, best_cost = -1, None, _INF  # over all own replicas (its index and view)
    roomy, roomy_r, roomy_cost = -1, None, _INF  # over the own replicas with room
    for i in range(n_own):
        r = own[i]
        resident = pkey is not None and pkey in r.resident_prefixes
        finish, marginal = estimate_at(r, inp, out, resident, ptoks, now, expected)
        cost = finish + w * marginal
        if cost < best_cost or (cost == best_cost and best_r is not None and r.replica_id < best_r.replica_id):
            best, best_r, best_cost = i, r, cost
        cap, used = r.kv_capacity_tokens, r.kv_used_tokens
        if cap - used >= kv_need_at(inp, out, ptoks, resident):
            any_room = True
            if cost < roomy_cost or (cost == roomy_cost and roomy_r is not None and r.replica_id < roomy_r.replica_id):
                roomy, roomy_r, roomy_cost = i, r, cost
    if any_room:
        best, best_cost = roomy, roomy_cost
    if lenders:
        borrow_margin, idle_borrow_margin = knobs.borrow_margin, knobs.idle_borrow_margin
        coarse_borrow_margin = knobs.coarse_borrow_margin
        # A lender rarely wins (about one decision in ten in the NL2SQL benchmark), so each is first
        # scored as if the call's prefix were resident there: a lower bound on its cost where the
        # estimate cannot decrease with the prompt to prefill (placement.prefill_monotone, for a
        # non-negative w, and fewer tokens: inp >= 1, ptoks >= 0). A lender whose bound does not
        # beat the best so far cannot win, so it is dropped without the residency and KV tests.
        bounded = w >= 0.0 and inp >= 1 and ptoks >= 0
        for j in range(len(lenders)):
            r = lenders[j]
            # r.idle written out (a property: a Python call)
            margin = (coarse_borrow_margin if r.profile is None else
                      idle_borrow_margin if r.queue_len == 0 and r.running == 0 else borrow_margin)
            if bounded:  # the bound: its cost with the prefix taken as resident
                finish, marginal = estimate_at(r, inp, out, True, ptoks, now, expected)
                cost = finish + w * marginal + margin * expected
                if not cost < best_cost and prefill_monotone(r):
                    continue
            resident = pkey is not None and pkey in r.resident_prefixes
            cap, used = r.kv_capacity_tokens, r.kv_used_tokens
            if cap - used >= kv_need_at(inp, out, ptoks, resident):
                if not (bounded and resident):  # else the bound is its cost
                    finish, marginal = estimate_at(r, inp, out, resident, ptoks, now, expected)
                    cost = finish + w * marginal + margin * expected
                if cost < best_cost:
                    best, best_cost = n_own + j, cost
    return best


def _latest_start_key(call: CallView) -> PriorityKey:
    """:meth:`Cortex.priority`: ``(hopeless, latest start, enqueued)``, or ``(0.0, enqueued)`` without
    a deadline. A module function so that the compiled build reads the view as a C struct."""
    if call.deadline_s is None:
        return (0.0, call.enqueued_s)
    deadline, remaining, now = call.deadline_s, call.remaining_critical_path_s, call.now_s  # (C doubles)
    latest_start = deadline - remaining
    hopeless = 1.0 if now > latest_start else 0.0
    return (hopeless, latest_start, call.enqueued_s)


def _bottleneck(load: Mapping[str, StageLoad]) -> StageLoad | None:
    """``max(load.values(), key=(expected wait, stage))`` written out (every arrival): the first
    maximum, None for no stage. Typed in the compiled build (C struct reads)."""
    bottleneck = None
    for s in load.values():
        if bottleneck is None or s.expected_wait_s > bottleneck.expected_wait_s or (
                s.expected_wait_s == bottleneck.expected_wait_s and s.stage > bottleneck.stage):
            bottleneck = s
    return bottleneck


_INF = math.inf
