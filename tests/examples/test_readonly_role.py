"""The SELECT-only role script: idempotent, concurrent-safe, and a role the executor accepts.

Uses a throwaway role name (dropped afterwards), so the shared ``cortex_reader`` is left alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cortexlang.ir import Database
from examples.data.readonly_role import ensure_reader, main, reader_url
from runtime.sql import SQLExecutor
from tests.conftest import POSTGRES_DSN, POSTGRES_URL, require_postgres
from tests.security.databases import postgres_schema

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def role() -> Iterator[str]:
    require_postgres()
    name = f"cortex_t_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            admin.execute(f"DROP OWNED BY {name}")
            admin.execute(f"DROP ROLE {name}")


def test_print_sql_needs_no_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-sql", "--role", "reader", "--schema", "a", "--schema", 'odd"name']) == 0
    out = capsys.readouterr().out
    assert 'CREATE ROLE "reader" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;' in out
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA "odd""name" TO "reader";' in out
    assert "INSERT" not in out and "ALL PRIVILEGES" not in out


@pytest.mark.services
def test_idempotent_concurrent_and_accepted_by_the_executor(role: str) -> None:
    with postgres_schema("cortex_role_a") as a, postgres_schema("cortex_role_b") as b:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB CREATEROLE")  # existed, with too much

        def grant(schema: str) -> None:
            with psycopg.connect(POSTGRES_DSN) as conn:
                ensure_reader(conn, role, [schema])

        with ThreadPoolExecutor(4) as pool:  # concurrent callers take turns instead of failing
            list(pool.map(grant, [a, b, a, b]))
        with psycopg.connect(POSTGRES_DSN) as admin:
            attrs = admin.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
                                  "rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        assert attrs == (False, False, False, False, False, True)

        url = reader_url(POSTGRES_URL, role) + f"?options=-csearch_path%3D{a}"
        ex = SQLExecutor(Database(name="pg", url=url, pool_size=1))
        try:
            ex.warm()  # no SQLConfigError: the role is safe
            assert ex.execute_sync(f"SELECT count(*) FROM {b}.sales").rows == ((3,),)
            with ex.engine.connect() as conn:  # past every check but the role: writes are not granted
                conn.exec_driver_sql("SET TRANSACTION READ WRITE")
                with pytest.raises(Exception, match="permission denied"):
                    conn.exec_driver_sql("INSERT INTO sales VALUES ('x', 'Q1', 1, '2024-01-01')")
                conn.rollback()
        finally:
            ex.close()


def test_bad_admin_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["postgresql://postgres@127.0.0.1:1/test", "--role", "cortex_nowhere"]) == 1
    assert "cannot create role 'cortex_nowhere'" in capsys.readouterr().err
