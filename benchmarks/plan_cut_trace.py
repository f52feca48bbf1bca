"""Why the planner's cut loop cannot prove a binding 20-stage plan optimal: the relaxation's bound per solve.

The instance is plan_bench's binding case (planner.synthetic.chain_program, one
20-stage chain at 20 runs/s, SLO p99 at 80% of the loose plan's p99, ample
A100/H100/H200/L40S/CPU inventory). The solver (planner.solver.solve) runs
twice on the same WorkflowProblem:

* as `cortexc plan` runs it (the cut loop's budget in solves, early stop), and
* with the early stop off (planner.solver.STALL_FRACTION = 1, a budget of
  ``--solves`` solves) for up to ``--solves`` CP-SAT solves or ``--budget`` seconds,

recording per relaxation solved to optimality its optimum (a lower bound on the
plan's cost) and the incumbent (the best plan found so far, greedy and repaired
proposals). The table shows how much of the gap the bound closes per solve, and
what a longer search buys in cost.

Usage: .venv/bin/python benchmarks/plan_cut_trace.py [--solves 100] [--budget 30] [--out benchmarks/results/plan_cut_trace.md]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import planner.solver as solver_module
from planner.api import Planner, inventory_limits, plan_program
from planner.plan import Plan
from planner.profiles import PROFILE_DIR
from planner.synthetic import chain_program, gpu_inventory

RATE = 20.0
BIG = dict(h100=400, a100=400, h200=400, l40=64, cpu_slots=4000)


def binding_problem():
    """plan_bench's binding 20-stage instance as the solver sees it, and its SLO."""
    loose = plan_program(chain_program(1, 20, rate=RATE, slo_s=1e4, inventory=gpu_inventory(**BIG)))
    assert isinstance(loose, Plan)
    slo = 0.8 * loose.workflows[0].latency.p99
    program = chain_program(1, 20, rate=RATE, slo_s=slo, inventory=gpu_inventory(**BIG))
    planner = Planner(program, program.inventory, {w.name: RATE for w in program.workflows}, "cost", 10_000, 0,
                      PROFILE_DIR, None)
    problems = [planner.model(w, 0).problem() for w in program.workflows]
    return problems, inventory_limits(program.inventory), slo


def dollars(objective: tuple[int, int] | None) -> str:
    return "" if objective is None else f"${objective[1] / 1000:,.2f}" + (f" (quality loss {objective[0]})"
                                                                          if objective[0] else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solves", type=int, default=100)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/plan_cut_trace.md"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    problems, limits, slo = binding_problem()

    default_trace: list = []
    c0 = time.process_time()
    default = solver_module.solve(problems, limits, trace=default_trace)
    default_cpu = time.process_time() - c0

    solver_module.STALL_FRACTION = 1.0  # no early stop: the loop runs to --solves or --budget
    long_trace: list = []
    c0 = time.process_time()
    long = solver_module.solve(problems, limits, max_iterations=args.solves, time_limit_s=args.budget,
                               trace=long_trace, budget=args.solves)
    long_cpu = time.process_time() - c0
    load_after = os.getloadavg()

    first_bound, first_inc = long_trace[0][1][1], (long_trace[0][2] or (0, 0))[1]
    rows = []
    for k, (t, bound, incumbent) in enumerate(long_trace, 1):
        if k in (1, 2, 5) or k % 10 == 0 or k == len(long_trace):
            gap0 = first_inc - first_bound
            closed = (bound[1] - first_bound) / gap0 if gap0 > 0 else 0.0
            rows.append(f"| {k} | {t:.2f} | {dollars(bound)} | {dollars(incumbent)} | {100 * closed:.1f}% |")
    text = "\n".join([
        "# Cut-loop bound on the binding 20-stage chain",
        "",
        f"Command: `.venv/bin/python benchmarks/plan_cut_trace.py --solves {args.solves} --budget {args.budget:g}`  ",
        f"Load average (1/5/15 min) {' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in load_after)} after; {os.cpu_count()} CPUs. SLO p99 <= {slo:.2f} s.",
        "",
        f"As planned (budget in solves, early stop): status `{default.status}`, {default.iterations} CP-SAT solves, "
        f"{dollars(solver_module.objective_milli(problems, default.assignments))}/h, {default_cpu:.2f} CPU s "
        f"for the solve (candidate bounds, greedy, cut loop).",
        "",
        f"Early stop off: status `{long.status}`, {long.iterations} solves, "
        f"{dollars(solver_module.objective_milli(problems, long.assignments))}/h, {long_cpu:.2f} CPU s. "
        "'gap closed': the bound's rise since the first solve, as a share of the first solve's gap "
        "to the incumbent.",
        "",
        "| solve | s since loop start | bound (relaxation optimum) | incumbent | gap closed |",
        "|---|---|---|---|---|",
        *rows,
    ]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
