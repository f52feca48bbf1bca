"""The monitor's model, on a pool driven by hand with a fake clock (no engine, no real time):

* the batching model: a replica whose per-call time grows with its batch is worth fewer servers than its slots;
* the hysteresis from the rate's confidence band: a rise within the noise adds nothing, a significant one does;
* scale-in after a step down: after a full stable period, to the low load's size in one action, no flapping;
* a scale-out that reuses a removed replica's id does not read as negative arrivals.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import Any

import pytest

from planner.profiles import get_profile
from planner.queueing import mgc_wait
from runtime.orchestrator.autoscaler import (Autoscaler, AutoscalerConfig, BatchModel, PoolLimits, Signals,
                                             batch_slope, size_pool)
from runtime.orchestrator.pools import Pool, Replica
from runtime.policies.fcfs import FCFS

SERVICE_S = 0.3


def signals(rate: float, service_s: float = SERVICE_S, running: float = 0.0, replicas: int = 1,
            span_s: float = 0.0) -> Signals:
    return Signals(arrival_rate=rate, throughput=rate, running=running, queued=0, service_s=service_s,
                   queue_wait_s=0, engine_waiting=0, attainment=None, replicas=replicas, span_s=span_s)


# ---------------------------------------------------------------------------------------------- batching model
def test_slots_are_servers_only_when_batching_is_free() -> None:
    limits, budget = PoolLimits(1, 16), AutoscalerConfig().wait_budget
    # slope 0: n x 4 slots of the measured service time (the planner's M/G/c over batch slots), as before.
    for rate in (2.0, 9.0, 20.0):
        n = size_pool(signals(rate), 4, limits, 0.8, budget)
        assert rate * SERVICE_S <= 0.8 * 4 * n and (n == 1 or rate * SERVICE_S > 0.8 * 4 * (n - 1)
                                                   or mgc_wait(4 * (n - 1), rate, SERVICE_S, 1.0).mean
                                                   > budget * SERVICE_S)
    # slope 1 (a CPU engine whose step time is linear in the batch): a replica serves one call's worth of
    # throughput whatever its slots, so it is one server; the old model counted four and never scaled.
    for rate in (2.0, 5.0, 9.0):
        batched = size_pool(signals(rate), 4, limits, 0.8, budget, slope=1.0)
        single = size_pool(signals(rate), 1, limits, 0.8, budget)
        assert batched == single > size_pool(signals(rate), 4, limits, 0.8, budget)
    # In between, more throughput per replica than one slot, less than four.
    mid = size_pool(signals(9.0), 4, limits, 0.8, budget, slope=0.3)
    assert size_pool(signals(9.0), 4, limits, 0.8, budget) <= mid <= size_pool(signals(9.0), 1, limits, 0.8, budget)


def test_the_measured_service_time_is_read_at_the_measured_batch() -> None:
    limits, budget = PoolLimits(1, 16), AutoscalerConfig().wait_budget
    model = BatchModel(slots=4, slope=0.5)
    # Measured at a batch of 3 per replica, a call took S1 x (1 + 0.5 x 2) = 2 S1: the same pool as one
    # measured alone at S1, so the same size at every rate.
    for rate in (1.0, 4.0, 8.0):
        busy = signals(rate, service_s=SERVICE_S * model.stretch(3.0), running=6.0, replicas=2)
        idle = signals(rate, service_s=SERVICE_S, running=0.2, replicas=2)
        assert size_pool(busy, 4, limits, 0.8, budget, slope=0.5) == size_pool(idle, 4, limits, 0.8, budget,
                                                                              slope=0.5)
    # The operating batch solves Little's law b = offered x stretch(b); none when the replica cannot keep up.
    for offered in (0.5, 1.2, 1.55):
        b = model.operating_batch(offered)
        assert b is not None and b < 4 and math.isclose(b, offered * model.stretch(b))
    # Full-batch throughput: 4 calls per S(4) = 2.5 S1, i.e. an offered load of 1.6; past it, no fixed point.
    assert model.operating_batch(1.65) is None and model.operating_batch(2.0) is None
    assert BatchModel(4, 0.0).servers(2.0) == 4 and BatchModel(4, 1.0).servers(2.5) == pytest.approx(2.5)


def test_the_slope_comes_from_the_replicas_latency_profile() -> None:
    cpu = get_profile("smollm2-135m", "CPU")

    def pool(slots: int, profile: Any) -> Pool:
        p = Pool("generate", "llm", [Replica("generate-0", "generate", slots, profile=profile)], policy=FCFS(),
                 max_queue=64)
        p.call_tokens = (600, 200)
        return p

    d0 = cpu.decode_fixed_s
    d1 = cpu.decode_per_seq_s + cpu.decode_per_kv_token_s * 700
    assert batch_slope(pool(4, cpu)) == pytest.approx(d1 / (d0 + d1))
    assert batch_slope(pool(1, cpu)) == 0.0  # one slot: no batch to grow
    assert batch_slope(pool(4, None)) == 0.0  # no profile: slots as independent servers


def test_the_rate_bounds_are_poisson_confidence_bounds() -> None:
    low, high = signals(10.0, span_s=10.0).rate_bounds(2.0)
    assert low == pytest.approx((100 - 20) / 10) and high == pytest.approx((100 + 20 + 4) / 10)
    assert signals(10.0).rate_bounds(2.0) == (10.0, 10.0)  # span unknown: taken as exact
    assert signals(0.0, span_s=3.0).rate_bounds(2.0)[1] > 0  # no arrival is not a certain zero


# ---------------------------------------------------------------------------------------------- decisions
class Harness:
    """One LLM pool fed a deterministic arrival rate tick by tick on a fake clock; a scaler that resizes at once."""

    def __init__(self, replicas: int, config: AutoscalerConfig) -> None:
        self.now = 0.0
        self.pool = Pool("generate", "llm", [self.replica(i) for i in range(replicas)], policy=FCFS(),
                         max_queue=64)
        self.pool.expected_s = SERVICE_S
        version = SimpleNamespace(name="wf", pools={"generate": self.pool}, spec=SimpleNamespace(plan=None))
        self.orch = SimpleNamespace(versions={"wf": version}, pools_by_name={"generate": self.pool},
                                    run_listeners=[])
        self.resized: list[tuple[float, int]] = []
        self.monitor = Autoscaler(self.orch, SimpleNamespace(resize=self.resize), config,  # type: ignore[arg-type]
                                  clock=lambda: self.now)
        self._carry = 0.0
        self._granted = 0

    def replica(self, i: int) -> Replica:
        return Replica(f"generate-{i}", "generate", 1)

    async def resize(self, name: str, n: int, reason: str = "") -> None:
        self.resized.append((self.now, n))
        while len(self.pool.replicas) > n:
            self.pool.replicas.pop()
        while len(self.pool.replicas) < n:
            # The scaler reuses the lowest free id, as PoolScaler does.
            taken = {r.replica_id for r in self.pool.replicas}
            i = next(i for i in range(n + 1) if f"generate-{i}" not in taken)
            self.pool.replicas.append(self.replica(i))

    async def run(self, rate: float, seconds: float, dt: float = 0.1) -> None:
        """``rate`` calls per second granted evenly over the replicas, each running ``SERVICE_S``."""
        for _ in range(round(seconds / dt)):
            self.now += dt
            self._carry += rate * dt
            grants, self._carry = int(self._carry), self._carry - int(self._carry)
            replicas = self.pool.replicas
            for _ in range(grants):  # round robin
                replicas[self._granted % len(replicas)].served += 1
                self._granted += 1
            busy = rate * SERVICE_S  # Little's law: calls running
            for i, r in enumerate(replicas):
                r.inflight = int(busy // len(replicas)) + (1 if i < busy % len(replicas) else 0)
            # Offered more than the replicas serve: a standing queue (a call waiting per replica).
            self.pool._waiting = len(replicas) if busy > 0.9 * len(replicas) else 0
            self.monitor.tick()
            await asyncio.sleep(0)  # let a decided resize run

    def decisions(self, action: str) -> list[Any]:
        return [d for d in self.monitor.decisions if d.action == action]


CONFIG = AutoscalerConfig(pools={"generate": PoolLimits(1, 20)}, interval_s=0.1, window_s=3.0, fast_window_s=0.6,
                          scale_out_cooldown_s=0.6, scale_in_cooldown_s=0.6, scale_in_stable_s=3.0)


def within_noise_rate(n: int, window_s: float, z: float) -> float:
    """A rate whose point estimate wants ``n + 1`` replicas while its lower bound over ``window_s`` still
    wants ``n``."""
    limits, budget = PoolLimits(1, 20), CONFIG.wait_budget
    rate = 1.0
    while size_pool(signals(rate), 1, limits, 0.8, budget) <= n:
        rate += 0.05
    assert size_pool(signals(rate, span_s=window_s), 1, limits, 0.8, budget,
                     rate=signals(rate, span_s=window_s).rate_bounds(z)[0]) <= n
    return rate


def test_a_rise_within_the_noise_adds_nothing_a_significant_one_scales_out_in_one_action() -> None:
    async def body() -> None:
        h = Harness(3, CONFIG)
        await h.run(within_noise_rate(3, CONFIG.window_s, CONFIG.confidence_z), 10.0)
        assert not h.decisions("scale_out") and len(h.pool.replicas) == 3  # the old point-estimate rule: 4
        await h.run(30.0, 1.5)
        outs = h.decisions("scale_out")
        want = size_pool(signals(30.0), 1, PoolLimits(1, 20), 0.8, CONFIG.wait_budget)
        # The standing queue: the short window's estimate sizes the pool within a second and a half, in
        # two actions at most (not one replica per cool-down).
        assert 1 <= len(outs) <= 2 and len(h.pool.replicas) >= want - 1
        assert all("M/G/c model wants" in d.reason for d in outs)

    asyncio.run(body())


def test_after_a_step_down_it_scales_in_once_to_the_low_size_and_does_not_flap() -> None:
    async def body() -> None:
        h = Harness(12, CONFIG)
        await h.run(30.0, 6.0)
        assert not h.decisions("scale_in")
        low = size_pool(signals(6.0), 1, PoolLimits(1, 20), 0.8, CONFIG.wait_budget)
        step_down = h.now
        await h.run(6.0, 10.0)
        ins = h.decisions("scale_in")
        assert ins and len(h.pool.replicas) == low
        # A full stable period of fresh evidence first, then straight to (about) the low size, not the step's tail.
        assert ins[0].t - step_down >= CONFIG.scale_in_stable_s
        assert ins[0].desired <= 12 // 2 and len(ins) <= 2
        assert not [d for d in h.decisions("scale_out") if d.t > step_down]  # no flapping on the way down

    asyncio.run(body())


def test_a_replica_id_reused_by_a_scale_out_does_not_read_as_negative_arrivals() -> None:
    async def body() -> None:
        h = Harness(3, CONFIG)
        await h.run(8.0, 4.0)
        gone = h.pool.replicas.pop()  # scaled in ...
        assert gone.served > 0
        h.pool.replicas.append(h.replica(2))  # ... and a new replica with the same id, its counter at 0
        await h.run(8.0, 4.0)
        measured = h.monitor.measure(h.pool, "wf", h.now)
        assert measured is not None and measured.arrival_rate == pytest.approx(8.0, rel=0.1)
        assert not h.decisions("scale_in")

    asyncio.run(body())
