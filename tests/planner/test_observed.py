"""Learning planning parameters from recorded runs (planner/observed.py, `cortexc plan --observed`).

The traces here are written in the documented format (docs/trace-format.md) with known
frequencies, so every estimate has an exact expected value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cortexlang.compiler import compile_file
from planner.api import plan_program
from planner.observed import PRIOR_WEIGHT, TraceFormatError, observe, read_trace, render
from planner.plan import Plan
from tests.conftest import EXAMPLES
from tests.planner.test_plan_cli import _app

NL2SQL = EXAMPLES / "nl2sql.cortex"


def _program(name: str):
    result = compile_file(EXAMPLES / f"{name}.cortex")
    assert result.program is not None
    return result.program


def _nl2sql_run(i: int, outcomes: list[str], arrival: float, *, out_tokens: int = 60, sql_s: float = 0.004) -> str:
    """generate -> execute, then fix -> execute per further outcome (outcomes of the executes in order)."""
    calls, parent, n = [], None, 0

    def add(stage: str, kind: str, outcome: str, **extra) -> None:
        nonlocal parent, n
        cid = f"c{n}"
        calls.append({"id": cid, "stage": stage, "kind": kind, "parents": [parent] if parent else [],
                      "outcome": outcome, **extra})
        parent, n = cid, n + 1

    llm = dict(model="smollm2", input_tokens=650, output_tokens=out_tokens, prefix_tokens=600, service_s=4.0,
               ttft_s=1.0, finish_reason="length" if out_tokens >= 96 else "stop", cached_tokens=512)
    add("generate", "llm", "ok", **llm)
    for k, outcome in enumerate(outcomes):
        if k:
            add("fix", "llm", "ok", **llm)
        add("execute", "sql", outcome, duration_s=sql_s)
    status = "done" if outcomes[-1] == "ok" else "fail"
    return json.dumps({"run_id": f"r{i}", "workflow": "nl2sql", "arrival_s": arrival, "status": status,
                       "latency_s": 10.0 + i, "slo_met": i % 2 == 0, "calls": calls})


def _trace() -> list[str]:
    """20 runs, one every 2 s: 4 ok at once; 10 error -> ok; 6 empty -> error -> ok.
    Executes: 4 + 20 + 18 = 42: ok 20, error 16, empty 6."""
    lines = []
    for i in range(20):
        outcomes = ["ok"] if i < 4 else (["error", "ok"] if i < 14 else ["empty", "error", "ok"])
        lines.append(_nl2sql_run(i, outcomes, 100.0 + 2.0 * i, out_tokens=96 if i % 4 == 0 else 60))
    return lines


def test_branch_probabilities_tokens_service_and_rate_are_learnt() -> None:
    program = _program("nl2sql")
    obs = observe(program, read_trace(_trace()))
    est = {e.what: e for e in obs.estimates}
    error = est["execute -> fix (error)"]
    assert error.observed == pytest.approx(16 / 42) and error.declared == pytest.approx(0.25) and error.applied
    assert error.flagged and not est["execute -> fix (empty)"].flagged
    assert est["execute -> fix (empty)"].observed == pytest.approx(6 / 42)
    assert est["execute -> done (ok)"].observed == pytest.approx(20 / 42) and est["execute -> done (ok)"].flagged
    edges = {(e.target, e.condition.values): e.probability for e in obs.program.workflow().edges if e.source == "execute"}
    assert edges[("fix", ("error",))] == pytest.approx((16 + PRIOR_WEIGHT * 0.25) / (42 + PRIOR_WEIGHT))
    assert sum(edges.values()) == pytest.approx(1.0)
    gen = obs.program.workflow().stage("generate")
    # the output-length law: 5 of 20 calls cut at max_tokens run away; the 15 that stopped made 60 tokens each
    assert gen.input_tokens == 650 and gen.output_tokens == 60 and gen.output_cv == 0.0
    assert gen.runaway == pytest.approx(5 / 20)
    runaway = est["generate: runaway calls (cut at max_tokens 96)"]
    assert runaway.observed == pytest.approx(5 / 20) and runaway.applied and runaway.flagged
    assert "stop string" in runaway.note
    assert est["generate: output tokens per call that stopped"].flagged  # 60 against the declared 40
    assert est["generate: output length CV"].declared == pytest.approx(0.3)
    assert obs.program.workflow().stage("execute").service_s == pytest.approx(0.004)
    load = obs.program.workflow().load
    assert load.rate_per_s == pytest.approx(0.5) and load.pattern == "constant"
    assert est["fix: calls per run"].observed == pytest.approx((10 + 2 * 6) / 20)
    assert obs.measured["slo_attainment"] == pytest.approx(0.5) and obs.measured["p50_s"] == pytest.approx(19.5)
    text = render(obs)
    assert text.startswith("Observed: 20 recorded runs of workflow nl2sql")
    assert "!*execute -> done (ok)" in text and "38.1%" in text


def test_planning_with_what_was_observed_sizes_for_the_real_retries() -> None:
    program = _program("nl2sql")
    declared = plan_program(program)
    learnt = plan_program(observe(program, read_trace(_trace())).program)
    assert isinstance(declared, Plan) and isinstance(learnt, Plan)

    def fix_visits(plan: Plan) -> float:
        pool = plan.workflows[0].pool("fix")
        return (pool if pool.stage == "fix" else next(c for c in pool.colocated if c.stage == "fix")).visits_per_run

    assert fix_visits(learnt) > 1.5 * fix_visits(declared)  # sized for the retries that really happen
    assert learnt.workflows[0].latency.p99 > declared.workflows[0].latency.p99


def test_few_runs_are_shown_but_not_applied_and_a_burst_has_no_rate() -> None:
    program = _program("nl2sql")
    lines = [_nl2sql_run(i, ["error", "ok"], 5.0 + 0.01 * i) for i in range(2)]
    obs = observe(program, read_trace(lines))
    est = {e.what: e for e in obs.estimates}
    assert est["execute -> fix (error)"].observed == pytest.approx(0.5) and not est["execute -> fix (error)"].applied
    assert obs.program.workflow().edges == program.workflow().edges
    burst = observe(program, read_trace([_nl2sql_run(i, ["ok"], 5.0 + 0.01 * i) for i in range(8)]))
    rate = next(e for e in burst.estimates if e.what == "arrival rate")
    assert rate.observed is None and "all 8 runs arrived within 0.07 s: a burst" in rate.note
    assert burst.program.workflow().load == program.workflow().load


def test_field_conditions_are_learnt_from_where_runs_went_next() -> None:
    program = _program("react_agent")
    wf = program.workflow()
    think = [e for e in wf.edges if e.source == "think"]
    assert any(e.condition.kind == "field" for e in think)
    tool_edge = next(e for e in think if e.target not in ("answer", "done", "fail") and e.condition.kind == "field")
    answer_edge = next(e for e in think if e.target == "answer")
    lines = []
    for i in range(10):  # think -> <tool> -> think -> answer: half the thinks pick the tool
        calls = [{"id": "c0", "stage": "think", "kind": "llm", "parents": [], "model": "llama8b",
                  "input_tokens": 300, "output_tokens": 30},
                 {"id": "c1", "stage": tool_edge.target, "kind": "tool", "parents": ["c0"], "duration_s": 0.1},
                 {"id": "c2", "stage": "think", "kind": "llm", "parents": ["c1"], "model": "llama8b",
                  "input_tokens": 350, "output_tokens": 30},
                 {"id": "c3", "stage": "answer", "kind": "llm", "parents": ["c2"], "model": "llama8b",
                  "input_tokens": 400, "output_tokens": 50}]
        lines.append(json.dumps({"workflow": "react_agent", "arrival_s": float(i), "calls": calls}))
    est = {e.what: e for e in observe(program, read_trace(lines)).estimates}
    label = ", ".join(tool_edge.condition.values)
    assert est[f"think -> {tool_edge.target} ({label})"].observed == pytest.approx(0.5)
    label = ", ".join(answer_edge.condition.values) or answer_edge.condition.kind
    assert est[f"think -> answer ({label})"].observed == pytest.approx(0.5)


def test_malformed_traces_name_the_line() -> None:
    with pytest.raises(TraceFormatError, match=r"t.jsonl:2: not JSON"):
        read_trace(['{"arrival_s": 1, "calls": []}', "{oops"], "t.jsonl")
    with pytest.raises(TraceFormatError, match=r"t.jsonl:1: missing or invalid 'arrival_s'"):
        read_trace(['{"calls": []}'], "t.jsonl")
    with pytest.raises(TraceFormatError, match=r"no run of workflow 'nl2sql' \(it has: rag\)"):
        observe(_program("nl2sql"), read_trace(['{"workflow": "rag", "arrival_s": 1, "calls": []}']))




def test_cortexc_plan_observed(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(_trace()) + "\n")
    runner = CliRunner()
    text = runner.invoke(_app(), ["plan", str(NL2SQL), "--observed", str(trace), "--no-verify"])
    assert text.exit_code == 0, text.output
    assert text.output.startswith("Observed: 20 recorded runs of workflow nl2sql")
    assert "Objective: minimise cost per hour" in text.output and "0.5 runs/s" in text.output
    as_json = runner.invoke(_app(), ["plan", str(NL2SQL), "--observed", str(trace), "--json", "--no-verify"])
    assert as_json.exit_code == 0
    assert Plan.from_json(as_json.stdout).workflows[0].rate_per_s == pytest.approx(0.5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_trace()[0] + "\nnot json\n")
    result = runner.invoke(_app(), ["plan", str(NL2SQL), "--observed", str(bad), "--no-verify"])
    assert result.exit_code == 1 and f"{bad}:2: not JSON" in result.output and "Traceback" not in result.output
    missing = runner.invoke(_app(), ["plan", str(NL2SQL), "--observed", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_a_run_of_many_calls_is_observed_in_linear_time() -> None:
    """A hostile (or runaway) recorded run of 20,000 calls: finding each call's children and the
    within-run pairs of output lengths must not be quadratic in the run's calls (it hung for minutes)."""
    import time

    outcomes = ["error"] * 10_000 + ["ok"]
    lines = _trace() + [_nl2sql_run(99, outcomes, 200.0)]
    start = time.process_time()
    obs = observe(_program("nl2sql"), read_trace(lines))
    assert time.process_time() - start < 10.0
    assert obs.runs == 21


def test_an_sql_stage_no_slot_count_keeps_up_with_says_so_not_none(tmp_path: Path) -> None:
    """Observed SQL calls of 5e5 s each: more slots than the search bounds would be needed; the
    message said 'needs None CPU slots'."""
    lines = [json.loads(line) for line in _trace()]
    for run in lines:
        for call in run["calls"]:
            if call["stage"] == "execute":
                call["duration_s"] = 5e5
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    result = CliRunner().invoke(_app(), ["plan", str(NL2SQL), "--observed", str(trace), "--no-verify"])
    assert result.exit_code == 1
    assert "None" not in result.output and "needs more than 4096 CPU slots" in result.output
