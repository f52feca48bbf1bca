"""`cortex run` against a PostgreSQL role the SQL executor refuses (a superuser): one clear line and exit 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
from typer.testing import CliRunner

from cortexlang.cli.run_cmds import register
from tests.conftest import POSTGRES_URL, require_postgres

from .conftest import EXAMPLES


def test_a_superuser_database_url_is_refused_in_one_line(tmp_path: Path) -> None:
    require_postgres()
    source = (EXAMPLES / "nl2sql.cortex").read_text(encoding="utf-8")
    source = source.replace('url       = "sqlite:///data/sales.db"', f'url       = "{POSTGRES_URL}"')
    assert POSTGRES_URL in source
    (tmp_path / "nl2sql.cortex").write_text(source, encoding="utf-8")
    shutil.copytree(EXAMPLES / "prompts", tmp_path / "prompts")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "How many orders?"}) + "\n")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nl2sql.cortex"), "--input", str(questions),
                                      "--engine", "simulated", "--no-plan"])
    assert result.exit_code == 1, result.output
    assert "error: cannot start the runtime: database 'sales'" in result.output
    assert "SUPERUSER" in result.output and "readonly_role.py" in result.output
    assert "Traceback" not in result.output


def test_the_declared_result_size_bound_reaches_the_sql_executor(tmp_path: Path) -> None:
    import asyncio

    from runtime.build.layout import default_spec
    from runtime.orchestrator import Orchestrator

    from .conftest import compile_example, sim_factory

    from examples.data.build_sales_db import build

    build()  # the example's own SQLite file (the test opened it only if an earlier test had built it)
    program = compile_example("nl2sql")
    bounded = program.model_copy(update={"databases": tuple(
        d.model_copy(update={"max_result_bytes": 64 * 1024}) for d in program.databases)})
    spec = default_spec(bounded, base_dir=EXAMPLES, backend="simulated")
    assert spec.databases[0].max_result_bytes == 64 * 1024

    async def body() -> int:
        orch = Orchestrator(spec, sim_factory())
        await orch.start()
        try:
            return orch._sql["sales"][1].max_result_bytes
        finally:
            await orch.stop()

    assert asyncio.run(body()) == 64 * 1024
