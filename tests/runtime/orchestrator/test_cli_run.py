"""`cortex run` end to end on simulated engines: per-run lines, the summary, the JSON report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from cortexlang.cli.run_cmds import register

from .conftest import EXAMPLES


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def test_cortex_run_batch_on_simulated_engines(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps({"id": f"r{i}", "question": f"discount approval {i}"})
                                   for i in range(4)) + "\n")
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(app(), ["run", str(EXAMPLES / "react_agent.cortex"), "--input", str(questions),
                                        "--engine", "simulated", "--no-plan", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "SIMULATED engines" in result.output and "[SIMULATED ENGINES]" in result.output
    for i in range(4):
        assert f"r{i}: done in" in result.output or f"r{i}: fail in" in result.output
    assert "latency p50" in result.output and "SLO attainment" in result.output
    report = json.loads(out.read_text())
    assert report["runs"] == 4 and report["simulated"] and set(report["runs_detail"]) == {f"r{i}" for i in range(4)}
    assert report["latency_s"]["p50"] > 0 and 0 <= report["slo_attainment"] <= 1


def test_cortex_run_reports_bad_input_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{"query": "wrong key"}\n')
    result = CliRunner().invoke(app(), ["run", str(EXAMPLES / "nl2sql.cortex"), "--input", str(bad),
                                        "--engine", "simulated", "--no-plan"])
    assert result.exit_code == 2 and "bad.jsonl:2: missing input(s) question" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(app(), ["run", str(EXAMPLES / "nl2sql.cortex"), "--input", str(tmp_path / "none"),
                                         "--engine", "simulated"])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_cortex_run_records_a_trace_the_simulator_replays(tmp_path: Path) -> None:
    from runtime.simulator.trace import load_trace

    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps({"question": f"discount approval {i}"}) for i in range(3)) + "\n")
    trace = tmp_path / "trace.jsonl"
    result = CliRunner().invoke(app(), ["run", str(EXAMPLES / "react_agent.cortex"), "--input", str(questions),
                                        "--engine", "simulated", "--no-plan", "--record", str(trace)])
    assert result.exit_code == 0, result.output
    assert f"recorded 3 runs to {trace}" in result.output
    assert "queue p50" in result.output and "TTFT p50" in result.output  # the stage table splits queue/service
    requests = load_trace(trace)
    assert len(requests) == 3 and all(r.workflow == "react_agent" for r in requests)
    assert all(r.calls[0].stage == "think" and r.calls[0].parents == () for r in requests)
    unwritable = CliRunner().invoke(app(), ["run", str(EXAMPLES / "react_agent.cortex"), "--input", str(questions),
                                            "--engine", "simulated", "--no-plan",
                                            "--record", str(tmp_path / "no" / "such" / "dir.jsonl")])
    assert unwritable.exit_code == 2 and "--record" in unwritable.output and "Traceback" not in unwritable.output
