"""Hostile traces for the output-length law that `cortexc plan --observed` learns (planner/observed.py):
finish reasons of the wrong type or unknown, every call cut or none, lengths of 0, huge, fractional or
heavy-tailed, a stage seen once. Each gives a clear :class:`TraceFormatError` or estimates the IR accepts
and the planner plans, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cortexlang.ir import MAX_OUTPUT_CV
from planner.api import plan_program
from planner.observed import TraceFormatError, observe, read_trace, render
from planner.plan import Plan
from tests.planner.test_observed import NL2SQL, _program
from tests.planner.test_plan_cli import _app

_SKIP = object()


def _run(i: int, **llm: object) -> str:
    """One nl2sql run, generate -> execute (ok), its generate call carrying ``llm`` over the defaults
    (a value of ``_SKIP`` leaves the field out)."""
    call = dict(model="smollm2", input_tokens=650, output_tokens=60, prefix_tokens=600, service_s=4.0, ttft_s=1.0)
    call.update(llm)
    call = {k: v for k, v in call.items() if v is not _SKIP}
    calls = [{"id": "c0", "stage": "generate", "kind": "llm", "parents": [], "outcome": "ok", **call},
             {"id": "c1", "stage": "execute", "kind": "sql", "parents": ["c0"], "outcome": "ok", "duration_s": 0.004}]
    return json.dumps({"workflow": "nl2sql", "arrival_s": 2.0 * i, "status": "done", "calls": calls})


def _learnt(lines: list[str]):
    """(the learnt generate stage, its estimates by name less the stage prefix) of a trace that plans."""
    obs = observe(_program("nl2sql"), read_trace(lines))
    assert render(obs) and isinstance(plan_program(obs.program), Plan)
    est = {e.what.removeprefix("generate: "): e for e in obs.estimates if e.what.startswith("generate: ")}
    return obs.program.workflow().stage("generate"), est


RUNAWAY = "runaway calls (cut at max_tokens 96)"


@pytest.mark.parametrize("reason", [["stop"], {"why": "stop"}, 1, True, 0.5])
def test_a_finish_reason_not_a_string_is_a_malformed_trace(reason: object) -> None:
    with pytest.raises(TraceFormatError, match=r"t.jsonl:1: call 0: 'finish_reason' must be a string or null"):
        read_trace([_run(0, finish_reason=reason)], "t.jsonl")


def test_unknown_or_null_finish_reasons_leave_the_runaway_share_alone() -> None:
    stage, est = _learnt([_run(i, finish_reason="eos" if i % 2 else None) for i in range(20)])
    assert RUNAWAY not in est and stage.runaway == 0.0
    assert stage.output_tokens == 60 and est["output tokens per call"].applied  # every call's length
    stage, est = _learnt([_run(i, finish_reason="tool_calls" if i % 2 else "stop") for i in range(20)])
    assert est[RUNAWAY].samples == 10 and est["output tokens per call that stopped"].samples == 10


def test_every_call_cut_runs_away_and_keeps_the_declared_stopped_length() -> None:
    stage, est = _learnt([_run(i, finish_reason="length", output_tokens=96) for i in range(20)])
    assert stage.runaway == 1.0 and est[RUNAWAY].applied and "stop string" in est[RUNAWAY].note
    assert stage.output_tokens == 40 and stage.output_cv is None  # no stopped call: the declared law stands


def test_no_call_cut_learns_no_runaways() -> None:
    stage, est = _learnt([_run(i, finish_reason="stop", output_tokens=50 + i) for i in range(20)])
    assert stage.runaway == 0.0 and est[RUNAWAY].observed == 0.0 and not est[RUNAWAY].note
    assert stage.output_tokens == 60 and 0.0 < stage.output_cv < 0.2


def test_the_runaway_share_counts_calls_without_a_usable_length() -> None:
    """Ten empty answers (0 tokens) and ten cut calls that report no length: half the calls ran away
    (it was every call while only positive lengths counted); no stopped length to learn."""
    lines = [_run(i, finish_reason="stop", output_tokens=0) for i in range(10)]
    lines += [_run(i, finish_reason="length", output_tokens=_SKIP) for i in range(10, 20)]
    stage, est = _learnt(lines)
    assert stage.runaway == pytest.approx(0.5) and est[RUNAWAY].samples == 20
    assert stage.output_tokens == 40 and "output tokens per call that stopped" not in est


@pytest.mark.parametrize("tokens, expected", [(1e8, 100_000_000), (0.4, 1), (12.5, 12)])
def test_huge_and_fractional_lengths_are_learnt_as_whole_tokens(tokens: float, expected: int) -> None:
    stage, est = _learnt([_run(i, finish_reason="stop", output_tokens=tokens) for i in range(20)])
    assert stage.output_tokens == expected and stage.output_cv == 0.0
    assert est["output tokens per call that stopped"].observed == pytest.approx(tokens)


@pytest.mark.parametrize("tokens", [-5, 1e9, "60", float("inf")])
def test_negative_huge_or_non_numeric_lengths_are_a_malformed_trace(tokens: object) -> None:
    with pytest.raises(TraceFormatError, match=r"call 0: 'output_tokens' must be a number from 0 to 1e\+08"):
        read_trace([_run(0, finish_reason="stop", output_tokens=tokens)])


@pytest.mark.parametrize("reason", ["stop", None])
def test_a_heavier_tail_than_the_law_holds_is_capped_at_the_largest_cv(reason: str | None) -> None:
    """One call of 1e8 tokens among 399 of one: CV ~20, beyond the IR's bound (a ValidationError before)."""
    stage, est = _learnt([_run(i, finish_reason=reason, output_tokens=1e8 if i == 0 else 1) for i in range(400)])
    cv = est["output length CV"]
    assert cv.observed == pytest.approx(19.97, abs=0.01) and cv.applied and "capped at 10" in cv.note
    assert stage.output_cv == MAX_OUTPUT_CV


@pytest.mark.parametrize("reason, runaway", [("length", 1.0), ("stop", 0.0)])
def test_a_stage_seen_once_is_shown_not_applied(reason: str, runaway: float) -> None:
    stage, est = _learnt([_run(0, finish_reason=reason, output_tokens=96 if reason == "length" else 1)])
    assert est[RUNAWAY].observed == runaway and not est[RUNAWAY].applied
    assert (stage.runaway, stage.output_tokens, stage.output_cv) == (0.0, 40, None)


def test_cortexc_plan_observed_refuses_a_bad_finish_reason_and_plans_a_heavy_tail(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_run(0, finish_reason=["stop"]) + "\n")
    result = runner.invoke(_app(), ["plan", str(NL2SQL), "--observed", str(bad), "--no-verify"])
    assert result.exit_code == 1 and f"{bad}:1: call 0: 'finish_reason'" in result.output
    assert "Traceback" not in result.output
    heavy = tmp_path / "heavy.jsonl"
    heavy.write_text("\n".join(_run(i, finish_reason="stop", output_tokens=1e8 if i == 0 else 1)
                               for i in range(400)) + "\n")
    result = runner.invoke(_app(), ["plan", str(NL2SQL), "--observed", str(heavy), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "capped at 10 in the plan" in result.output and "Objective:" in result.output


def test_a_wide_cv_is_planned_without_a_note() -> None:
    """Stopped lengths 5, 5, 5, 5, 80 (CV 1.5): planned with that CV, and with no note -- the planner and the
    simulator read one family (cortexlang.laws), whose shapes agree at any CV; only a CV beyond the language's
    bound is flagged (capped)."""
    lengths = [5, 5, 5, 5, 80] * 2
    stage, est = _learnt([_run(i, output_tokens=n, finish_reason="stop") for i, n in enumerate(lengths)])
    assert stage.output_cv == pytest.approx(1.5) and stage.runaway == 0.0
    assert est["output length CV"].note == ""
