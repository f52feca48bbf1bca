"""Baseline 5: risk-of-missing-horizon priority with heterogeneity- and KV-aware placement and
joint prefill/decode placement (HexAGenT, arXiv 2605.16637).

Risk. The remaining time of a run is modelled as normal with the graph's
estimate ``R`` (remaining critical path) and its standard deviation ``sigma``;
the risk of missing the horizon is ``P(remaining > deadline - now) =
Phi((R - (deadline - now)) / sigma)``. The riskiest call runs first; runs whose
horizon has already passed go last (they cannot be saved). Risk changes with
time, so queues are re-keyed every ``requeue_interval_s``.

Placement (mixed engines). Every candidate with KV room for the call's context
gets an expected completion time from the shared profiles
(:func:`runtime.policies.placement.estimate`: slot wait, prefill, decode at the
batch the call joins). A call at risk (``risk >= risk_threshold``, or without a
deadline) goes to the replica that finishes it first -- on a mixed cluster,
usually a fast device. A call with slack may take a slower device: among the
replicas that finish it within its share of the time left (``(deadline - now)
x stage_expected / R``, the proportional split HexGen also uses, divided by
``slack_safety`` and capped at ``stretch_cap`` x its standalone time), it takes the
slowest device (ties: earliest finish), so fast devices stay free for at-risk
calls. ``marginal_weight`` (0 by default: HexAGenT's objective is the call's
own completion) adds the slowdown the call imposes on calls already there.

Placement (disaggregated pools). The prefill and decode replicas are chosen
jointly, minimising prefill finish + KV transfer time (prompt KV bytes / link
bandwidth) + decode finish on the decode replica, subject to the decode
replica's free KV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.policies.base import CallView, Policy, PriorityKey, ReplicaView, Route
from runtime.policies.disaggregation import best_pair
from runtime.policies.placement import estimate, has_kv_room


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass
class HexAGenT(Policy):
    name: str = "hexagent"
    description: str = ("HexAGenT: risk-of-missing-horizon priority; speed/KV-aware placement (at-risk calls to "
                        "the fastest finish, slack calls to slower devices); joint P/D placement.")
    requeue_interval_s: float | None = 0.1
    prefill_share: float = 0.3
    """Share of a call's expected time spent in prefill (disaggregated placement without profiles)."""
    risk_threshold: float = 0.5
    """Calls at or above this risk are placed for the earliest finish."""
    marginal_weight: float = 0.0
    stretch_cap: float = 3.0
    """... and within this many times the call's standalone time (bounds the load pushed onto slow
    devices when deadlines are loose)."""
    slack_safety: float = 2.0
    """A slow device is affordable when its estimated finish is within the call's share of the time
    left divided by this factor (the estimate ignores calls that will join later)."""

    def risk(self, call: CallView) -> float:
        assert call.deadline_s is not None
        sigma = max(call.remaining_std_s, 0.1 * call.remaining_critical_path_s, 1e-3)
        return normal_cdf((call.remaining_critical_path_s - (call.deadline_s - call.now_s)) / sigma)

    def priority(self, call: CallView) -> PriorityKey:
        if call.deadline_s is None:
            return (0.0, 0.0, call.enqueued_s)
        missed = 1.0 if call.now_s > call.deadline_s else 0.0
        return (missed, -round(self.risk(call), 3), call.deadline_s)

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        mixed = [r for r in candidates if r.role == "mixed"]
        if mixed:
            return self._place_mixed(call, [r for r in mixed if has_kv_room(call, r)] or mixed)
        return self._place_disaggregated(call, candidates)

    def _place_mixed(self, call: CallView, reps: Sequence[ReplicaView]) -> Route:
        w = self.marginal_weight
        scored = []
        for r in reps:
            finish, marginal = estimate(call, r)
            scored.append((finish + w * marginal, finish, r))
        best = min(scored, key=lambda t: (t[0], t[2].replica_id))
        if call.deadline_s is None or self.risk(call) >= self.risk_threshold:
            return Route(best[2].replica_id)
        share = call.stage_expected_s / max(call.remaining_critical_path_s, call.stage_expected_s, 1e-9)
        budget = min((call.deadline_s - call.now_s) * share / self.slack_safety,
                     self.stretch_cap * call.stage_expected_s)
        affordable = [t for t in scored if t[1] <= budget]
        if not affordable:
            return Route(best[2].replica_id)
        slow = min(affordable, key=lambda t: (t[2].speed, t[0], t[2].replica_id))
        return Route(slow[2].replica_id)

    def _place_disaggregated(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        decode = [r for r in candidates if r.role == "decode"]
        fit = [d for d in decode if has_kv_room(call, d)] or decode
        pre_t = call.stage_expected_s * self.prefill_share
        dec_t = call.stage_expected_s - pre_t

        def prefill_cost(side: CallView, p: ReplicaView) -> float:
            return estimate(side, p)[0] if p.profile is not None else p.backlog_s + pre_t / max(p.speed, 1e-9)

        def decode_cost(side: CallView, d: ReplicaView) -> float:
            return estimate(side, d)[0] if d.profile is not None else d.backlog_s + dec_t / max(d.speed, 1e-9)

        pair = best_pair(call, [r for r in candidates if r.role == "prefill"] + fit, prefill_cost, decode_cost)
        return pair[1] if pair else None
