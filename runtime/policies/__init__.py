"""Scheduling policies behind one interface (:mod:`runtime.policies.base`), shared by
the discrete-event simulator and the asyncio orchestrator."""

from runtime.policies.base import (
    Adaptation,
    Admission,
    CallView,
    Policy,
    PriorityKey,
    ReplicaView,
    Route,
    StageLoad,
)

__all__ = [
    "Adaptation", "Admission", "CallView", "Policy", "PriorityKey", "ReplicaView", "Route", "StageLoad",
]
