"""Batch deferral for Cortex: tuned on seed 2, then before/after on sim_fair's cells (SIMULATED).

Cortex runs at its sim_fair parameters (``results/sim_fair_tuned.json``) plus ``defer_slack_factor``
(:class:`runtime.policies.cortex.SlackHold`; inf = off, main's behaviour). Step 1 (tuning seed 2,
load 0.7, ``--tune-runs`` runs): per (workload, cluster) pair the factor of ``--factors`` (and off)
with the lowest (scale@99%, scale@95%), ties to off. Step 2 (evaluation seed 1, sim_fair's cells,
``--runs`` runs): each cell's scales before (off) and after (the pair's factor). Bisection to
``--rel-tol`` (2%: one step is the acceptance threshold) in both steps.

    .venv/bin/python benchmarks/batch_deferral.py [--factors 2,3,4.5,6] [--tune-runs 500] [--runs 1000]

Writes benchmarks/results/batch_deferral.json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sim_common import setup  # noqa: E402
from benchmarks.sim_fair import CELLS, TUNE_LOAD, TUNING_SEED, load_text, scales  # noqa: E402

OUT = Path(__file__).parent / "results"


def _params(base: dict, factor: float) -> dict:
    return base if math.isinf(factor) else {**base, "defer_slack_factor": factor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", default="2,3,4.5,6", help="defer_slack_factor values tried besides off")
    ap.add_argument("--tune-runs", type=int, default=500)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rel-tol", type=float, default=0.02)
    ap.add_argument("--workloads", default=None, help="comma-separated subset of the cells' workloads")
    args = ap.parse_args()
    factors = [math.inf] + [float(x) for x in args.factors.split(",")]
    cells = [c for c in CELLS if args.workloads is None or c[0] in args.workloads.split(",")]
    tuned = json.loads((OUT / "sim_fair_tuned.json").read_text())["tuned"]
    t0, load0 = time.perf_counter(), os.getloadavg()
    setups, chosen, tried = {}, {}, {}
    for workload, cluster in dict.fromkeys((w, c) for w, c, _ in cells):
        key = f"{workload}:{cluster}"
        s = setups[key] = setup(workload, cluster)
        base = tuned[key]["cortex"]["best"]
        rows = []
        for f in factors:
            sc = scales(s, "cortex", TUNE_LOAD, args.tune_runs, TUNING_SEED, _params(base, f), args.rel_tol)
            rows.append({"factor": f, "scale95": round(sc[0.95], 3), "scale99": round(sc[0.99], 3)})
            print(f"[simulated] tune {key} {base} defer {f}: {sc}", flush=True)
        tried[key] = rows
        chosen[key] = min(rows, key=lambda r: (r["scale99"], r["scale95"]))["factor"]  # first minimum: off wins ties
    evals = []
    for workload, cluster, load in cells:
        key = f"{workload}:{cluster}"
        base = tuned[key]["cortex"]["best"]
        before = scales(setups[key], "cortex", load, args.runs, args.seed, base, args.rel_tol)
        f = chosen[key]
        after = before if math.isinf(f) else scales(setups[key], "cortex", load, args.runs, args.seed,
                                                     _params(base, f), args.rel_tol)
        evals.append({"workload": workload, "cluster": cluster, "load": load, "factor": f,
                      "before95": round(before[0.95], 3), "before99": round(before[0.99], 3),
                      "after95": round(after[0.95], 3), "after99": round(after[0.99], 3)})
        print(f"[simulated] eval {key}:{load} defer {f}: {before} -> {after}", flush=True)
    wall, loads = time.perf_counter() - t0, (load0, os.getloadavg())
    report = {"label": "simulated", "tuning_seed": TUNING_SEED, "seed": args.seed, "tune_runs": args.tune_runs,
              "runs": args.runs, "rel_tol": args.rel_tol, "factors": [str(f) for f in factors],
              "tried": {k: [{**r, "factor": str(r["factor"])} for r in v] for k, v in tried.items()},
              "eval": [{**e, "factor": str(e["factor"])} for e in evals], "wall_s": round(wall, 1),
              "load_average_start_end": [list(x) for x in loads]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "batch_deferral.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(tried, evals, factors, args, wall, loads))


def markdown(tried: dict, evals: list[dict], factors: list[float], args, wall: float, loads) -> str:
    """The tuning table (seed 2) and the before/after table (evaluation seed); > rel_tol worse in bold."""
    tol = args.rel_tol

    def cell(x: float, ref: float) -> str:
        return f"**{x:.2f}**" if x > ref * (1 + tol) else f"{x:.2f}"

    out = [f"{wall:.0f} s wall{load_text(loads)}.", "",
           f"Tuning (seed {TUNING_SEED}, load {TUNE_LOAD}, {args.tune_runs} runs, bisection to {tol:.0%}): "
           "SLO scale @95% / @99% per defer_slack_factor (inf = off).", "",
           "| pair | " + " | ".join(str(f) for f in factors) + " | chosen |", "|---" * (len(factors) + 2) + "|"]
    for key, rows in tried.items():
        off = rows[0]
        chosen = min(rows, key=lambda r: (r["scale99"], r["scale95"]))["factor"]
        out.append(f"| {key} | " + " | ".join(f"{cell(r['scale95'], off['scale95'])} / "
                                               f"{cell(r['scale99'], off['scale99'])}" for r in rows)
                   + f" | {chosen} |")
    out += ["", f"Evaluation (seed {args.seed}, {args.runs} runs, bisection to {tol:.0%}), the pair's chosen "
            "factor: SLO scale before (off) -> after.", "",
            "| workload | cluster | load | factor | @95% before | @95% after | @99% before | @99% after |",
            "|---|---|---|---|---|---|---|---|"]
    for e in evals:
        out.append(f"| {e['workload']} | {e['cluster']} | {e['load']} | {e['factor']} | {e['before95']:.2f} | "
                   f"{cell(e['after95'], e['before95'])} | {e['before99']:.2f} | {cell(e['after99'], e['before99'])} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
