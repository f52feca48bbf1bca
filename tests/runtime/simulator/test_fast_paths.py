"""The simulator's speed shortcuts must give exactly what the general paths give.

* Least-backlog routing without the policy call (``Policy.route`` not overridden, no P/D replica)
  against the same routing done through an overriding ``route``.
* :func:`runtime.policies.placement.estimate`'s per-view cache against a fresh view, at every
  routing decision of a simulation (the engine must reset the cache whenever its view changes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from runtime.policies.base import CallView, ReplicaView, Route, least_backlog_route
from runtime.policies.fcfs import FCFS
from runtime.policies.placement import estimate
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import isolated_layout, shared_layout
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import nl2sql, program


class _ExplicitFCFS(FCFS):
    """FCFS whose ``route`` is overridden (same decision), so the simulator takes the general path."""

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        return least_backlog_route(candidates)


def _simulate(policy, layout, runs=400):
    wf = nl2sql()
    return Simulator(program(wf), layout, policy, [Stream(wf.name, 12.0)],
                     SimConfig(runs=runs, seed=3, slo_scale=2.5, record_calls=True)).run()


def test_plain_least_backlog_route_equals_the_policy_route():
    layout = shared_layout({"A100": 1, "H100": 1, "H200": 1}, "llama8b", workflow=nl2sql(), executor_slots=32)
    fast, general = _simulate(FCFS(), layout), _simulate(_ExplicitFCFS(), layout)
    assert np.array_equal(fast.end, general.end)
    assert [c[4] for c in fast.calls] == [c[4] for c in general.calls]  # same replica for every call


def test_cached_estimates_equal_fresh_ones_at_every_decision():
    wf = nl2sql()
    layout = isolated_layout({"A100": 2, "H100": 2, "H200": 1}, program(wf), wf,
                             {"schema_link": 1, "generate": 1, "fix": 1, "answer": 1}, executor_slots=32)
    policy = make_policy("cortex")
    real_route = policy.route
    checked = 0

    def spy(call, candidates):
        nonlocal checked
        for v in candidates:
            if v.profile is None:
                continue
            first = estimate(call, v)                 # fills the cache when it is empty
            again = estimate(call, v)                 # from the cache
            fresh = estimate(call, dataclasses.replace(v))  # a copy starts without the cache
            assert first == again == fresh
            checked += 1
        return real_route(call, candidates)

    policy.route = spy
    res = _simulate(policy, layout, runs=300)
    assert checked > 1000 and set(res.status) <= {"done", "fail", "rejected"}
