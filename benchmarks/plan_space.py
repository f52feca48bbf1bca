"""Plan cost vs the all-isolated and the all-shared layouts, on the examples and seeded random workflows.

For every examples/*.cortex (compiled with the front end, its own inventory and
load) and ``--random`` seeded random workflows (:func:`planner.synthetic.random_program`:
2-4 LLM stages, an SQL stage, sometimes a retry loop, 0.2-6 runs/s), plan three
times with the same inputs (cost mode, same SLO):

* ``search``   -- the planner's space: dedicated and shared pools (the default);
* ``isolated`` -- a dedicated pool per LLM stage (stage isolation);
* ``shared``   -- one pool per model for the stages preferring it (no isolation).

Both restricted layouts lie inside the search space, and the objective is
lexicographic (declared quality first, then cost), so the plan must be at least
as good as each: higher quality, or equal quality and no higher cost. The
script checks that in every case (exit status 1 otherwise) and reports the mean
and best cost saving against each layout over the cases where it reaches the
same quality (a layout that only meets the SLO by lowering a quality knob is
counted apart: its lower cost buys a worse answer). The solver's
cut-loop budget is raised (``--time-limit``) so the three plans depend on the
model, not on the machine's load.

Usage: .venv/bin/python benchmarks/plan_space.py [--random 30] [--out benchmarks/results/plan_space.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import Program  # noqa: E402
from planner.api import plan_program  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.synthetic import random_program  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = ("search", "isolated", "shared")


def cases(n_random: int) -> list[tuple[str, Program]]:
    out = []
    for path in sorted((REPO / "examples").glob("*.cortex")):
        compiled = compile_file(path)
        if compiled.program is None:
            raise SystemExit(f"{path.name} does not compile")
        out.append((path.name, compiled.program))
    out += [(f"random:{seed}", random_program(seed)) for seed in range(n_random)]
    return out


def plan_case(name: str, program: Program, time_limit_s: float) -> dict:
    row: dict = {"case": name}
    for layout in LAYOUTS:
        plan = plan_program(program, layout=layout, time_limit_s=time_limit_s)
        if isinstance(plan, Plan):
            wp = plan.workflows[0]
            row[layout] = {"cost_per_hour": plan.cost_per_hour, "status": plan.solver.status,
                           "quality": min(w.knobs.quality for w in plan.workflows),
                           "layout": "+".join(w.layout for w in plan.workflows),
                           "attainment": wp.slo_attainment, "p99_s": wp.latency.p99,
                           "devices": plan.devices_used}
        else:
            row[layout] = {"infeasible": plan.message}
    plan = row["search"]
    others = [row[k] for k in ("isolated", "shared") if "cost_per_hour" in row[k]]
    row["ok"] = "cost_per_hour" in plan and all(_no_worse(plan, o) for o in others)
    return row


def _no_worse(plan: dict, other: dict) -> bool:
    """Lexicographic (quality, then cost): the planner's objective."""
    if plan["quality"] > other["quality"] + 1e-9:
        return True
    return abs(plan["quality"] - other["quality"]) <= 1e-9 and plan["cost_per_hour"] <= other["cost_per_hour"] + 1e-9


def saving(rows: list[dict], against: str) -> tuple[float, float, int, int]:
    """Mean and best relative cost saving of the plan against ``against`` where both have a plan of the same
    quality, that count, and the count of cases where ``against`` only had a lower-quality plan."""
    both = [r for r in rows if "cost_per_hour" in r["search"] and "cost_per_hour" in r[against]]
    same = [r for r in both if abs(r["search"]["quality"] - r[against]["quality"]) <= 1e-9]
    s = [1.0 - r["search"]["cost_per_hour"] / r[against]["cost_per_hour"] for r in same
         if r[against]["cost_per_hour"] > 0]
    return (statistics.mean(s) if s else 0.0), (max(s) if s else 0.0), len(s), len(both) - len(same)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=30, help="seeded random workflows (seeds 0..N-1)")
    ap.add_argument("--time-limit", type=float, default=20.0, help="cut-loop budget per solve, seconds")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/plan_space.md")
    args = ap.parse_args()
    rows = [plan_case(name, prog, args.time_limit) for name, prog in cases(args.random)]

    def cell(r: dict, layout: str) -> str:
        d = r[layout]
        if "cost_per_hour" not in d:
            return "no plan"
        notes = [d["layout"]] + ([] if d["quality"] >= 1.0 else [f"quality {d['quality']:.0%}"]) \
            + ([] if d["status"] == "optimal" else [d["status"]])
        return f"${d['cost_per_hour']:,.2f} ({', '.join(notes)})"

    lines = ["# Plan cost vs all-isolated and all-shared layouts", "",
             f"Command: `.venv/bin/python benchmarks/plan_space.py --random {args.random} --time-limit {args.time_limit:g}`."
             " Cost mode, each case's own inventory, load and SLO; `search` is the planner's default space "
             "(dedicated and shared pools), `isolated` and `shared` restrict it to one layout. "
             "Predicted costs ($/h) of the planning model (no simulation).", "",
             "| case | plan (search) | all-isolated | all-shared | plan <= min |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {cell(r, 'search')} | {cell(r, 'isolated')} | {cell(r, 'shared')} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    lines.append("")
    for against in ("isolated", "shared"):
        for label, subset in (("examples", [r for r in rows if not r["case"].startswith("random:")]),
                              ("random", [r for r in rows if r["case"].startswith("random:")]),
                              ("all", rows)):
            mean, best, n, lower = saving(subset, against)
            lines.append(f"- saving vs all-{against}, {label} ({n} cases at equal quality): "
                         f"mean {mean:.1%}, best {best:.1%}"
                         + (f"; in {lower} more, all-{against} meets the SLO only at a lower quality" if lower else ""))
    failures = [r["case"] for r in rows if not r["ok"]]
    lines.append(f"- plan no worse than both all-isolated and all-shared (quality, then cost <= min) in "
                 f"{len(rows) - len(failures)} of {len(rows)} cases" + (f"; NOT in: {', '.join(failures)}" if failures else ""))
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
