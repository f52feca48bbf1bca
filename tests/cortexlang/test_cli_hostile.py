"""Hostile inputs to `cortexc plan` and `cortex simulate|run` (issue 10: no traceback on any input).

Each test is a failure benchmarks/fuzz_cli.py found (or a silently ignored flag): the command
now ends with exit 1 or 2 and a one-line ``error: ...`` naming the file, line and field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cortexlang.cli import common, compiler_app, runtime_app
from cortexlang.ir import MIN_RATE_PER_S
from planner.api import MAX_RATE_PER_S, plan_program
from planner.plan import Infeasible
from planner.synthetic import nl2sql_program
from tests.conftest import EXAMPLES
from tests.planner.test_observed import _trace
from tests.runtime.simulator.test_trace import LINES

NL2SQL = str(EXAMPLES / "nl2sql.cortex")


def _run(app, args: list[str]):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def _trace_file(tmp_path: Path, lines: list[str] = LINES, name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _edit(line: str, edit) -> str:
    obj = json.loads(line)
    edit(obj)
    return json.dumps(obj, allow_nan=True)


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("app, args", [
    (runtime_app, ["simulate", "--trace"]),
    (compiler_app, ["plan", NL2SQL, "--no-verify", "--observed"]),
    (runtime_app, ["simulate", NL2SQL, "--layout", "plan", "--plan"]),
    (compiler_app, ["plan", NL2SQL, "--no-verify", "--diff"]),
])
def test_unreadable_files_are_one_line_usage_errors(tmp_path, app, args):
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"calls": []}\n\xff\xfe\n')
    r = _run(app, args + [binary])
    assert r.exit_code == 2 and f"{binary}: not UTF-8 text (line 2)" in r.output
    r = _run(app, args + [tmp_path])
    assert r.exit_code == 2 and f"{tmp_path}: is a directory, not a file" in r.output
    r = _run(app, args + [tmp_path / "none"])
    assert r.exit_code == 2 and "no such file" in r.output


@pytest.mark.parametrize("app, args, code", [
    (runtime_app, ["simulate", "--trace"], 1),
    (compiler_app, ["plan", NL2SQL, "--no-verify", "--observed"], 1),
    (runtime_app, ["run", NL2SQL, "--engine", "simulated", "--no-plan", "--input"], 2),
])
def test_an_integer_of_more_than_4300_digits_is_not_json_naming_its_line(tmp_path, app, args, code):
    """Found by benchmarks/fuzz_cli.py (round 3, seed 8, input 308): a trace line holding a 100-million-digit
    number ended `cortexc plan --observed` in a traceback (json raises a plain ValueError for it)."""
    path = _trace_file(tmp_path, ['{"arrival_s": 1' + "0" * 5000 + ', "calls": []}'])
    r = _run(app, args + [path])
    assert r.exit_code == code and f"{path}:1: not JSON (an integer of more than 4,300 digits)" in r.output, r.output


def test_a_file_that_never_ends_is_read_up_to_the_bound(monkeypatch):
    monkeypatch.setattr(common, "MAX_DATA_BYTES", 1 << 20)  # /dev/zero would otherwise fill the memory
    r = _run(runtime_app, ["simulate", "--trace", "/dev/zero"])
    assert r.exit_code == 2 and "--trace /dev/zero: larger than 1 MiB" in r.output
    r = _run(compiler_app, ["plan", NL2SQL, "--no-verify", "--diff", "/dev/zero"])
    assert r.exit_code == 2 and "--diff /dev/zero: larger than 16 MiB" in r.output


def test_an_empty_trace_holds_no_runs(tmp_path):
    r = _run(runtime_app, ["simulate", "--trace", _trace_file(tmp_path, [""])])
    assert r.exit_code == 1 and "the trace holds no runs" in r.output


# ----------------------------------------------------------------------------- trace values


@pytest.mark.parametrize("edit, message", [
    (lambda o: o["calls"][1].update(duration_s=float("nan")), "'duration_s' must be a finite number, not NaN"),
    (lambda o: o["calls"][1].update(duration_s=1e308), "needs 0 < duration_s <= 86400"),
    (lambda o: o.update(arrival_s=float("inf")), "missing or invalid 'arrival_s'"),
    (lambda o: o.update(arrival_s=1e300), "missing or invalid 'arrival_s'"),
    (lambda o: o["calls"][0].update(input_tokens=12.5), "'input_tokens' must be an integer, not 12.5"),
    (lambda o: o["calls"][0].update(prefix_tokens=5000), "prefix_tokens must be between 0 and input_tokens"),
    (lambda o: o["calls"][1].update(parents="g"), "'parents' must be a list of call ids"),
    (lambda o: o["calls"].__setitem__(0, 7), "a call must be a JSON object"),
    (lambda o: o["calls"][0].update(model=["llama8b"]), "'model' must be a string"),
])
def test_hostile_trace_values_name_line_and_field(tmp_path, edit, message):
    lines = [_edit(LINES[0], edit)] + LINES[1:]
    r = _run(runtime_app, ["simulate", "--trace", _trace_file(tmp_path, lines), "--cluster", "H100=1", "-p", "fcfs"])
    assert r.exit_code == 1 and "t.jsonl:1" in r.output and message in r.output, r.output


# ----------------------------------------------------------------------------- simulate flags


def test_absurd_simulate_flags_are_usage_errors(tmp_path):
    r = _run(runtime_app, ["simulate", NL2SQL, "--runs", "1000000000"])
    assert r.exit_code == 2 and "'--runs'" in r.output and "1000000" in r.output
    for flag, value in (("--rate", "nan"), ("--rate", "-1"), ("--rate", "inf"), ("--slo-scale", "0"),
                        ("--slo-scale", "nan")):
        r = _run(runtime_app, ["simulate", NL2SQL, flag, value, "--runs", "5"])
        assert r.exit_code == 2 and f"error: {flag} {value}: expected a positive finite number" in r.output, r.output
    r = _run(runtime_app, ["simulate", NL2SQL, "--seed", "-1"])
    assert r.exit_code == 2 and "--seed" in r.output


def test_a_trace_honours_runs_and_refuses_rate_and_workflow(tmp_path):
    trace = _trace_file(tmp_path)
    r = _run(runtime_app, ["simulate", "--trace", trace, "--cluster", "H100=1", "-p", "fcfs", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["rows"][0]["runs"] == 2
    r = _run(runtime_app, ["simulate", "--trace", trace, "--cluster", "H100=1", "-p", "fcfs", "--json", "--runs", "1"])
    assert r.exit_code == 0 and json.loads(r.output)["rows"][0]["runs"] == 1
    for flag in (["--rate", "2"], ["--workflow", "nl2sql"]):
        r = _run(runtime_app, ["simulate", "--trace", trace] + flag)
        assert r.exit_code == 2 and f"error: {flag[0]} applies to a .cortex FILE" in r.output


def test_a_trace_without_slo_scale_reports_latency_not_scales(tmp_path):
    trace = _trace_file(tmp_path)
    r = _run(runtime_app, ["simulate", "--trace", trace, "--cluster", "H100=1", "-p", "fcfs"])
    assert r.exit_code == 0 and "p99 s" in r.output and "scale@" not in r.output
    row = json.loads(_run(runtime_app, ["simulate", "--trace", trace, "--cluster", "H100=1", "-p", "fcfs",
                                        "--json"]).output)["rows"][0]
    assert "scale95" not in row and "scale99" not in row and row["p99_s"] > 0
    r = _run(runtime_app, ["simulate", "--trace", trace, "--cluster", "H100=1", "-p", "fcfs", "--slo-scale", "3"])
    assert r.exit_code == 0 and "scale@99" in r.output


def test_simulate_json_is_strict_json(tmp_path):
    """A trace whose runs all fall in the warm-up has no latency: null, never NaN."""
    trace = _trace_file(tmp_path, LINES[2:])
    r = _run(runtime_app, ["simulate", "--trace", trace, "--cluster", "H100=1", "-p", "fcfs", "--json"])
    assert r.exit_code == 0
    json.loads(r.output, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_a_plan_given_is_simulated_or_refused_never_ignored(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(plan_program(nl2sql_program()).canonical_json())
    trace = _trace_file(tmp_path, [line for line in LINES if '"lookup"' not in line])
    r = _run(runtime_app, ["simulate", "--trace", trace, "--plan", plan, "-p", "fcfs", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["rows"][0]["runs"] >= 1
    r = _run(runtime_app, ["simulate", "--trace", trace, "--plan", plan, "--layout", "shared"])
    assert r.exit_code == 2 and "--plan applies to --layout plan, not --layout shared" in r.output
    r = _run(runtime_app, ["simulate", "--trace", trace, "--layout", "isolated"])
    assert r.exit_code == 2 and "a trace names no workflow to isolate stages of" in r.output


def test_a_hand_edited_plan_names_the_bad_field(tmp_path):
    data = json.loads(plan_program(nl2sql_program()).canonical_json())
    data["workflows"][0]["llm_pools"][0]["replicas"] = "many"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(data))
    r = _run(runtime_app, ["simulate", NL2SQL, "--plan", plan, "--runs", "5"])
    assert r.exit_code == 2 and "is not a saved plan" in r.output and "at workflows.0.llm_pools.0.replicas" in r.output


# ----------------------------------------------------------------------------- plan


def test_a_rate_beyond_any_inventory_is_infeasible_not_an_overflow():
    for rate in (1e308, float("inf"), float("nan")):
        result = plan_program(nl2sql_program(), rate=rate, disaggregate=True)
        assert isinstance(result, Infeasible) and result.binding == "rate"
    r = _run(compiler_app, ["plan", str(EXAMPLES / "rag.cortex"), "--no-verify", "--disaggregate", "--rate", "1e308"])
    assert r.exit_code == 1 and f"{MIN_RATE_PER_S:g} to {MAX_RATE_PER_S:g} runs/s" in r.output
    r = _run(compiler_app, ["plan", NL2SQL, "--no-verify", "--rate", "1e999"])
    assert r.exit_code == 2 and "expected a positive rate" in r.output


def test_a_rate_too_slow_to_plan_or_simulate_is_refused_in_one_line(tmp_path):
    """Found by benchmarks/fuzz_cli.py (seed 9, input 200): `cortex simulate --rate 1e-300` divided by zero in the
    planner's stall estimate, and guarding that alone left the simulator's clock absorbing every service time."""
    for rate in (1e-300, MIN_RATE_PER_S / 2):
        result = plan_program(nl2sql_program(), rate=rate)
        assert isinstance(result, Infeasible) and result.binding == "rate"
    assert not isinstance(plan_program(nl2sql_program(), rate=MIN_RATE_PER_S), Infeasible)
    r = _run(runtime_app, ["simulate", NL2SQL, "--rate", "1e-300", "--runs", "5"])
    assert r.exit_code == 2 and f"the slowest rate simulated is {MIN_RATE_PER_S:g} runs/s" in r.output, r.output
    r = _run(compiler_app, ["plan", NL2SQL, "--no-verify", "--rate", "1e-300/s"])
    assert r.exit_code == 1 and "outside what the planner sizes" in r.output, r.output
    # The same rate written in the language is a diagnostic on the value.
    shutil.copytree(EXAMPLES, tmp_path / "ex", ignore=shutil.ignore_patterns("__pycache__"))
    src = tmp_path / "ex" / "nl2sql.cortex"
    src.write_text(src.read_text().replace("rate = 0.05/s", "rate = 0.0000001/s"))
    r = _run(compiler_app, ["check", src])
    assert r.exit_code == 1 and "error[CX203]" in r.output and "`rate`" in r.output, r.output


def test_a_negative_seed_is_a_usage_error():
    r = _run(compiler_app, ["plan", NL2SQL, "--no-verify", "--seed", "-9999999999999999999"])
    assert r.exit_code == 2 and "--seed" in r.output


@pytest.mark.parametrize("edit, message", [
    (lambda o: o["calls"][1].update(parents=7), "call 1: 'parents' must be a list of call ids"),
    (lambda o: o["calls"][0].update(output_tokens=1e308), "call 0: 'output_tokens' must be a number from 0 to 1e+08"),
    (lambda o: o["calls"][1].update(duration_s=-1), "call 1: 'duration_s' must be a number from 0"),
    (lambda o: o["calls"][0].update(id=[1]), "call 0 needs 'id' and 'stage'"),
    (lambda o: o.update(arrival_s=-1e308), "missing or invalid 'arrival_s'"),
    (lambda o: o.update(workflow=3), "'workflow' must be a string"),
])
def test_hostile_observed_traces_name_line_and_field(tmp_path, edit, message):
    lines = _trace()
    lines[2] = _edit(lines[2], edit)
    r = _run(compiler_app, ["plan", NL2SQL, "--no-verify", "--observed", _trace_file(tmp_path, lines)])
    assert r.exit_code == 1 and f"t.jsonl:3: {message}" in r.output, r.output


# ----------------------------------------------------------------------------- run


def test_run_without_its_sqlite_file_is_one_line(tmp_path):
    folder = tmp_path / "ex"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "How many customers?"}\n')
    r = _run(runtime_app, ["run", folder / "nl2sql.cortex", "--input", questions, "--engine", "simulated",
                           "--no-plan"])
    assert r.exit_code == 1 and "error: cannot start the runtime" in r.output and "SQLite file not found" in r.output


def test_json_nested_beyond_the_decoders_depth_is_not_json(tmp_path):
    deep = _trace_file(tmp_path, ["[" * 200_000])
    r = _run(runtime_app, ["simulate", "--trace", deep])
    assert r.exit_code == 1 and "t.jsonl:1: not JSON (nested too deeply)" in r.output
    r = _run(compiler_app, ["plan", NL2SQL, "--no-verify", "--observed", deep])
    assert r.exit_code == 1 and "t.jsonl:1: not JSON (nested too deeply)" in r.output
    plan = tmp_path / "plan.json"
    plan.write_text("[" * 200_000)
    r = _run(runtime_app, ["simulate", NL2SQL, "--plan", plan])
    assert r.exit_code == 2 and "is not a saved plan" in r.output
    r = _run(runtime_app, ["run", EXAMPLES / "react_agent.cortex", "--input", deep, "--engine", "simulated",
                           "--no-plan"])
    assert r.exit_code == 2 and "t.jsonl:1: not JSON (nested too deeply)" in r.output


def test_a_recording_that_cannot_be_written_stops_with_one_line(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "discount approval"}\n')
    r = _run(runtime_app, ["run", EXAMPLES / "react_agent.cortex", "--input", questions, "--engine", "simulated",
                           "--no-plan", "--record", "/dev/full", "--json", "/dev/full"])
    assert r.exit_code == 1, r.output
    assert "error: --record /dev/full: cannot write: No space left on device; recording stopped" in r.output
    assert "error: --json /dev/full: cannot write: No space left on device" in r.output
    assert "run listener" not in r.output  # no per-run traceback from the orchestrator's log


@pytest.mark.parametrize("field, value, message", [
    ("replicas", 10**9, "needs 1000000000 x 1 H100, more than the plan's inventory has"),
    ("device", "TPU9", "runs on TPU9, which the plan's inventory lacks"),
    ("model", "nope", "its pools serve nope, which"),
])
def test_a_plan_that_cannot_fit_or_names_no_declared_model_is_refused(tmp_path, field, value, message):
    """10^9 replicas kept `cortex simulate --layout plan` building engines past the fuzzer's bound."""
    data = json.loads(plan_program(nl2sql_program()).canonical_json())
    pool = data["workflows"][0]["llm_pools"][0]
    assert pool["device"] == "H100" and pool["tp"] == 1
    pool[field] = value
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(data))
    trace = _trace_file(tmp_path, [line for line in LINES if '"lookup"' not in line])
    r = _run(runtime_app, ["simulate", "--trace", trace, "--plan", plan, "-p", "fcfs"])
    assert r.exit_code == 2 and message in r.output, r.output


def test_a_trace_without_llm_calls_is_refused(tmp_path):
    trace = _trace_file(tmp_path, ['{"arrival_s": 0, "calls": [{"id": "a", "stage": "execute", "kind": "sql", '
                                   '"duration_s": 0.1}]}'])
    r = _run(runtime_app, ["simulate", "--trace", trace])
    assert r.exit_code == 1 and "no llm call in the trace" in r.output


def test_calls_of_stages_the_workflow_lacks_are_named_not_silently_dropped(tmp_path):
    lines = _trace()
    lines[0] = _edit(lines[0], lambda o: o["calls"][0].update(stage="zzz"))
    r = _run(compiler_app, ["plan", NL2SQL, "--no-verify", "--observed", _trace_file(tmp_path, lines)])
    assert r.exit_code == 0 and "calls of stages nl2sql does not have, not used: zzz (1)" in r.output


def test_a_price_the_solver_cannot_hold_is_refused_naming_the_field(tmp_path):
    """Found by benchmarks/fuzz_cli.py (seed 8, input 1405): an inventory GPU at $1e300/h reached the solver,
    whose integer milli-dollar coefficients overflowed (a TypeError from OR-Tools, a traceback)."""
    inv = tmp_path / "inv.json"
    inv.write_text(json.dumps({"gpus": [{"kind": "H100", "count": 2, "cost_per_hour": 1e300}],
                               "cpu": {"slots": 8, "cost_per_hour": 0.04}}))
    r = _run(compiler_app, ["plan", str(EXAMPLES / "rag.cortex"), "--no-verify", "--inventory", inv])
    assert r.exit_code == 2 and "less than or equal to 1000000 at gpus.0.cost_per_hour" in r.output, r.output
    # The same price written in the language is a diagnostic on the value.
    shutil.copytree(EXAMPLES, tmp_path / "ex", ignore=shutil.ignore_patterns("__pycache__"))
    src = tmp_path / "ex" / "rag.cortex"
    src.write_text(src.read_text().replace("cost = $2.99/h", "cost = $" + "9" * 15 + "/h"))  # near the language's largest number, 1e15
    r = _run(compiler_app, ["check", src])
    assert r.exit_code == 1 and "error[CX203]: `cost` is out of range in `gpu H100`" in r.output, r.output
