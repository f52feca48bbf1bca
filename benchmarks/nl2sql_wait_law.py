"""NL2SQL as observed: is the plan's remaining miss the composition of a run's visits or the slot wait's
law? (SIMULATED; a diagnosis, no planner change.)

    .venv/bin/python benchmarks/nl2sql_wait_law.py [--runs 6000]

Plans ``benchmarks/nl2sql_observed_miss.py``'s case (this machine's calibrated profile), simulates it (FCFS,
seed 1) and prints:

1. the simulated slot wait per LLM visit (start - enqueue) by visit index, after a stopped or a runaway
   call of the same run, and for the runs in the top 2% of summed LLM latency (the p99's runs);
2. the end-to-end (LLM visits summed) p99 of a Monte Carlo on the planner's own parts: each visit's
   latency split into the pool's slot wait ``W`` (0 with probability ``1 - p``, else exponential of
   mean ``m``) and the call's own service (the planner's table for the same pool with no wait), the
   service's uniform driven by the run's alike-output latent (``output_correlation``, as
   :mod:`planner.latency`), the wait's by an AR(1) latent with lag-one correlation ``phi`` (the
   congestion model's, :mod:`planner.congestion`; 0: independent waits). Visits: generate, then a
   fix with probability 0.87 and a second with 0.875 (the simulated shares). Rows: the planner's
   current composition (one copula on the summed table, congestion share ``a``), and the split with
   the planner's M/G/c wait law, the Poisson-fed simulated one and the coupled simulated one.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import planner.colocation as colocation  # noqa: E402
from cortexlang.compiler import compile_file  # noqa: E402
from planner.api import plan_program  # noqa: E402
from planner.candidates import U_GRID  # noqa: E402
from planner.congestion import _cdf, window_correlation  # noqa: E402
from planner.observed import observe, read_trace  # noqa: E402
from runtime import profiles  # noqa: E402
from runtime.simulator.verify import WARMUP_FRACTION, simulate_runs  # noqa: E402

TRACE = REPO / "benchmarks" / "results" / "real_vs_sim_trace.jsonl"
SLOT_WAIT_S = 0.3  # as nl2sql_observed_miss.py: longer than a prefill alone
SAMPLES = 200_000


def _wait_rows(calls: list[tuple]) -> np.ndarray:
    """Per LLM call after the warm-up: (run, visit index in its run, wait, service, tokens, previous call's tokens)."""
    start = max(c[5] for c in calls) * WARMUP_FRACTION
    first: dict[int, float] = {}
    for c in calls:
        first[c[0]] = min(first.get(c[0], c[5]), c[5])
    runs: dict[int, list[tuple]] = {}
    for c in sorted((c for c in calls if c[3] == "llm" and first[c[0]] >= start), key=lambda c: (c[0], c[5])):
        runs.setdefault(c[0], []).append(c)
    return np.array([(r, k, c[6] - c[5], c[7] - c[6], c[9], cs[k - 1][9] if k else -1)
                     for r, cs in runs.items() for k, c in enumerate(cs)])


def _visit_latents(alike: dict[str, float], phi: float, seed: int):
    """Per LLM visit ``k`` (generate, then up to two fixes): its stage, which samples make it, the run's
    alike-output normal ``own`` (shared latent ``z``, weight ``alike[stage]``) and the AR(1) congestion normal
    ``x`` (lag-one correlation ``phi``); the same draws, in the same order, for every composition below."""
    rng = np.random.default_rng(seed)
    visits = 1 + (rng.random(SAMPLES) < 0.87) * (1 + (rng.random(SAMPLES) < 0.875))
    z, x = rng.standard_normal(SAMPLES), rng.standard_normal(SAMPLES)
    for k in range(3):
        stage = "generate" if k == 0 else "fix"
        r = alike[stage]
        own = math.sqrt(r) * z + math.sqrt(1.0 - r) * rng.standard_normal(SAMPLES)
        if k:
            x = phi * x + math.sqrt(1.0 - phi * phi) * rng.standard_normal(SAMPLES)
        yield stage, visits > k, own, x


def _split_p99(service: dict[str, np.ndarray], alike: dict[str, float], p_wait: float, mean_wait: float,
               phi: float, seed: int = 1) -> float:
    """p99 of the summed LLM visits: wait from the AR(1) congestion latent, service from the alike latent."""
    total = np.zeros(SAMPLES)
    for stage, made, own, x in _visit_latents(alike, phi, seed):
        u = _cdf(x)
        wait = np.where(u > 1.0 - p_wait, mean_wait * (math.log(p_wait) - np.log(np.maximum(1.0 - u, 1e-300))), 0.0)
        total += made * (wait + np.interp(_cdf(own), U_GRID, service[stage]))
    return float(np.quantile(total, 0.99))


def _current_p99(full: dict[str, np.ndarray], alike: dict[str, float], share: float, phi: float, seed: int = 1) -> float:
    """The planner's composition: one uniform per visit into the summed table, the alike transform and then
    the congestion one (share ``a``, AR(1) latent of lag-one correlation ``phi``), as :mod:`planner.latency`."""
    total = np.zeros(SAMPLES)
    for stage, made, own, x in _visit_latents(alike, phi, seed):
        total += made * np.interp(_cdf(math.sqrt(share) * x + math.sqrt(1.0 - share) * own), U_GRID, full[stage])
    return float(np.quantile(total, 0.99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6000)
    args = ap.parse_args()
    profiles.activate()
    nl2sql = compile_file(REPO / "examples" / "nl2sql.cortex").program
    program = observe(nl2sql, read_trace(TRACE.read_text(encoding="utf-8").splitlines(), str(TRACE))).program
    built, waits = [], []
    real_table, real_wait = colocation.llm_service_table, colocation.mgc_wait
    colocation.llm_service_table = lambda *a: built.append(a) or real_table(*a)
    colocation.mgc_wait = lambda *a, **k: waits.append((a, real_wait(*a, **k))) or waits[-1][1]
    try:
        plan = plan_program(program, rate=None, time_limit_s=60.0)
    finally:
        colocation.llm_service_table, colocation.mgc_wait = real_table, real_wait
    wp = plan.workflows[0]
    pool = wp.llm_pools[0]
    chosen = next(w for a, w in reversed(waits) if a[0] == pool.replicas * pool.max_num_seqs)
    wf = program.workflow(wp.workflow)
    means = {wf.stage(s).output_tokens: s for s in ("generate", "fix")}
    full, service = {}, {}
    for a in built:  # the chosen pool's tables: the arguments carrying its wait
        if a[2] == chosen.p_wait and a[3] == chosen.mean_if_waiting and a[4].mean in means:
            full[means[a[4].mean]] = real_table(*a)
            service[means[a[4].mean]] = real_table(*(a[:2] + (0.0, 0.0) + a[4:]))
    alike = {s: wf.stage(s).output_correlation for s in ("generate", "fix")}
    print(f"[simulated] planned p99 {wp.latency.p99:.2f} s; planned slot wait P {chosen.p_wait:.3f}, "
          f"mean if waiting {chosen.mean_if_waiting:.2f} s; alike {alike}")

    res = simulate_runs(program, plan, wp.workflow, args.runs, 1, record_calls=True)
    rows = _wait_rows(res.calls)
    wait = rows[:, 2]
    summed = np.bincount(np.unique(rows[:, 0], return_inverse=True)[1], weights=wait + rows[:, 3])
    top = np.isin(rows[:, 0], np.unique(rows[:, 0])[summed >= np.quantile(summed, 0.98)])
    print(f"simulated LLM-sum p99 {np.quantile(summed, 0.99):.2f} s")
    print("| visits | n | P(wait > 0.3 s) | mean if waiting | mean service |")
    for label, mask in (("all", rows[:, 1] >= 0), *((f"visit {k}", rows[:, 1] == k) for k in range(3)),
                        ("revisit after a runaway", (rows[:, 1] >= 1) & (rows[:, 5] >= 96)),
                        ("revisit after a stopped call", (rows[:, 1] >= 1) & (rows[:, 5] >= 0) & (rows[:, 5] < 96)),
                        ("top 2% runs", top)):
        w = wait[mask]
        print(f"| {label} | {mask.sum()} | {np.mean(w > SLOT_WAIT_S):.3f} | {w[w > SLOT_WAIT_S].mean():.2f} | "
              f"{rows[mask, 3].mean():.2f} |")

    phi = float(window_correlation(21.4, 5.1, 5.1, 0.0))  # the plan's congestion (tau, share 0.16) and mean visit
    print(f"Monte Carlo on the planner's parts (phi = {phi:.2f}: tau 21.4 s, 5.1 s visits back to back):")
    print(f"| planner's composition (summed table, congestion share 0.16) | "
          f"phi {phi:.2f}: {_current_p99(full, alike, 0.16, phi):.2f} |")
    for label, p_wait, mean_wait in (("planner's M/G/c", chosen.p_wait, chosen.mean_if_waiting),
                                     ("simulated, Poisson-fed", 0.231, 2.95), ("simulated, coupled", 0.26, 3.71)):
        cells = ", ".join(f"phi {f:.2f}: {_split_p99(service, alike, p_wait, mean_wait, f):.2f}" for f in (0.0, phi, 0.95))
        print(f"| wait law {label} (P {p_wait:.3f}, mean {mean_wait:.2f} s) | {cells} |")


if __name__ == "__main__":
    main()
