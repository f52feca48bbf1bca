"""Erlang-C / Allen–Cunneen against known values, and the batching fixed point."""

from __future__ import annotations

import math

import pytest

from planner.profiles import get_profile
from planner.queueing import erlang_c, llm_batch_point, mgc_wait


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


def test_batch_fixed_point_satisfies_littles_law_and_grows_with_load() -> None:
    prof = get_profile("llama-3-8b", "H100", 1)
    low = llm_batch_point(prof, 1.0, 500, 500, 100, 256)
    high = llm_batch_point(prof, 20.0, 500, 500, 100, 256)
    for rate, point in ((1.0, low), (20.0, high)):
        assert point.batch == pytest.approx(rate * point.service_s(100), rel=1e-9)
    assert high.batch > low.batch and high.t_iter > low.t_iter  # the batching effect
    assert llm_batch_point(prof, 1e4, 500, 500, 100, 256) is None
