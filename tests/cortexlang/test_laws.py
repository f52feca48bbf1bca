"""The declared laws' family (cortexlang.laws): its moments, quantiles and pair minimum against independent
computations, and the simulator's draws against its parameters (the one family both read)."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import numpy as np
import pytest

from cortexlang import laws
from runtime.simulator.distributions import sample
from runtime.simulator.runs import _token_params


@pytest.mark.parametrize("cv", [0.3, 1.0, 3.0])
def test_the_parameters_give_the_declared_mean_and_cv(cv: float) -> None:
    mu, sigma = laws.log_params(27.0, cv)
    mean = math.exp(mu + sigma * sigma / 2.0)  # the lognormal's mean and variance, written from mu and sigma
    sd = mean * math.sqrt(math.expm1(sigma * sigma))
    assert mean == pytest.approx(27.0, rel=1e-12) and sd / mean == pytest.approx(cv, rel=1e-12)
    for k in (1, 2, 3):
        assert laws.raw_moment(27.0, cv, k) == pytest.approx(math.exp(k * mu + k * k * sigma * sigma / 2.0), rel=1e-12)


def test_quantiles_are_the_lognormals_at_each_level() -> None:
    levels = np.array([1e-6, 0.01, 0.5, 0.9, 0.99, 0.999999])
    mu, sigma = laws.log_params(40.0, 0.65)
    expect = [math.exp(mu + sigma * NormalDist().inv_cdf(u)) for u in levels]
    assert np.allclose(laws.quantiles(40.0, 0.65, levels), expect, rtol=1e-12)
    assert laws.quantiles(40.0, 0.65, levels[:0]).size == 0
    assert np.array_equal(laws.quantiles(40.0, 0.0, levels), np.full(levels.size, 40.0))  # CV 0: the constant


def test_midpoint_quantiles_keep_the_mean_within_the_documented_shortfall() -> None:
    strata = (np.arange(4096) + 0.5) / 4096
    for cv, short in ((1.0, 0.0003), (3.0, 0.0045)):
        x = laws.quantiles(1.0, cv, strata)
        assert 1.0 - x.mean() == pytest.approx(short, abs=0.0001)


@pytest.mark.parametrize("cv2", [0.1, 1.0, 4.0])
def test_the_pair_minimum_against_lognormal_draws(cv2: float) -> None:
    mu, sigma = laws.log_params(1.0, math.sqrt(cv2))
    x = np.random.default_rng(3).lognormal(mu, sigma, (2, 400_000))
    assert laws.min_pair_share(cv2) == pytest.approx(float(np.minimum(x[0], x[1]).mean()), rel=0.01)
    assert laws.min_pair_share(0.0) == 1.0


def test_the_simulator_draws_the_family_with_its_parameters() -> None:
    """The simulator's output-length parameters are laws.log_params's (same floats), and its service-time
    draw is exp(mu + sigma z) with them: one family, defined once."""
    for mean, cv in ((27, 0.3), (300, 0.65), (5, 3.0)):
        assert _token_params(mean, cv, 1, 96)[:2] == laws.log_params(float(mean), cv)
    ours, ref = random.Random(5), random.Random(5)
    mu, sigma = laws.log_params(0.4, 0.8)
    for _ in range(50):
        assert sample(ours, 0.4, 0.8, laws.FAMILY) == math.exp(ref.normalvariate(mu, sigma))


def test_a_law_of_mean_zero_is_the_constant_zero_whatever_its_cv() -> None:
    """A stage declared with nothing to spread (the planner's runaway mixture reaches it with a zero
    mean) gets zeros, not a domain error from log(0)."""
    assert list(laws.quantiles(0.0, 0.5, np.array([0.1, 0.5, 0.9]))) == [0.0, 0.0, 0.0]
