"""Baseline 2: Autellix (arXiv 2502.13965) PLAS and ATLAS, with locality-aware load balancing.

Program-level attained service. PLAS ranks a call by the total service its
program (run) has received so far (sum of its finished calls' service times);
ATLAS by the longest critical path of service seen so far (for parallel
programs). The attained service is discretised into multi-level queues with
exponentially growing thresholds ``quantum * 2**i`` (level ``i``), FCFS within a
level, so new and short programs run first and long programs cannot starve
short ones. Anti-starvation: a call that has waited more than ``starvation_ratio``
times its program's attained service (at least one quantum) is promoted to the
top level. The engine scheduler is preemptive (a better-ranked waiting call may
evict a worse running one when the batch is full), as in Autellix.

Locality-aware load balancing: calls with long contexts (``locality_tokens`` or
more input tokens) go back to the engine that ran the program's previous call
(its KV/prefix is likely resident); shorter calls go to the least-loaded engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.policies.base import CallView, Policy, PriorityKey, ReplicaView, Route
from runtime.policies.disaggregation import is_disaggregated, route_each_side


@dataclass
class PLAS(Policy):
    name: str = "autellix-plas"
    description: str = "Autellix PLAS: program-level least attained service, MLFQ, anti-starvation."
    preemptive: bool = True
    requeue_interval_s: float | None = 0.25
    quantum_s: float = 0.5
    levels: int = 8
    starvation_ratio: float = 2.0
    locality_tokens: int = 2048

    def attained(self, call: CallView) -> float:
        return call.attained_service_s

    def level(self, attained: float) -> int:
        level, bound = 0, self.quantum_s
        while attained >= bound and level < self.levels - 1:
            level += 1
            bound *= 2.0
        return level

    def priority(self, call: CallView) -> PriorityKey:
        attained = self.attained(call)
        level = self.level(attained)
        waited = call.now_s - call.enqueued_s
        if level and waited > self.starvation_ratio * max(attained, self.quantum_s):
            level = 0
        return (float(level), call.enqueued_s)

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        if is_disaggregated(candidates):
            return route_each_side(call, candidates, self._pick)
        return Route(self._pick(call, candidates).replica_id)

    def _pick(self, call: CallView, candidates: Sequence[ReplicaView]) -> ReplicaView:
        if call.input_tokens >= self.locality_tokens and call.last_replica_id:
            for r in candidates:
                if r.replica_id == call.last_replica_id:
                    return r
        return min(candidates, key=lambda r: (r.queue_len + r.running, r.backlog_s, r.replica_id))


@dataclass
class ATLAS(PLAS):
    name: str = "autellix-atlas"
    description: str = "Autellix ATLAS: critical-path attained service, MLFQ, anti-starvation."

    def attained(self, call: CallView) -> float:
        return call.critical_path_service_s
