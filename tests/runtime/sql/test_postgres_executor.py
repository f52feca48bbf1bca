"""PostgreSQL (127.0.0.1:5432, db ``test``): the role check, read-only enforcement, limits, session reset.

Executors run as the SELECT-only role over a scratch schema (``tests.security.databases``);
the superuser only sets up, inspects and tears down. Skipped when the server does not answer.
"""

from __future__ import annotations

import logging
import resource
import time
import uuid
from collections.abc import Iterator

import pytest

from cortexlang.ir import Database
from examples.data.readonly_role import READER_ROLE, reader_url
from runtime.sql import SQLConfigError, SQLExecutor
from tests.conftest import POSTGRES_DSN, POSTGRES_URL
from tests.security.databases import postgres_fingerprint, postgres_schema, reader_url_for

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.services

DSN = POSTGRES_DSN


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


@pytest.fixture(scope="module")
def executor(schema: str) -> Iterator[SQLExecutor]:
    ex = SQLExecutor(Database(name="pg", url=reader_url_for(schema), row_limit=2, pool_size=2,
                              statement_timeout_s=0.5))
    ex.warm()
    yield ex
    ex.close()


@pytest.fixture
def scratch_role(schema: str) -> Iterator[str]:
    """A throwaway login role (dropped afterwards); the test grants it what it needs."""
    name = f"cortex_t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {name}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {name}")
    yield name
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP OWNED BY {name}")
        admin.execute(f"DROP ROLE {name}")


def test_rows_types_and_truncation(executor: SQLExecutor) -> None:
    result = executor.execute_sync("SELECT region, amount, day FROM sales ORDER BY day")
    assert result.outcome == "ok" and result.truncated
    assert result.rows == (("eu", 1.5, "2024-01-02"), ("us", 2.0, "2024-01-03"))
    empty = executor.execute_sync("SELECT * FROM sales WHERE region LIKE 'mars%'")  # '%' reaches the server
    assert empty.outcome == "empty" and empty.columns == ("region", "quarter", "amount", "day")


def test_errors_carry_the_server_message(executor: SQLExecutor) -> None:
    result = executor.execute_sync("SELECT nope FROM sales")
    assert result.outcome == "error" and 'column "nope" does not exist' in (result.error or "")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO sales VALUES ('asia','Q1',9,'2024-01-01')",
        "UPDATE sales SET amount = 0",
        "DELETE FROM sales",
        "DROP TABLE sales",
        "TRUNCATE sales",
        "CREATE TABLE evil(x int)",
        "ALTER TABLE sales ADD COLUMN y int",
        "WITH d AS (DELETE FROM sales RETURNING *) SELECT * FROM d",
        "SELECT 1; DELETE FROM sales",
        "COMMIT",
        "SET TRANSACTION READ WRITE",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT * INTO copy FROM sales",
        "CREATE TEMP TABLE t AS SELECT 1",
    ],
)
def test_destructive_sql_is_refused_and_changes_nothing(executor: SQLExecutor, schema: str, statement: str) -> None:
    before = postgres_fingerprint(schema)
    result = executor.execute_sync(statement)
    assert result.outcome == "error", result
    assert postgres_fingerprint(schema) == before
    # The pooled connections are still read-only afterwards (the server says so, not the lexer).
    with executor.engine.connect() as conn:
        with pytest.raises(Exception, match="read-only transaction"):
            conn.exec_driver_sql("DELETE FROM sales")


def test_multi_statement_text_is_refused_whole_not_cut(executor: SQLExecutor) -> None:
    result = executor.execute_sync("SELECT 1; SELECT 2")
    assert result.outcome == "error" and "only one statement" in (result.error or "") and not result.rows


def test_multiple_commands_are_refused_by_the_server_itself(executor: SQLExecutor, schema: str) -> None:
    # Bypass the executor's checks: the extended protocol refuses two commands.
    with executor.engine.connect() as conn:
        with conn.connection.dbapi_connection.cursor() as cursor:
            with pytest.raises(psycopg.errors.SyntaxError, match="multiple commands"):
                cursor.execute("SELECT 1; DELETE FROM sales", prepare=True)
        conn.rollback()
    assert executor.execute_sync("SELECT COUNT(*) FROM sales").rows == ((3,),)


def test_deadline_is_enforced_from_outside_and_the_executor_recovers(executor: SQLExecutor) -> None:
    started = time.monotonic()
    result = executor.execute_sync("SELECT count(*) FROM generate_series(1, 10000000000)")
    elapsed = time.monotonic() - started
    # The watchdog's cancel ("cancelled after"), not the server's later statement_timeout backstop.
    assert result.outcome == "error" and "statement timeout: cancelled after 0.5 s" in (result.error or "")
    assert elapsed < 1.4, elapsed
    assert executor.execute_sync("SELECT 1").rows == ((1,),)


def test_results_stream_from_a_server_side_cursor_bounded_in_bytes(schema: str) -> None:
    # 100 million rows of 10 kB each: a client-side cursor would buffer terabytes until the timeout.
    ex = SQLExecutor(Database(name="pg", url=reader_url_for(schema), row_limit=100_000, pool_size=1,
                              statement_timeout_s=5), max_result_bytes=1 << 20)
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        # generate_series in the select list streams (in FROM it would be materialised first).
        result = ex.execute_sync("SELECT generate_series(1, 100000000) AS g, repeat('x', 10000)")
        elapsed = time.monotonic() - started
        rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        assert result.outcome == "ok" and result.truncated
        assert 90 <= len(result.rows) <= 105  # ~1 MiB / 10 kB
        assert elapsed < 2.0, elapsed
        assert rss_growth_mib < 100, rss_growth_mib
        too_big = ex.execute_sync("SELECT repeat('x', 2000000)")
        assert too_big.outcome == "error" and "row alone is over max_result_bytes" in (too_big.error or "")
        assert ex.execute_sync("SELECT 1").rows == ((1,),)
    finally:
        ex.close()


def test_the_row_bound_cannot_be_closed_early(schema: str) -> None:
    """A ')' that closed the executor's wrapper subquery (postgres_backend.row_bounded) moved the row bound
    onto a subquery of the query's choosing: a 100 MB row then arrived whole (hostile-user pass, round 4)."""
    ex = SQLExecutor(Database(name="pg", url=reader_url_for(schema), pool_size=1, statement_timeout_s=5),
                     max_result_bytes=1 << 20)
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = ex.execute_sync("SELECT '1' AS x) AS cortex_q UNION ALL SELECT repeat('x', 30000000) FROM (SELECT 1")
        rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        assert result.outcome == "error" and (result.error or "").startswith('syntax error at or near ")"'), result
        assert rss_growth_mib < 20, rss_growth_mib
        assert ex.execute_sync("SELECT (1)").rows == ((1,),)
    finally:
        ex.close()


def test_pooled_connections_are_reset_on_check_in(executor: SQLExecutor, schema: str) -> None:
    # Bypass the executor's checks to leave session state behind, as a missed function would.
    with executor.engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_lock(4242)")
        conn.exec_driver_sql("SET search_path = pg_catalog")
        conn.exec_driver_sql("LISTEN cortex_attack")
        conn.rollback()  # the advisory lock and LISTEN outlive a rollback; SET is undone by it
    with psycopg.connect(DSN) as admin:
        held = admin.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                             "WHERE l.locktype = 'advisory' AND a.usename = %s", (READER_ROLE,)).fetchone()
    assert held == (0,)
    for _ in range(2):  # every pooled connection: startup options survive DISCARD ALL
        assert executor.execute_sync("SELECT current_setting('default_transaction_read_only'), "
                                     "current_setting('search_path')").rows == (("on", f"{schema}"),)


def test_version_advances_after_a_write(executor: SQLExecutor, schema: str) -> None:
    before = executor.version_sync()
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.sales VALUES ('apac','Q3',4,'2024-07-01')")
        conn.execute(f"DELETE FROM {schema}.sales WHERE region = 'apac'")
    assert executor.version_sync() != before


def test_url_options_are_kept_but_cannot_switch_read_only_off(schema: str) -> None:
    url = f"{reader_url(POSTGRES_URL)}?options=-csearch_path%3D{schema}%20-cdefault_transaction_read_only%3Doff"
    ex = SQLExecutor(Database(name="pg", url=url, pool_size=1))
    try:
        assert ex.execute_sync("SELECT COUNT(*) FROM sales").rows == ((3,),)  # unqualified: search_path applied
        assert ex.execute_sync("SELECT current_setting('default_transaction_read_only')").rows == (("on",),)
    finally:
        ex.close()


def test_a_superuser_is_refused_with_a_way_out(schema: str) -> None:
    ex = SQLExecutor(Database(name="pg", url=POSTGRES_URL, pool_size=1))
    try:
        with pytest.raises(SQLConfigError, match=r"role 'postgres' \(SUPERUSER\).*readonly_role\.py"):
            ex.warm()
        refused = ex.execute_sync("SELECT 1")  # no statement ever runs as that role
        assert refused.outcome == "error" and "SUPERUSER" in (refused.error or "")
    finally:
        ex.close()


@pytest.mark.parametrize("grant", [
    "GRANT pg_execute_server_program TO {r}", "GRANT pg_read_server_files TO {r}",
    "GRANT pg_write_server_files TO {r}", "GRANT pg_signal_backend TO {r}", "ALTER ROLE {r} REPLICATION",
    "ALTER ROLE {r} CREATEROLE",
])
def test_dangerous_privileges_are_refused_by_name(schema: str, scratch_role: str, grant: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(grant.format(r=scratch_role))
    privilege = grant.split()[1] if grant.startswith("GRANT") else grant.split()[-1]
    ex = SQLExecutor(Database(name="pg", url=url_for(scratch_role, schema), pool_size=1))
    try:
        with pytest.raises(SQLConfigError, match=privilege):
            ex.warm()
    finally:
        ex.close()


def test_broad_but_read_only_privileges_only_warn(schema: str, scratch_role: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {scratch_role} CREATEDB")
        admin.execute(f"GRANT INSERT ON {schema}.sales TO {scratch_role}")
    ex = SQLExecutor(Database(name="pg", url=url_for(scratch_role, schema), pool_size=2))
    try:
        with caplog.at_level(logging.WARNING, logger="runtime.sql.postgres_backend"):
            ex.warm()
        warnings = [r.getMessage() for r in caplog.records]
        assert any("CREATEDB" in w for w in warnings) and any(f"{schema}.sales" in w for w in warnings)
        assert len(warnings) == 2  # once per executor, not once per pooled connection
        assert ex.execute_sync("INSERT INTO sales VALUES ('x','Q1',1,'2024-01-01')").outcome == "error"
        assert ex.execute_sync("SELECT COUNT(*) FROM sales").rows == ((3,),)
    finally:
        ex.close()


def url_for(role: str, schema: str) -> str:
    return reader_url_for(schema).replace(f"//{READER_ROLE}@", f"//{role}@")
