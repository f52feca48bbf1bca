"""The PostgreSQL loader: same rows as SQLite, idempotent, and every reference query portable.

Loads into a scratch schema (dropped afterwards); skipped when no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortexlang.ir import Database
from examples.data.build_sales_db import table_counts
from examples.data.load_postgres import LoadError, drop, load, main, postgres_schema_sql, url_with_search_path
from examples.data.readonly_role import reader_url
from runtime.sql import SQLExecutor
from tests.conftest import POSTGRES_DSN, POSTGRES_URL, require_postgres

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.services

DSN = POSTGRES_DSN
URL = POSTGRES_URL
QUESTIONS = Path(__file__).resolve().parents[2] / "examples" / "questions" / "nl2sql.jsonl"



@pytest.fixture(scope="module")
def schema(sales_db: Path) -> Iterator[str]:
    require_postgres()
    name = f"cortex_load_{uuid.uuid4().hex[:8]}"
    load(URL, name, sqlite_path=sales_db)
    yield name
    drop(URL, name)


def close(a: tuple, b: tuple) -> bool:
    """Rows equal up to float rounding (SQLite sums floats, PostgreSQL exact numerics)."""
    if len(a) != len(b):
        return False
    return all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6) if isinstance(x, float) or isinstance(y, float) else x == y
        for ra, rb in zip(a, b) for x, y in zip(ra, rb, strict=True))


def test_counts_and_rows_match_sqlite(schema: str, sales_db: Path) -> None:
    with sqlite3.connect(sales_db) as lite:
        expected = table_counts(lite)
        lite_sales = lite.execute("SELECT * FROM sales ORDER BY sale_id").fetchall()
    with psycopg.connect(DSN) as conn:
        pg_sales = conn.execute(f"SELECT * FROM {schema}.sales ORDER BY sale_id").fetchall()
        money_type = conn.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = %s "
                                  "AND table_name = 'sales' AND column_name = 'revenue'", (schema,)).fetchone()
    assert load(URL, schema, sqlite_path=sales_db) == expected  # idempotent: already loaded, same counts
    assert money_type == ("numeric",) and "REAL" not in postgres_schema_sql()
    assert [tuple(float(v) if not isinstance(v, (int, str)) else v for v in r) for r in pg_sales] == lite_sales


def test_reload_is_skipped_unless_forced(schema: str, sales_db: Path) -> None:
    def oid() -> int:
        with psycopg.connect(DSN) as conn:
            return conn.execute("SELECT %s::regclass::oid", (f"{schema}.sales",)).fetchone()[0]

    before = oid()
    load(URL, schema, sqlite_path=sales_db)
    assert oid() == before
    load(URL, schema, sqlite_path=sales_db, force=True)
    assert oid() != before


def test_every_reference_query_gives_the_same_rows_on_postgres_and_sqlite(schema: str, sales_db: Path) -> None:
    # The demo checks answers against these on either database: they must be standard SQL (no
    # strftime, no SQLite-only grouping leniency, aliased subqueries, no output aliases in HAVING).
    pg = SQLExecutor(Database(name="pg", url=url_with_search_path(reader_url(URL), schema), statement_timeout_s=10))
    lite = SQLExecutor(Database(name="lite", url=f"sqlite:///{sales_db}", statement_timeout_s=10))
    checked = 0
    try:
        for line in QUESTIONS.read_text().splitlines():
            question = json.loads(line)
            on_pg = pg.execute_sync(question["reference_sql"])
            assert on_pg.outcome != "error", (question["id"], on_pg.error)
            on_lite = lite.execute_sync(question["reference_sql"])
            # Sorted: ties in ORDER BY (q04's equal prices) may come back in either order.
            assert close(tuple(sorted(on_pg.rows)), tuple(sorted(on_lite.rows))), question["id"]
            checked += 1
    finally:
        pg.close()
        lite.close()
    assert checked >= 40


def test_bad_input_gives_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LoadError, match="schema name"):
        load(URL, "Robert'); DROP TABLE x;--")
    with pytest.raises(LoadError, match="not a PostgreSQL URL"):
        load("sqlite:///x.db", "cortex_sales")
    assert main(["postgresql://postgres@127.0.0.1:1/test", "--schema", "cortex_nowhere"]) == 1
    assert "cannot load the sales data" in capsys.readouterr().err
