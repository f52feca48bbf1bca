"""Scratch databases for SQL tests, and fingerprints of everything an attack could change.

* :func:`postgres_schema`: a scratch schema with a ``sales`` table, readable by
  the SELECT-only role (:mod:`examples.data.readonly_role`); the superuser is
  used here only, to set up and tear down. :func:`reader_url_for` is the URL
  executors use (the reader role, ``search_path`` on the scratch schema).
* :func:`postgres_fingerprint`: a digest of the schema's tables (contents and
  columns), all roles with their attributes and memberships, per-role
  settings, replication slots, large objects, prepared transactions,
  extensions and the advisory locks held by the reader role.
* :func:`make_sqlite` / :func:`sqlite_fingerprint`: a scratch SQLite file, and
  a digest of its bytes plus the names of the files beside it.
* :data:`ATTACK_PATH_PREFIX`: every host path the attack corpus targets starts
  with it; :func:`attack_files` lists what exists there.
"""

from __future__ import annotations

import glob
import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from examples.data.load_postgres import url_with_search_path
from examples.data.readonly_role import READER_ROLE, ensure_reader, reader_url
from tests.conftest import POSTGRES_DSN, POSTGRES_URL, require_postgres

ATTACK_PATH_PREFIX = "/tmp/cortex-attack"
SALES_ROWS = [("eu", "Q1", 1.5, "2024-01-02"), ("us", "Q1", 2.0, "2024-01-03"), ("eu", "Q2", 3.0, "2024-04-01")]


def attack_files() -> list[str]:
    """Files an attack in the corpus could have created on this host."""
    return sorted(glob.glob(ATTACK_PATH_PREFIX + "*"))


# ------------------------------------------------------------------ PostgreSQL
@contextmanager
def postgres_schema(prefix: str = "cortex_sql") -> Iterator[str]:
    """A scratch schema holding ``sales(region, quarter, amount, day)``, readable by the reader role."""
    require_postgres()
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_DSN) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
        admin.execute(f"CREATE TABLE {name}.sales(region text, quarter text, amount numeric, day date)")
        admin.cursor().executemany(f"INSERT INTO {name}.sales VALUES (%s, %s, %s, %s)", SALES_ROWS)
        admin.execute(f"CREATE SEQUENCE {name}.ids")
        ensure_reader(admin, READER_ROLE, [name])
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


def reader_url_for(schema: str) -> str:
    """The URL executors use: the SELECT-only role, unqualified names resolving in ``schema``."""
    return url_with_search_path(reader_url(POSTGRES_URL), schema)


_PG_STATE = [
    "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls,"
    " ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
    "       WHERE m.member = r.oid ORDER BY 1) FROM pg_roles r ORDER BY 1",
    "SELECT setrole::regrole::text, setdatabase, setconfig FROM pg_db_role_setting ORDER BY 1, 2",
    "SELECT slot_name, plugin, slot_type FROM pg_replication_slots ORDER BY 1",
    "SELECT oid FROM pg_largeobject_metadata ORDER BY 1",
    "SELECT gid FROM pg_prepared_xacts ORDER BY 1",
    "SELECT extname, extversion FROM pg_extension ORDER BY 1",
    "SELECT l.objid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    f" WHERE l.locktype = 'advisory' AND a.usename = '{READER_ROLE}' ORDER BY 1",
]


def postgres_fingerprint(schema: str) -> str:
    """A digest of what an attack on ``schema`` or the server could change (see the module docstring)."""
    import psycopg

    parts: list[object] = []
    with psycopg.connect(POSTGRES_DSN) as conn:
        parts.append(conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
            " ORDER BY 1, 2", (schema,)).fetchall())
        parts.append(conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s ORDER BY 1", (schema,)).fetchall())
        parts.append(conn.execute(f"SELECT md5(string_agg(s::text, ',' ORDER BY s::text)) FROM {schema}.sales s"
                                  ).fetchall())
        parts.append(conn.execute(f"SELECT last_value, is_called FROM {schema}.ids").fetchall())
        parts += [conn.execute(query).fetchall() for query in _PG_STATE]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


# ------------------------------------------------------------------ SQLite
def make_sqlite(path: Path) -> Path:
    """A SQLite file at ``path`` holding ``sales(region, quarter, amount, day)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sales(region TEXT, quarter TEXT, amount REAL, day TEXT)")
        conn.executemany("INSERT INTO sales VALUES (?, ?, ?, ?)", SALES_ROWS)
    conn.close()
    return path


def sqlite_fingerprint(path: Path) -> str:
    """A digest of the file's bytes and of the names of the files in its directory."""
    listing = sorted(p.name for p in path.parent.iterdir())
    return hashlib.sha256(path.read_bytes() + repr(listing).encode()).hexdigest()
