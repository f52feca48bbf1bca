"""Plan cost, status and CPU time on binding SLOs: 5-, 10- and 20-stage chains, 4 seeds, two tightnesses.

Each instance is planner.synthetic.chain_program(1, n, seed) at 20 runs/s on
plan_bench's ample inventory, planned first with a loose SLO and then with the
SLO at 0.8x and 0.9x that plan's p99, with `plan_program`'s defaults (the
cut loop's budget in solves included). ``--before JSON`` (this script's ``--json``
output from another version of the planner) adds that version's cost, status,
solves and CPU seconds beside each row, so a solver change can be checked for
"never costlier, never a worse status" on instances whose SLO binds.

Usage: .venv/bin/python benchmarks/plan_binding_sweep.py [--json OUT.json] [--before BEFORE.json]
       [--out benchmarks/results/plan_binding_sweep.md] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from planner.api import plan_program
from planner.candidates import llm_service_table
from planner.plan import Plan
from planner.synthetic import chain_program, gpu_inventory

RATE = 20.0
BIG = dict(h100=400, a100=400, h200=400, l40=64, cpu_slots=4000)
SIZES = (5, 10, 20)
SEEDS = range(4)
TIGHTNESS = (0.8, 0.9)
STATUS_RANK = {"optimal": 0, "feasible": 1}


def sweep() -> list[dict]:
    rows = []
    for n in SIZES:
        for seed in SEEDS:
            loose = plan_program(chain_program(1, n, seed=seed, rate=RATE, slo_s=1e4, inventory=gpu_inventory(**BIG)))
            assert isinstance(loose, Plan)
            for factor in TIGHTNESS:
                slo = factor * loose.workflows[0].latency.p99
                program = chain_program(1, n, seed=seed, rate=RATE, slo_s=slo, inventory=gpu_inventory(**BIG))
                llm_service_table.cache_clear()
                c0 = time.process_time()
                plan = plan_program(program)
                cpu = time.process_time() - c0
                ok = isinstance(plan, Plan)
                rows.append(dict(stages=n, seed=seed, factor=factor, slo_s=round(slo, 3),
                                 cost=plan.cost_per_hour if ok else None,
                                 status=plan.solver.status if ok else "none",
                                 solves=plan.solver.iterations if ok else 0, cpu_s=round(cpu, 3)))
    return rows


def table(rows: list[dict], before: list[dict] | None) -> list[str]:
    old = {(r["stages"], r["seed"], r["factor"]): r for r in before or []}
    head = "| stages | seed | SLO (x loose p99) | cost/h | status | solves | CPU s |"
    rule = "|---|---|---|---|---|---|---|"
    if before:
        head += " before: cost/h | status | solves | CPU s | cost change |"
        rule += "---|---|---|---|---|"
    out = [head, rule]
    for r in rows:
        line = (f"| {r['stages']} | {r['seed']} | {r['factor']:g} | {_money(r['cost'])} | {r['status']} | "
                f"{r['solves']} | {r['cpu_s']:.2f} |")
        b = old.get((r["stages"], r["seed"], r["factor"]))
        if b is not None:
            change = "" if b["cost"] is None or r["cost"] is None else f"{100 * (r['cost'] / b['cost'] - 1):+.1f}%"
            line += f" {_money(b['cost'])} | {b['status']} | {b['solves']} | {b['cpu_s']:.2f} | {change} |"
        out.append(line)
    return out


def summary(rows: list[dict], before: list[dict]) -> str:
    old = {(r["stages"], r["seed"], r["factor"]): r for r in before}
    pairs = [(r, old[(r["stages"], r["seed"], r["factor"])]) for r in rows if (r["stages"], r["seed"], r["factor"]) in old]
    cheaper = sum(1 for r, b in pairs if r["cost"] is not None and b["cost"] is not None and r["cost"] < b["cost"])
    costlier = sum(1 for r, b in pairs if r["cost"] is not None and b["cost"] is not None and r["cost"] > b["cost"])
    worse_status = sum(1 for r, b in pairs if STATUS_RANK.get(r["status"], 2) > STATUS_RANK.get(b["status"], 2))
    cpu_now = sum(r["cpu_s"] for r, _ in pairs)
    cpu_before = sum(b["cpu_s"] for _, b in pairs)
    return (f"Against `--before`: {len(pairs)} instances; cheaper in {cheaper}, costlier in {costlier}, "
            f"worse status in {worse_status}; total CPU {cpu_now:.2f} s vs {cpu_before:.2f} s.")


def _money(x: float | None) -> str:
    return "none" if x is None else f"${x:,.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the rows as JSON (for a later --before)")
    ap.add_argument("--before", type=Path, help="rows of another planner version (this script's --json)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/plan_binding_sweep.md"))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    load_before = os.getloadavg()
    rows = sweep()
    load_after = os.getloadavg()
    before = json.loads(args.before.read_text()) if args.before else None
    lines = [
        "# Plans on binding SLOs: chains of 5, 10 and 20 stages",
        "",
        "Command: `.venv/bin/python benchmarks/plan_binding_sweep.py" + (" --before BEFORE.json" if before else "")
        + "`  ",
        f"{os.cpu_count()} CPUs; load average (1/5/15 min) {' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in load_after)} after. CPU s: this process, `plan_program` of the binding "
        "plan only (cold latency-table memo).",
        "",
        *table(rows, before),
    ]
    if before:
        lines += ["", summary(rows, before)]
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
