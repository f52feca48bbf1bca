"""The plan-vs-simulation decomposition into marginals and within-run correlation
(benchmarks/plan_vs_sim_correlation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.plan_vs_sim_correlation import decompose


def _visits(first: np.ndarray, second: np.ndarray) -> list[tuple[int, str, float, float]]:
    """Two visits per run, ``a`` then ``b``, with the given latencies."""
    out = []
    for run, (x, y) in enumerate(zip(first.tolist(), second.tolist())):
        out.append((run, "a", 0.0, x))
        out.append((run, "b", x, x + y))
    return out


def test_equal_latencies_within_a_run_raise_the_tail_above_the_shuffled_one() -> None:
    x = np.random.default_rng(1).exponential(1.0, 4000)
    d = decompose(_visits(x, 3.0 * x), np.random.default_rng(0))
    assert d["coupled"] == pytest.approx(np.quantile(4.0 * x, 0.99), rel=1e-12)
    assert d["coupled"] / d["shuffled"] > 1.1  # two exponentials' sum has a lighter tail than one doubled
    assert d["rho"] > 0.99  # ranks within each stage are identical


def test_independent_visits_read_as_uncorrelated() -> None:
    rng = np.random.default_rng(2)
    d = decompose(_visits(rng.exponential(1.0, 4000), rng.lognormal(0.0, 1.0, 4000)), np.random.default_rng(0))
    assert 0.93 < d["coupled"] / d["shuffled"] < 1.07
    assert abs(d["rho"]) < 0.06
