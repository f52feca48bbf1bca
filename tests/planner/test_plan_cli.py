"""`cortexc plan`: views, saving, diffing and Terraform-style exit codes."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from cortexlang.cli.plan_cmd import parse_rate, register
from planner.plan import Plan
from tests.conftest import EXAMPLES

RAG = str(EXAMPLES / "rag.cortex")
NL2SQL = str(EXAMPLES / "nl2sql.cortex")


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def main() -> None:
        pass

    register(app)
    return app


def _run(*args: str):
    return CliRunner().invoke(_app(), ["plan", *args])


def test_plan_saves_and_diffs_with_detailed_exit_codes(tmp_path) -> None:
    saved = tmp_path / "plan.json"
    first = _run(RAG, "-o", str(saved))
    assert first.exit_code == 0, first.output
    assert first.output.startswith("Objective: minimise cost per hour")
    assert Plan.load(saved).workflow("rag").llm_pools
    same = _run(RAG, "--diff", str(saved), "--detailed-exitcode")
    assert same.exit_code == 0 and "Plan: 0 to add, 0 to resize, 0 to remove." in same.output
    busier = _run(RAG, "--rate", "8/s", "--diff", str(saved), "--detailed-exitcode")
    assert busier.exit_code == 2, busier.output
    assert "to resize" in busier.output.splitlines()[-1]


def test_json_view_is_the_canonical_plan() -> None:
    result = _run(RAG, "--json", "--mode", "headroom")
    assert result.exit_code == 0, result.output
    plan = Plan.from_json(result.output)
    assert plan.mode == "headroom" and plan.canonical_json() == result.output
    assert json.loads(result.output)["objective"]["unit"] == "fraction"


def test_inventory_file_and_infeasible_exit_code(tmp_path) -> None:
    inv = tmp_path / "inv.json"
    inv.write_text('{"cpu": {"slots": 1, "cost_per_hour": 0.08}}')
    small = _run(NL2SQL, "--inventory", str(inv))
    assert small.exit_code == 1 and "No plan:" in small.output
    inv.write_text('{"cpu": {"slots": 8, "cost_per_hour": 0.08}}')
    ok = _run(NL2SQL, "--inventory", str(inv), "--detailed-exitcode")
    assert ok.exit_code == 2, ok.output  # a new plan: every pool is a change
    assert "smollm2" in ok.output and "CPU x 1" in ok.output


def test_usage_errors_are_messages_not_tracebacks(tmp_path) -> None:
    bad_rate = _run(RAG, "--rate", "fast")
    assert bad_rate.exit_code == 2 and "expected a positive rate" in bad_rate.output
    not_a_plan = tmp_path / "x.json"
    not_a_plan.write_text("{}")
    bad_diff = _run(RAG, "--diff", str(not_a_plan))
    assert bad_diff.exit_code == 2 and "is not a saved plan" in bad_diff.output
    bad_inv = tmp_path / "inv.json"
    bad_inv.write_text('{"gpus": [{"kind": "H100"}]}')
    assert _run(RAG, "--inventory", str(bad_inv)).exit_code == 2
    assert _run(str(tmp_path / "missing.cortex")).exit_code == 2


def test_parse_rate_units() -> None:
    assert parse_rate("5/s") == 5.0 and parse_rate("120/min") == 2.0 and parse_rate("3600/h") == 1.0
    assert parse_rate("0.5") == 0.5
