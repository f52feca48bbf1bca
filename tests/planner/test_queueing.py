"""Erlang-C / Allen–Cunneen against known values, and the batching fixed point."""

from __future__ import annotations

import dataclasses
import heapq
import math

import numpy as np
import pytest

from cortexlang import laws
from cortexlang.ir import ToolStage
from planner.candidates import StageLoad, executor_candidates
from planner.profiles import get_profile
from planner.queueing import (
    BatchWait, batch_wait, erlang_c, full_batch_service, llm_batch_point, mgc_wait, peakedness, scaled_erlang_c,
)
from planner.synthetic import gpu_inventory


def _erlang_c_direct(c: int, a: float) -> float:
    """Textbook closed form, for cross-checking the recursion."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("c,a", [(1, 0.5), (2, 1.0), (5, 4.0), (10, 8.0), (20, 15.0), (50, 45.0)])
def test_erlang_c_matches_closed_form(c: int, a: float) -> None:
    assert erlang_c(c, a) == pytest.approx(_erlang_c_direct(c, a), rel=1e-9)


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=5e-4)  # standard call-centre table value
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 0.0) == 0.0


def test_allen_cunneen_reduces_to_mm1_and_scales_with_variability() -> None:
    w = mgc_wait(1, 0.8, 1.0, cs2=1.0, ca2=1.0)
    assert w.mean == pytest.approx(0.8 / (1 - 0.8))  # M/M/1: Wq = rho / (mu - lam)
    deterministic = mgc_wait(1, 0.8, 1.0, cs2=0.0, ca2=1.0)
    assert deterministic.mean == pytest.approx(w.mean / 2)  # M/D/1 is half of M/M/1
    assert mgc_wait(2, 2.0, 1.0, 1.0) is None


def test_peakedness_is_one_for_poisson_and_grows_with_the_arrivals_dispersion() -> None:
    assert peakedness(1.0, 0.3) == 1.0
    assert peakedness(3.0, 0.0) == pytest.approx(3.0)  # deterministic service: the arrivals' own index
    # service of the declared laws' family (lognormal), CV 1: 1 + (ca2 - 1) E[min(S1, S2)] / E[S], the
    # minimum's share erfc(sigma / 2) with sigma^2 = ln 2 (0.556; an exponential's would be 1/2)
    assert peakedness(3.0, 1.0) == pytest.approx(1.0 + 2.0 * math.erfc(math.sqrt(math.log(2.0)) / 2.0))
    assert peakedness(0.2, 0.2) < 1.0 < peakedness(2.0, 0.2) < peakedness(4.0, 0.2)


def test_scaled_erlang_c_is_erlang_c_for_poisson_and_continuous_in_z() -> None:
    assert scaled_erlang_c(86, 64.7, 1.0) == erlang_c(86, 64.7)
    ps = [scaled_erlang_c(86, 64.7, z) for z in np.linspace(1.0, 4.0, 61)]
    assert all(b >= a for a, b in zip(ps, ps[1:]))  # more peaked: more waiting
    assert max(b - a for a, b in zip(ps, ps[1:])) < 0.02  # no jumps between integer c / z


def _gg_c_waits(c: int, rho: float, ca2: float, cs2: float, n: int = 200_000, seed: int = 1) -> np.ndarray:
    """Waits in a FCFS c-server queue, gamma inter-arrivals (squared CV ``ca2``), service of the declared
    laws' family (lognormal, mean 1, squared CV ``cs2``: what the planner assumes of it)."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.gamma(1.0 / ca2, ca2 / (rho * c), n))
    service = rng.lognormal(*laws.log_params(1.0, math.sqrt(cs2)), n)
    free = [0.0] * c
    waits = np.empty(n)
    for i, t in enumerate(arrivals):
        start = max(heapq.heappop(free), t)
        waits[i] = start - t
        heapq.heappush(free, start + service[i])
    return waits[n // 10:]


@pytest.mark.parametrize("c,rho,ca2,cs2", [(20, 0.75, 3.0, 0.2), (60, 0.75, 3.0, 0.2), (60, 0.8, 5.0, 0.1),
                                           (8, 0.7, 3.0, 1.0)])
def test_bursty_arrivals_wait_as_a_gg_c_queue(c: int, rho: float, ca2: float, cs2: float) -> None:
    """The peaked probability of waiting and mean wait against a G/G/c simulation: within 15% and
    20% (Erlang C's probability is 1.7-6x low here)."""
    sim = _gg_c_waits(c, rho, ca2, cs2)
    w = mgc_wait(c, rho * c, 1.0, cs2, ca2)
    assert w.p_wait == pytest.approx(float((sim > 0).mean()), rel=0.15)
    assert w.mean == pytest.approx(float(sim.mean()), rel=0.2)
    assert erlang_c(c, rho * c) < 0.6 * float((sim > 0).mean())


def test_batch_fixed_point_satisfies_littles_law_and_grows_with_load() -> None:
    prof = get_profile("llama-3-8b", "H100", 1)
    low = llm_batch_point(prof, 1.0, 500, 500, 100, 256)
    high = llm_batch_point(prof, 20.0, 500, 500, 100, 256)
    for rate, point in ((1.0, low), (20.0, high)):
        assert point.batch == pytest.approx(rate * point.service_s(100), rel=1e-9)
    assert high.batch > low.batch and high.t_iter > low.t_iter  # the batching effect
    assert llm_batch_point(prof, 1e4, 500, 500, 100, 256) is None


def _iteration_batch(d0: float, d1: float, rate: float, out: int, steps: int = 200_000, seed: int = 2) -> float:
    """Time-average running sequences of one continuously batching engine, simulated iteration by
    iteration: Poisson arrivals join at the next iteration, every running sequence makes one token per
    iteration of ``d0 + d1 N`` seconds (``N`` the running count, itself included) and leaves after
    ``out`` tokens; no prefill, no slot cap."""
    rng = np.random.default_rng(seed)
    left: list[int] = []
    elapsed = area = 0.0
    for _ in range(steps):
        if not left:  # idle until the next arrival, which starts an iteration at once
            elapsed += rng.exponential(1.0 / rate)
            left = [out]
        t = d0 + d1 * len(left)
        area += len(left) * t
        elapsed += t
        left = [n - 1 for n in left if n > 1] + [out] * int(rng.poisson(rate * t))
    return area / elapsed


@pytest.mark.parametrize("d0, d1, load", [(0.050, 0.0114, 0.3), (0.050, 0.0114, 0.6), (0.020, 0.020, 0.3)])
def test_batch_fixed_point_counts_each_sequence_in_its_own_batch(d0: float, d1: float, load: float) -> None:
    """A sequence runs in batches that hold it besides the others (Poisson, mean ``B``): its mean step
    is ``d0 + d1 (B + 1)``, and Little's law over that step gives the time-average batch of an
    iteration-level simulation within 4% (SmolLM2 on one CPU core, ``d1`` a fifth of ``d0``, at about
    1.2 and 3 sequences running; and a step that doubles from one sequence to two). The mean-batch step
    ``d0 + d1 B`` alone (the planner's until 2026-12-08) falls 19-50% short."""
    prof = dataclasses.replace(get_profile("llama-3-8b", "H100", 1), prefill_per_token_s=0.0,
                               prefill_fixed_s=0.0, decode_fixed_s=d0, decode_per_seq_s=d1,
                               decode_per_kv_token_s=0.0)
    rate, out = load * 0.065 / (d0 + d1), 50
    point = llm_batch_point(prof, rate, 500, 1, out, 256)
    simulated = _iteration_batch(d0, d1, rate, out)
    assert point.batch == pytest.approx(simulated, rel=0.04)
    assert point.service_s(out) == pytest.approx(out * (d0 + d1 * (point.batch + 1.0)), rel=1e-9)
    without_own_seat = rate * out * d0 / (1.0 - rate * out * d1)
    assert without_own_seat < 0.85 * simulated


def _fcfs_batch_waits(servers: int, batch: int, rho: float, calls: int = 200_000, seed: int = 0) -> np.ndarray:
    """Waits in a FCFS queue with ``servers`` slots, Poisson batches of ``batch`` calls, Exp(1) service."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(batch / (rho * servers), calls // batch))
    service = rng.exponential(1.0, (len(arrivals), batch))
    free = [0.0] * servers  # a heap of the times the slots free up
    waits = np.empty(len(arrivals) * batch)
    for b, t in enumerate(arrivals):
        for j in range(batch):
            start = max(heapq.heappop(free), t)
            waits[b * batch + j] = start - t
            heapq.heappush(free, start + service[b, j])
    return waits[len(waits) // 10:]


def _model_waits(wait: BatchWait, n: int = 400_000) -> np.ndarray:
    rng = np.random.default_rng(1)
    queued = np.where(rng.random(n) < wait.batch.p_wait, rng.exponential(wait.batch.mean_if_waiting or 1.0, n), 0.0)
    return queued + np.asarray(wait.own)[rng.integers(0, len(wait.own), n)]


@pytest.mark.parametrize("servers,batch,rho", [(1, 8, 0.5), (2, 8, 0.5), (4, 8, 0.72), (4, 4, 0.72), (8, 4, 0.5)])
def test_batch_arrival_wait_is_conservative_against_a_fcfs_queue(servers: int, batch: int, rho: float) -> None:
    """Fan-out bursts: the M^X/G/c estimate is at least the simulated mean and p99 wait (within the
    simulation's noise), and above them by at most 2x plus half a service time (large pools, where
    the pooled server's conservatism costs a fraction of a service time)."""
    sim = _fcfs_batch_waits(servers, batch, rho)
    model = _model_waits(batch_wait(servers, rho * servers, 1.0, cs2=1.0, ca2=1.0, batch=batch))
    for stat in (np.mean, lambda w: np.quantile(w, 0.99)):
        assert 0.95 * stat(sim) <= stat(model) <= 2.0 * stat(sim) + 0.5
    # The single-arrival Allen–Cunneen estimate with Erlang C's probability of waiting, which it
    # replaced, misses the mean by far (mgc_wait's peaked probability of waiting comes closer).
    single = mgc_wait(servers, rho * servers, 1.0, 1.0, ca2=batch)
    assert erlang_c(servers, rho * servers) * single.mean_if_waiting < 0.7 * float(np.mean(sim))


def test_batch_wait_without_a_burst_is_allen_cunneen() -> None:
    single = batch_wait(4, 2.88, 1.0, cs2=1.0, ca2=1.0, batch=1)
    assert single.batch == mgc_wait(4, 2.88, 1.0, 1.0, 1.0) and single.own == (0.0,)
    one_slot = batch_wait(1, 0.5, 1.0, cs2=1.0, ca2=1.0, batch=8)
    assert one_slot.own == tuple(float(j) for j in range(8))  # the j calls ahead, one at a time
    assert one_slot.mean == pytest.approx(0.5 / 0.5 * (1 + 1 / 8) / 2 * 8 + 3.5)  # M^X/M/1, exact
    assert batch_wait(2, 2.0, 1.0, 1.0, 1.0, batch=4) is None


def test_executor_pools_in_a_fan_out_are_offered_a_slot_per_branch_and_priced_for_the_burst() -> None:
    """An 8-way fan-out of a 300 ms search: up to 8 slots are candidates, and one slot is predicted
    to keep the burst's last call behind the 7 others (not the Erlang-C wait of single arrivals)."""
    stage = ToolStage(name="search", entry="tools.x:search", service_s=0.3, service_cv=0.5)
    load = StageLoad(rate_per_s=0.8, visits_per_run=8.0, ca2=1.0, batch=8)
    cands = executor_candidates(stage, load, gpu_inventory(cpu_slots=32)).candidates
    by_slots = {c.units: c for c in cands}
    assert {1, 8} <= set(by_slots)
    assert by_slots[1].quantile(0.99) >= 7 * 0.3
    assert by_slots[8].quantile(0.99) < by_slots[1].quantile(0.99) / 2


def test_busy_batches_widen_the_tail_not_the_body_of_an_llm_call() -> None:
    """The running batch fluctuates around B*: the p99 grows with the per-sequence cost, the median barely."""
    from planner.candidates import U_GRID, llm_service_table

    flat = llm_service_table(0.05, 0.02, 0.0, 0.0, 100, 256, 1)
    busy = llm_service_table(0.05, 0.02, 0.0, 0.0, 100, 256, 1, per_seq_s=0.0004, batch=20.0, max_num_seqs=32)
    p50, p99 = (int(np.searchsorted(U_GRID, q)) for q in (0.5, 0.99))
    assert busy[p99] > 1.05 * flat[p99]
    assert abs(busy[p50] - flat[p50]) < 0.05 * flat[p50]


def test_cached_log_factorials_are_log_gamma_and_read_only() -> None:
    """erlang_c's memoised ``log k!`` table (queueing._log_factorials) is lgamma(k + 1) and cannot be
    altered by a caller (it is shared between calls)."""
    from planner.queueing import _log_factorials

    k, log_fact = _log_factorials(300)
    assert k.tolist() == list(range(301))
    assert np.allclose(log_fact, [math.lgamma(i + 1) for i in range(301)], rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError):
        log_fact[3] = 0.0


def _iteration_waits(d0: float, d1: float, prefill: float, slots: int, rate: float, out: int,
                     calls: int = 60_000, seed: int = 3) -> np.ndarray:
    """Slot waits of one continuously batching engine of ``slots`` slots, simulated iteration by iteration:
    Poisson arrivals queue FCFS and are admitted at an iteration's start while a slot is free; each
    admitted prompt's ``prefill`` lengthens that iteration (stalling every running sequence), which then
    decodes one token of each of the ``N`` running sequences in ``d0 + d1 N``; a call leaves after ``out``
    tokens. Returns each call's slot wait: from the first iteration start after its arrival (where a free
    slot would have admitted it) to its admission."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, calls))
    waits = np.empty(calls)
    first = np.empty(calls)  # the first iteration start each call saw
    running: list[int] = []
    now, head, seen = 0.0, 0, 0
    while head < calls:
        if not running and arrivals[head] > now:
            now = arrivals[head]  # idle until the next arrival
        arrived = int(np.searchsorted(arrivals, now, side="right"))
        first[seen:arrived] = now
        seen = max(seen, arrived)
        step = 0.0
        while len(running) < slots and head < calls and arrivals[head] <= now:
            waits[head] = now - first[head]
            running.append(out)
            step += prefill
            head += 1
        now += step + d0 + d1 * len(running)
        running = [n - 1 for n in running if n > 1]
    return waits


@pytest.mark.parametrize("load", [0.3, 0.4, 0.5])
def test_the_slot_wait_drains_at_the_full_batch(load: float) -> None:
    """A call waits only while every slot is busy, so the queue drains at the full batch's pace
    (:func:`planner.queueing.full_batch_service`: ``O t(m) + m P``), not the time-average stay's. SmolLM2
    on one CPU core, 3 slots (``d1`` a fifth of ``d0``, a 0.15 s prefill per admission, 50 tokens, 0.9-1.8
    sequences running): the mean wait of those who wait is 15-22% short of an iteration-level simulation,
    the time-average stay's drain 22-41% short."""
    d0, d1, prefill, slots, out = 0.050, 0.0114, 0.15, 3, 50
    prof = dataclasses.replace(get_profile("llama-3-8b", "H100", 1), prefill_per_token_s=prefill / 100,
                               prefill_fixed_s=0.0, decode_fixed_s=d0, decode_per_seq_s=d1,
                               decode_per_kv_token_s=0.0)
    stay = out * (d0 + d1 * 2) + prefill  # about the time-average stay at a batch of ~1.5
    rate = load * slots / stay
    point = llm_batch_point(prof, rate, 100, 100, out, slots)
    service = point.service_s(out)
    drain = full_batch_service(out, d0 + d1 * slots, point.prefill_s, slots)
    assert drain > service
    waits = _iteration_waits(d0, d1, prefill, slots, rate, out)
    waited = waits[waits > 0.0]
    model = mgc_wait(slots, rate, service, 0.0, 1.0, drain)
    average = mgc_wait(slots, rate, service, 0.0, 1.0)
    assert model.mean_if_waiting == pytest.approx(waited.mean(), rel=0.25)
    assert average.mean_if_waiting < model.mean_if_waiting < waited.mean()
    assert model.p_wait == average.p_wait  # the probability keeps the time-average load
    assert mgc_wait(slots, rate, service, 0.0, 1.0, service / 2) == average  # a shorter drain changes nothing
