"""`runtime.simulator.verify.quantile_interval`: the distribution-free interval of a population quantile
from a sample (order statistics), as the demo and benchmarks/real_vs_sim.py print beside a measured
quantile."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from runtime.simulator.verify import quantile_interval


def test_forty_runs_bound_a_median_to_ranks_14_to_27_and_cannot_bound_a_p99_from_above() -> None:
    xs = [float(k) for k in range(1, 41)]  # the value is its rank
    assert quantile_interval(xs, 0.5) == (14.0, 27.0)
    low, high = quantile_interval(xs, 0.99)
    assert high is None and low == 38.0  # P(B >= 39) = 6.1% > 2.5%: rank 38 is the highest lower bound


def test_an_empty_sample_bounds_nothing_and_a_tiny_one_bounds_little() -> None:
    assert quantile_interval([], 0.5) == (None, None)
    assert quantile_interval([1.0, 2.0, 3.0], 0.5) == (None, None)  # 3 values: P(all above) = 12.5%


@pytest.mark.parametrize("q", [0.2, 0.5, 0.9])
def test_the_interval_covers_the_true_quantile_at_least_95_percent_of_the_time(q: float) -> None:
    """Monte Carlo over 3,000 samples of 40 lognormal values (seeded): coverage within [0.95, 0.99]
    (the order statistics' discreteness makes it conservative, never short)."""
    rng = np.random.default_rng(7)
    truth = math.exp(NormalDist().inv_cdf(q))
    covered = 0
    for _ in range(3000):
        low, high = quantile_interval(rng.lognormal(0.0, 1.0, 40).tolist(), q)
        covered += (low is None or low <= truth) and (high is None or truth <= high)
    assert 0.95 <= covered / 3000 <= 0.99


def test_ends_are_order_statistics_of_the_sample_in_order() -> None:
    rng = np.random.default_rng(3)
    xs = rng.exponential(1.0, 200).tolist()
    for q in (0.1, 0.5, 0.95):
        low, high = quantile_interval(xs, q)
        assert low in xs and high in xs and low <= float(np.quantile(xs, q)) <= high


def test_a_long_run_bounds_its_median_tightly_without_overflow() -> None:
    """C(n, k) overflows a float past n ~ 1,000: the pmf is summed in logs."""
    xs = [float(k) for k in range(1, 5001)]
    low, high = quantile_interval(xs, 0.5)
    assert low is not None and high is not None and 2400 < low < 2500 < high < 2600


def test_the_extreme_levels_are_the_sample_extremes_not_a_math_domain_error() -> None:
    """q = 0: every value lies at or above the population's minimum, so x_(1) bounds it from above and
    nothing from below; q = 1 mirrors it (log(0) must not be taken)."""
    xs = [3.0, 1.0, 2.0, 5.0, 4.0]
    assert quantile_interval(xs, 0.0) == (None, 1.0)
    assert quantile_interval(xs, 1.0) == (5.0, None)


@pytest.mark.parametrize("q, confidence", [(-0.1, 0.95), (1.5, 0.95), (math.nan, 0.95), (0.5, 0.0),
                                           (0.5, 1.5), (0.5, math.nan)])
def test_a_level_or_confidence_outside_its_range_is_refused_by_name(q: float, confidence: float) -> None:
    with pytest.raises(ValueError, match="q must|confidence must"):
        quantile_interval([1.0, 2.0, 3.0], q, confidence)


def test_a_nan_value_is_refused_rather_than_sorted_into_a_wrong_order_statistic() -> None:
    xs = [float(k) for k in range(1, 41)]
    xs[5] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        quantile_interval(xs, 0.5)
