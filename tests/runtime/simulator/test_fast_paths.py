"""The simulator's speed shortcuts must give exactly what the general paths give.

* Least-backlog routing without the policy call (``Policy.route`` not overridden, no P/D replica)
  against the same routing done through an overriding ``route``.
* :func:`runtime.policies.placement.estimate`'s per-view cache against a fresh view, at every
  routing decision of a simulation (the engine must reset the cache whenever its view changes).
* Cortex's decisions object (its module functions called directly, stage loads measured only when
  a decision can depend on them) against the base :class:`Decisions`, which calls the methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

import pytest

from runtime.policies.base import CallView, Decisions, ReplicaView, Route, least_backlog_route
from runtime.policies.cortex import Cortex
from runtime.policies.fcfs import FCFS
from runtime.policies.placement import estimate
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import ReplicaSpec, gpu_replicas, isolated_layout, shared_layout
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


class _MethodCortex(Cortex):
    """Cortex with its decisions overridden by the same decisions (``super()``), so that the simulator
    asks them through the base :class:`Decisions`: the methods, every stage load measured."""

    def admit(self, call, load):
        return super().admit(call, load)

    def adapt(self, call, load):
        return super().adapt(call, load)

    def route(self, call, candidates):
        return super().route(call, candidates)

    def priority(self, call):
        return super().priority(call)

    def prune_retry(self, call, loop, iteration, load):
        return super().prune_retry(call, loop, iteration, load)


@pytest.mark.parametrize("case", ["isolated-hedging", "malleable", "no-deadline"])
def test_cortex_decisions_equal_its_methods(case):
    wf = nl2sql(sql_models=("llama70b", "llama8b")) if case == "malleable" else nl2sql()
    if case == "malleable":  # one 70B TP4 replica and its lighter 8B option, overloaded: ~30 swaps
        layout = (*gpu_replicas({"H100": 4}, "llama70b", 4, prefix="big-"), *gpu_replicas({"H100": 2}, "llama8b", 1),
                  ReplicaSpec(name="x", kind="executor", slots=32))
    else:
        layout = isolated_layout({"A100": 2, "H100": 2, "H200": 1}, program(wf), wf,
                                 {"schema_link": 1, "generate": 1, "fix": 1, "answer": 1}, executor_slots=4)
    knobs = {"hedge_executors": True} if case == "isolated-hedging" else {}
    fast, general = Cortex(**knobs), _MethodCortex(**knobs)
    assert type(fast.decisions()) is not Decisions and type(general.decisions()) is Decisions
    slo = None if case == "no-deadline" else 2.5
    results = [Simulator(program(wf), layout, p, [Stream(wf.name, 40.0)],
                         SimConfig(runs=300, seed=4, slo_scale=slo, record_calls=True)).run() for p in (fast, general)]
    assert np.array_equal(results[0].end, results[1].end)
    assert list(results[0].status) == list(results[1].status)
    assert results[0].calls == results[1].calls
