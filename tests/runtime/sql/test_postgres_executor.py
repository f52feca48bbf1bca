"""PostgreSQL (127.0.0.1:5432, db ``test``): read-only enforced by the server, timeouts, limits.

Creates and drops its own scratch schema; skipped when the server does not answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cortexlang.ir import Database
from runtime.sql import SQLExecutor
from tests.conftest import POSTGRES_DSN, POSTGRES_URL, require_postgres

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.services

DSN = POSTGRES_DSN
URL = POSTGRES_URL


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    require_postgres()
    admin = psycopg.connect(DSN, autocommit=True)
    name = f"cortex_sql_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE SCHEMA {name}")
    admin.execute(f"CREATE TABLE {name}.sales(region text, quarter text, amount numeric, day date)")
    admin.execute(
        f"INSERT INTO {name}.sales VALUES ('eu','Q1',1.5,'2024-01-02'), ('us','Q1',2,'2024-01-03'),"
        f" ('eu','Q2',3,'2024-04-01')"
    )
    yield name
    admin.execute(f"DROP SCHEMA {name} CASCADE")
    admin.close()


@pytest.fixture(scope="module")
def executor(schema: str) -> Iterator[SQLExecutor]:
    ex = SQLExecutor(Database(name="pg", url=URL, row_limit=2, pool_size=2, statement_timeout_s=0.5))
    ex.warm()
    yield ex
    ex.close()


def snapshot(schema: str) -> list[tuple]:
    with psycopg.connect(DSN) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        ).fetchall()
        rows = conn.execute(f"SELECT * FROM {schema}.sales ORDER BY region, quarter").fetchall()
    return tables + rows


def test_rows_types_and_truncation(executor: SQLExecutor, schema: str) -> None:
    result = executor.execute_sync(f"SELECT region, amount, day FROM {schema}.sales ORDER BY day")
    assert result.outcome == "ok" and result.truncated
    assert result.rows == (("eu", 1.5, "2024-01-02"), ("us", 2.0, "2024-01-03"))
    empty = executor.execute_sync(f"SELECT * FROM {schema}.sales WHERE region = 'mars'")
    assert empty.outcome == "empty"


def test_errors_carry_the_server_message(executor: SQLExecutor, schema: str) -> None:
    result = executor.execute_sync(f"SELECT nope FROM {schema}.sales")
    assert result.outcome == "error" and 'column "nope" does not exist' in (result.error or "")


@pytest.mark.parametrize(
    "template",
    [
        "INSERT INTO {s}.sales VALUES ('asia','Q1',9,'2024-01-01')",
        "UPDATE {s}.sales SET amount = 0",
        "DELETE FROM {s}.sales",
        "DROP TABLE {s}.sales",
        "TRUNCATE {s}.sales",
        "CREATE TABLE {s}.evil(x int)",
        "ALTER TABLE {s}.sales ADD COLUMN y int",
        "WITH d AS (DELETE FROM {s}.sales RETURNING *) SELECT * FROM d",
        "SELECT 1; DELETE FROM {s}.sales",
        "COMMIT",
        "SET TRANSACTION READ WRITE",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT * INTO {s}.copy FROM {s}.sales",
        "CREATE TEMP TABLE t AS SELECT 1",
    ],
)
def test_destructive_sql_leaves_the_database_unchanged(executor: SQLExecutor, schema: str, template: str) -> None:
    before = snapshot(schema)
    result = executor.execute_sync(template.format(s=schema))
    assert snapshot(schema) == before
    if not template.startswith("SELECT set_config"):
        assert result.outcome == "error", result
    # Whatever the statement did to its session was rolled back: writes still fail.
    after = executor.execute_sync(f"DELETE FROM {schema}.sales")
    assert after.outcome == "error" and "read-only transaction" in (after.error or "")


def test_multiple_commands_are_refused_by_the_server_itself(executor: SQLExecutor, schema: str) -> None:
    # Bypass the executor's statement split: the extended protocol refuses two commands.
    with executor.engine.connect() as conn:
        with conn.connection.dbapi_connection.cursor() as cursor:
            with pytest.raises(psycopg.errors.SyntaxError, match="multiple commands"):
                cursor.execute(f"SELECT 1; DELETE FROM {schema}.sales", prepare=True)
        conn.rollback()
    assert len(snapshot(schema)) == 4


def test_statement_timeout(executor: SQLExecutor) -> None:
    result = executor.execute_sync("SELECT pg_sleep(3)")
    assert result.outcome == "error" and "statement timeout" in (result.error or "")
    assert executor.execute_sync("SELECT 1").rows == ((1,),)


def test_version_advances_after_a_write(executor: SQLExecutor, schema: str) -> None:
    before = executor.version_sync()
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.sales VALUES ('apac','Q3',4,'2024-07-01')")
        conn.execute(f"DELETE FROM {schema}.sales WHERE region = 'apac'")
    assert executor.version_sync() != before


def test_url_options_are_kept_but_cannot_switch_read_only_off(schema: str) -> None:
    url = f"{URL}?options=-csearch_path%3D{schema}%20-cdefault_transaction_read_only%3Doff"
    ex = SQLExecutor(Database(name="pg", url=url, pool_size=1))
    try:
        assert ex.execute_sync("SELECT COUNT(*) FROM sales").rows == ((3,),)  # unqualified: search_path applied
        assert ex.execute_sync("SHOW default_transaction_read_only").rows == (("on",),)
    finally:
        ex.close()
