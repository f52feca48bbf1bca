"""Latency tables: the partial-sort quantile function equals interpolation over the fully sorted samples."""

from __future__ import annotations

import numpy as np
import pytest

from planner.candidates import TABLE_SAMPLES, U_GRID, _table


@pytest.mark.parametrize("hedge", [1, 2, 3])
def test_table_is_the_interpolated_quantile_function_of_the_samples(hedge: int) -> None:
    rng = np.random.default_rng(hedge)
    levels = (np.arange(TABLE_SAMPLES) + 0.5) / TABLE_SAMPLES
    u = U_GRID if hedge == 1 else 1.0 - (1.0 - U_GRID) ** (1.0 / hedge)
    for _ in range(20):
        x = rng.lognormal(0.0, 1.0, TABLE_SAMPLES)
        np.testing.assert_allclose(_table(x, hedge), np.interp(u, levels, np.sort(x)), rtol=1e-12, atol=0.0)
