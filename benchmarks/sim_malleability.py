"""Malleability under pressure: SLO scale bought with declared answer quality (simulated engines).

Workload: NL2SQL whose SQL-writing stages (``generate``, ``fix``) prefer
Llama-3-70B and declare Llama-3-8B as a lighter option at 90% quality
(``model = llama70b | llama8b @ 90%``); ``schema_link`` and ``answer`` run on
Llama-3-8B. Cluster: 16 H100 as two Llama-3-70B TP4 replicas and eight
Llama-3-8B replicas, one generic pool per model (the same replicas for every
policy), each capped at the planner's latency-aware batch size. Load is a
fraction of the layout's analytic capacity with every call on its preferred
model (the 70B pool is the bottleneck). Standalone latency, the SLO scale's
unit, is always the preferred model's.

The published baselines serve the model a call asks for; Cortex swaps a call to
the lighter model when its stage's expected wait exceeds the run's slack (and
then admits rather than rejects). So Cortex's scale is bought with quality: the
report gives, at each target's scale, the mean declared quality of the admitted
runs and the share of runs with any call on the lighter model.
``cortex-fixed`` is Cortex with malleability off (ablation).

    .venv/bin/python benchmarks/sim_malleability.py [--runs N] [--seed S]

Writes benchmarks/results/sim_malleability.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sim_common import BASELINE_PARAMS, DEADLINE_AWARE, EXECUTOR_SLOTS  # noqa: E402
from planner.candidates import latency_cap  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.capacity import capacity_runs_per_s, run_demand  # noqa: E402
from runtime.simulator.cluster import ReplicaSpec, gpu_replicas, model_profile  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402
from runtime.simulator.slo_scale import min_slo_scales  # noqa: E402
from runtime.simulator.workloads import nl2sql, program  # noqa: E402

OUT = Path(__file__).parent / "results"
TARGETS = (0.95, 0.99)
BASELINES = ("fcfs", "autellix-plas", "hexgen-text2sql", "hexagent")
"""The published baselines (sim_common's, less ATLAS: on sequential workflows it equals PLAS)."""
POLICIES = {**{b: dict(BASELINE_PARAMS.get(b, {})) for b in BASELINES}, "cortex": {},
            "cortex-fixed": {"malleable": False}}
DEADLINE_AWARE = DEADLINE_AWARE | {"cortex-fixed"}


def layout(prog, wf) -> tuple[ReplicaSpec, ...]:
    """2 x Llama-3-70B TP4 + 8 x Llama-3-8B on 16 H100, latency-aware caps, one generic pool per model."""
    reps = gpu_replicas({"H100": 8}, "llama70b", 4, prefix="big-") + gpu_replicas({"H100": 8}, "llama8b", 1)
    probe = Simulator(prog, (*reps, ReplicaSpec(name="x", kind="executor", slots=EXECUTOR_SLOTS)),
                      make_policy("fcfs"), [Stream(wf.name, 1.0)], SimConfig(runs=1))
    ctx = run_demand(probe.graphs[wf.name])["ctx"]
    capped = [replace(r, slots=latency_cap(model_profile(prog, r.model or "", r.device, r.tp), ctx)) for r in reps]
    return (*capped, ReplicaSpec(name="executors", kind="executor", slots=EXECUTOR_SLOTS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    wf = nl2sql(sql_models=("llama70b", "llama8b"))
    prog = program(wf)
    lay = layout(prog, wf)
    probe = Simulator(prog, lay, make_policy("fcfs"), [Stream(wf.name, 1.0)], SimConfig(runs=1))
    capacity = capacity_runs_per_s(prog, probe.graphs[wf.name], lay)
    rows = []
    t0 = time.perf_counter()
    for load in (0.5, 0.7, 0.9):
        rate = load * capacity
        for name, params in POLICIES.items():
            def sim(scale, name=name, params=params, rate=rate):
                pol = make_policy(name.removesuffix("-fixed"))
                for k, v in params.items():
                    setattr(pol, k, v)
                return Simulator(prog, lay, pol, [Stream(wf.name, rate)],
                                 SimConfig(runs=args.runs, seed=args.seed, slo_scale=scale)).run()

            sc = min_slo_scales(sim, TARGETS, deadline_aware=name in DEADLINE_AWARE, hi0=2.0)
            row = {"load": load, "rate_runs_per_s": round(rate, 2), "policy": name}
            for q in TARGETS:
                key = round(q * 100)
                s = sc[q]
                ref = sim(s if name in DEADLINE_AWARE and math.isfinite(s) else None)
                row.update({f"scale{key}": round(s, 3), f"quality{key}": round(ref.mean_quality(), 4),
                            f"degraded{key}": round(ref.degraded_fraction(), 4),
                            f"rejected{key}": round(ref.rejected_fraction(), 4)})
            rows.append(row)
            if name == "cortex":  # at the best baseline's SLO: attainment and the quality it costs
                for q in TARGETS:
                    key = round(q * 100)
                    base = min(r[f"scale{key}"] for r in rows if r["load"] == load and r["policy"] in BASELINES)
                    ref = sim(base)
                    row.update({f"at_baseline{key}": round(base, 3), f"attain_at_baseline{key}":
                                round(ref.attainment(base), 4), f"quality_at_baseline{key}": round(ref.mean_quality(), 4)})
            print(f"[simulated] load {load:.1f} {name:16s} " + " ".join(
                f"@{round(q * 100)}%: scale {row[f'scale{round(q * 100)}']:.2f} quality "
                f"{row[f'quality{round(q * 100)}']:.3f} degraded {row[f'degraded{round(q * 100)}']:.2f}"
                for q in TARGETS), flush=True)
    elapsed = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"label": "simulated", "runs_per_simulation": args.runs, "seed": args.seed, "wall_s": round(elapsed, 1),
              "capacity_runs_per_s": round(capacity, 2), "rows": rows}
    (OUT / "sim_malleability.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Malleability: SLO scale vs declared answer quality (simulated)", "",
             f"Command: `.venv/bin/python benchmarks/sim_malleability.py --runs {args.runs} --seed {args.seed}` "
             f"({elapsed:.0f} s). NL2SQL with `generate`/`fix` = `llama70b | llama8b @ 90%` on 16 H100 "
             "(2 x 70B TP4 + 8 x 8B, one generic pool per model, latency-aware caps); load = fraction of the "
             f"capacity with every call on its preferred model ({capacity:.1f} runs/s). Standalone latency "
             "uses the preferred model. `quality` = mean declared quality of admitted runs at that target's "
             "scale; `degraded` = share of runs with a call on the lighter model; `cortex-fixed` = Cortex "
             "without malleability.", "",
             "| load | policy | scale@95% | quality | degraded | scale@99% | quality | degraded |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['load']:.1f} | {r['policy']} | {r['scale95']:.2f} | {r['quality95']:.3f} | "
                     f"{r['degraded95']:.2f} | {r['scale99']:.2f} | {r['quality99']:.3f} | {r['degraded99']:.2f} |")
    lines += ["", "Cortex at the best baseline's SLO scale (the scale at which that baseline attains the target):", "",
              "| load | target | best baseline scale | Cortex attainment there | Cortex quality there |",
              "|---|---|---|---|---|"]
    for r in rows:
        if r["policy"] == "cortex":
            for q in TARGETS:
                key = round(q * 100)
                lines.append(f"| {r['load']:.1f} | {q:.0%} | {r[f'at_baseline{key}']:.2f} | "
                             f"{r[f'attain_at_baseline{key}']:.1%} | {r[f'quality_at_baseline{key}']:.3f} |")
    lines += ["", "Caveat: with malleability the attainment of Cortex is not monotone in the SLO scale (a tighter "
              "deadline makes it swap more calls to the faster model), so the bisected scale is a scale that "
              "meets the target, not necessarily the smallest."]
    (OUT / "sim_malleability.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
