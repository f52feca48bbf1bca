"""The LLM latency table (planner.candidates.llm_service_table) against the model written plainly.

``llm_service_table`` is the planner's hottest loop, so it works in place, memoises the parts that
several tables share (a pool's waits, the iteration times) and builds the prefill stall's shock from
arrays cached per output-length array (``1/out``, ``Z/sqrt(out)``, ...). This test pins it to the
model's maths written out operation by operation with no such shortcuts (the formulation the
planner used before those optimisations): tables equal to rounding, on many pool shapes (waits,
stalls with and without bursts, batch caps, hedges, several replicas, a stall-free pool).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.candidates import (
    NO_STALL, PrefillStall, _coadmitted_prefill, _design, _table, _unit_normal, _unit_normal_2, _unit_normal_3,
    _unit_uniform, llm_service_table, output_tokens_samples, stall_deviation,
)


def _reference_waits(p_wait: float, mean_wait: float, stall: PrefillStall) -> np.ndarray:
    """The batch-slot wait (stratified exponential tail) plus the prefill's Pollaczek-Khinchine wait."""
    n = len(_design()[0])
    strata = (np.arange(n) + 0.5) / n
    w = np.zeros(n)
    if p_wait > 0 and mean_wait > 0:
        tail = strata > 1.0 - p_wait
        w[tail] = -mean_wait * np.log((1.0 - strata[tail]) / p_wait)
    x = stall.share
    if stall.m2 > 0.0 and 0.0 < x < 1.0:
        u = _unit_uniform()
        mean_if_waiting = stall.m2 / (2.0 * (1.0 - x)) / x
        w += np.where(u < x, -mean_if_waiting * np.log(np.minimum(u, x) / x), 0.0)
    return w


def _reference_table(prefill_s: float, t_iter: float, p_wait: float, mean_wait: float, mean_tokens: int,
                     max_tokens: int, hedge: int, per_seq_s: float, batch: float, max_num_seqs: int,
                     stall: PrefillStall) -> np.ndarray:
    out = output_tokens_samples(mean_tokens, max_tokens)[_design()[1]]
    shock: np.ndarray | float = 0.0
    z, rel = 0.0, 0.0
    if stall.m2 > 0.0 and t_iter > 0.0 and stall.share < 1.0:
        x = stall.share
        spread = (1.0 - x) + x / stall.replicas
        spread3 = (1.0 - x) + x / stall.replicas ** 2
        scale = math.sqrt(stall.m2 * spread) / (1.0 - x)
        shock = stall_deviation(_unit_normal_2(), out * t_iter * (1.0 - x), x, stall.m2_poisson * spread,
                                stall.m3 * spread3)
        excess = max(stall.m2 - stall.m2_poisson, 0.0) * spread
        shock = shock + (math.sqrt(excess) / (1.0 - x)) * np.sqrt(out * t_iter) * _unit_normal_3()
        z = _unit_normal_2()
        if max_num_seqs > 0 and batch > 0.0:  # the batch cap's bound, the clipped mass given back
            bound = out * x * t_iter * max(max_num_seqs / batch - 1.0, 0.0) + max(max_num_seqs - batch, 0.0) * (
                stall.m2 / x)
            capped = np.minimum(shock, bound)
            shock = capped + (shock.mean() - capped.mean())
        mean_stay = max(float(out.mean()) * t_iter, 1e-12)
        rel = scale * math.sqrt(mean_stay) / mean_stay
    t: np.ndarray | float = t_iter
    if per_seq_s > 0.0 and batch > 0.0:
        coupled = min(batch * rel, math.sqrt(batch))
        running = batch + math.sqrt(max(batch - coupled * coupled, 0.0)) * _unit_normal() + coupled * z
        running = np.clip(running, 0.0, max(max_num_seqs - 1, 0))
        t = np.maximum(t_iter + per_seq_s * (running + 1.0 - batch), t_iter - per_seq_s * batch)
    busy = out * t
    decode = np.maximum(busy + shock, busy * (1.0 - stall.share))
    samples = _reference_waits(p_wait, mean_wait, stall) + prefill_s + _coadmitted_prefill(stall, t_iter) + decode
    return _table(samples, hedge)


def _stall(rng: np.random.Generator, replicas: int, bursty: bool) -> PrefillStall:
    lam = rng.uniform(0.5, 20.0)
    prefill = rng.uniform(0.005, 0.08)
    share = min(lam * prefill, 0.85)
    lam = share / prefill
    m2 = lam * prefill ** 2
    return PrefillStall(share=share, m2=m2 * (rng.uniform(1.0, 4.0) if bursty else 1.0), replicas=replicas,
                        m3=lam * prefill ** 3, m2_poisson=m2)


@pytest.mark.parametrize("seed", range(12))
def test_llm_table_equals_the_plain_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        mean_tokens = int(rng.choice([1, 12, 40, 150, 600]))
        max_tokens = int(rng.choice([mean_tokens, 2 * mean_tokens, 4096]))
        kind = rng.integers(0, 4)
        stall = NO_STALL if kind == 0 else _stall(rng, int(rng.choice([1, 1, 3, 8])), bool(kind == 2))
        cap = int(rng.integers(1, 64))
        batch = float(rng.uniform(0.0, cap)) if rng.uniform() < 0.9 else 0.0
        args = (float(rng.uniform(0.0, 0.5)), float(rng.uniform(0.005, 0.06)),
                float(rng.choice([0.0, 1e-9, rng.uniform(0.0, 1.0)])), float(rng.uniform(0.0, 3.0)),
                mean_tokens, max_tokens, int(rng.choice([1, 1, 2, 3])),
                float(rng.choice([0.0, rng.uniform(1e-5, 1e-3)])), batch, cap if rng.uniform() < 0.9 else 0, stall)
        got = llm_service_table(*args)
        want = _reference_table(*args)
        # the cached reciprocals round differently: ~1e-15 relative on realistic shapes, up to ~1e-11 where
        # 1 - a^3 cancels (a stay of a token or two); far below the 6 digits a plan prints
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        assert not got.flags.writeable
