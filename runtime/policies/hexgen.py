"""Baseline 3: per-stage slack/urgency with speed-and-load-weighted dispatch
(HexGen-Text2SQL, arXiv 2505.05286).

Per-stage deadline: the run's remaining SLO budget split in proportion to the
stage's expected time over the remaining stages::

    stage_deadline = now + (deadline - now) * stage_expected / remaining_critical_path

Urgency is the expected time on the engine minus the time left to that
deadline; the least slack runs first. Since every queued call's slack falls at
the same rate, ordering by ``stage_deadline - stage_expected`` (the stage's
latest start) is the same order and needs no re-keying. Without a deadline the
policy is FCFS.

Dispatch scores every engine by a weighted mix of its speed and accumulated
load, ``alpha * stage_expected / speed + (1 - alpha) * backlog``, and picks the
lowest (``alpha`` tuned by simulation, as the paper does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.policies.base import CallView, Policy, PriorityKey, ReplicaView, Route
from runtime.policies.disaggregation import is_disaggregated, route_each_side


@dataclass
class HexGenText2SQL(Policy):
    name: str = "hexgen-text2sql"
    description: str = "HexGen-Text2SQL: least per-stage slack first; speed+load weighted dispatch."
    alpha: float = 0.2
    """Tuned by simulation as the paper does (benchmarks/sim_tune.py, seed 2; docs/simulator.md): the CLI and
    the benchmarks run the same value."""

    def priority(self, call: CallView) -> PriorityKey:
        if call.deadline_s is None:
            return (call.enqueued_s,)
        share = call.stage_expected_s / max(call.remaining_critical_path_s, call.stage_expected_s, 1e-9)
        stage_deadline = call.now_s + (call.deadline_s - call.now_s) * share
        return (stage_deadline - call.stage_expected_s, call.enqueued_s)

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        if is_disaggregated(candidates):
            return route_each_side(call, candidates, self._pick)
        return Route(self._pick(call, candidates).replica_id)

    def _pick(self, call: CallView, candidates: Sequence[ReplicaView]) -> ReplicaView:
        a = self.alpha
        return min(candidates, key=lambda r: (a * call.stage_expected_s / max(r.speed, 1e-9)
                                              + (1.0 - a) * r.backlog_s, r.replica_id))
