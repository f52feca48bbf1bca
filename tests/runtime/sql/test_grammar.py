"""The SELECT-only grammar of an `sql` output constraint, built from real schemas (SQLite and PostgreSQL),
checked with xgrammar (the backend vLLM enforces it with) on statements it must accept and refuse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from runtime.sql.grammar import quote_identifier, read_schema, select_grammar

xgrammar = pytest.importorskip("xgrammar")
from xgrammar.testing import _is_grammar_accept_string as accepts  # noqa: E402

SALES_TABLES = {"customers", "employees", "products", "quotas", "regions", "sales"}

ACCEPTED = [
    "SELECT * FROM sales;",
    "SELECT SUM(revenue) FROM sales WHERE year = 2024 AND quarter = 'Q3'",
    "SELECT r.name, SUM(s.revenue) AS total FROM sales AS s JOIN customers AS c ON s.customer_id = c.customer_id"
    " JOIN regions AS r ON c.region_id = r.region_id GROUP BY r.name ORDER BY SUM(s.revenue) DESC LIMIT 5",
    "SELECT COUNT(DISTINCT customer_id) FROM sales WHERE discount > 0.1",
    "SELECT name FROM products WHERE product_id IN (SELECT product_id FROM sales WHERE quantity >= 10)",
    "SELECT name FROM customers WHERE name LIKE 'O''Brien%' AND city IS NOT NULL",
    "SELECT sales.* FROM sales WHERE sale_date BETWEEN '2024-01-01' AND '2024-03-31'",
]
REFUSED = [
    "DELETE FROM sales",
    "SELECT * FROM sales; DROP TABLE sales",
    "SELECT * FROM users",                     # not a table of this database
    "SELECT password FROM sales",              # not a column of this database
    "SELECT * FROM main.sales",                # schema-qualified
    "SELECT * FROM sales ORDER BY whatever",   # only expressions over real columns
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "select * from sales",                     # keywords are upper case
]


@pytest.fixture(scope="module")
def sales_db_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.data.build_sales_db import DEFAULT_DB, build

    return DEFAULT_DB if DEFAULT_DB.exists() else build(tmp_path_factory.mktemp("db") / "sales.db")


@pytest.fixture(scope="module")
def sqlite_grammar(sales_db_master: Path) -> str:
    engine = sa.create_engine(f"sqlite:///{sales_db_master}")
    try:
        schema = read_schema(engine)
    finally:
        engine.dispose()
    assert set(schema) == SALES_TABLES and "revenue" in schema["sales"]
    return select_grammar(schema)


@pytest.mark.parametrize("sql", ACCEPTED)
def test_sqlite_grammar_accepts_selects_over_the_schema(sqlite_grammar: str, sql: str) -> None:
    assert accepts(sqlite_grammar, sql)


@pytest.mark.parametrize("sql", REFUSED)
def test_sqlite_grammar_refuses_everything_else(sqlite_grammar: str, sql: str) -> None:
    assert not accepts(sqlite_grammar, sql)


def test_accepted_statements_run_on_sqlite(sales_db_master: Path) -> None:
    """The grammar's language is real SQL: every accepted example runs (read-only) and returns rows."""
    import sqlite3

    with sqlite3.connect(f"file:{sales_db_master}?mode=ro", uri=True) as conn:
        for sql in ACCEPTED:
            conn.execute(sql.rstrip(";")).fetchall()


def test_names_that_need_quotes_are_quoted_and_empty_schemas_refused() -> None:
    grammar = select_grammar({"Order Items": ("ID", "select"), "plain": ("x",)})
    assert accepts(grammar, 'SELECT "ID" FROM "Order Items"')
    assert accepts(grammar, 'SELECT "select" FROM plain')
    assert not accepts(grammar, "SELECT ID FROM Order Items")
    assert quote_identifier("region_id") == "region_id" and quote_identifier("Sales") == '"Sales"'
    with pytest.raises(ValueError, match="no table with columns"):
        select_grammar({"empty": ()})


@pytest.fixture(scope="module")
def postgres_schema(sales_db_master: Path) -> Iterator[str]:
    from tests.conftest import sales_schema_in_postgres

    yield from sales_schema_in_postgres("cortex_grammar", sales_db_master)


@pytest.mark.services
def test_postgres_grammar_from_the_live_schema(postgres_schema: str) -> None:
    """Read through the SELECT-only role the executor uses, in the schema its search_path names."""
    from examples.data.load_postgres import url_with_search_path
    from examples.data.readonly_role import reader_url
    from tests.conftest import POSTGRES_URL

    engine = sa.create_engine(url_with_search_path(reader_url(POSTGRES_URL), postgres_schema))
    try:
        schema = read_schema(engine)
        grammar = select_grammar(schema)
        assert set(schema) == SALES_TABLES
        for sql in ACCEPTED:
            assert accepts(grammar, sql), sql
            with engine.connect() as conn:  # and PostgreSQL runs it
                conn.execute(sa.text(sql.rstrip(";"))).fetchall()
        for sql in REFUSED:
            assert not accepts(grammar, sql), sql
    finally:
        engine.dispose()
