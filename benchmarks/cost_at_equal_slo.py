"""Cost at equal SLO: the planner's plan + Cortex vs one shared pool + each baseline policy (simulated).

For each case (a workflow, a device kind, an arrival rate) the SLO is fixed
first: end-to-end latency at most ``--scale`` x the workflow's standalone p99
(its runs' own paths on an idle cluster, measured by the simulator), for at
least 99% of runs. Deadline-aware policies see that deadline (arrival + SLO).
Then the least cost that holds it is found two ways:

* **planner + Cortex**: the planner's cost-mode plan for that SLO on an ample
  inventory of the case's device kind, verified in the simulator under the
  Cortex policy (and tightened where it misses, as ``cortexc plan`` does:
  :func:`cortexlang.cli.plan_verify.plan_and_verify`); then re-checked on the
  evaluation seed with the same run count as the baselines.
* **shared pool + baseline**: every device in one generic pool of the model
  (:func:`benchmarks.sim_common.full_cluster_layout`: the latency-aware batch
  cap at the workload's mean context; ample executor slots), searching the GPU
  count upward from the capacity bound until attainment >= 99% on the
  evaluation seed *and* under the planner's verification rule (:func:`selected`):
  both sides pass the same two tests.

A reference column plans and verifies the same way under Cortex with its
admission control off: Cortex rejects a run when its bottleneck pool is full
and the pool's backlog exceeds the run's slack, and a rejected run is a miss.

Costs count GPUs only (executor slots are free in both). Knobs run at their
preferred (full-quality) values in the baselines; the plan's declared quality
is reported and must be 100% for the comparison to be at equal quality.
Everything here is simulated (latency profiles of the named GPUs).

    .venv/bin/python benchmarks/cost_at_equal_slo.py [--runs 10000] [--scale 2.0]

Writes benchmarks/results/cost_at_equal_slo.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sim_common import BASELINES, DEADLINE_AWARE, EXECUTOR_SLOTS, full_cluster_layout, workflow_graph  # noqa: E402
from cortexlang.cli.plan_verify import plan_and_verify  # noqa: E402
from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import SLO, CpuResource, GpuResource, Inventory, Program, Workflow  # noqa: E402
from planner.plan import Plan  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.capacity import capacity_runs_per_s  # noqa: E402
from runtime.simulator.cluster import devices_of, layout_from_plan  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402
from runtime.simulator.verify import simulate_plan, wilson_interval  # noqa: E402
from runtime.simulator.workloads import nl2sql, program  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"
PRICE = {"A100": 1.79, "H100": 2.99, "H200": 3.79}
"""$/h per GPU (the examples' prices)."""
TARGET = 0.99
MAX_GPUS = 64
PLAN_SEED = 1
"""The planner's verification seed; the comparison runs on :data:`EVAL_SEED` (never tuned on)."""
EVAL_SEED = 7
NO_ADMISSION = {"admission": False}
"""Cortex with its admission control off (a reference row: its rejections are misses)."""


@dataclass(frozen=True)
class Case:
    name: str
    program: Program
    workflow: Workflow
    device: str
    rate: float


def cases() -> list[Case]:
    wf = nl2sql()
    out = [Case(f"nl2sql @ {r:g}/s, H100", program(wf), wf, "H100", r) for r in (20.0, 60.0)]
    chess = compile_file(REPO / "examples" / "chess_sql.cortex").program
    out += [Case(f"chess_sql @ {r:g}/s, H200", chess, chess.workflow(), "H200", r) for r in (2.0, 8.0)]
    return out


def with_slo(case: Case, latency_s: float) -> Program:
    """The case's program, its workflow alone, with the fixed SLO."""
    wf = case.workflow.model_copy(update={"slo": SLO(latency_s=latency_s, attainment=TARGET)})
    return case.program.model_copy(update={"workflows": (wf,)})


def simulate(prog: Program, layout, policy: str, rate: float, runs: int, seed: int, knobs=None):
    wf = prog.workflows[0]
    return Simulator(prog, layout, make_policy(policy), [Stream(wf.name, rate)],
                     SimConfig(runs=runs, seed=seed, warmup_fraction=0.1),
                     knobs={wf.name: knobs} if knobs is not None else None).run()


def attainment(res, latency_s: float) -> tuple[float, int, int]:
    """(fraction of measured runs admitted and done within ``latency_s``, met, measured)."""
    m = res.measured
    lat = np.where(res.status[m] != "rejected", res.end[m] - res.arrival[m], np.inf)
    met = int(np.sum(lat <= latency_s))
    return met / max(len(lat), 1), met, int(len(lat))


STANDALONE_RUNS = 20_000
"""Runs whose standalone latencies define the SLO (the same for every ``--runs``)."""


def standalone_slo(case: Case, scale: float) -> float:
    """``scale`` x the standalone p99 of the case's workflow (preferred knobs, the case's device)."""
    layout = full_cluster_layout(case.program, case.workflow, {case.device: 8})
    res = simulate(with_slo(case, 1e9), layout, "fcfs", 0.01, STANDALONE_RUNS, EVAL_SEED)
    return round(scale * float(np.quantile(res.standalone[res.measured], 0.99)), 3)


def selected(check, runs: int) -> bool:
    """The planner's verification rule (:func:`cortexlang.cli.plan_verify.plan_and_verify`) applied to a
    baseline, so both sides pass the same two tests: meets the target on :data:`PLAN_SEED`, or misses
    within the 95% interval there and meets it on the next seed with twice the runs.
    ``check(seed, runs) -> (met, measured)``."""
    met, total = check(PLAN_SEED, runs)
    if met >= TARGET * total:
        return True
    if wilson_interval(met, total)[1] < TARGET:
        return False
    met, total = check(PLAN_SEED + 1, 2 * runs)
    return met >= TARGET * total


def shared_search(case: Case, prog: Program, policy: str, slo_s: float, runs: int) -> dict:
    """Least GPU count of one shared pool meeting the SLO under ``policy`` (upward from the capacity bound)."""
    wf = prog.workflows[0]
    one = full_cluster_layout(prog, wf, {case.device: 1})
    n = max(1, math.ceil(case.rate / capacity_runs_per_s(prog, workflow_graph(prog, wf, one), one)))
    tried = []
    while n <= MAX_GPUS:
        layout = full_cluster_layout(prog, wf, {case.device: n})
        res = simulate(prog, layout, policy, case.rate, runs, EVAL_SEED)
        att, met, total = attainment(res, slo_s)
        tried.append((n, round(att, 5)))
        if att >= TARGET and selected(lambda seed, k: attainment(simulate(prog, layout, policy, case.rate, k, seed),
                                                                 slo_s)[1:], runs):
            return {"policy": policy, "gpus": n, "cost_per_hour": round(n * PRICE[case.device], 2),
                    "attainment": round(att, 5), "interval": wilson_interval(met, total), "tried": tried}
        n += 1
    return {"policy": policy, "gpus": None, "cost_per_hour": math.inf, "tried": tried}


def planned(case: Case, prog: Program, slo_s: float, runs: int, params: dict | None = None) -> dict:
    """The planner's verified plan under Cortex (``params`` override its parameters), re-checked on
    the evaluation seed."""
    inv = Inventory(gpus=(GpuResource(kind=case.device, count=MAX_GPUS, cost_per_hour=PRICE[case.device]),),
                    cpu=CpuResource(slots=EXECUTOR_SLOTS, cost_per_hour=0.0))
    t0 = time.perf_counter()
    plan = plan_and_verify(prog, inventory=inv, rate=case.rate, mode="cost", runs=runs, seed=PLAN_SEED,
                           policy="cortex", policy_params=params, time_limit_s=60.0)
    seconds = time.perf_counter() - t0
    if not isinstance(plan, Plan):
        return {"error": str(plan)}
    wp = plan.workflow(prog.workflows[0].name)
    check = simulate_plan(prog, plan, wp.workflow, runs=runs, seed=EVAL_SEED, policy="cortex", policy_params=params)
    gpus = sum(devices_of(layout_from_plan(plan, wp.workflow)).values())
    pools = [f"{'+'.join(p.stages)}: {p.device} x {p.replicas} (max_num_seqs {p.max_num_seqs})" for p in wp.llm_pools]
    return {"gpus": gpus, "cost_per_hour": round(gpus * PRICE[case.device], 2), "layout": wp.layout,
            "pools": pools, "quality": wp.knobs.quality, "knobs": wp.knobs.model_dump(),
            "analytic_p99_s": wp.latency.p99, "analytic_attainment": wp.slo_attainment,
            "verification": wp.verification.model_dump() if wp.verification else None,
            "attainment": check.slo_attainment, "interval": check.attainment_interval, "holds": check.holds,
            "simulated_p99_s": check.latency.p99, "plan_seconds": round(seconds, 2)}


def run_case(case: Case, scale: float, runs: int, policies: list[str]) -> dict:
    slo_s = standalone_slo(case, scale)
    prog = with_slo(case, slo_s)
    print(f"[{case.name}] SLO {slo_s:.2f}s", flush=True)
    plan = planned(case, prog, slo_s, runs)
    print(f"[{case.name}] plan: {plan}", flush=True)
    no_admission = planned(case, prog, slo_s, runs, NO_ADMISSION)
    print(f"[{case.name}] plan, Cortex without admission control: {no_admission}", flush=True)
    shared = {}
    for pol in policies:
        shared[pol] = shared_search(case, prog, pol, slo_s, runs)
        print(f"[{case.name}] shared + {pol}: {shared[pol]['gpus']} GPUs {shared[pol]['tried']}", flush=True)
    best = min(shared.values(), key=lambda r: (r["cost_per_hour"], r["policy"]))
    ratio = plan.get("cost_per_hour", math.inf) / best["cost_per_hour"] if plan.get("holds") else math.inf
    return {"case": case.name, "device": case.device, "rate": case.rate, "slo_s": slo_s, "plan": plan,
            "plan_no_admission": no_admission,
            "shared": shared, "best_baseline": best["policy"], "ratio": ratio}


def markdown(result: dict) -> str:
    pols = result["policies"]
    lines = ["# Cost at equal SLO: planner + Cortex vs one shared pool + each policy (simulated)", "",
             f"Command: `{result['command']}`  ", f"Machine load before: {result['load_before']} (2 vCPUs shared).", "",
             f"SLO per case: end-to-end latency <= {result['scale']:g} x the workflow's standalone p99 (simulated, "
             f"preferred knobs), for >= {TARGET:.0%} of runs. {result['runs']} runs per simulation (10% warm-up "
             f"excluded), evaluation seed {EVAL_SEED}; the planner verifies on seed {PLAN_SEED}. Cost = GPUs x "
             f"{', '.join(f'{k} ${v}/h' for k, v in PRICE.items())}.", "",
             "| case | SLO | planner + Cortex | " + " | ".join(f"shared + {p}" for p in pols)
             + " | plan / best shared | planner + Cortex, no admission control |",
             "|---|---|---|" + "---|" * len(pols) + "---|---|"]
    def cell(p: dict) -> str:
        return (f"{p['gpus']} GPUs ${p['cost_per_hour']:.2f}/h ({p['layout']}, {100 * p['attainment']:.2f}%"
                f"{'' if p['holds'] else ' MISSES'})") if "gpus" in p else f"no plan: {p['error'][:60]}"

    for r in result["cases"]:
        shared = " | ".join(
            f"{s['gpus']} (${s['cost_per_hour']:.2f}, {100 * s['attainment']:.2f}%)" if s["gpus"] else "> max"
            for s in (r["shared"][q] for q in pols))
        lines.append(f"| {r['case']} | {r['slo_s']:.2f}s | {cell(r['plan'])} | {shared} | {r['ratio']:.2f} "
                     f"(vs {r['best_baseline']}) | {cell(r['plan_no_admission'])} |")
    lines += ["", "Plans (pools, declared quality, analytic vs simulated p99):", ""]
    for r in result["cases"]:
        p = r["plan"]
        if "gpus" in p:
            lines.append(f"* {r['case']}: {'; '.join(p['pools'])}; quality {100 * p['quality']:.0f}%; analytic p99 "
                         f"{p['analytic_p99_s']:.2f}s, simulated p99 {p['simulated_p99_s']:.2f}s; planned and "
                         f"verified in {p['plan_seconds']:.1f}s")
    lines += ["", "GPU counts tried per shared pool (count, attainment):", ""]
    for r in result["cases"]:
        for pol in pols:
            lines.append(f"* {r['case']}, {pol}: {r['shared'][pol]['tried']}")
    worst = max(r["ratio"] for r in result["cases"])
    lines += ["", f"**Planner + Cortex never costlier than the best shared pool: "
                  f"{'yes' if worst <= 1.0 + 1e-9 else 'NO'}** (largest ratio {worst:.2f}; a plan that misses "
                  "on the evaluation seed counts as infinitely costly)."]
    free = [r for r in result["cases"] if "plan_no_admission" in r]
    if free:
        worst_free = max(_ratio(r["plan_no_admission"], r) for r in free)
        lines.append(f"With Cortex's admission control off: "
                     f"{'never costlier' if worst_free <= 1.0 + 1e-9 else 'costlier'} (largest ratio {worst_free:.2f}).")
        rejected = [r["case"] for r in free if not r["plan"].get("holds") and r["plan_no_admission"].get("holds")]
        if rejected:
            lines.append(f"Where the plan misses only with admission control ({', '.join(rejected)}), the misses are "
                         "runs Cortex rejected: it rejects when a run's bottleneck pool has a full batch (or busy "
                         "executor slots) and that pool's whole backlog exceeds the run's slack, which on the "
                         "CHESS-style fan-outs happens in transient bursts that FCFS and HexAGenT ride out; more "
                         "GPUs do not stop it (8/s: 5 GPUs still miss).")
    return "\n".join(lines) + "\n"


def _ratio(plan: dict, row: dict) -> float:
    """The plan's cost over the best shared pool's; infinite when it misses on the evaluation seed."""
    best = row["shared"][row["best_baseline"]]["cost_per_hour"]
    return plan["cost_per_hour"] / best if plan.get("holds") else math.inf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--policies", default=",".join((*BASELINES, "cortex")),
                    help="policies on the shared pool (cortex included for reference)")
    ap.add_argument("--cases", default="", help="comma-separated case-name prefixes (default: all)")
    args = ap.parse_args(argv)
    pols = args.policies.split(",")
    for p in pols:
        make_policy(p)
    chosen = [c for c in cases() if not args.cases or any(c.name.startswith(x) for x in args.cases.split(","))]
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    rows = [run_case(c, args.scale, args.runs, pols) for c in chosen]
    result = {"label": "simulated",
              "command": ".venv/bin/python benchmarks/cost_at_equal_slo.py " + " ".join(argv or sys.argv[1:]),
              "load_before": load, "scale": args.scale, "runs": args.runs, "policies": pols,
              "deadline_aware": sorted(DEADLINE_AWARE & set(pols)), "cases": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cost_at_equal_slo.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (OUT / "cost_at_equal_slo.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
