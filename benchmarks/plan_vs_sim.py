"""Does the plan's prediction hold? The planner's analytic end-to-end latency against the
discrete-event simulator on the same plan, for every example and seeded random workflows.

    .venv/bin/python benchmarks/plan_vs_sim.py [--random 30] [--runs 5000] [--first-seed 0] [--check-seed 97]

Each case is planned the way ``cortexc plan`` does (:func:`cortexlang.cli.plan_verify.plan_and_verify`:
simulate (with `--feedback N`, re-plan with the arrivals' dispersion measured there where burstier than predicted), tighten
until the SLO holds in simulation). The final plan is then simulated once more for the comparison, on
``--check-seed`` (:data:`CHECK_SEED`), a random stream the verification never used (it runs on the
planner's seed 0, and 1 to confirm an inconclusive miss): the verification informs the plan, so its own
runs would not be an independent check (until 2026-12-07 this benchmark reported the verification's
figures; ``--check-seed 0`` gives them again). The random workflows (seeded) are
:func:`planner.synthetic.random_program` -- an LLM chain with an SQL stage and sometimes a retry
loop, 0.2-30 runs/s -- and, for odd seeds, a fan-out of 3-6 branches, each a search tool (a range
service time, retried on error) then an LLM summary, before the last stage (with 256 CPU slots); the
planner sizes every pool, so tool pools run at the utilisation it chose. Reported per case: analytic and simulated
p50/p99 of the final plan (ratio simulated / analytic), simulated attainment against the target (both on
the check seed) and the stages whose dispersion came from verification.
Results: benchmarks/results/plan_vs_sim.md (simulated; FCFS scheduling in the simulator).

``--only random7+fanout,random18`` plans only the named cases (and writes nothing unless ``--out``
is given); ``--stages`` adds, per case, each stage's planned and simulated per-visit p50/p99 and
the index of dispersion of the calls' arrivals at the stage over 1/5/20 s windows (1 = Poisson:
what the planner assumes outside fan-outs) and the share of calls arriving at the same instant as
another -- where an end-to-end miss comes from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexlang.cli.plan_verify import FEEDBACK_ROUNDS, plan_and_verify  # noqa: E402
from runtime.simulator.verify import simulate_plan  # noqa: E402
from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import Condition, Edge, FanOut, IntKnob, Program, Retry, SubFlow, ToolStage  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.synthetic import llm, random_program  # noqa: E402

CHECK_SEED = 97
"""The comparison's simulation seed: not the planner's (0) nor the verification's confirmation seed (1)."""


def with_fanout(program: Program, seed: int) -> Program:
    """``program``'s workflow with a search-and-summarise fan-out inserted before its last stage."""
    rng = np.random.default_rng(1000 + seed)
    wf = program.workflows[0]
    last = wf.stages[-1].name
    search = ToolStage(name="search", entry="tools.web:search", service_s=0.2, service_cv=0.53,
                       service_range_s=(0.05, 0.35), retry=Retry(max_retries=2, backoff_s=0.05))
    summary = llm("summary", "llama8b", input_tokens=int(rng.integers(400, 1200)),
                  output_tokens=int(rng.integers(40, 120)), max_tokens=256)
    branch = SubFlow(entry="search", edges=(
        Edge(source="search", target="summary", condition=Condition(kind="outcome", values=("ok",)), probability=0.95),
        Edge(source="search", target="fail", condition=Condition(kind="outcome", values=("error",)),
             probability=0.05),
        Edge(source="summary", target="done", condition=Condition(kind="always"), probability=1.0)))
    fan = FanOut(name="explore", branches=(branch,), width=IntKnob.fixed(int(rng.integers(3, 7))), join="all")
    edges = tuple(e.model_copy(update={"target": "explore"}) if e.target == last and e.loop is None else e
                  for e in wf.edges)
    edges += (Edge(source="explore", target=last, condition=Condition(kind="always"), probability=1.0),)
    wf = wf.model_copy(update={"stages": wf.stages + (search, summary), "fanouts": (fan,), "edges": edges})
    cpu = program.inventory.cpu.model_copy(update={"slots": 256})  # the fan-out's tools need slots at 30 runs/s
    return program.model_copy(update={"workflows": (wf,), "inventory": program.inventory.model_copy(
        update={"cpu": cpu})})


def cases(n_random: int, first_seed: int = 0) -> list[tuple[str, Program]]:
    """The examples (unless ``first_seed`` > 0: a check outside the usual set) and ``n_random`` random
    workflows from seed ``first_seed`` on."""
    out = [] if first_seed else [(p.stem, compile_file(p).program) for p in sorted((REPO / "examples").glob("*.cortex"))]
    for seed in range(first_seed, first_seed + n_random):
        prog = random_program(seed)
        out.append((f"random{seed}" + ("+fanout" if seed % 2 else ""), with_fanout(prog, seed) if seed % 2 else prog))
    return out


def stage_rows(program: Program, plan: Plan, runs: int, seed: int) -> list[str]:
    """Per stage of each workflow: planned vs simulated per-visit p50/p99 (a visit: enqueue to end,
    waits included) and the index of dispersion of its arrivals; simulated with call records on
    ``seed`` (warm-up: the first tenth of the simulated time dropped)."""
    from runtime.simulator.verify import simulate_runs

    out = []
    for wp in plan.workflows:
        res = simulate_runs(program, plan, wp.workflow, runs, seed, record_calls=True)
        start = max(c[5] for c in res.calls) * 0.1
        by_stage: dict[str, list[tuple[float, float]]] = {}
        for c in res.calls:
            if c[5] >= start:
                by_stage.setdefault(c[2], []).append((c[5], c[7]))
        for stage, rows in sorted(by_stage.items()):
            a = np.array(rows)
            lat = a[:, 1] - a[:, 0]
            pool = wp.pool(stage)
            planned = next((m.latency for m in getattr(pool, "colocated", ()) if m.stage == stage), pool.latency)
            arrivals = np.sort(a[:, 0])
            idc = []
            for w in (1.0, 5.0, 20.0):
                counts = np.histogram(arrivals, bins=np.arange(arrivals[0], arrivals[-1], w))[0]
                idc.append(counts.var() / max(counts.mean(), 1e-12))
            # Calls arriving at the same instant as another (an LLM pool releases the calls that finish in
            # one iteration together; a fan-out sends its copies together).
            gaps = np.diff(arrivals) <= 1e-9
            together = np.zeros(len(arrivals), dtype=bool)
            together[1:] |= gaps
            together[:-1] |= gaps
            p50, p99 = np.quantile(lat, [0.5, 0.99])
            fed = wp.verified_dispersion.get(stage)
            fed_note = (f"; planned with {fed.simulated:.2f} over {fed.window_s:.2g} s from verification "
                        f"(predicted {fed.analytic:.2f})" if fed else "")
            out.append(f"|   {stage} | {planned.p50:.2f}s | {p50:.2f}s | {planned.p99:.2f}s | {p99:.2f}s | "
                       f"{p99 / max(planned.p99, 1e-9):.2f} | arrivals' dispersion (1/5/20 s): "
                       + " / ".join(f"{v:.1f}" for v in idc) + f"; {together.mean():.0%} arrive with another"
                       + fed_note + " |||||||")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="random workflows from this seed on; above 0 the examples are left out (an out-of-set check)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results file (default: benchmarks/results/plan_vs_sim.md; none with --only)")
    ap.add_argument("--only", default="", help="comma-separated case names to run (default: all)")
    ap.add_argument("--stages", action="store_true", help="per-stage planned vs simulated rows")
    ap.add_argument("--check-seed", type=int, default=CHECK_SEED,
                    help="seed of the comparison's simulation (0: the verification's own)")
    ap.add_argument("--feedback", type=int, default=FEEDBACK_ROUNDS, metavar="N",
                    help="re-plans with the dispersion measured in verification (cortexc plan --verify-feedback; "
                    "default: the planner's default)")
    args = ap.parse_args()
    only = {n for n in args.only.split(",") if n}
    if args.out is None and not only and not args.first_seed:
        args.out = REPO / "benchmarks" / "results" / "plan_vs_sim.md"
    rows = []
    extra: dict[str, list[str]] = {}
    for name, program in cases(args.random, args.first_seed):
        if only and name not in only:
            continue
        started = time.perf_counter()
        plan = plan_and_verify(program, runs=args.runs, feedback_rounds=args.feedback)
        took = time.perf_counter() - started
        if not isinstance(plan, Plan):
            rows.append((name, None, plan.message, took))
            continue
        for wp in plan.workflows:
            check = simulate_plan(program, plan, wp.workflow, runs=args.runs, seed=args.check_seed, slo=wp.slo)
            rows.append((name, wp, check, took))
        if args.stages:
            extra[name] = stage_rows(program, plan, args.runs, args.check_seed)
        print(f"{name}: {took:.1f}s", flush=True)
    lines = ["# Plan vs simulation (simulated)", "",
             f"`benchmarks/plan_vs_sim.py --random {args.random} --runs {args.runs}"
             + (f" --first-seed {args.first_seed}" if args.first_seed else "")
             + (f" --check-seed {args.check_seed}" if args.check_seed != CHECK_SEED else "")
             + (f" --feedback {args.feedback}" if args.feedback != FEEDBACK_ROUNDS else "")
             + "`; each plan verified and, where it "
             "missed in simulation, tightened (as `cortexc plan` does); FCFS in the simulator; the simulated "
             f"columns from a separate simulation of the final plan on seed {args.check_seed}. 'fed': stages "
             "whose arrivals' dispersion the plan took from its verification.", "",
             "| case | analytic p50 | sim p50 | analytic p99 | sim p99 | p99 ratio | SLO | sim attainment | "
             "holds | plans | fed | cost/h | time |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios, holds, within = [], 0, 0
    for name, wp, v, took in rows:
        if wp is None:
            lines.append(f"| {name} | no plan: {v} |||||||||||{took:.1f}s |")
            continue
        ratio = v.latency.p99 / wp.latency.p99
        ratios.append(ratio)
        within += abs(ratio - 1) <= 0.10
        holds += bool(v.holds)
        slo = f"p{wp.slo.attainment * 100:g} <= {wp.slo.latency_s:g}s" if wp.slo else "-"
        lines.append(f"| {name} | {wp.latency.p50:.2f}s | {v.latency.p50:.2f}s | {wp.latency.p99:.2f}s | "
                     f"{v.latency.p99:.2f}s | {ratio:.2f} | {slo} | {v.slo_attainment:.2%} | "
                     f"{'yes' if v.holds else 'NO'} | {wp.verification.rounds if wp.verification else 0} | "
                     f"{', '.join(sorted(wp.verified_dispersion)) or '-'} | ${wp.cost_per_hour:.2f} | {took:.1f}s |")
        lines += extra.pop(name, [])
    r = np.array(ratios)
    lines += ["", f"**Summary** over {len(r)} plans: simulated/analytic p99 ratio median {np.median(r):.3f}, "
              f"min {r.min():.3f}, max {r.max():.3f}; within ±10%: {within}/{len(r)}; simulated attainment meets "
              f"the SLO target: {holds}/{len(r)}."]
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines if only else lines[-1:]))


if __name__ == "__main__":
    main()
