"""Checking a plan in the discrete-event simulator before it is shown (every figure *simulated*).

:func:`simulate_plan` runs a plan's pools (:func:`~runtime.simulator.cluster.layout_from_plan`,
shared pools included) with its knobs (model variants, max_tokens, retry depths, fan-out widths)
at its planned arrival rate, on the same latency profiles the planner used, and measures the
end-to-end latency distribution and the attainment of the file's SLO.

The number of runs is sized to a budget in seconds at a nominal simulation speed of
:data:`NOMINAL_CALLS_PER_S` calls per second, from the plan's expected calls per run, between
:data:`MIN_RUNS` and :data:`MAX_RUNS` -- not from this machine's measured speed, so a plan and
its verdict are the same on every machine for a given seed. The attainment's 95% Wilson interval
says how much the verdict can be trusted at that size.

:func:`measure_plan` also measures how bursty each stage's arrivals were
(:func:`arrival_dispersion`): the planner takes those where they exceed its own prediction
(:mod:`planner.verified_dispersion`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cortexlang.ir import SLO, Program
from planner.plan import LatencyDistribution, MeasuredArrivals, Plan, Verification
from runtime.policies.base import Policy
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import layout_from_plan
from runtime.simulator.records import SimResult
from runtime.simulator.sim import SimConfig, Simulator, Stream

NOMINAL_CALLS_PER_S = 25_000
"""Simulated calls per second assumed when sizing a verification (the Cortex policy's speed on the
2-core development machines, rounded)."""
MIN_RUNS = 1_000
MAX_RUNS = 20_000
WARMUP_FRACTION = 0.1
DISPERSION_WINDOWS_S = tuple(2.0 ** k for k in range(-6, 7))
"""The windows (1/64 s to 64 s, doubling) over which :func:`arrival_dispersion` measures the arrivals."""


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for ``z = 1.96``)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def quantile_interval(values: Sequence[float], q: float, confidence: float = 0.95
                      ) -> tuple[float | None, float | None]:
    """A distribution-free interval ``[x_(l), x_(u)]`` (order statistics of ``values``) that holds the
    population's ``q``-quantile with probability at least ``confidence``; ``None`` for an end the sample
    cannot bound (too few values beyond the quantile).

    With ``B ~ Binomial(n, q)`` the number of values below the quantile, ``P(x_(l) <= xi_q < x_(u)) =
    F(u - 1) - F(l - 1)``; ``l`` is the largest rank with ``F(l - 1) <= alpha/2`` and ``u`` the smallest
    with ``F(u - 1) >= 1 - alpha/2`` (``alpha = 1 - confidence``). 40 runs bound a median to ranks 14-27
    and cannot bound a p99 from above: what a measured quantile of a short real run can say.

    Requires ``0 <= q <= 1``, ``0 < confidence < 1`` and no NaN among ``values`` (``ValueError``
    otherwise: a NaN has no rank). ``q = 0`` gives ``(None, min)``, ``q = 1`` gives ``(max, None)``."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile_interval: q must lie in [0, 1], got {q!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"quantile_interval: confidence must lie in (0, 1), got {confidence!r}")
    if any(math.isnan(v) for v in values):
        raise ValueError("quantile_interval: values hold a NaN, which has no rank")
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return None, None
    half = (1.0 - confidence) / 2.0
    # log(q), log(1 - q); -inf at q = 0 or 1 so that 0^k = 0 for k > 0 (the k = 0 term is skipped: 0^0 = 1)
    log_q = math.log(q) if q > 0.0 else -math.inf
    log_p = math.log1p(-q) if q < 1.0 else -math.inf
    cdf, total = [], 0.0
    for k in range(n + 1):  # F(k) = P(B <= k); the pmf in logs (C(n, k) overflows a float past n ~ 1,000)
        log_pmf = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                   + (k * log_q if k else 0.0) + ((n - k) * log_p if n - k else 0.0))
        total += math.exp(log_pmf)
        cdf.append(total)
    lows = [rank for rank in range(1, n + 1) if cdf[rank - 1] <= half]
    highs = [rank for rank in range(1, n + 1) if cdf[rank - 1] >= 1.0 - half]
    return (xs[max(lows) - 1] if lows else None), (xs[min(highs) - 1] if highs else None)


def calls_per_run(plan: Plan, workflow: str) -> float:
    """Expected calls of one run of ``workflow`` under ``plan`` (every stage's visits)."""
    wp = plan.workflow(workflow)
    visits = [p.visits_per_run for p in wp.llm_pools] + [c.visits_per_run for p in wp.llm_pools for c in p.colocated]
    visits += [p.visits_per_run for p in wp.executor_pools]
    return max(sum(visits), 1.0)


def make_configured_policy(name: str, params: Mapping[str, object] | None = None) -> Policy:
    """The registry's policy ``name`` with ``params`` overriding its (dataclass) fields."""
    pol = make_policy(name)
    for key, value in (params or {}).items():
        if not hasattr(pol, key):
            raise ValueError(f"policy {name!r} has no parameter {key!r}")
        setattr(pol, key, value)
    return pol


def simulate_runs(program: Program, plan: Plan, workflow: str, runs: int, seed: int, policy: str = "fcfs",
                  params: Mapping[str, object] | None = None, record_calls: bool = False) -> SimResult:
    """``runs`` runs of ``workflow`` on ``plan``'s layout and knobs, at its planned rate, under ``policy``
    (warm-up :data:`WARMUP_FRACTION`); ``record_calls`` keeps every call's record (``SimResult.calls``)."""
    wp = plan.workflow(workflow)
    sim = Simulator(program, layout_from_plan(plan, workflow), make_configured_policy(policy, params),
                    [Stream(workflow, wp.rate_per_s)],
                    SimConfig(runs=runs, seed=seed, warmup_fraction=WARMUP_FRACTION, record_calls=record_calls),
                    knobs={workflow: wp.knobs})
    return sim.run()


def arrival_dispersion(res: SimResult, windows_s: Sequence[float] = DISPERSION_WINDOWS_S
                       ) -> dict[str, MeasuredArrivals]:
    """Per stage, the index of dispersion (variance / mean) of its calls' arrival counts in consecutive
    windows of each of ``windows_s`` (the simulation run with ``record_calls``; a call arrives when it
    is enqueued at its stage). Counted while runs arrive after the warm-up -- from the first measured
    run's arrival to the last run's -- so neither the empty start nor the drain makes a trend; the
    last, partial window is dropped. A window longer than a third of that span is left out."""
    if not res.calls or res.warmup >= len(res.arrival):
        return {}
    start, end = float(res.arrival[res.warmup]), float(res.arrival.max())
    by_stage: dict[str, list[float]] = {}
    for call in res.calls:
        t = call[5]
        if start <= t < end:
            by_stage.setdefault(call[2], []).append(t)
    out = {}
    for stage, times in sorted(by_stage.items()):
        offsets = np.asarray(times) - start
        windows, index, bins = [], [], []
        for w in windows_s:
            n = int((end - start) // w)
            if n < 3:
                continue
            counts = np.bincount((offsets // w).astype(np.int64), minlength=n)[:n]
            mean = float(counts.mean())
            if mean <= 0.0:
                continue
            windows.append(float(w))
            index.append(round(float(counts.var()) / mean, 6))
            bins.append(n)
        if windows:
            out[stage] = MeasuredArrivals(windows_s=tuple(windows), index=tuple(index), bins=tuple(bins))
    return out


@dataclass(frozen=True)
class Measured:
    """A plan's verification and how bursty each stage's arrivals were in it (both *simulated*)."""

    verification: Verification
    arrivals: dict[str, MeasuredArrivals]


def simulate_plan(program: Program, plan: Plan, workflow: str, *, budget_s: float = 1.5, seed: int = 0,
                  policy: str = "fcfs", runs: int | None = None, slo: SLO | None = None,
                  policy_params: Mapping[str, object] | None = None) -> Verification:
    """Simulate ``workflow``'s part of ``plan`` (see module docstring); ``runs`` fixes the run count
    instead of sizing it to ``budget_s``; attainment is measured against ``slo`` (default: the
    plan's); ``policy_params`` override the policy's parameters. Raises ``ValueError`` when the
    plan's layout cannot serve the workflow."""
    return measure_plan(program, plan, workflow, budget_s=budget_s, seed=seed, policy=policy, runs=runs, slo=slo,
                        policy_params=policy_params, arrivals=False).verification


def measure_plan(program: Program, plan: Plan, workflow: str, *, budget_s: float = 1.5, seed: int = 0,
                 policy: str = "fcfs", runs: int | None = None, slo: SLO | None = None,
                 policy_params: Mapping[str, object] | None = None, arrivals: bool = True) -> Measured:
    """:func:`simulate_plan`, and with ``arrivals`` each stage's arrivals' dispersion
    (:func:`arrival_dispersion`; the same simulation, its calls recorded)."""
    if runs is None:
        runs = int(min(MAX_RUNS, max(MIN_RUNS, budget_s * NOMINAL_CALLS_PER_S / calls_per_run(plan, workflow))))
    res = simulate_runs(program, plan, workflow, runs, seed, policy, policy_params, record_calls=arrivals)
    return Measured(_verification(res, plan, workflow, seed, policy, slo), arrival_dispersion(res) if arrivals else {})


def _verification(res: SimResult, plan: Plan, workflow: str, seed: int, policy: str, slo: SLO | None) -> Verification:
    """The simulated latency distribution and SLO attainment of ``res`` (see module docstring)."""
    m = res.measured
    admitted = res.status[m] != "rejected"
    latency = (res.end[m] - res.arrival[m])
    served = latency[admitted]
    q = np.quantile(served, [0.5, 0.9, 0.95, 0.99]) if len(served) else np.zeros(4)
    dist = LatencyDistribution(mean=round(float(served.mean()) if len(served) else 0.0, 6), p50=round(float(q[0]), 6),
                               p90=round(float(q[1]), 6), p95=round(float(q[2]), 6), p99=round(float(q[3]), 6))
    slo = slo or plan.workflow(workflow).slo
    n = int(len(latency))
    if slo is None:
        return Verification(policy=policy, runs=n, seed=seed, latency=dist)
    # A rejected run misses; a run ending at `fail` counts with its latency, as in the planner.
    met = int(np.sum(admitted & (latency <= slo.latency_s)))
    attained = met / n if n else 0.0
    at_target = np.sort(np.where(admitted, latency, np.inf))[max(math.ceil(slo.attainment * n) - 1, 0)] if n else 0.0
    return Verification(policy=policy, runs=n, seed=seed, latency=dist, slo_attainment=round(attained, 6),
                        attainment_interval=tuple(round(x, 6) for x in wilson_interval(met, n)),
                        holds=attained >= slo.attainment, planned_latency_s=slo.latency_s,
                        latency_at_target_s=float(at_target))
