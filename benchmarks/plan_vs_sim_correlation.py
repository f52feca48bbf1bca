"""Where does a plan-vs-simulation miss come from: the stages' own latencies, or their correlation
within a run? (SIMULATED)

    .venv/bin/python benchmarks/plan_vs_sim_correlation.py [--random 30] [--first-seed 0] [--runs 5000] [--out FILE]

The planner composes a run's end-to-end latency from per-stage latency distributions drawn
independently for each visit (``planner.latency``: only declared output correlation, ``alike``, and a
fan-out's copies' shared wait couple visits). The simulator couples them through the pools: a run
that meets a congested replica at one stage tends to meet congestion at the next (the same replica's
busy episode lasts, or the cohort it leaves with arrives together at the next pool).

For every case of ``benchmarks/plan_vs_sim.py`` without a fan-out (a run's latency is then the sum of
its visits, one after the other), the final plan (as ``cortexc plan`` makes it) is simulated with call
records on the comparison's seed (97), and the end-to-end p99 is computed twice from the same visits:

* ``coupled``: each run's sum of its own visits' latencies (enqueue to end) -- what the simulator says;
* ``shuffled``: the same sum after permuting each stage's visit latencies across runs (the median p99
  of 5 permutations): the same per-stage marginals and visit counts, with every within-run correlation
  removed -- what an exact independent composition of the simulator's own marginals would give.

Then ``planner / shuffled`` is the error of the planner's marginals (and of its composition), and
``coupled / shuffled`` is what the correlation adds; their quotient is the usual sim / planner ratio.
Reported with the Spearman correlation of consecutive visits' latencies within a run (each visit
read as its percentile among its own stage's visits), measured in the simulation and, for the same
final plan, in the planner's own sampled runs (its paths and the chosen pools' tables, with the
congestion its visits share, :mod:`planner.congestion`): the check of that model against the simulator.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexlang.cli.plan_verify import plan_and_verify  # noqa: E402
from benchmarks.plan_vs_sim import CHECK_SEED, cases  # noqa: E402
import planner.api as planner_api  # noqa: E402
from planner.plan import Plan  # noqa: E402
from runtime.simulator.verify import simulate_runs  # noqa: E402

SHUFFLES = 5


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)


def consecutive_rank_correlation(run_index: np.ndarray, order_key: np.ndarray, stages: np.ndarray,
                                 latency: np.ndarray, pool_of: dict[str, str] | None = None) -> float:
    """Spearman correlation of consecutive visits' latencies within a run: each visit read as its
    percentile among its own stage's visits (so that stages of different scales -- a 30 ms SQL call
    after a 3 s LLM call -- do not read as anti-correlated), the visits of a run ordered by
    ``order_key`` (enqueue time, or step on the path). With ``pool_of`` (stage -> pool): a run's
    consecutive visits to the same pool (the visits to other pools between them skipped), every pool's
    pairs pooled -- what :mod:`planner.congestion` models."""
    percentile = np.empty_like(latency)
    for stage in np.unique(stages):
        at = np.flatnonzero(stages == stage)
        percentile[at] = _ranks(latency[at]) / max(at.size - 1, 1)
    if pool_of is not None:
        pool_index = np.unique(np.array([pool_of.get(s, s) for s in stages]), return_inverse=True)[1]
        order = np.lexsort((order_key, run_index, pool_index))
        same_run = (run_index[order][1:] == run_index[order][:-1]) & (pool_index[order][1:] == pool_index[order][:-1])
        first, second = percentile[order][:-1][same_run], percentile[order][1:][same_run]
        return float(np.corrcoef(_ranks(first), _ranks(second))[0, 1]) if first.size > 2 else float("nan")
    order = np.lexsort((order_key, run_index))
    same_run = run_index[order][1:] == run_index[order][:-1]
    first, second = percentile[order][:-1][same_run], percentile[order][1:][same_run]
    return float(np.corrcoef(_ranks(first), _ranks(second))[0, 1]) if first.size > 2 else float("nan")


def planner_rho(paths, chosen, pool_of: dict[str, str] | None = None) -> float:
    """:func:`consecutive_rank_correlation` of the planner's sampled runs (top-level stage visits,
    each at its table's value) for the pools ``chosen``."""
    tables = {s: c.table for s, c in chosen.items()}
    runs, steps, stages, latency = [], [], [], []
    for s, v in paths.stage_visits.items():
        if v.runs.size == 0 or s not in tables:
            continue
        runs.append(v.runs)
        steps.append(paths.steps[s])
        stages.append(np.full(v.runs.size, s, dtype=object))
        latency.append(v.values(tables[s]))
    return consecutive_rank_correlation(np.concatenate(runs), np.concatenate(steps), np.concatenate(stages),
                                        np.concatenate(latency), pool_of)


class _FinalModels:
    """Records the models and the choice of the last plan assembled (``Planner._assemble``): the
    final plan's, as :func:`plan_and_verify` plans last what it returns."""

    def __init__(self) -> None:
        self.last = None
        self._assemble = planner_api.Planner._assemble

    def __enter__(self) -> "_FinalModels":
        recorder = self

        def assemble(planner, models, result, scale):
            recorder.last = (list(models), result.assignments)
            return recorder._assemble(planner, models, result, scale)

        planner_api.Planner._assemble = assemble
        return self

    def __exit__(self, *exc) -> None:
        planner_api.Planner._assemble = self._assemble


def decompose(visits: list[tuple[int, str, float, float]], rng: np.random.Generator,
              pool_of: dict[str, str] | None = None) -> dict[str, float]:
    """``visits``: (run, stage, enqueue, end) of every recorded call after the warm-up. Returns the
    coupled and shuffled end-to-end p99 (sum of each run's visits) and the mean rank correlation of
    consecutive visits' latencies within a run."""
    runs = np.array([v[0] for v in visits])
    stages = np.array([v[1] for v in visits])
    latency = np.array([v[3] - v[2] for v in visits])
    _, run_index = np.unique(runs, return_inverse=True)
    coupled = np.bincount(run_index, weights=latency)
    p99s = []
    for _ in range(SHUFFLES):
        shuffled = latency.copy()
        for stage in np.unique(stages):
            at = np.flatnonzero(stages == stage)
            shuffled[at] = latency[rng.permutation(at)]
        p99s.append(float(np.quantile(np.bincount(run_index, weights=shuffled), 0.99)))
    rho = consecutive_rank_correlation(run_index, np.array([v[2] for v in visits]), stages, latency)
    pool_rho = consecutive_rank_correlation(run_index, np.array([v[2] for v in visits]), stages, latency,
                                            pool_of or {})
    return {"coupled": float(np.quantile(coupled, 0.99)), "shuffled": float(np.median(p99s)), "rho": rho, "pool_rho": pool_rho}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random", type=int, default=30)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--fanouts", action="store_true",
                    help="also the cases with a fan-out, their top-level visits only (the branches' calls left out: "
                         "the p99 columns are then of the sum of those visits, not of the run)")
    ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args()
    only = {c for c in args.only.split(",") if c}
    rows = []
    for name, program in cases(args.random, args.first_seed):
        if (only and name not in only) or (any(wf.fanouts for wf in program.workflows) and not args.fanouts):
            continue
        with _FinalModels() as final:
            plan = plan_and_verify(program, runs=args.runs, feedback_rounds=0)
        if not isinstance(plan, Plan):
            continue
        models = {m.workflow.name: (m, assign) for m, assign in zip(*final.last)}
        for wp in plan.workflows:
            res = simulate_runs(program, plan, wp.workflow, args.runs, CHECK_SEED, record_calls=True)
            start = max(c[5] for c in res.calls) * 0.1
            first_seen: dict[int, float] = {}
            for c in res.calls:
                first_seen[c[0]] = min(first_seen.get(c[0], c[5]), c[5])
            branch = set(next(w for w in program.workflows if w.name == wp.workflow).branch_owner())
            visits = [(c[0], c[2], c[5], c[7]) for c in res.calls if first_seen[c[0]] >= start and c[2] not in branch]
            m, assign = models[wp.workflow]
            chosen = {s: m.stages[s].candidates[i] for s, i in assign.items()}
            pool_of = {s: c.group or s for s, c in chosen.items()}
            d = decompose(visits, np.random.default_rng(0), pool_of)
            d["planner_rho"] = planner_rho(m.paths, chosen)
            d["planner_pool_rho"] = planner_rho(m.paths, chosen, pool_of)
            label = name if len(plan.workflows) == 1 else f"{name}/{wp.workflow}"
            rows.append((label, wp.latency.p99, d))
            print(f"{label}: planner {wp.latency.p99:.2f}s coupled {d['coupled']:.2f}s shuffled {d['shuffled']:.2f}s "
                  f"rho {d['rho']:.2f} planner rho {d['planner_rho']:.2f} same pool {d['pool_rho']:.2f} "
                  f"planner {d['planner_pool_rho']:.2f}", flush=True)
    lines = ["# Plan vs simulation: marginals or correlation? (simulated)", "",
             f"`benchmarks/plan_vs_sim_correlation.py --random {args.random} --runs {args.runs}"
             + (f" --first-seed {args.first_seed}" if args.first_seed else "") + (" --fanouts" if args.fanouts else "")
             + "`: " + ("every case; in the fan-out cases (+fanout) the visits are the top-level ones only (the "
                        "branches' calls left out): their simulated and shuffled p99 are of the sum of those visits, "
                        "not comparable with the planner's run p99; " if args.fanouts else "cases without a fan-out; ")
             + "FCFS; the final plan simulated on seed 97 with call records (runs started after the first tenth "
             "of the simulated time). See the module docstring for the method.", "",
             "| case | planner p99 | simulated p99 (coupled) | shuffled p99 (independent visits) | "
             "planner / shuffled | coupled / shuffled | coupled / planner | consecutive visits' rank corr. "
             "(simulated) | (planner) | consecutive visits to one pool: rank corr. (simulated) | (planner) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, planned, d in rows:
        lines.append(f"| {label} | {planned:.2f}s | {d['coupled']:.2f}s | {d['shuffled']:.2f}s | "
                     f"{planned / d['shuffled']:.2f} | {d['coupled'] / d['shuffled']:.2f} | "
                     f"{d['coupled'] / planned:.2f} | {d['rho']:.2f} | {d['planner_rho']:.2f} | "
                     f"{d['pool_rho']:.2f} | {d['planner_pool_rho']:.2f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
