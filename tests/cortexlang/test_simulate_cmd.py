"""`cortex simulate`: end to end on a trace and on an example, and clean usage errors."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from cortexlang.cli import simulate_cmd
from tests.conftest import EXAMPLES
from tests.runtime.simulator.test_trace import LINES


def _app() -> typer.Typer:
    app = typer.Typer()
    simulate_cmd.register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps `simulate` a subcommand
        pass

    return app


def test_trace_replay_json(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(LINES) + "\n")
    r = CliRunner().invoke(_app(), ["simulate", "--trace", str(trace), "--cluster", "H100=1", "-p", "fcfs",
                                    "-p", "autellix-plas", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["label"] == "simulated" and [row["policy"] for row in out["rows"]] == ["fcfs", "autellix-plas"]
    assert all(row["label"] == "simulated" for row in out["rows"])


def test_example_file_table():
    r = CliRunner().invoke(_app(), ["simulate", str(EXAMPLES / "rag.cortex"), "--runs", "60", "-p", "fcfs",
                                    "-p", "cortex"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("simulated: rag")
    assert "cortex" in r.output and "fcfs" in r.output


def test_cpu_only_example_names_its_cpu_slots_and_cortex_keeps_up_with_fcfs():
    """The CPU NL2SQL example at its declared load: two CPU engines, nearly idle. Cortex's isolated
    pools must not lose to FCFS on the same replicas pooled (it borrows the idle one)."""
    r = CliRunner().invoke(_app(), ["simulate", str(EXAMPLES / "nl2sql.cortex"), "--runs", "2000", "--seed", "1",
                                    "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["policy"]: row for row in json.loads(r.output)["rows"]}
    assert rows["cortex"]["scale95"] <= rows["fcfs"]["scale95"] + 1e-6
    assert rows["cortex"]["scale99"] <= rows["fcfs"]["scale99"] + 1e-6
    r = CliRunner().invoke(_app(), ["simulate", str(EXAMPLES / "nl2sql.cortex"), "--runs", "50", "-p", "fcfs"])
    assert r.output.startswith("simulated: nl2sql on CPU only (3 slots) at 0.05 runs/s"), r.output


def test_usage_errors_exit_2_without_traceback(tmp_path):
    runner = CliRunner()
    for args in (["simulate"], ["simulate", "--trace", "x.jsonl", str(EXAMPLES / "rag.cortex")],
                 ["simulate", str(EXAMPLES / "rag.cortex"), "-p", "nope"],
                 ["simulate", str(EXAMPLES / "rag.cortex"), "--cluster", "H100=lots"]):
        r = runner.invoke(_app(), args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output


def test_bad_trace_exits_1_with_message(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    r = CliRunner().invoke(_app(), ["simulate", "--trace", str(bad)])
    assert r.exit_code == 1
    assert "not JSON" in r.output


def test_prefill_decode_split_for_every_policy(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(LINES) + "\n")
    r = CliRunner().invoke(_app(), ["simulate", "--trace", str(trace), "--cluster", "H100=2,A100=1",
                                    "--prefill", "A100=1", "-p", "fcfs", "-p", "hexagent", "-p", "cortex",
                                    "-p", "autellix-plas", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    assert [row["policy"] for row in rows] == ["fcfs", "hexagent", "cortex", "autellix-plas"]
    assert all(row["runs"] > 0 and row["rejected"] == 0 for row in rows)


def test_prefill_split_without_decoders_is_a_clear_error(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(LINES) + "\n")
    r = CliRunner().invoke(_app(), ["simulate", "--trace", str(trace), "--cluster", "H100=2", "--prefill", "H100=2"])
    assert r.exit_code == 1
    assert "needs both prefill and decode replicas" in r.output and "Traceback" not in r.output


def test_a_trace_replays_on_a_plans_pools_and_isolated_without_a_plan_is_a_usage_error(tmp_path):
    from planner.api import plan_program
    from planner.synthetic import nl2sql_program

    program = nl2sql_program()
    plan = plan_program(program)
    (tmp_path / "plan.json").write_text(plan.canonical_json())
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(line for line in LINES if '"lookup"' not in line) + "\n")
    r = CliRunner().invoke(_app(), ["simulate", "--trace", str(trace), "--layout", "plan", "--plan",
                                    str(tmp_path / "plan.json"), "-p", "fcfs", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rows"][0]["runs"] >= 1
    r = CliRunner().invoke(_app(), ["simulate", "--trace", str(trace), "--layout", "isolated", "-p", "fcfs"])
    assert r.exit_code == 2 and "--layout plan" in r.output


def test_a_plan_whose_fanout_width_is_not_declared_is_refused_before_simulating(tmp_path):
    # fuzz_cli seed 13, input 535: a plan edited to a fan-out width of 1,000,000 made `cortex simulate`
    # spawn a million branches per run (33.7 CPU s before the fuzzer's bound stopped it).
    from planner.api import plan_program
    from cortexlang.compiler import compile_file

    program = compile_file(EXAMPLES / "deep_research.cortex").program
    plan = plan_program(program)
    data = json.loads(plan.canonical_json())
    data["workflows"][0]["knobs"]["fanout_width"]["research"] = 1_000_000
    (tmp_path / "plan.json").write_text(json.dumps(data))
    r = CliRunner().invoke(_app(), ["simulate", str(EXAMPLES / "deep_research.cortex"), "--layout", "plan",
                                    "--plan", str(tmp_path / "plan.json"), "--runs", "40", "-p", "cortex"])
    assert r.exit_code == 2, r.output
    assert "fan-out width of 'research' is 1000000, not one of the declared options" in r.output
    assert "Traceback" not in r.output
