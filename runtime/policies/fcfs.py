"""Baseline 1: FCFS on one shared pool of generic engines (today's vLLM/SGLang deployment).

Every call queues on its replica in arrival order of the *call* (vLLM's default
FCFS scheduler); the router sends it to the replica with the least outstanding
work. It runs on a shared layout (:func:`runtime.simulator.cluster.shared_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.policies.base import Policy


@dataclass
class FCFS(Policy):
    name: str = "fcfs"
    description: str = "FCFS per engine, least-backlog routing, one shared pool (vLLM-style)."
