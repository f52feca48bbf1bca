"""Baseline 5: risk-of-missing-horizon priority with joint prefill/decode placement
over heterogeneous GPUs, KV-capacity and transfer aware (HexAGenT, arXiv 2605.16637).

Risk. The remaining time of a run is modelled as normal with the graph's
estimate ``R`` (remaining critical path) and its standard deviation ``sigma``;
the risk of missing the horizon is ``P(remaining > deadline - now) =
Phi((R - (deadline - now)) / sigma)``. The riskiest call runs first; runs whose
horizon has already passed go last (they cannot be saved). Risk changes with
time, so queues are re-keyed every ``requeue_interval_s``.

Placement. For a mixed engine, the estimated completion is its backlog plus
the call's expected time divided by the engine's speed; engines without KV room
for the prompt are skipped unless none has room. For disaggregated pools the
prefill and decode replicas are chosen jointly, minimising prefill backlog +
prefill time + KV transfer time (prompt KV bytes / link bandwidth) + decode
backlog + decode time, subject to the decode replica's free KV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.policies.base import CallView, Policy, PriorityKey, ReplicaView, Route


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass
class HexAGenT(Policy):
    name: str = "hexagent"
    description: str = "HexAGenT: risk-of-missing-horizon priority; joint P/D placement, KV/transfer aware."
    requeue_interval_s: float | None = 0.1
    prefill_share: float = 0.3
    """Share of a call's expected time spent in prefill (for disaggregated placement)."""

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
        prefill = [r for r in candidates if r.role == "prefill"]
        decode = [r for r in candidates if r.role == "decode"]
        best: tuple[float, Route] | None = None
        roomy = [r for r in mixed if r.kv_free_tokens >= call.input_tokens + call.output_tokens] or mixed
        for r in roomy:
            est = r.backlog_s + call.stage_expected_s / max(r.speed, 1e-9)
            if best is None or est < best[0]:
                best = (est, Route(r.replica_id))
        fit = [d for d in decode if d.kv_free_tokens >= call.input_tokens + call.output_tokens] or decode
        pre_t = call.stage_expected_s * self.prefill_share
        dec_t = call.stage_expected_s - pre_t
        for p in prefill:
            for d in fit:
                bw = min(p.link_bytes_per_s, d.link_bytes_per_s) or 1e-9
                transfer = call.input_tokens * d.kv_bytes_per_token / bw
                est = (p.backlog_s + pre_t / max(p.speed, 1e-9) + transfer
                       + d.backlog_s + dec_t / max(d.speed, 1e-9))
                if best is None or est < best[0]:
                    best = (est, Route(p.replica_id, d.replica_id))
        return best[1] if best else None
