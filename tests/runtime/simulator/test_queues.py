"""Executor groups agree with closed-form M/M/1 and M/M/c results."""

from __future__ import annotations

import math

import pytest

from runtime.policies.fcfs import FCFS
from runtime.simulator.sim import SimConfig, Simulator, Stream
from tests.runtime.simulator.helpers import executors, prog, tool_only


def erlang_c_wait(lam: float, mu: float, c: int) -> float:
    """Mean waiting time in M/M/c (Erlang C)."""
    a = lam / mu
    rho = a / c
    tail = a**c / math.factorial(c) / (1 - rho)
    p_wait = tail / (sum(a**k / math.factorial(k) for k in range(c)) + tail)
    return p_wait / (c * mu - lam)


def _waits(slots: int, lam: float, service: float, runs: int = 30000) -> list[float]:
    wf = tool_only(service, cv=1.0)
    res = Simulator(prog(wf), executors(slots), FCFS(), [Stream("tool", lam)],
                    SimConfig(runs=runs, warmup_fraction=0.0, service_family="gamma", record_calls=True, seed=3)).run()
    return [c[6] - c[5] for c in res.calls]


def test_mm1_mean_wait():
    lam, service = 7.0, 0.1  # rho = 0.7
    waits = _waits(1, lam, service)
    expected = 0.7 * service / (1 - 0.7)
    assert sum(waits) / len(waits) == pytest.approx(expected, rel=0.08)


def test_mmc_mean_wait():
    lam, service, c = 30.0, 0.2, 8  # rho = 0.75
    waits = _waits(c, lam, service, runs=100000)
    assert sum(waits) / len(waits) == pytest.approx(erlang_c_wait(lam, 1 / service, c), rel=0.1)


def test_mm1_sojourn_includes_service():
    wf = tool_only(0.1, cv=1.0)
    res = Simulator(prog(wf), executors(1), FCFS(), [Stream("tool", 5.0)],
                    SimConfig(runs=20000, warmup_fraction=0.0, service_family="gamma", seed=5)).run()
    # M/M/1 mean response time = 1 / (mu - lambda) = 1 / (10 - 5)
    assert float(res.latency().mean()) == pytest.approx(0.2, rel=0.08)
