"""SQLite: read-only enforced by the database, function allow-list, limits in time and bytes, outcomes."""

from __future__ import annotations

import asyncio
import hashlib
import resource
import sqlite3
import time
from pathlib import Path

import pytest

from cortexlang.ir import Database
from runtime.sql import SQLConfigError, SQLExecutor

DESTRUCTIVE = [
    "INSERT INTO sales VALUES ('asia', 'Q1', 9)",
    "UPDATE sales SET amount = 0",
    "DELETE FROM sales",
    "DROP TABLE sales",
    "CREATE TABLE evil(x)",
    "ALTER TABLE sales ADD COLUMN y",
    "CREATE INDEX i ON sales(region)",
    "REPLACE INTO sales VALUES ('eu', 'Q1', 0)",
    "ATTACH DATABASE 'other.db' AS other",
    "PRAGMA query_only = OFF",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "VACUUM",
    "SELECT 1; DELETE FROM sales",
    "SELECT 1;DROP TABLE sales;",
    "WITH d AS (DELETE FROM sales RETURNING *) SELECT * FROM d",
    "DELETE FROM sales RETURNING *",
    "BEGIN; DELETE FROM sales; COMMIT",
]


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sales(region TEXT, quarter TEXT, amount REAL)")
    rows = [(r, q, float(i)) for i, (r, q) in enumerate((r, q) for r in ("eu", "us", "apac") for q in ("Q1", "Q2"))]
    conn.executemany("INSERT INTO sales VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    make_db(tmp_path / "data" / "shop.db")
    return tmp_path


@pytest.fixture
def executor(db_dir: Path) -> SQLExecutor:
    ex = SQLExecutor(Database(name="shop", url="sqlite:///data/shop.db", row_limit=4, pool_size=2,
                              statement_timeout_s=0.3), base_dir=db_dir)
    ex.warm()
    yield ex
    ex.close()


def test_relative_path_resolves_against_base_dir(executor: SQLExecutor, db_dir: Path) -> None:
    assert executor.sqlite_path == (db_dir / "data" / "shop.db").resolve()


def test_ok_empty_and_truncated(executor: SQLExecutor) -> None:
    total = executor.execute_sync("SELECT region, SUM(amount) AS total FROM sales GROUP BY region ORDER BY region")
    assert total.outcome == "ok" and total.columns == ("region", "total")
    assert total.rows == (("apac", 9.0), ("eu", 1.0), ("us", 5.0)) and not total.truncated
    many = executor.execute_sync("SELECT * FROM sales")
    assert many.outcome == "ok" and len(many.rows) == 4 and many.truncated
    none = executor.execute_sync("SELECT * FROM sales WHERE region = 'mars'")
    assert none.outcome == "empty" and none.rows == () and none.columns == ("region", "quarter", "amount")


def test_bad_sql_is_an_error_outcome_with_the_database_message(executor: SQLExecutor) -> None:
    typo = executor.execute_sync("SELECT region FROM sales WHER region = 'eu'")
    assert typo.outcome == "error" and "syntax error" in (typo.error or "")
    not_a_query = executor.execute_sync("SELEC region FROM sales")
    assert not_a_query.outcome == "error" and not_a_query.error == 'near "SELEC": syntax error'  # as SQLite says
    missing = executor.execute_sync("SELECT nope FROM sales")
    assert missing.outcome == "error" and "no such column: nope" in (missing.error or "")
    assert executor.execute_sync("   ").outcome == "error"


@pytest.mark.parametrize("statement", DESTRUCTIVE)
def test_destructive_sql_is_refused_and_the_file_is_unchanged(executor: SQLExecutor, db_dir: Path,
                                                               statement: str) -> None:
    before = digest(db_dir / "data" / "shop.db")
    result = executor.execute_sync(statement)
    assert result.outcome == "error", result
    assert digest(db_dir / "data" / "shop.db") == before
    assert not (db_dir / "other.db").exists()
    # The pooled connection is still locked down afterwards.
    assert executor.execute_sync("DELETE FROM sales").outcome == "error"
    assert executor.execute_sync("SELECT COUNT(*) FROM sales").rows == ((6,),)


def test_the_database_refuses_writes_even_without_the_statement_check(executor: SQLExecutor) -> None:
    # Bypass the executor's checks: a raw pooled connection is read-only at the SQLite level.
    with executor.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        with pytest.raises(sqlite3.Error):
            raw.execute("DELETE FROM sales")
        with pytest.raises(sqlite3.Error):
            raw.execute("PRAGMA query_only = OFF")


def test_schema_pragmas_still_read(executor: SQLExecutor) -> None:
    info = executor.execute_sync("PRAGMA table_info(sales)")
    assert info.outcome == "ok" and [row[1] for row in info.rows] == ["region", "quarter", "amount"]


def test_statement_timeout_interrupts_long_queries(executor: SQLExecutor) -> None:
    result = executor.execute_sync(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    )
    assert result.outcome == "error" and "timeout" in (result.error or "")
    assert executor.execute_sync("SELECT 1").outcome == "ok"  # the connection is usable again


def test_concurrent_async_execution(executor: SQLExecutor) -> None:
    async def many() -> list:
        return await asyncio.gather(*(executor.execute(f"SELECT {i}") for i in range(10)))

    results = asyncio.run(many())
    assert [r.rows for r in results] == [((i,),) for i in range(10)]


def test_version_changes_when_the_file_changes(executor: SQLExecutor, db_dir: Path) -> None:
    before = executor.version_sync()
    conn = sqlite3.connect(db_dir / "data" / "shop.db")
    conn.execute("INSERT INTO sales VALUES ('eu', 'Q3', 100)")
    conn.commit()
    conn.close()
    assert executor.version_sync() != before
    assert executor.execute_sync("SELECT COUNT(*) FROM sales").rows == ((7,),)


def test_configuration_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SQLConfigError, match="not found"):
        SQLExecutor(Database(name="x", url="sqlite:///missing.db"), base_dir=tmp_path)
    with pytest.raises(SQLConfigError, match="in-memory"):
        SQLExecutor(Database(name="x", url="sqlite://"))
    with pytest.raises(SQLConfigError, match="not supported"):
        SQLExecutor(Database(name="x", url="mysql://u@localhost/db"))
    with pytest.raises(SQLConfigError, match="bad SQLAlchemy URL"):
        SQLExecutor(Database(name="x", url="not a url"))


def test_multi_statement_text_is_refused_whole_not_cut(executor: SQLExecutor) -> None:
    result = executor.execute_sync("SELECT 1; SELECT 2")
    assert result.outcome == "error" and "only one statement" in (result.error or "") and not result.rows


@pytest.mark.parametrize(("statement", "function"), [
    ("SELECT hex(fts3_tokenizer('simple'))", "fts3_tokenizer"),  # leaks a native pointer
    ("SELECT load_extension('/tmp/cortex-attack.so')", "load_extension"),
    ("SELECT length(zeroblob(10))", "zeroblob"),
    ("SELECT last_insert_rowid()", "last_insert_rowid"),
    ("SELECT region FROM sales WHERE length(randomblob(8)) = 8", "randomblob"),
])
def test_functions_outside_the_allow_list_are_denied_by_the_authorizer(executor: SQLExecutor, statement: str,
                                                                      function: str) -> None:
    result = executor.execute_sync(statement)
    assert result.outcome == "error" and f"function {function}() is not allowed" in (result.error or "")
    assert executor.execute_sync("SELECT upper(region), round(avg(amount), 1) FROM sales GROUP BY 1 ORDER BY 1"
                                 ).rows == (("APAC", 4.5), ("EU", 0.5), ("US", 2.5))


BIG = "WITH RECURSIVE s(x) AS (SELECT 'x' UNION ALL SELECT x || x FROM s WHERE length(x) < {n}) "


def test_a_gigabyte_value_is_refused_at_once_without_allocating_it(executor: SQLExecutor) -> None:
    # One function call cannot be interrupted: the length limit stops it before it allocates.
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for statement in ("SELECT randomblob(1000000000)", "SELECT printf('%.*c', 2000000000, 'x')",
                      BIG.format(n=1 << 31) + "SELECT max(length(x)) FROM s",
                      BIG.format(n=1 << 19) + "SELECT max(length(replace(x, 'x', 'xxxxxxxxxxxxxxxx'))) FROM s",
                      BIG.format(n=1 << 19) + "SELECT length(group_concat(x)) FROM s, sales"):
        started = time.monotonic()
        result = executor.execute_sync(statement)
        assert result.outcome == "error", result
        assert "exceeds max_result_bytes" in (result.error or "") or "is not allowed" in (result.error or "")
        assert time.monotonic() - started < 0.2
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024 < 100  # MiB
    assert executor.execute_sync("SELECT COUNT(*) FROM sales").rows == ((6,),)


def test_results_are_bounded_in_bytes_not_only_rows(db_dir: Path) -> None:
    ex = SQLExecutor(Database(name="shop", url="sqlite:///data/shop.db", row_limit=1000, pool_size=1),
                     base_dir=db_dir, max_result_bytes=64 * 1024)
    try:
        # 50 rows of 8 kB each = 400 kB of result: cut at the byte budget, reported as truncated.
        result = ex.execute_sync(BIG.format(n=8000) + ", c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50) "
                                 "SELECT i, x FROM c, s WHERE length(x) = 8192")
        assert result.outcome == "ok" and result.truncated and 6 <= len(result.rows) <= 8
        assert sum(len(str(row)) for row in result.rows) <= 64 * 1024
        too_big = ex.execute_sync(BIG.format(n=20000) + "SELECT x, x FROM s WHERE length(x) = 32768")
        assert too_big.outcome == "error" and "first row alone is over max_result_bytes" in (too_big.error or "")
    finally:
        ex.close()
