"""Congestion a run meets again: the correlation of its visits to the same busy pool.

Why
---
:mod:`planner.latency` gives every visit its own uniform into its stage's latency table, so a run's
visits are independent (apart from declared output correlation and a fan-out's shared wait). In the
simulator they are not when a run comes back to a pool within one of its congestion episodes: the
batch it ran in, the prefill burst that stalled it or the queue it waited in is still there at its
next visit, so a run that met congestion once tends to meet it again, and the end-to-end tail is
longer than independent visits give (``benchmarks/results/plan_vs_sim_correlation.md``: four chained
LLM stages on one replica, consecutive visits' rank correlation 0.33-0.41, p99 x1.18).

The model
---------
A pool's congestion is a stationary process ``C(t)`` with autocorrelation ``exp(-|t| / tau)`` (an
Ornstein-Uhlenbeck process), ``tau`` its relaxation time (:func:`relaxation_time`):

* an LLM pool's running batch ``N`` is the busy-server count of an M/G/inf-like system (every call
  is admitted while slots are free); with a fixed iteration time that count's autocorrelation is
  ``P(residual stay > t)``, exactly ``exp(-t / E[S])`` for exponential stays ``S``: ``tau = E[S]``.
  But an iteration takes ``t(N) = t0 + p N`` (each running sequence adds ``p``), so a fuller batch
  drains more slowly: with ``O`` the mean output (each running sequence ends at an iteration with
  probability ``1 / O``) the batch's drift is ``lam - N / (O t(N))``, whose slope at the operating
  point ``N*`` (the call itself and the mean batch of others, ``B + 1``) is ``-(t - N* p) / (O t^2)``. The relaxation time is its inverse,
  ``tau = O t (t / (t - N* p)) = E[S] s``: the stay stretched by ``s = t / (t - N* p)``
  (:func:`planner.candidates.batch_stretch`), 1 for an idle replica. The prefill stalls (a burst of
  prompts) hold every call in the batch back for the stays they overlap: the same scale.
* a queue (slot wait) relaxes more slowly near saturation: an M/M/1 queue's relaxation time is
  ``E[S] / (1 - sqrt(rho))^2`` (Morse), and in heavy traffic ``c`` servers' queue is the reflected
  Brownian motion with drift ``-c mu (1 - rho)`` and variance ``2 c mu``, relaxation time
  ``4 / (c mu (1 - rho)^2) ~ E[S] / (c (1 - sqrt(rho))^2)``. So
  ``tau = E[S] max(s, 1 / (c (1 - sqrt(rho))^2))``: the busy-server count's scale until the queue's
  is longer (``s = 1`` for an executor pool).

A visit of mean length ``T`` meets the average of ``C`` over its stay. For two windows of lengths
``T1``, ``T2`` a gap ``g`` apart (the second starts ``g`` after the first ends), with ``x_i = T_i / tau``,
the OU process's window averages have correlation (:func:`window_correlation`)::

    phi = exp(-g / tau) (1 - e^-x1) (1 - e^-x2) / (2 sqrt((x1 - 1 + e^-x1) (x2 - 1 + e^-x2)))

(the covariance ``tau^2 e^(-g/tau) (1 - e^-x1)(1 - e^-x2)`` over the variances ``2 tau^2 (x_i - 1 + e^-x_i)``).
It is 1 for two instants at the same time, ``exp(-g / tau)`` for instants ``g`` apart, and tends to 0
as the visits lengthen (each averages over many episodes) or move apart.

Only part of a visit's latency is the pool's state; the rest is its own work (output length, service
time), independent between visits. With ``L = C + O`` and the two independent, ``corr(L, C)^2`` is the
congestion's share ``a = Var(C) / Var(L)`` of the visit's variance (:func:`congestion_share`; ``Var(O)``
the variance with the pool held at its mean state). The visit's normal score is then
``sqrt(a) X + sqrt(1 - a) E``, ``X`` the run's latent congestion score at the visit and ``E`` the
visit's own (its existing uniform, itself possibly made alike by :func:`planner.latency.correlated_uniforms`,
which so correlates only the own part). Two visits to one pool are correlated
``sqrt(a1 a2) phi`` in normal scores (:func:`visit_correlation`): 0 on an idle pool (``a = 0``), 0
far apart, near 1 back to back on a saturated pool.

A run's latent scores at its successive visits to a pool follow the AR(1) chain
``X_k = phi_k X_{k-1} + sqrt(1 - phi_k^2) N_k`` (exact for instants of the OU process, which is
Markov; for windows the product of consecutive ``phi`` stands for the correlation of visits further
apart). The visits' times are their expected start times on the run's own path: the sum of the mean
latencies of the visits before (:class:`Congestion` carries the means of the plan it was derived
from). Each visit's marginal stays uniform, so each stage's latency law is unchanged; only the
composition changes.

Replicas: an LLM pool's congestion is each replica's own (its batch, its prefill stalls), and the
router sends each call to one of the ``R`` replicas, so a run's next visit meets the same replica's
state with probability ``1 / R`` and another replica's, whose fluctuations are its own, otherwise:
the visits' correlation is ``phi / R`` (taking the replicas as independent; the router's balancing of
backlogs correlates them somewhat, so this is the low side). An executor pool's slots share one
queue: ``R = 1``. (Checked against the simulator: with the pool taken as a whole, 6 replicas shared
by four stages gave the planner's consecutive visits a rank correlation of 0.09 where the simulation
measured 0.00, ``benchmarks/plan_vs_sim_correlation.py --fanouts``, random17+fanout.)

Scope: visits of a run at the top level of its workflow (a fan-out's branch visits keep independent
uniforms; a fan-out visit counts as a stretch of time between the others). Pools: a shared pool
(``Candidate.group``) is one for all its member stages; a dedicated pool is its stage's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cortexlang.ir import LLMStage, Workflow
from cortexlang.semantics import Semantics
from planner.candidates import (U_GRID, Candidate, executor_service_table, llm_service_table, output_length,
                                output_tokens_moments, table_mean)
from planner.service import planned_stage


def relaxation_time(stay_s: float, servers: int, utilisation: float, stretch: float = 1.0) -> float:
    """``tau = E[S] max(s, 1 / (c (1 - sqrt(rho))^2))`` with ``s = stretch`` (module docstring); ``inf``
    at ``rho >= 1``."""
    if utilisation >= 1.0:
        return math.inf
    gap = servers * (1.0 - math.sqrt(max(utilisation, 0.0))) ** 2
    return stay_s * max(stretch, 1.0 / gap) if gap > 0.0 else math.inf


def window_correlation(tau: float, t1: np.ndarray | float, t2: np.ndarray | float,
                       gap: np.ndarray | float) -> np.ndarray:
    """Correlation of an OU process's (autocorrelation ``exp(-|t| / tau)``) averages over two windows
    of lengths ``t1`` and ``t2``, the second starting ``gap >= 0`` after the first ends (module
    docstring); instants (length 0) give ``exp(-gap / tau)``. ``tau = inf``: 1."""
    t1, t2, gap = (np.asarray(v, dtype=float) for v in (t1, t2, gap))
    if math.isinf(tau):
        return np.ones(np.broadcast(t1, t2, gap).shape)
    if tau <= 0.0:
        return np.zeros(np.broadcast(t1, t2, gap).shape)

    def rise(x: np.ndarray) -> np.ndarray:
        # (1 - e^-x) / sqrt(2 (x - 1 + e^-x)), each window's factor; -> 1 as x -> 0 (series: the
        # direct form loses every digit there)
        small = x < 1e-4
        xs = np.where(small, 1.0, x)
        direct = -np.expm1(-xs) / np.sqrt(2.0 * (xs + np.expm1(-xs)))
        xt = np.where(small, x, 0.0)
        series = (1.0 - xt / 2.0) / np.sqrt(1.0 - xt / 3.0)
        return np.where(small, series, direct)

    return np.exp(-np.maximum(gap, 0.0) / tau) * rise(np.maximum(t1, 0.0) / tau) * rise(np.maximum(t2, 0.0) / tau)


def visit_correlation(share1: float, share2: float, tau: float, t1: float, t2: float, gap: float) -> float:
    """Normal-score correlation of two visits to one pool: ``sqrt(a1 a2) phi`` (module docstring)."""
    return float(math.sqrt(max(share1, 0.0) * max(share2, 0.0)) * window_correlation(tau, t1, t2, gap))


def table_variance(table: np.ndarray) -> float:
    """The variance of the latency a table stands for: ``int Q(u)^2 du - (int Q(u) du)^2`` by the
    trapezoid rule on :data:`U_GRID` (as :func:`planner.candidates.table_mean`)."""
    second = float((np.diff(U_GRID) * (table[1:] ** 2 + table[:-1] ** 2) / 2.0).sum())
    return max(second - table_mean(table) ** 2, 0.0)


def congestion_share(table: np.ndarray, own_variance: float) -> float:
    """``a = 1 - Var(O) / Var(L)``, clipped to ``[0, 1]``: the share of a visit's latency variance
    that is the pool's state rather than the call's own work (module docstring)."""
    total = table_variance(table)
    return 0.0 if total <= 0.0 else min(max(1.0 - own_variance / total, 0.0), 1.0)


def own_variance(candidate: Candidate, stage) -> float:
    """The variance of a visit's latency with its pool held at its mean state (the call's own work),
    read off a table built on the same design as the candidate's (so the grid's small bias cancels
    in the share): an LLM call's prefill and output at the mean iteration time
    (:attr:`Candidate.own_args`), an executor call's service time (``stage``'s ``service_s`` and
    ``service_cv``, retries included). An LLM candidate without ``own_args`` (a disaggregated pool):
    ``Var(o) (mean latency / E[o])^2``, the latency's mean taken as all decode (it includes the
    prefill and the wait, so it overstates the own part: the cautious side)."""
    if candidate.kind == "llm":
        if candidate.own_args:
            return table_variance(llm_service_table(*candidate.own_args))
        mean_out, var_out, _ = output_tokens_moments(output_length(stage), candidate.max_tokens or 1)
        per_token = table_mean(candidate.table) / max(mean_out, 1e-12)
        return var_out * per_token * per_token
    return table_variance(_idle_executor_table(stage.service_s, stage.service_cv))


@lru_cache(maxsize=256)
def _idle_executor_table(service_s: float, cv: float) -> np.ndarray:
    return executor_service_table(service_s, cv, 0.0, 0.0)


def _rate_weighted(members: Sequence[Candidate], values: Sequence[float]) -> float:
    rates = np.array([max(c.arrival_rate_per_s, 0.0) for c in members])
    v = np.asarray(values, dtype=float)
    return float((rates * v).sum() / rates.sum()) if rates.sum() > 0.0 else float(v.mean())


def pool_stay(members: Sequence[Candidate]) -> float:
    """A pool's mean stay: its members' mean latencies weighted by their arrival rates."""
    return _rate_weighted(members, [table_mean(c.table) for c in members])


def _round(x: float, digits: int = 3) -> float:
    """``x`` to ``digits`` significant digits (the memo keys of :class:`Congestion`)."""
    if x == 0.0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


@dataclass(frozen=True)
class Congestion:
    """What the sampled paths need to correlate a run's visits to one pool, derived from one choice of
    pools (:func:`congestion_of`); hashable (a memo key), its figures rounded to 3 significant digits.

    ``stages``: per stage ``(pool, share a, tau)``; ``node_mean``: per top-level node (stage or
    fan-out) its mean latency per visit, the clock of the run's path; ``replicas``: per pool the
    replicas ``R`` its calls are spread over (absent: 1)."""

    stages: tuple[tuple[str, str, float, float], ...]
    node_mean: tuple[tuple[str, float], ...]
    replicas: tuple[tuple[str, int], ...] = ()

    def pools(self) -> dict[str, list[str]]:
        """Pool -> its stages (in name order)."""
        out: dict[str, list[str]] = {}
        for stage, pool, _, _ in self.stages:
            out.setdefault(pool, []).append(stage)
        return out


def congestion_of(workflow: Workflow, sem: Semantics, chosen: Mapping[str, Candidate],
                  node_mean: Mapping[str, float], revisited: set[str]) -> Congestion | None:
    """The :class:`Congestion` of the pools ``chosen`` (stage -> candidate) for the top-level stages
    whose pool some run visits more than once (``revisited``: the pools the caller counted so), with
    ``node_mean`` per top-level node; None when no such stage has a positive share."""
    stages = {s.name: s for s in workflow.stages}
    members: dict[str, list[Candidate]] = {}
    for s, c in chosen.items():
        members.setdefault(c.group or s, []).append(c)
    terms = []
    for s in sorted(chosen):
        c = chosen[s]
        pool = c.group or s
        if pool not in revisited:
            continue
        st = stages[s] if isinstance(stages[s], LLMStage) else planned_stage(sem, stages[s])
        share = _round(congestion_share(c.table, own_variance(c, st)), 2)
        if share <= 0.0:
            continue
        lead = members[pool][0]
        servers = lead.units * (lead.max_num_seqs if lead.kind == "llm" else 1)
        tau = relaxation_time(pool_stay(members[pool]), servers, max(m.utilisation for m in members[pool]),
                              _rate_weighted(members[pool], [m.batch_stretch for m in members[pool]]))
        terms.append((s, pool, share, _round(tau)))
    if not terms:
        return None
    replicas = {pool: members[pool][0].units for _, pool, _, _ in terms if members[pool][0].kind == "llm"}
    return Congestion(tuple(terms), tuple((n, _round(float(v))) for n, v in sorted(node_mean.items())),
                      tuple(sorted((p, r) for p, r in replicas.items() if r > 1)))


_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
         -0.82215223, 0.17087277)
"""Chebyshev-fitted coefficients of ``erfc`` (fractional error below 1.2e-7 everywhere)."""


def _cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF, vectorised: ``erfc(-x / sqrt 2) / 2`` with ``erfc(z) = t exp(-z^2 + P(t))``,
    ``t = 1 / (1 + |z| / 2)`` (absolute error below 1e-7: the tables' grid is far coarser)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC[-1])
    for c in _ERFC[-2::-1]:
        poly = poly * t + c
    tail = 0.5 * t * np.exp(-z * z + poly)  # P(N > |x|)
    return np.where(x >= 0.0, 1.0 - tail, tail)


_PPF_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
          -3.066479806614716e+01, 2.506628277459239e+00)
_PPF_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
          -1.328068155288572e+01)
_PPF_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
          4.374664141464968e+00, 2.938163982698783e+00)
_PPF_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)


def _horner(coefficients: Sequence[float], x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        out = out * x + c
    return out


def _scores(u: np.ndarray) -> np.ndarray:
    """The standard normal quantile of ``u`` (clipped to ``[1e-12, 1 - 1e-12]``), vectorised: rational
    approximations in the body (``|u - 1/2| <= 0.47575``) and in the tails (in ``sqrt(-2 log q)``),
    relative error below 1.2e-9 -- then exact enough that the copula's uniforms move by less than the
    grid's resolution by orders of magnitude."""
    u = np.clip(u, 1e-12, 1.0 - 1e-12)
    low = np.minimum(u, 1.0 - u)
    body = np.abs(u - 0.5) <= 0.47575
    q = np.where(body, u - 0.5, 0.0)
    r = q * q
    central = q * _horner(_PPF_A, r) / (_horner(_PPF_B, r) * r + 1.0)
    w = np.sqrt(-2.0 * np.log(np.where(body, 0.5, low)))
    tail = _horner(_PPF_C, w) / (_horner(_PPF_D, w) * w + 1.0)  # the lower tail's quantile (negative)
    return np.where(body, central, np.where(u < 0.5, tail, -tail))


def correlate(congestion: Congestion, uniforms: Mapping[str, np.ndarray], node_runs: Mapping[str, np.ndarray],
              node_steps: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The stages' visit uniforms with each run's visits to one pool sharing its latent congestion
    (module docstring). ``uniforms``: per top-level stage, each visit's uniform, in the order of
    ``node_runs[stage]``; ``node_runs``/``node_steps``: per top-level node (stage or fan-out) the
    instance and the step on its path of each visit (the clock). Stages without a term keep their
    uniforms; the others get fresh arrays. Deterministic given ``rng``'s state (one normal per visit
    of a pool's stages, pools in name order)."""
    means = dict(congestion.node_mean)
    names = sorted(node_runs)
    all_runs = np.concatenate([np.zeros(0, dtype=np.int64)] + [node_runs[k] for k in names])
    all_steps = np.concatenate([np.zeros(0, dtype=np.int64)] + [node_steps[k] for k in names])
    length = np.concatenate([np.zeros(0)] + [np.full(node_runs[k].size, means.get(k, 0.0)) for k in names])
    span = int(all_steps.max()) + 1 if all_steps.size else 1
    order = np.argsort(all_runs * span + all_steps)  # (run, step): a run makes one visit per step
    ends = np.cumsum(length[order])
    starts_sorted = ends - length[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = all_runs[order][1:] != all_runs[order][:-1]
    if order.size:  # relative to the run's own start
        starts_sorted -= starts_sorted[first][np.cumsum(first) - 1]
    start = np.empty(order.size)
    start[order] = starts_sorted
    offsets = dict(zip(names, np.cumsum([0] + [node_runs[k].size for k in names])[:-1]))

    out = dict(uniforms)
    term = {s: (pool, share, tau) for s, pool, share, tau in congestion.stages}
    spread = dict(congestion.replicas)
    for pool, members in sorted(congestion.pools().items()):
        members = [s for s in members if s in uniforms and uniforms[s].size]
        if not members:
            continue
        tau = term[members[0]][2]
        r = np.concatenate([node_runs[s] for s in members])
        st = np.concatenate([node_steps[s] for s in members])
        t0 = np.concatenate([start[offsets[s]: offsets[s] + node_runs[s].size] for s in members])
        length_of = np.concatenate([np.full(node_runs[s].size, means.get(s, 0.0)) for s in members])
        share = np.concatenate([np.full(node_runs[s].size, term[s][1]) for s in members])
        at = np.argsort(r * span + st)
        r, t0, length_of = r[at], t0[at], length_of[at]
        same = np.zeros(at.size, dtype=bool)
        same[1:] = r[1:] == r[:-1]
        phi = np.zeros(at.size)
        if same.any():
            prev = np.flatnonzero(same) - 1
            cur = prev + 1
            phi[cur] = window_correlation(tau, length_of[prev], length_of[cur],
                                          t0[cur] - (t0[prev] + length_of[prev])) / spread.get(pool, 1)
        noise = rng.standard_normal(at.size)
        latent = np.empty(at.size)
        rank = np.arange(at.size) - np.maximum.accumulate(np.where(~same, np.arange(at.size), 0))
        for k in range(int(rank.max()) + 1 if at.size else 0):
            here = np.flatnonzero(rank == k)
            if k == 0:
                latent[here] = noise[here]
            else:
                p = phi[here]
                latent[here] = p * latent[here - 1] + np.sqrt(1.0 - p * p) * noise[here]
        mixed = np.empty(at.size)
        mixed[at] = latent  # back to the members' concatenated order
        u = np.concatenate([uniforms[s] for s in members])
        z = np.sqrt(share) * mixed + np.sqrt(1.0 - share) * _scores(u)
        new = _cdf(z)
        cut = np.cumsum([0] + [node_runs[s].size for s in members])
        for i, s in enumerate(members):
            out[s] = new[cut[i]: cut[i + 1]]
    return out


def congestion_for(paths, workflow: Workflow, sem: Semantics, chosen: Mapping[str, Candidate],
                   splits: Mapping | None = None) -> Congestion | None:
    """:func:`congestion_of` for the pools ``chosen`` on the sampled ``paths``
    (a :class:`planner.latency.PathSample`): the pools some run visits more than once at the top
    level, and each top-level node's mean latency per visit under ``chosen``'s tables."""
    tables = {s: c.table for s, c in chosen.items()}
    visited: dict[str, list[np.ndarray]] = {}
    for s, v in paths.stage_visits.items():
        if s in chosen and v.runs.size:
            visited.setdefault(chosen[s].group or s, []).append(v.runs)
    revisited = {pool for pool, parts in visited.items()
                 if np.bincount(np.concatenate(parts), minlength=1).max() > 1}
    if not revisited:
        return None
    node_mean = {}
    for node in paths.nodes:
        count = paths.stage_visits[node].runs.size if node in paths.stage_visits else paths.fanouts[node].runs.size
        if count:
            node_mean[node] = float(paths.node_latency(node, tables, splits).sum()) / count
    return congestion_of(workflow, sem, chosen, node_mean, revisited)
