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


def test_table_quantile_is_np_interp_exactly() -> None:
    """table_quantile reads a grid level's entry directly: the same float as np.interp, on and off the grid
    (ties and zero waits included)."""
    from planner.candidates import table_quantile

    rng = np.random.default_rng(5)
    for _ in range(50):
        x = np.concatenate([np.zeros(rng.integers(0, 2000)), rng.lognormal(0.0, 1.0, TABLE_SAMPLES)])[:TABLE_SAMPLES]
        table = _table(np.round(x, int(rng.integers(1, 6))), int(rng.integers(1, 4)))
        for q in [*U_GRID, 0.5, 0.95, 0.99, 0.123, 0.9973]:
            assert table_quantile(table, float(q)) == float(np.interp(q, U_GRID, table))
