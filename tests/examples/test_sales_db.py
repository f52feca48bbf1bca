"""The sales database builder: determinism, idempotence, integrity and the shape of the data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from examples.data import build_sales_db as builder
from examples.data import catalog
from examples.data.sales_schema import SCHEMA_FILE, SCHEMA_SQL, schema_text


def query(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def test_builds_every_table_with_the_documented_sizes(sales_db: Path) -> None:
    with sqlite3.connect(sales_db) as conn:
        counts = builder.table_counts(conn)
    assert counts == {
        "regions": len(catalog.REGIONS), "products": len(catalog.PRODUCTS), "employees": len(catalog.employees()),
        "customers": builder.N_CUSTOMERS, "sales": builder.N_SALES, "quotas": 23 * 12,
    }


def test_foreign_keys_all_resolve(sales_db: Path) -> None:
    assert query(sales_db, "PRAGMA foreign_key_check") == []
    assert query(sales_db, "PRAGMA integrity_check") == [("ok",)]


def test_two_builds_are_identical(tmp_path: Path, sales_db: Path) -> None:
    other = builder.build(tmp_path / "again.db")
    with sqlite3.connect(sales_db) as a, sqlite3.connect(other) as b:
        assert list(a.iterdump()) == list(b.iterdump())


def test_build_is_idempotent_and_force_rebuilds(tmp_path: Path) -> None:
    path = builder.build(tmp_path / "s.db")
    inode = path.stat().st_ino
    assert builder.build(path) == path
    assert path.stat().st_ino == inode, "an up-to-date database must be left alone"
    builder.build(path, force=True)
    assert path.stat().st_ino != inode, "force replaces the file (atomically, via a temporary file)"
    assert not list(tmp_path.glob(".*.tmp"))


def test_outdated_or_corrupt_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"not a database")
    assert not builder.is_current(path)
    builder.build(path)
    assert builder.is_current(path)
    assert query(path, "PRAGMA user_version") == [(builder.BUILD_VERSION,)]


def test_schema_in_the_database_is_the_prompt_schema(sales_db: Path) -> None:
    stored = {name: sql for name, sql in query(sales_db, "SELECT name, sql FROM sqlite_master WHERE type = 'table'")}
    for name, sql in stored.items():
        assert sql in SCHEMA_SQL, f"table {name} was not created from SCHEMA_SQL"
    assert schema_text() == SCHEMA_SQL


def test_checked_in_schema_file_is_in_sync() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == SCHEMA_SQL, (
        "examples/prompts/sales_schema.txt is stale; run: python examples/data/build_sales_db.py --write-schema"
    )


def test_value_formats_match_the_schema_comments(sales_db: Path) -> None:
    assert {q for (q,) in query(sales_db, "SELECT DISTINCT quarter FROM sales")} == {"Q1", "Q2", "Q3", "Q4"}
    assert {y for (y,) in query(sales_db, "SELECT DISTINCT year FROM sales")} == {2022, 2023, 2024}
    mismatched = query(sales_db, """
        SELECT COUNT(*) FROM sales
        WHERE CAST(substr(sale_date, 1, 4) AS INTEGER) <> year
           OR 'Q' || ((CAST(substr(sale_date, 6, 2) AS INTEGER) + 2) / 3) <> quarter""")
    assert mismatched == [(0,)]
    assert query(sales_db, "SELECT MIN(discount) >= 0, MAX(discount) <= 0.35 FROM sales") == [(1, 1)]


def test_revenue_is_quantity_times_list_price_after_discount(sales_db: Path) -> None:
    worst = query(sales_db, """
        SELECT MAX(ABS(s.revenue - s.quantity * p.unit_price * (1 - s.discount)))
        FROM sales s JOIN products p ON p.product_id = s.product_id""")[0][0]
    assert worst <= 0.005


def test_business_rules_hold(sales_db: Path) -> None:
    # products are only sold from their launch year on
    assert query(sales_db, """SELECT COUNT(*) FROM sales s JOIN products p ON p.product_id = s.product_id
                              WHERE s.year < p.launch_year""") == [(0,)]
    # the rep on a sale works in the customer's region, and account managers are account executives
    assert query(sales_db, """SELECT COUNT(*) FROM sales s JOIN customers c ON c.customer_id = s.customer_id
                              JOIN employees e ON e.employee_id = s.employee_id
                              WHERE e.region_id <> c.region_id""") == [(0,)]
    assert query(sales_db, """SELECT DISTINCT e.title FROM customers c
                              JOIN employees e ON e.employee_id = c.account_manager_id ORDER BY 1""") == [
        ("Account Executive",), ("Senior Account Executive",)]
    # some customers are prospects with no purchases yet
    assert query(sales_db, "SELECT COUNT(*) FROM customers WHERE customer_id NOT IN (SELECT customer_id FROM sales)") \
        == [(builder.N_PROSPECTS,)]


def test_the_data_has_the_trends_the_questions_rely_on(sales_db: Path) -> None:
    by_year = dict(query(sales_db, "SELECT year, SUM(revenue) FROM sales GROUP BY year"))
    assert by_year[2022] < by_year[2023] < by_year[2024]
    by_quarter = dict(query(sales_db, "SELECT quarter, SUM(revenue) FROM sales GROUP BY quarter"))
    assert max(by_quarter, key=by_quarter.get) == "Q4"
    avg_discount = dict(query(sales_db, """SELECT c.segment, AVG(s.discount) FROM sales s
                                           JOIN customers c ON c.customer_id = s.customer_id GROUP BY c.segment"""))
    assert avg_discount["Enterprise"] == max(avg_discount.values())
    beat = query(sales_db, """SELECT SUM(b.revenue > q.amount), SUM(b.revenue <= q.amount) FROM quotas q
                              JOIN (SELECT employee_id, year, quarter, SUM(revenue) AS revenue FROM sales
                                    GROUP BY 1, 2, 3) b USING (employee_id, year, quarter)""")[0]
    assert beat[0] > 0 and beat[1] > 0, "quotas must be both beaten and missed"


def test_cli_builds_reports_and_refreshes_schema(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    written = []
    monkeypatch.setattr(builder, "write_schema_file", lambda: written.append(1) or tmp_path / "schema.txt")
    assert builder.main([str(tmp_path / "cli.db"), "--write-schema"]) == 0
    out = capsys.readouterr().out
    assert "sales" in out and "5000 rows" in out and written == [1]
    assert builder.main([str(tmp_path / "cli.db")]) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_reports_an_unwritable_path_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert builder.main([str(blocker / "sub" / "s.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot build") and "Traceback" not in err


def test_employees_are_deterministic_and_form_a_tree() -> None:
    people = catalog.employees()
    assert len({e.full_name for e in people}) == len(people)
    ids = {e.employee_id for e in people}
    roots = [e for e in people if e.manager_id is None]
    assert [r.title for r in roots] == ["VP of Sales"]
    assert all(e.manager_id in ids for e in people if e.manager_id is not None)
    for e in catalog.account_executives():
        assert catalog.employee_by_id(e.manager_id).region_id == e.region_id
