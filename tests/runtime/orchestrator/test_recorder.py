"""Recording runs as traces (runtime/orchestrator/recorder.py), on simulated engines and real SQLite.

Every recorded trace must parse with the simulator's own trace parser, its parents must follow
the walk (a retry after the failed statement, a fan-out's branches after the call before it,
the call after a fan-out after every branch's last call), and the per-call measurements must
add up (latency = Cortex queue + service).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from runtime.orchestrator.recorder import TraceRecorder, trace_line
from runtime.simulator.trace import parse_trace

from .conftest import compile_example, example_spec, run_async, sim_factory, started

GOOD_SQL = "SELECT ROUND(SUM(revenue), 2) AS total_revenue FROM sales WHERE year = 2024;"


def test_nl2sql_retry_is_recorded_with_parents_and_timings(sales_db: Path, tmp_path: Path) -> None:
    def script(stage: str, prompt: str) -> str:
        return "SELECT SUM(revenue) FROM salez;" if stage == "generate" else GOOD_SQL

    path = tmp_path / "trace.jsonl"

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(script))
        recorder = TraceRecorder(path, orch.spec.program)
        orch.run_listeners.append(recorder)
        try:
            await asyncio.gather(*(orch.run({"question": f"revenue {i}?"}) for i in range(3)))
        finally:
            await orch.stop()
            recorder.close()
        assert recorder.written == 3

    run_async(body())
    lines = path.read_text().splitlines()
    requests = parse_trace(lines, str(path))  # the simulator's parser accepts it as is
    assert len(requests) == 3
    for raw, req in zip(sorted((json.loads(x) for x in lines), key=lambda r: r["arrival_s"]), requests):
        assert raw["status"] == "done" and raw["latency_s"] > 0 and raw["slo_met"] is True
        stages = [(c.stage, c.outcome) for c in req.calls]
        assert stages == [("generate", "ok"), ("execute", "error"), ("fix", "ok"), ("execute", "ok")]
        ids = [c.id for c in req.calls]
        assert [c.parents for c in req.calls] == [(), (ids[0],), (ids[1],), (ids[2],)]
        gen = raw["calls"][0]
        assert gen["model"] == "smollm2" and gen["input_tokens"] > 0 and gen["output_tokens"] > 0
        assert gen["prefix_tokens"] == min(600, gen["input_tokens"])  # declared 600 in nl2sql.cortex
        assert gen["engine"] == "simulated" and gen["replica"]
        assert gen["ttft_s"] is not None and 0 < gen["ttft_s"] <= gen["engine_s"]
        assert gen["finish_reason"] in ("stop", "length")
        for c in raw["calls"]:
            assert abs(c["latency_s"] - (c["queue_s"] + c["service_s"])) < 1e-5
        assert raw["calls"][1]["kind"] == "sql" and raw["calls"][1]["duration_s"] > 0
        assert "salez" in raw["calls"][1]["error"]


def test_fanout_parents_follow_the_branches(tmp_path: Path) -> None:
    def script(stage: str, prompt: str) -> str:
        if stage == "verify":
            return json.dumps({"verdict": "supported", "issues": ""})
        return "discount approval" if stage == "rewrite" else "Discounts above 20% need the VP [d080]."

    async def body() -> dict:
        orch = await started(example_spec("rag"), sim_factory(script))
        try:
            info = await orch.run({"question": "Who approves a 25% discount?"})
        finally:
            await orch.stop()
        assert info.status == "done"
        line = trace_line(info, orch.spec.program)
        assert line is not None
        return line

    line = run_async(body())
    (req,) = parse_trace([json.dumps(line)])
    by_stage = {c.stage: c for c in req.calls}
    assert "retrieve" not in by_stage  # the fan-out is not a call
    rewrite = by_stage["rewrite"].id
    for branch in ("dense", "sparse", "web"):
        assert by_stage[branch].parents == (rewrite,)
    assert set(by_stage["answer"].parents) == {by_stage[b].id for b in ("dense", "sparse", "web")}
    assert by_stage["verify"].parents == (by_stage["answer"].id,)


def test_nested_fanout_loop_trace_is_a_dag_the_simulator_accepts(tmp_path: Path) -> None:
    rounds = {"n": 0}

    def script(stage: str, prompt: str) -> str:
        if stage in ("plan", "replan"):
            return json.dumps({"queries": ["discount approval", "return policy"]})
        if stage == "critique":
            rounds["n"] += 1
            return json.dumps({"verdict": "complete" if rounds["n"] >= 2 else "incomplete", "gaps": ["x"]})
        return "summary [d080]"

    async def body() -> dict:
        spec = example_spec("deep_research")
        spec = spec.model_copy(update={"knobs": spec.knobs.model_copy(update={"fanout_width": {"research": 2}})})
        orch = await started(spec, sim_factory(script))
        try:
            info = await orch.run({"question": "How do discounts and returns work?"})
        finally:
            await orch.stop()
        assert info.status == "done", info.error
        line = trace_line(info, compile_example("deep_research"))
        assert line is not None
        return line

    line = run_async(body(), timeout_s=90)
    (req,) = parse_trace([json.dumps(line)])
    calls = {c.id: c for c in req.calls}
    summaries = [c for c in req.calls if c.stage == "summarize"]
    searches = [c for c in req.calls if c.stage == "search"]
    assert len(summaries) == 4 and len(searches) == 4
    for s in summaries:  # each summary follows its own branch's search
        (parent,) = s.parents
        assert calls[parent].stage == "search"
    fetches = [c for c in req.calls if c.stage == "fetch"]
    for f in fetches:  # the join: every branch of that round
        assert len(f.parents) == 2 and all(calls[p].stage == "summarize" for p in f.parents)
    replan = next(c for c in req.calls if c.stage == "replan")
    second_round = [s for s in searches if s.parents == (replan.id,)]
    assert len(second_round) == 2


def test_recorder_writes_nothing_for_runs_without_replayable_calls(tmp_path: Path) -> None:
    from runtime.orchestrator.results import CallRecord, RunInfo

    info = RunInfo(run_id="r1", workflow="nl2sql", version=1, status="error", inputs={}, arrival_s=1.0,
                   calls=[CallRecord(stage="generate", kind="llm", outcome="error", started_s=0.0, latency_s=0.001,
                                     error="the prompt failed to render")])
    path = tmp_path / "t.jsonl"
    with TraceRecorder(path) as recorder:
        recorder(info)
    assert recorder.written == 0 and recorder.skipped == 1 and path.read_text() == ""
