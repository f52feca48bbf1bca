"""SLO scale needed for 95% / 99% attainment, every policy, across loads, clusters and workloads.

All numbers are from the discrete-event simulator (simulated engines). SLO =
scale x each run's standalone latency (idle warm cluster, fastest device);
the reported scale is the smallest meeting the target (see
runtime/simulator/slo_scale.py). Baselines run on one shared pool of generic
engines; Cortex on stage-isolated pools on the same devices ("cortex-shared"
is the Cortex policy on the shared pool, an ablation). Same seed, same
workload for every policy.

    .venv/bin/python benchmarks/sim_slo_scale.py [--runs N] [--quick]

Writes benchmarks/results/sim_slo_scale.{json,md} and sim_slo_scale_*.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.progress import Progress  # noqa: E402

from benchmarks.sim_common import (  # noqa: E402
    ABLATIONS, BASELINES, DEADLINE_AWARE, PD_POLICY_PARAMS, pd_layout, pd_splits, setup, simulate,
)
from runtime.simulator.slo_scale import min_slo_scales  # noqa: E402

OUT = Path(__file__).parent / "results"
TARGETS = (0.95, 0.99)


GOAL = ("nl2sql", "mixed12", 0.7)
GOAL_PD = ("nl2sql", "mixed12-pd", 0.7)
"""The published setting (HexAGenT: A100/H100/H200 with prefill/decode disaggregation)."""
TUNING_SEED = 2


def grid(quick: bool) -> list[tuple[str, str, float]]:
    loads = (0.5,) if quick else (0.3, 0.5, 0.9)
    cells = [GOAL, GOAL_PD] + [("nl2sql", "mixed12", ld) for ld in loads]
    cells += [("nl2sql", "h100x12", 0.7), ("react", "mixed12", 0.7), ("fanout", "mixed12", 0.7),
              ("rag", "inventory", 0.7), ("deep_research", "inventory", 0.7), ("longrag", "a100x16", 0.5)]
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description="SLO-scale sweep (simulated)")
    ap.add_argument("--runs", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer loads (smoke run)")
    ap.add_argument("--max-num-seqs", type=int, default=None,
                    help="cap every LLM replica's batch (both layouts alike); default: the plan's max_num_seqs")
    ap.add_argument("--out", default="sim_slo_scale", help="result file stem in benchmarks/results/")
    ap.add_argument("--goal-only", action="store_true", help="only the two goal cells (colocated and P/D)")
    ap.add_argument("--goal-runs", type=int, default=4000,
                    help="runs per simulation in the two goal cells (at least --runs; ignored with --quick): their "
                         "99th percentile then rests on ~36 runs beyond it instead of ~9 at 1000 runs")
    args = ap.parse_args()
    args.goal_runs = args.runs if args.quick else max(args.runs, args.goal_runs)  # what the goal cells get
    cells = [GOAL, GOAL_PD] if args.goal_only else grid(args.quick)
    policies = list(BASELINES) + ["cortex", "cortex-shared", *ABLATIONS]
    rows = []
    t0 = time.perf_counter()
    setups = {}
    with Progress() as bar:
        task = bar.add_task("[simulated] SLO-scale sweep", total=len(cells) * len(policies))
        for workload, cluster, load in cells:
            disaggregated = cluster.endswith("-pd")
            base_cluster = cluster.removesuffix("-pd")
            s = setups.get((workload, base_cluster)) or setups.setdefault(
                (workload, base_cluster), setup(workload, base_cluster, args.max_num_seqs))
            runs = args.goal_runs if (workload, cluster, load) in (GOAL, GOAL_PD) else args.runs
            for pol in policies:
                if pol not in BASELINES and pol != "cortex" and (load != 0.7 or disaggregated):
                    bar.advance(task)
                    continue
                sims = [0]
                layout, split, params = None, None, None
                if disaggregated:
                    split, layout = best_split(s, pol, load, runs)
                    params = PD_POLICY_PARAMS.get(pol)

                def run(scale, pol=pol, s=s, load=load, layout=layout, params=params, runs=runs):
                    sims[0] += 1
                    return simulate(s, pol, load, scale, runs, args.seed, params=params, layout=layout)

                sc = min_slo_scales(run, TARGETS, deadline_aware=pol in DEADLINE_AWARE, hi0=2.0)
                ref = run(sc[0.99] if pol in DEADLINE_AWARE and math.isfinite(sc[0.99]) else None)
                summ = ref.summary()
                planned = s.layouts.get(round(load * s.capacity, 6), (None, None, False))[2]
                rows.append({"workload": workload, "cluster": cluster, "load": load, "policy": pol,
                             "planner_pools": planned and not disaggregated, "prefill_split": split,
                             "rate_runs_per_s": round(load * s.capacity, 2), "runs": runs,
                             "scale95": round(sc[0.95], 3), "scale99": round(sc[0.99], 3),
                             "p50_s": round(summ["p50_s"], 3), "p99_s": round(summ["p99_s"], 3),
                             "rejected": summ["rejected"], "pruned_runs": summ["pruned_runs"],
                             "mean_quality": round(summ["mean_quality"], 4),
                             "degraded_runs": round(summ["degraded_runs"], 4),
                             "simulations": sims[0]})
                bar.advance(task)
    elapsed = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"label": "simulated", "runs_per_simulation": args.runs, "goal_runs_per_simulation":
              args.goal_runs, "seed": args.seed, "wall_s": round(elapsed, 1),
              "max_num_seqs": args.max_num_seqs, "rows": rows}
    (OUT / f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / f"{args.out}.md").write_text(markdown(rows, args, elapsed))
    plot(rows, args.out)
    print((OUT / f"{args.out}.md").read_text())


def best_split(s, pol: str, load: float, runs: int) -> tuple[dict[str, int], tuple]:
    """The prefill/decode split (among :func:`pd_splits`) with the lowest (scale@99, scale@95) for
    ``pol`` on the tuning seed, and its layout: every policy gets its own best deployment."""
    best = None
    params = PD_POLICY_PARAMS.get(pol)
    for split in pd_splits(s, load * s.capacity):
        layout = pd_layout(s, split)
        sc = min_slo_scales(lambda scale: simulate(s, pol, load, scale, runs, TUNING_SEED, params=params,
                                                   layout=layout),
                            TARGETS, deadline_aware=pol in DEADLINE_AWARE, hi0=2.0)
        score = (sc[0.99], sc[0.95])
        if best is None or score < best[0]:
            best = (score, split, layout)
    assert best is not None, "no feasible prefill/decode split"
    return best[1], best[2]


def best_baseline(rows: list[dict], key: str) -> dict:
    return min((r for r in rows if r["policy"] in BASELINES), key=lambda r: r[key])


def markdown(rows: list[dict], args, elapsed: float) -> str:
    out = ["# SLO scale for 95% / 99% attainment (simulated)", "",
           f"Discrete-event simulator, {args.runs} runs per simulation ({args.goal_runs} in the two "
           f"goal cells), first 10% warm-up, seed {args.seed}; "
           f"sweep took {elapsed:.0f} s. Command: `.venv/bin/python benchmarks/sim_slo_scale.py"
           f"{' --quick' if args.quick else ''}{' --goal-only' if args.goal_only else ''} --runs {args.runs} "
           f"--goal-runs {args.goal_runs} --seed {args.seed}"
           f"{f' --max-num-seqs {args.max_num_seqs}' if args.max_num_seqs else ''} --out {args.out}`. "
           "Policy parameters were tuned on seed 2 (benchmarks/sim_tune.py), never on this seed.", "",
           "SLO = scale x the run's standalone latency (idle warm cluster, fastest device). Lower is better. "
           "Load = fraction of the analytic saturation capacity (runtime/simulator/capacity.py). "
           "`cortex` runs on the planner's stage-isolated pools (headroom mode on the same GPUs, at the simulated "
           "rate); every baseline runs on the same replicas pooled per model (one generic pool per model); "
           "`cortex-shared` = the Cortex policy on the pooled replicas (ablation); `hexagent+ect` = HexAGenT's "
           "priority with Cortex's completion-time + marginal-slowdown routing (ablation, not a published "
           "baseline, excluded from 'best baseline'). Batch cap per replica: "
           + (f"{args.max_num_seqs} on every LLM replica (both layouts alike)" if args.max_num_seqs
              else "the plan's max_num_seqs (both layouts alike)") + ". Clusters: mixed12 = 4xA100 + "
           "4xH100 + 4xH200; h100x12 = 12xH100; a100x16 = 16xA100 (Llama-3.1-70B at TP4, the KV-heavy `longrag`); "
           "inventory = the example's own resources block; mixed12-pd = mixed12 with prefill/decode "
           "disaggregation (the published HexAGenT setting): every policy, Cortex included, runs on the whole "
           "cluster split into one prefill pool and one decode pool, with the split (column `prefill`) chosen per "
           f"policy among `sim_common.pd_splits` on seed {TUNING_SEED} (each policy gets its own best deployment). "
           "Rejected runs count as misses. `quality` = mean declared answer quality of the admitted runs (1 = "
           "no call on a lighter model option; see benchmarks/sim_malleability.py for the cell where Cortex "
           "trades it).", ""]
    cells = sorted({(r["workload"], r["cluster"], r["load"]) for r in rows}, key=lambda c: (c != GOAL, c != GOAL_PD, c))
    out += ["| workload | cluster | load | policy | scale@95% | scale@99% | p50 s | p99 s | rejected | pruned runs "
            "| quality | prefill |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        for r in [r for r in rows if (r["workload"], r["cluster"], r["load"]) == cell]:
            out.append(f"| {r['workload']} | {r['cluster']} | {r['load']:.1f} | {r['policy']} | {r['scale95']:.2f} | "
                       f"{r['scale99']:.2f} | {r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['rejected']:.3f} | "
                       f"{r['pruned_runs']} | {r['mean_quality']:.3f} | {_split_text(r.get('prefill_split'))} |")
    out += ["", "## Cortex vs the best baseline (same run)", "",
            "| workload | cluster | load | best baseline @95% | ratio @95% | best baseline @99% | ratio @99% |",
            "|---|---|---|---|---|---|---|"]
    for cell in cells:
        cr = [r for r in rows if (r["workload"], r["cluster"], r["load"]) == cell]
        cx = next(r for r in cr if r["policy"] == "cortex")
        b95, b99 = best_baseline(cr, "scale95"), best_baseline(cr, "scale99")
        out.append(f"| {cell[0]} | {cell[1]} | {cell[2]:.1f} | {b95['policy']} {b95['scale95']:.2f} | "
                   f"{b95['scale95'] / cx['scale95']:.2f}x | {b99['policy']} {b99['scale99']:.2f} | "
                   f"{b99['scale99'] / cx['scale99']:.2f}x |")
    out += ["", "Ratio = best baseline's scale / Cortex's scale (> 1: Cortex needs a tighter-able SLO). "
            "Goal: >= 1.6x at 99% and >= 1.35x at 95% on the mixed cluster at 0.7 load.", ""]
    return "\n".join(out) + "\n"


def _split_text(split: dict[str, int] | None) -> str:
    return "+".join(f"{n}x{k}" for k, n in sorted(split.items()) if n) if split else "-"


def plot(rows: list[dict], stem: str) -> None:
    sweep = [r for r in rows if r["workload"] == "nl2sql" and r["cluster"] == "mixed12"]
    loads = sorted({r["load"] for r in sweep})
    if len(loads) < 2:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "scale95", "95%"), (axes[1], "scale99", "99%")):
        for pol in sorted({r["policy"] for r in sweep}):
            pts = sorted((r["load"], r[key]) for r in sweep if r["policy"] == pol)
            if len(pts) > 1:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=pol)
        ax.set_xlabel("load (fraction of capacity)")
        ax.set_ylabel(f"SLO scale for {title} attainment")
        ax.set_title(f"NL2SQL, mixed A100/H100/H200 - {title} (simulated)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"{stem}_nl2sql_mixed.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
