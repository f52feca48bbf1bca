"""NL2SQL end to end through the orchestrator against PostgreSQL (127.0.0.1:5432, db ``test``).

The sales data is copied into a scratch schema (unique per session, dropped
afterwards) and the compiled nl2sql IR gets its database URL swapped to that
schema. Engines are simulated (labelled so); every statement runs on the
server, so outcomes and error messages are PostgreSQL's own. Skipped when no
server answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.data.load_postgres import url_with_search_path
from examples.data.readonly_role import reader_url
from runtime.build.layout import default_spec
from runtime.build.spec import RuntimeSpec

from .conftest import EXAMPLES, compile_example, run_async, sim_factory, started
from tests.conftest import POSTGRES_DSN, POSTGRES_URL, sales_schema_in_postgres

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.services

DSN = POSTGRES_DSN
URL = POSTGRES_URL
GOOD_SQL = "SELECT ROUND(SUM(revenue), 2) AS total_revenue FROM sales WHERE year = 2024"
QUESTION = "What was our total revenue in 2024?"


@pytest.fixture(scope="module")
def schema(sales_db_master: Path) -> Iterator[str]:
    yield from sales_schema_in_postgres("cortex_e2e", sales_db_master)


def pg_spec(schema: str) -> RuntimeSpec:
    """The compiled nl2sql example, its ``sales`` database swapped (on the IR) to PostgreSQL."""
    program = compile_example("nl2sql")
    url = url_with_search_path(reader_url(URL), schema)  # the SELECT-only role load() grants
    program = program.model_copy(update={"databases": tuple(
        d.model_copy(update={"url": url}) for d in program.databases)})
    return default_spec(program, base_dir=EXAMPLES, backend="simulated")


def fingerprint(schema: str) -> tuple:
    """Tables, row counts and a checksum of the sales rows: what a destructive statement would change."""
    with psycopg.connect(DSN) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                              "ORDER BY 1", (schema,)).fetchall()
        counts = [conn.execute(f"SELECT COUNT(*) FROM {schema}.{t}").fetchone() for (t,) in tables]
        checksum = conn.execute(f"SELECT md5(string_agg(s::text, ',' ORDER BY sale_id)) FROM {schema}.sales s"
                                ).fetchone()
    return tuple(tables), tuple(counts), checksum


def total_2024(schema: str) -> float:
    with psycopg.connect(DSN) as conn:
        return float(conn.execute(f"SELECT ROUND(SUM(revenue), 2) FROM {schema}.sales WHERE year = 2024"
                                  ).fetchone()[0])


def test_error_from_postgres_reaches_fix_then_rows(schema: str) -> None:
    fix_prompts: list[str] = []

    def script(stage: str, prompt: str) -> str:
        if stage == "generate":
            return "SELECT SUM(revenue) FROM salez WHERE year = 2024;"  # a typo: no such table
        fix_prompts.append(prompt)
        return GOOD_SQL + ";"

    async def body() -> None:
        orch = await started(pg_spec(schema), sim_factory(script))
        try:
            assert orch.versions["nl2sql"].sql["sales"].backend == "postgresql"
            info = await orch.run({"question": QUESTION})
        finally:
            await orch.stop()
        assert info.status == "done" and info.error is None
        assert [(c.stage, c.outcome) for c in info.calls] == [
            ("generate", "ok"), ("execute", "error"), ("fix", "ok"), ("execute", "ok")]
        assert info.engines == ["simulated"] and info.simulated
        assert 'relation "salez" does not exist' in fix_prompts[0]  # PostgreSQL's message, not SQLite's
        assert info.output["columns"] == ["total_revenue"]
        assert info.output["rows"] == [[total_2024(schema)]]

    run_async(body())


def test_empty_results_spend_the_repair_budget(schema: str) -> None:
    def script(stage: str, prompt: str) -> str:
        return "SELECT name FROM customers WHERE segment = 'Nobody';"  # valid, no rows

    async def body() -> None:
        orch = await started(pg_spec(schema), sim_factory(script))
        try:
            info = await orch.run({"question": "Which customers are nobody?"})
        finally:
            await orch.stop()
        assert info.status == "fail" and info.loops == {"repair": 3}
        assert [c.outcome for c in info.calls if c.stage == "execute"] == ["empty"] * 4

    run_async(body())


@pytest.mark.parametrize("statement", [
    "DELETE FROM sales WHERE year = 2024",
    "DROP TABLE customers CASCADE",
    "UPDATE products SET unit_price = 0",
    "WITH gone AS (DELETE FROM quotas RETURNING *) SELECT COUNT(*) FROM gone",
])
def test_destructive_statement_is_refused_and_data_unchanged(schema: str, statement: str) -> None:
    fix_prompts: list[str] = []

    def script(stage: str, prompt: str) -> str:
        if stage == "generate":
            return statement + ";"
        fix_prompts.append(prompt)
        return GOOD_SQL + ";"

    async def body() -> None:
        before = fingerprint(schema)
        orch = await started(pg_spec(schema), sim_factory(script))
        try:
            info = await orch.run({"question": QUESTION})
        finally:
            await orch.stop()
        assert fingerprint(schema) == before
        assert [c.outcome for c in info.calls if c.stage == "execute"] == ["error", "ok"]
        assert "not allowed" in fix_prompts[0]  # refused before reaching the server, and said why
        assert info.status == "done" and info.output["rows"] == [[total_2024(schema)]]

    run_async(body())


def test_cache_keys_follow_the_postgres_version(schema: str) -> None:
    """Same statement: a hit while the data is unchanged, a miss after any committed write."""

    def script(stage: str, prompt: str) -> str:
        return GOOD_SQL + ";"

    async def body() -> None:
        orch = await started(pg_spec(schema), sim_factory(script))
        try:
            executor = orch.versions["nl2sql"].sql["sales"]
            version = await executor.version()
            assert version.startswith("postgresql:")
            first = await orch.run({"question": QUESTION})
            second = await orch.run({"question": QUESTION})
            with psycopg.connect(DSN, autocommit=True) as conn:  # a committed write advances xmax
                conn.execute(f"CREATE TABLE {schema}.scratch_write(x int)")
                conn.execute(f"DROP TABLE {schema}.scratch_write")
            assert await executor.version() != version
            third = await orch.run({"question": QUESTION})
        finally:
            await orch.stop()
        cached = [[c.cached for c in i.calls if c.stage == "execute"] for i in (first, second, third)]
        assert cached == [[False], [True], [False]]
        assert first.output["rows"] == second.output["rows"] == third.output["rows"]

    run_async(body())


def test_planned_simulated_runs_get_every_outcome_from_postgres(schema: str) -> None:
    """The planned responder's statements (drawn ok/empty/error) all run on the server.

    Fixed run ids make the responder's draws deterministic (it seeds on the request id).
    """

    async def body() -> None:
        orch = await started(pg_spec(schema), sim_factory())
        try:
            infos = [await orch.run({"question": f"q{i}"}, run_id=f"pg-planned-{i}") for i in range(24)]
        finally:
            await orch.stop()
        assert all(i.status in ("done", "fail") and i.simulated for i in infos)
        executes = [c for i in infos for c in i.calls if c.stage == "execute"]
        assert {c.outcome for c in executes} == {"ok", "empty", "error"}
        errors = {c.error for c in executes if c.outcome == "error"}
        assert errors == {'relation "simulated_missing_table" does not exist'}

    run_async(body(), timeout_s=90)
