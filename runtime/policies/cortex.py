"""Policy 4: Cortex -- workflow-aware scheduling on planner-sized, stage-isolated pools.

The policy assumes a stage-isolated layout (one dedicated pool per stage, sized
by the planner: :func:`runtime.simulator.cluster.layout_from_plan`) and adds:

* **SLO-slack priority keyed on the remaining critical path.** A call's latest
  start is ``deadline - remaining_critical_path``; the earliest latest start
  runs first (least slack first; static, since all slacks fall at the same
  rate). A call whose run cannot finish in time even on an idle cluster
  (``now + remaining > deadline``) is *hopeless* and goes behind every call
  that can still make its deadline.
* **Prefix/KV-affinity routing.** The estimated finish on a replica is its
  backlog plus the call's time divided by the replica's speed, minus the
  prefill saved when the stage's shared prefix is resident there; the lowest
  wins. Replicas without KV room for the call are avoided when others have it.
* **Idle-engine borrowing.** Idle replicas of other stages' pools (same model)
  are offered as candidates; one is taken only when it beats the own pool's
  best estimate by more than the call's expected time (so isolation holds in
  the common case and spare capacity is not wasted in bursts).
* **Admission control at the bottleneck stage.** A run is rejected (retryable)
  when the expected wait at its most loaded stage already exceeds the run's
  whole slack: it would miss its deadline anyway, and admitting it would only
  delay runs that can still make theirs.
* **Malleability under pressure.** When a stage's expected wait exceeds the
  call's slack and the stage declares a lighter model with replicas, the call
  swaps to it; a retry of a hopeless run is pruned (the loop's ``on_exhausted``
  is taken) when the retry's stage has a queue.
* **Hedging.** Executor (SQL/tool) calls are duplicated on an idle second
  executor when ``hedge_executors`` is set (off by default: in the simulator a
  duplicate shares the call's scripted service time, so it cannot win).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.policies.base import (
    KEEP, Adaptation, Admission, CallView, Policy, PriorityKey, ReplicaView, Route, StageLoad,
)


def slack_s(call: CallView) -> float:
    """Time the run can still lose: deadline - now - remaining critical path (inf without SLO)."""
    if call.deadline_s is None:
        return float("inf")
    return call.deadline_s - call.now_s - call.remaining_critical_path_s


@dataclass
class Cortex(Policy):
    name: str = "cortex"
    description: str = ("Cortex: isolated planner-sized pools, SLO-slack priority on remaining critical path, "
                        "prefix affinity, bottleneck admission, borrowing, malleability.")
    borrow_idle: bool = True
    admission: bool = True
    prune_hopeless: bool = True
    hedge_executors: bool = False
    prefill_s_per_token: float = 25e-6
    """Reference prefill cost per token, to value a resident prefix when routing."""

    def priority(self, call: CallView) -> PriorityKey:
        if call.deadline_s is None:
            return (0.0, call.enqueued_s)
        latest_start = call.deadline_s - call.remaining_critical_path_s
        hopeless = 1.0 if call.now_s > latest_start else 0.0
        return (hopeless, latest_start, call.enqueued_s)

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        need = call.input_tokens + call.output_tokens
        own = [r for r in candidates if not r.borrowed]
        roomy = [r for r in own if r.kv_free_tokens >= need] or own
        best = min(roomy, key=lambda r: (self._finish(call, r), r.replica_id)) if roomy else None
        for r in candidates:
            if r.borrowed and r.kv_free_tokens >= need and (
                    best is None or self._finish(call, r) + call.stage_expected_s < self._finish(call, best)):
                best = r
        return Route(best.replica_id) if best is not None else None

    def _finish(self, call: CallView, r: ReplicaView) -> float:
        saved = 0.0
        if call.prefix_key is not None and call.prefix_key in r.resident_prefixes:
            saved = self.prefill_s_per_token * min(call.input_tokens, 1024) / max(r.speed, 1e-9)
        return r.backlog_s + call.stage_expected_s / max(r.speed, 1e-9) - saved

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        if not self.admission or call.deadline_s is None or not load:
            return Admission.accept()
        bottleneck = max(load.values(), key=lambda s: (s.expected_wait_s, s.stage))
        wait = bottleneck.expected_wait_s
        if wait > 0.0 and wait > slack_s(call):
            return Admission.reject(
                f"stage {bottleneck.stage!r} is saturated (expected wait {wait:.2f}s exceeds the run's slack)",
                retry_after_s=wait)
        return Admission.accept()

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        if call.kind == "llm":
            if len(load.models) > 1 and call.model == load.models[0] and load.expected_wait_s > slack_s(call):
                return Adaptation(model=load.models[-1])
            return KEEP
        if self.hedge_executors and load.queued == 0:
            return Adaptation(hedge=2)
        return KEEP

    def prune_retry(self, call: CallView, loop: str, iteration: int, load: StageLoad) -> bool:
        return self.prune_hopeless and slack_s(call) < 0.0 and load.queued > 0
