"""Alike output lengths: the planner's prediction vs the simulator's, with and without ``output_correlation``.

When one run's LLM calls give alike output lengths (greedy decoding repeats its answer: the demo's
recorded NL2SQL runs correlate 0.87 between the repair loop's calls, ``cortexc plan --observed``), the
run's latency spreads wider than independent calls predict. The planner draws a Gaussian copula on
its per-visit quantiles (``planner/latency.py``); the simulator draws the output lengths themselves
from the run's shared normal (``runtime/simulator/runs.py``: tokens, then the engines' batching and
queueing). Two implementations of one declared parameter; this benchmark plans each case and
simulates the plan (FCFS, common seed), for ``r`` in 0, 0.5 and the demo's observed loadings.

Run: ``.venv/bin/python -m benchmarks.alike_outputs [--runs N]``; writes
``benchmarks/results/alike_outputs.md``. Simulated figures: load-independent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import LLMStage, Program  # noqa: E402
from planner.api import plan_program  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.synthetic import random_program  # noqa: E402
from runtime.simulator.verify import simulate_plan  # noqa: E402


def with_alike(program: Program, r: dict[str, float] | float) -> Program:
    """``program``'s first workflow with every LLM stage's ``output_correlation`` set (a float: all alike)."""
    wf = program.workflows[0]
    get = (lambda name: r) if isinstance(r, float) else (lambda name: r.get(name, 0.0))
    stages = tuple(s.model_copy(update={"output_correlation": get(s.name)}) if isinstance(s, LLMStage) else s
                   for s in wf.stages)
    return program.model_copy(update={"workflows": (wf.model_copy(update={"stages": stages}),) + program.workflows[1:]})


def planned_vs_simulated(name: str, label: str, program: Program, rate: float | None, runs: int) -> str:
    """One markdown row: ``program`` planned (60 s cut-loop budget) and its plan simulated (FCFS, seed 1):
    planned / simulated p50, p95, p99, the p99 ratio, SLO attainment, and the plan's cost (printed too)."""
    plan = plan_program(program, rate=rate, time_limit_s=60.0)
    if not isinstance(plan, Plan):
        row = f"| {name} | {label} | no plan: {plan.message} |||||||"
    else:
        wp = plan.workflows[0]
        v = simulate_plan(program, plan, wp.workflow, runs=runs, seed=1)
        a, s = wp.latency, v.latency
        row = (f"| {name} | {label} | {a.p50:.2f} / {s.p50:.2f} | {a.p95:.2f} / {s.p95:.2f} | "
               f"{a.p99:.2f} / {s.p99:.2f} | {s.p99 / a.p99:.2f} | {wp.slo_attainment:.1%} / "
               f"{v.slo_attainment:.1%} | ${plan.cost_per_hour:.2f} |")
    print(row, flush=True)
    return row


def planned_vs_simulated_header(label: str) -> list[str]:
    """The markdown header of :func:`planned_vs_simulated`'s rows, ``label`` naming its second column."""
    return [f"| case | {label} | p50 s | p95 s | p99 s | p99 sim/plan | SLO attainment | plan cost |",
            "|---|---|---|---|---|---|---|---|"]


def cases() -> list[tuple[str, Program, float | None]]:
    """(name, program, rate): NL2SQL at the demo's rate and a few random workflows with loops."""
    out: list[tuple[str, Program, float | None]] = [
        ("nl2sql", compile_file(REPO / "examples" / "nl2sql.cortex").program, 0.1)]
    for seed in (0, 2, 4, 8):
        prog = random_program(seed)
        if prog.workflows[0].loops:
            out.append((f"random{seed}", prog, None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6000)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "alike_outputs.md")
    args = ap.parse_args()
    rows = []
    for name, base, rate in cases():
        settings: list[tuple[str, dict[str, float] | float]] = [("0", 0.0), ("0.5", 0.5), ("0.87", 0.87)]
        if name == "nl2sql":
            settings.append(("observed: fix 0.87, generate 0.10", {"fix": 0.87, "generate": 0.10}))
        for label, r in settings:
            rows.append(planned_vs_simulated(name, label, with_alike(base, r), rate, args.runs))
    text = "\n".join([
        "# Alike output lengths: planned vs simulated (simulated)", "",
        f"Command: `.venv/bin/python -m benchmarks.alike_outputs --runs {args.runs}`; FCFS in the simulator, "
        f"seed 1, 10% warm-up; plans with a 60 s cut-loop budget (deterministic). Machine load "
        f"{os.getloadavg()[0]:.1f} (figures are simulated, not timed).", "",
        "`r`: every LLM stage's `output_correlation` (the last NL2SQL row: the loadings learnt from the demo's "
        "recorded run, `benchmarks/results/real_vs_sim_trace.jsonl`). Each cell: planned / simulated.", "",
        *planned_vs_simulated_header("r"), *rows, ""])
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
