"""The decode-stretch floor (runtime/simulator/floor.py): water-filling vs brute force, closed forms,
and the simulator never beating it."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from runtime.policies.fcfs import FCFS
from runtime.simulator.floor import DecodeReplica, min_mean_stretch
from runtime.simulator.sim import SimConfig, Simulator, Stream
from tests.runtime.simulator.helpers import engines, executors, one_llm, prog


def test_one_replica_at_a_constant_batch_costs_its_step_time():
    r = DecodeReplica(fixed_s=0.005, per_seq_s=0.0001, cap=64)
    b = 20
    rate = b / r.step_s(b)
    assert min_mean_stretch([r], rate, ref_step_s=0.005) == pytest.approx(r.step_s(b) / 0.005, rel=1e-9)


def test_overload_is_infinite_and_no_load_is_one():
    r = DecodeReplica(fixed_s=0.005, per_seq_s=0.0001, cap=8)
    assert min_mean_stretch([r], r.max_rate * 1.01, 0.005) == float("inf")
    assert min_mean_stretch([r], 0.0, 0.005) == 1.0


def test_water_filling_equals_brute_force_on_random_pairs():
    rng = random.Random(5)
    for _ in range(40):
        reps = [DecodeReplica(rng.uniform(0.004, 0.012), rng.uniform(5e-5, 3e-4), rng.randint(8, 64))
                for _ in range(2)]
        load = rng.uniform(0.1, 0.9) * sum(r.max_rate for r in reps)
        ref = min(r.fixed_s for r in reps)
        got = min_mean_stretch(reps, load, ref)
        grid = np.linspace(0.0, 1.0, 4001)
        best = min(
            (reps[0].token_seconds(f * load) + reps[1].token_seconds((1 - f) * load)) / (load * ref)
            for f in grid if f * load <= reps[0].max_rate and (1 - f) * load <= reps[1].max_rate)
        assert got <= best * (1 + 1e-9)
        assert got == pytest.approx(best, rel=2e-3)


def test_simulated_decode_never_beats_the_floor():
    """One H100 replica, decode-only-dominated calls (8-token prompts, 200 tokens out): the measured
    token-weighted mean time per output token is at least the floor's at the measured throughput."""
    wf = one_llm(8, 200)
    res = Simulator(prog(wf), engines(1, "H100", slots=32) + executors(1), FCFS(), [Stream(wf.name, 3.0)],
                    SimConfig(runs=400, seed=2, token_cv=0.0, warmup_fraction=0.0, record_calls=True)).run()
    from planner.profiles import get_profile

    p = get_profile("llama-3-8b", "H100", 1)
    calls = res.calls
    out_tokens = sum(c[9] for c in calls)
    span = max(c[7] for c in calls) - min(c[6] for c in calls)
    per_token = np.mean([(c[7] - c[6]) / c[9] for c in calls])          # every call has 200 tokens
    ctx = 8 + 100
    rep = DecodeReplica(p.decode_fixed_s, p.decode_per_seq_s + p.decode_per_kv_token_s * ctx, 32)
    floor = min_mean_stretch([rep], out_tokens / span, ref_step_s=1.0)  # seconds per token
    assert per_token >= floor * 0.98   # 2%: prompt tokens and the first step are outside the model


def test_helper_combinations_are_consistent():
    r = DecodeReplica(0.006, 0.0002, 16)
    for mu in itertools.chain([0.0, 0.006], np.linspace(0.0061, 1.0, 50)):
        x = r.rate_at(float(mu))
        assert 0.0 <= x <= r.max_rate
