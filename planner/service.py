"""Service time of one SQL/tool call as the planner models it: mean and coefficient of variation.

A call whose tool retries failed attempts (``ToolStage.retry``) makes ``k``
attempts with the distribution :meth:`cortexlang.semantics.Semantics.attempts_pmf`;
each attempt takes ``S`` (mean ``mu``, standard deviation ``sigma = cv mu``; a
declared range ``[a, b]`` is uniform, with the moments the compiler stored),
and the ``i``-th retry first waits ``backoff 2^(i-1)``, so with
``B_k = backoff (2^(k-1) - 1)``::

    T | k = S_1 + ... + S_k + B_k
    E[T]   = sum_k p_k (k mu + B_k)
    E[T^2] = sum_k p_k (k sigma^2 + (k mu + B_k)^2)

The planner's executor model takes ``T`` of these two moments in the declared laws'
family (:mod:`cortexlang.laws`: lognormal; the simulator samples attempts, ranges and
backoffs exactly: it is the independent check).
"""

from __future__ import annotations

import math

from cortexlang.ir import SQLStage, ToolStage
from cortexlang.semantics import Semantics


def call_moments(mu: float, cv: float, backoff_s: float, attempts: tuple[tuple[int, float], ...]) -> tuple[float, float]:
    """(mean, cv) of one call's service time (see module docstring)."""
    sigma2 = (cv * mu) ** 2
    mean = sum(p * (k * mu + backoff_s * (2 ** (k - 1) - 1)) for k, p in attempts)
    second = sum(p * (k * sigma2 + (k * mu + backoff_s * (2 ** (k - 1) - 1)) ** 2) for k, p in attempts)
    return mean, math.sqrt(max(second - mean * mean, 0.0)) / mean if mean > 0 else 0.0


def planned_stage(semantics: Semantics, stage: SQLStage | ToolStage) -> SQLStage | ToolStage:
    """``stage`` with ``service_s``/``service_cv`` of a whole call, retries included (unchanged
    without retries: a range's moments are already the declared ones)."""
    retry = getattr(stage, "retry", None)
    if retry is None:
        return stage
    attempts = semantics.holder(stage.name).attempts_pmf(stage.name)
    mean, cv = call_moments(stage.service_s, stage.service_cv, retry.backoff_s, attempts)
    return stage.model_copy(update={"service_s": mean, "service_cv": cv})
