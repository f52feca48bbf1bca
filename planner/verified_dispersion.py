"""The arrivals' dispersion measured in the verification simulation, fed back into the analytic model.

Why
---
:mod:`planner.dispersion` predicts how bursty each stage's arrivals are from the chosen pools, one
link at a time. Around a resource loop -- a shared pool whose departures reach another LLM pool that
feeds it again -- the links' gains multiply, and near a loop gain of 1 a few per cent of error in each
link moves the amplification between 2x and unbounded (``benchmarks/results/plan_vs_sim_seed30.md``,
random44: the 70B pool's arrivals 6.4 over 1 s simulated against 1.55 predicted; end-to-end p99 1.45x
the prediction). Given the simulated indices the planner's queueing tables are right there: with every
stage's index forced to the simulated one, random44's p99 is predicted within 4%.

Every plan is simulated before it is shown (``cortexlang/cli/plan_verify.py``). That simulation is a
measurement: per stage, the index of dispersion of the calls' arrival counts over a grid of windows
(:class:`planner.plan.MeasuredArrivals`, ``runtime.simulator.verify.arrival_dispersion``). Where the
index measured over the window the stage's queue reads (:func:`planner.dispersion.read_window`)
exceeds the analytic one for the same pools by more than :data:`FEED_TOLERANCE` and by more than
:data:`FEED_SIGMAS` sampling errors, the planner builds the stage's candidates with the measured index
(:meth:`planner.api.Planner._bursts`) and solves again; the new plan is verified again. Only the
traffic descriptor comes from the simulation: the queueing and latency tables, the Monte Carlo over
the workflow's paths and the solver stay the planner's own, and ``benchmarks/plan_vs_sim.py`` checks
the result on a simulation with another seed.

Rules
-----
* Measured indices only raise a stage's: a stage measured no burstier than predicted keeps the
  analytic index (which may be conservative; lowering it would let one seed's luck shrink a pool).
* Inside a fan-out a stage's index is of the batches' epochs (:class:`planner.candidates.StageLoad`'s
  ``burst``): the ``k`` copies reach a branch's first stage at once, so the calls' index is ``k`` times
  the epochs' (:func:`planner.dispersion.batched`) and the measured one is divided by ``k``. A later
  stage of a branch gets its copies spread by the first stage's service, so dividing understates its
  epochs' index: the rule then errs towards the analytic one.
* Sampling error: over ``n`` windows the index's estimate has a relative standard error of about
  ``sqrt(2 / (n - 1))`` (the sample variance of ``n`` near-normal counts; bursty counts spread more,
  hence several sigmas). Windows with fewer than :data:`MIN_BINS` counts are not used.
* Between the grid's windows the index is interpolated linearly in the logarithm of the window (the
  index grows smoothly with the window); outside it, the nearest window's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from planner.dispersion import read_window
from planner.plan import MeasuredArrivals, VerifiedDispersion
from planner.visits import VisitChain, branch_multiplicity

if TYPE_CHECKING:
    from planner.candidates import Candidate

FEED_TOLERANCE = 0.10
"""A measured index counts only above the analytic one by this much (relative)."""
FEED_SIGMAS = 3.0
"""... and by this many of its standard errors."""
MIN_BINS = 30
"""Fewest windows a measured index must average over to be used."""


class StageArrivals(NamedTuple):
    """What the analytic model says of one stage's arrivals under the chosen pools: the window its
    queue reads them over (None: no single window, :func:`planner.dispersion.read_window`), the index
    of dispersion predicted over it, and the fan-out copies that arrive together (1 outside fan-outs)."""

    window_s: float | None
    analytic: float
    copies: int = 1


def measured_index(curve: MeasuredArrivals, window_s: float) -> tuple[float, int] | None:
    """The index of ``curve`` over ``window_s`` (log-linear between its windows with at least
    :data:`MIN_BINS` counts, the nearest such window's outside them) and the counts behind it (the
    fewer of the two windows'); None when no window has enough counts."""
    grid = [(w, i, n) for w, i, n in zip(curve.windows_s, curve.index, curve.bins) if n >= MIN_BINS and w > 0]
    if not grid or window_s <= 0:
        return None
    if window_s <= grid[0][0]:
        return grid[0][1], grid[0][2]
    for (w0, i0, n0), (w1, i1, n1) in zip(grid, grid[1:]):
        if window_s <= w1:
            t = math.log(window_s / w0) / math.log(w1 / w0)
            return i0 + t * (i1 - i0), min(n0, n1)
    return grid[-1][1], grid[-1][2]


def fed_index(arrivals: StageArrivals, curve: MeasuredArrivals | None) -> float | None:
    """The measured index (of the epochs, for fan-out copies) when it exceeds the analytic one beyond
    :data:`FEED_TOLERANCE` and :data:`FEED_SIGMAS` standard errors; None otherwise (keep the analytic)."""
    if curve is None or arrivals.window_s is None:
        return None
    got = measured_index(curve, arrivals.window_s)
    if got is None:
        return None
    index, bins = got
    epochs = index / max(arrivals.copies, 1)
    error = epochs * math.sqrt(2.0 / max(bins - 1, 1))
    if epochs > arrivals.analytic * (1.0 + FEED_TOLERANCE) and epochs - arrivals.analytic > FEED_SIGMAS * error:
        return epochs
    return None


def stage_arrivals(chain: VisitChain, chosen: Mapping[str, "Candidate"], fanout_width: Mapping[str, int] | None,
                   analytic: Mapping[str, float]) -> dict[str, StageArrivals]:
    """Per chosen stage, its :class:`StageArrivals` given the analytic indices ``analytic``
    (:func:`planner.dispersion.plan_dispersion` of the same pools; 1 where absent)."""
    wf = chain.workflow
    copies = {s: k for s, (_, k) in branch_multiplicity(wf, fanout_width).items()}
    return {s: StageArrivals(read_window(c, wf.stage(s)), analytic.get(s, 1.0), copies.get(s, 1))
            for s, c in chosen.items()}


def feedback(arrivals: Mapping[str, StageArrivals], measured: Mapping[str, MeasuredArrivals]
             ) -> dict[str, VerifiedDispersion]:
    """The stages whose measured index replaces the analytic one (:func:`fed_index`), with both."""
    out = {}
    for s, a in sorted(arrivals.items()):
        fed = fed_index(a, measured.get(s))
        if fed is not None:
            out[s] = VerifiedDispersion(window_s=float(f"{a.window_s:.6g}"), analytic=round(a.analytic, 4),
                                        simulated=round(fed, 4))
    return out


def used_index(arrivals: StageArrivals, curve: MeasuredArrivals | None) -> float:
    """The index a stage's candidates are built with: the measured one where it is fed, else the analytic."""
    fed = fed_index(arrivals, curve)
    return arrivals.analytic if fed is None else fed


def merged(old: Mapping[str, MeasuredArrivals], new: Mapping[str, MeasuredArrivals]) -> dict[str, MeasuredArrivals]:
    """Per stage, the burstier of two measurements window by window (same grid; else the newer one), so
    the rounds of feedback only ever raise an index and end."""
    out = dict(old)
    for s, b in new.items():
        a = old.get(s)
        if a is None or a.windows_s != b.windows_s:
            out[s] = b
            continue
        pick = [(ia, na) if ia >= ib else (ib, nb) for ia, na, ib, nb in zip(a.index, a.bins, b.index, b.bins)]
        out[s] = b.model_copy(update={"index": tuple(i for i, _ in pick), "bins": tuple(n for _, n in pick)})
    return out


def raised(arrivals: Mapping[str, StageArrivals], before: Mapping[str, MeasuredArrivals],
           after: Mapping[str, MeasuredArrivals]) -> list[str]:
    """The stages whose index would be built higher with the measurements ``after`` than with ``before``
    (by more than :data:`FEED_TOLERANCE`): where another round of feedback changes the model."""
    return [s for s, a in sorted(arrivals.items())
            if used_index(a, after.get(s)) > used_index(a, before.get(s)) * (1.0 + FEED_TOLERANCE)]


__all__ = ["FEED_TOLERANCE", "FEED_SIGMAS", "MIN_BINS", "StageArrivals", "measured_index", "fed_index",
           "stage_arrivals", "feedback", "used_index", "merged", "raised"]
