"""Smallest SLO scale meeting an attainment target, per policy.

For a policy that ignores deadlines, one simulation suffices: its latencies do
not depend on the scale, so the smallest scale meeting target ``q`` is the
``q``-quantile of ``latency / standalone`` (:meth:`SimResult.min_scale`).

A deadline-aware policy behaves differently at each scale, so the scale is
searched: ``a(s)`` = attainment at ``s`` of the simulation run *with* deadlines
at ``s``. Starting from the bracket ``[1, hi]`` (``hi`` doubled until met), a
bisection on ``log s`` narrows to a relative width ``rel_tol``; the answer is
the upper end (a scale that was simulated and met). ``a(s)`` is assumed
monotone, which holds up to simulation noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from runtime.simulator.records import SimResult

Simulate = Callable[[float | None], SimResult]


def min_slo_scales(simulate: Simulate, targets: Sequence[float], deadline_aware: bool,
                   rel_tol: float = 0.04, hi0: float | None = None, max_hi: float = 256.0) -> dict[float, float]:
    """Smallest SLO scale per target (``inf`` when not met up to ``max_hi``)."""
    if not deadline_aware:
        res = simulate(None)
        return {q: res.min_scale(q) for q in targets}
    cache: dict[float, float] = {}

    def att(s: float) -> float:
        if s not in cache:
            cache[s] = simulate(s).attainment(s)
        return cache[s]

    out: dict[float, float] = {}
    for q in sorted(targets):
        lo, hi = 1.0, max(hi0 or 2.0, 1.0 + rel_tol)
        while att(hi) < q:
            lo, hi = hi, hi * 2.0
            if hi > max_hi:
                break
        if hi > max_hi:
            out[q] = math.inf
            continue
        if att(lo) >= q:
            out[q] = lo
            continue
        while hi / lo > 1.0 + rel_tol:
            mid = math.sqrt(lo * hi)
            if att(mid) >= q:
                hi = mid
            else:
                lo = mid
        out[q] = hi
    return out
