"""The cohort term of an LLM pool's departures (:mod:`planner.dispersion`, "Cohorts") against
independent computations: a simulated M/G/1 busy period of the prefill work, and the probability
that two calls of one cohort leave in the same window."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import Workflow
from planner.dispersion import OriginScale, cohort_excess, cohort_share, departure_index, pool_departure
from planner.synthetic import edge
from tests.planner.test_dispersion import _prefill_heavy


def _busy_period_counts(rates: list[float], prefill_s: list[float], periods: int, seed: int) -> np.ndarray:
    """Per simulated busy period of a prefill server fed Poisson classes (FCFS, fixed prefill times),
    the calls of each class it serves: a cluster of the module docstring."""
    rng = np.random.default_rng(seed)
    total = sum(rates)
    pick = np.cumsum(rates) / total
    counts = np.zeros((periods, len(rates)))
    for b in range(periods):
        k = int(np.searchsorted(pick, rng.random()))
        counts[b, k] += 1
        work, t = prefill_s[k], 0.0
        while True:
            t += rng.exponential(1.0 / total)
            if t >= work:
                break
            k = int(np.searchsorted(pick, rng.random()))
            counts[b, k] += 1
            work += prefill_s[k]
    return counts


def test_cohort_excess_is_the_busy_periods_compound_index():
    rates, prefill = [4.0, 2.0], [0.05, 0.12]
    x = sum(r * p for r, p in zip(rates, prefill))
    m2 = sum(r * p * p for r, p in zip(rates, prefill))
    n = _busy_period_counts(rates, prefill, 60_000, seed=5)
    for i, (r, p) in enumerate(zip(rates, prefill)):
        simulated = float((n[:, i] * (n[:, i] - 1)).mean() / n[:, i].mean())
        # The standard error of the ratio is about 2% here (60k busy periods, x = 0.44).
        assert cohort_excess(r, r * p, m2, x) == pytest.approx(simulated, rel=0.06)


def test_one_class_of_fixed_prompts_gives_the_borel_law():
    x = 0.6
    assert cohort_excess(6.0, x, 6.0 * (x / 6.0) ** 2, x) == pytest.approx(1.0 / (1.0 - x) ** 2 - 1.0)
    assert cohort_excess(6.0, 0.0, 0.0, 0.0) == 0.0


def test_cohort_share_is_the_chance_a_pair_falls_in_one_window():
    rng = np.random.default_rng(3)
    z = np.abs(rng.standard_normal(400_000))
    for jitter, window in ((0.5, 1.0), (1.3, 1.0), (0.2, 5.0), (2.0, 0.5)):
        expected = float(np.maximum(1.0 - z * jitter / window, 0.0).mean())
        assert cohort_share(window, 1e9, jitter) == pytest.approx(expected, abs=2e-3)
    # Beyond the decode stay a share D / w, as the stall's; no jitter: the whole cohort.
    assert cohort_share(10.0, 2.0, 0.0) == pytest.approx(0.2)
    assert cohort_share(1.0, 2.0, 0.0) == 1.0
    assert cohort_share(0.0, 2.0, 0.5) == 0.0


def test_pool_departure_adds_the_cohorts_to_the_stall():
    stage, profile, cand = _prefill_heavy(7.0)
    wf = Workflow(name="w", stages=(stage,), entry="a", edges=(edge("a", "done"),))
    scales: dict = {}
    excess = pool_departure(wf, "a", {"a": cand}, {"a": {}}, scales)["a"]
    p = profile.prefill_per_token_s * 1025
    x, m2 = 7.0 * p, 7.0 * p * p
    stall, cohort = departure_index(7.0, m2, x) - 1.0, cohort_excess(7.0, x, m2, x)
    sc = scales["a"]
    assert isinstance(sc, OriginScale) and sc.cohort == pytest.approx(cohort / (stall + cohort))
    # At most the undamped sum (the batch cap only damps it), and more than the stall alone.
    assert stall < excess <= stall + cohort + 1e-9
    assert sc.jitter_s > 0.0 and sc.decode_s > sc.jitter_s
