"""benchmarks/nl2sql_isolation.py: the per-stage summary of what the calls produced, and its markdown."""

from __future__ import annotations

import pytest

from benchmarks.nl2sql_isolation import call_summary, markdown
from runtime.orchestrator.results import CallRecord, RunInfo


def _llm(stage: str, tokens: int, decode_s: float | None, finish: str) -> CallRecord:
    return CallRecord(stage=stage, kind="llm", outcome="ok", started_s=0.0, latency_s=1.0, output_tokens=tokens,
                      engine_decode_s=decode_s, finish_reason=finish)


def _sql(outcome: str, error: str | None = None) -> CallRecord:
    return CallRecord(stage="execute", kind="sql", outcome=outcome, started_s=0.0, latency_s=0.001, error=error)


def _run(*calls: CallRecord) -> RunInfo:
    return RunInfo(run_id="r", workflow="nl2sql", version=1, status="done", inputs={}, arrival_s=0.0,
                   calls=list(calls))


def test_llm_stages_report_tokens_cuts_and_decode_per_token() -> None:
    infos = [_run(_llm("generate", 11, 0.5, "stop"), _sql("error", "no such column: x"),
                  _llm("fix", 96, 9.5, "length"), _sql("error", "no such column: x")),
             _run(_llm("generate", 21, 2.0, "stop"), _sql("ok"), _llm("fix", 1, None, "stop"))]
    s = call_summary(infos)
    assert list(s) == ["generate", "execute", "fix"]
    gen = s["generate"]
    assert (gen["calls"], gen["output_tokens_p50"], gen["at_max_tokens"]) == (2, 16, 0)
    assert gen["decode_ms_per_token_p50"] == pytest.approx(75.0)  # median of 0.5/10 and 2.0/20 s per token
    fix = s["fix"]
    assert (fix["calls"], fix["at_max_tokens"]) == (2, 1)
    assert fix["decode_ms_per_token_p50"] == pytest.approx(100.0)  # 1-token call skipped
    assert s["execute"] == {"kind": "sql", "calls": 3, "outcomes": {"error": 2, "ok": 1},
                            "errors": {"no such column: x": 2}}


def test_no_decode_clock_reads_as_none_and_markdown_shows_it() -> None:
    s = call_summary([_run(_llm("generate", 5, None, "stop"), _sql("empty"))])
    assert s["generate"]["decode_ms_per_token_p50"] is None
    result = {"rate": 0.2, "questions": 1, "command": "c", "cpu_count": 2, "load_average_before": (0, 0, 0),
              "load_average_at_end": (0, 0, 0),
              "layouts": [{"layout": "shared", "throughput_runs_per_s": 1.0, "runs": 1, "statuses": {"done": 1},
                           "latency_s": {"p50": 1.0, "p90": 1.0, "p99": 1.0}, "slo_attainment": 1.0, "retries": 0,
                           "engines": {}, "stages": {}, "calls": s}]}
    text = markdown(result)
    assert "generate 5 output tokens p50, 0/1 at max_tokens, decode - ms/token p50" in text
    assert "execute {'empty': 1} (top errors: -)" in text
