"""``cortexc`` commands and their exit codes (0 ok, 1 errors in input, 2 usage)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from cortexlang.cli import compiler_app
from tests.conftest import EXAMPLES

runner = CliRunner()
NL2SQL = str(EXAMPLES / "nl2sql.cortex")


def test_check_ok_and_errors() -> None:
    ok = runner.invoke(compiler_app, ["check", NL2SQL])
    assert ok.exit_code == 0 and "ok:" in ok.output
    bad = runner.invoke(compiler_app, ["check", str(EXAMPLES / "errors" / "cx301_unknown_name.cortex")])
    assert bad.exit_code == 1
    assert "error[CX301]" in bad.output and "did you mean `fix`?" in bad.output


def test_missing_file_is_a_usage_error() -> None:
    result = runner.invoke(compiler_app, ["check", "no/such/file.cortex"])
    assert result.exit_code == 2 and "no such file" in result.output


def test_compile_writes_canonical_json(tmp_path: Path) -> None:
    out = tmp_path / "ir.json"
    result = runner.invoke(compiler_app, ["compile", NL2SQL, "-o", str(out)])
    assert result.exit_code == 0
    doc = json.loads(out.read_text())
    assert doc["workflows"][0]["entry"] == "generate"


def test_graph_formats() -> None:
    dot = runner.invoke(compiler_app, ["graph", NL2SQL, "--format", "dot"])
    assert dot.exit_code == 0 and dot.output.startswith('digraph "nl2sql"') and '"fix" -> "execute"' in dot.output
    mermaid = runner.invoke(compiler_app, ["graph", NL2SQL, "-f", "mermaid"])
    assert mermaid.output.startswith("flowchart LR") and "repair exhausted" in mermaid.output
    as_json = json.loads(runner.invoke(compiler_app, ["graph", NL2SQL, "-f", "json"]).output)
    assert {n["name"] for n in as_json["nodes"]} >= {"generate", "execute", "fix", "done", "fail"}


def test_graph_unknown_workflow_is_usage_error() -> None:
    result = runner.invoke(compiler_app, ["graph", NL2SQL, "-w", "nope"])
    assert result.exit_code == 2 and "no workflow `nope`" in result.output


def test_fmt_check_and_rewrite(tmp_path: Path) -> None:
    messy = tmp_path / "messy.cortex"
    shutil.copytree(EXAMPLES / "prompts", tmp_path / "prompts")
    text = (EXAMPLES / "nl2sql.cortex").read_text()
    messy.write_text(text.replace("  slo { latency", "  slo {    latency").replace("generate -> execute", "generate  ->  execute"))
    check = runner.invoke(compiler_app, ["fmt", "--check", str(messy)])
    assert check.exit_code == 1 and "would reformat" in check.output
    assert runner.invoke(compiler_app, ["fmt", str(messy)]).exit_code == 0
    assert messy.read_text() == text
    assert runner.invoke(compiler_app, ["fmt", "--check", str(messy)]).exit_code == 0


def test_fmt_diff_prints_the_change_and_leaves_the_file_alone(tmp_path: Path) -> None:
    messy = tmp_path / "messy.cortex"
    text = 'model m {\n  params   = 8B\n}\n'
    messy.write_text(text)
    result = runner.invoke(compiler_app, ["fmt", "--diff", str(messy)])
    assert result.exit_code == 0
    assert "-  params   = 8B\n+  params = 8B\n" in result.stdout and "would reformat" in result.output
    assert messy.read_text() == text


def test_fmt_reports_syntax_errors() -> None:
    result = runner.invoke(compiler_app, ["fmt", "--check", str(EXAMPLES / "errors" / "cx001_unexpected_token.cortex")])
    assert result.exit_code == 1 and "error[CX001]" in result.output


def test_version_and_help() -> None:
    assert runner.invoke(compiler_app, ["--version"]).output.startswith("cortex ")
    assert "compile" in runner.invoke(compiler_app, ["--help"]).output


def test_cortex_run_with_a_missing_tool_module_is_one_line(tmp_path: Path) -> None:
    from cortexlang.cli import runtime_app

    source = tmp_path / "t.cortex"
    source.write_text('workflow w {\n  inputs = [q]\n  tool t { entry = "no_such_module:run"  service = 10ms }\n'
                      "  flow { t -> done }\n}\n")
    inputs = tmp_path / "q.jsonl"
    inputs.write_text('{"q": "x"}\n')
    result = runner.invoke(runtime_app, ["run", str(source), "--input", str(inputs), "--engine", "simulated",
                                         "--no-plan"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"error: tool stage `t`: cannot import tool module 'no_such_module' (from {tmp_path.resolve()}): "
        "ModuleNotFoundError: No module named 'no_such_module'"]


def test_fmt_refuses_deep_nesting_without_a_traceback(tmp_path: Path) -> None:
    deep = tmp_path / "deep.cortex"
    deep.write_text("model m {\n  params = " + "[" * 1000 + "]" * 1000 + "\n}\n")
    result = runner.invoke(compiler_app, ["fmt", "--check", str(deep)])
    assert result.exit_code == 1 and "error[CX005]" in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit)


def test_a_file_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cortex"
    bad.write_bytes(b"model m {\n  weights = \"\xff\xfe\"\n}\n")
    result = runner.invoke(compiler_app, ["check", str(bad)])
    assert result.exit_code == 2 and f"cannot read {bad}: not UTF-8 text (line 2)" in result.output


def test_cortex_dev_reports_an_unreadable_save_and_keeps_watching(tmp_path: Path) -> None:
    from cortexlang.cli.run_cmds import _dev_compiler

    bad = tmp_path / "bad.cortex"
    bad.write_bytes(b"workflow w {\n  \xff\n}\n")
    spec, text = _dev_compiler(None, None)(bad)
    assert spec is None and text == f"error: cannot read {bad}: not UTF-8 text (line 2)"
    spec, text = _dev_compiler(None, None)(tmp_path / "gone.cortex")
    assert spec is None and text.endswith("no such file")


def test_cortexc_as_a_program_flushes_its_output_and_keeps_its_exit_status(tmp_path: Path) -> None:
    # check/fmt/graph/compile end the process without interpreter teardown (cortexlang/cli/startup.py)
    import subprocess
    import sys

    def cortexc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from cortexlang.cli import compiler_app; compiler_app()", *args],
                              capture_output=True, text=True, timeout=60)

    ok = cortexc("check", NL2SQL)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ")
    bad = cortexc("check", str(EXAMPLES / "errors" / "cx301_unknown_name.cortex"))
    assert bad.returncode == 1 and bad.stderr.rstrip().endswith("1 error found")
    assert cortexc("check", str(tmp_path / "none.cortex")).returncode == 2
    graph = cortexc("graph", NL2SQL, "-f", "json")
    assert graph.returncode == 0 and json.loads(graph.stdout)["nodes"]
