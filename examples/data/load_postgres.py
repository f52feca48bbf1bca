"""Copy the example sales database (SQLite) into a PostgreSQL schema.

Usage::

    python examples/data/load_postgres.py [URL] [--schema NAME] [--force]

(default URL ``postgresql://postgres@127.0.0.1:5432/test``, schema ``cortex_sales``).

The tables keep the names, columns and keys of :data:`~examples.data.sales_schema.SCHEMA_SQL`,
so the nl2sql prompts and the questions' reference SQL apply unchanged. One type
differs: SQLite's ``REAL`` becomes ``NUMERIC``. PostgreSQL has no
``round(double precision, integer)``, and the reference SQL rounds money with
``ROUND(x, 2)``; exact decimals also keep sums identical to SQLite's up to
float rounding. Dates stay ``TEXT`` ('YYYY-MM-DD') as in SQLite, so string
comparisons and ``substr`` behave the same on both.

Contract of :func:`load`:

* idempotent: a schema already holding this build (:data:`BUILD_VERSION` of the
  builder, recorded as the schema's comment) is left untouched unless ``force``;
* atomic: the schema is dropped, created and filled in one transaction, under
  an advisory lock, so readers and concurrent loaders never see half a load;
* the rows come from the SQLite file built by
  :func:`examples.data.build_sales_db.build` (built first when missing or stale)
  and are bulk-copied with ``COPY``; the returned counts are PostgreSQL's own.

* the SELECT-only role :data:`~examples.data.readonly_role.READER_ROLE` is
  created if missing and granted reads on the schema
  (:func:`examples.data.readonly_role.ensure_reader`), in the same transaction.

Point a workflow at the schema as that role (Cortex refuses to run generated SQL
as a superuser): ``url_with_search_path(reader_url(url), schema)``, which the
command prints; :func:`url_with_search_path` puts ``search_path`` into the
URL's connection ``options``.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy.engine import URL, make_url  # noqa: E402
from sqlalchemy.exc import ArgumentError  # noqa: E402

from examples.data.build_sales_db import BUILD_VERSION, DEFAULT_DB, build  # noqa: E402
from examples.data.readonly_role import READER_ROLE, ensure_reader, reader_url  # noqa: E402
from examples.data.sales_schema import INDEXES_SQL, SCHEMA_SQL  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_SCHEMA = "cortex_sales"
TABLES = ("regions", "products", "employees", "customers", "sales", "quotas")
"""Load order: every table after the tables it references."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MARK = "cortex example sales database, build {version}"


class LoadError(RuntimeError):
    """The data cannot be loaded (bad URL or schema name, server unreachable, SQL refused)."""


def postgres_schema_sql() -> str:
    """:data:`SCHEMA_SQL` with the column types PostgreSQL needs (see the module docstring)."""
    return re.sub(r"\bREAL\b", "NUMERIC", SCHEMA_SQL)


def conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL (any driver suffix)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LoadError(f"bad database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() != "postgresql":
        raise LoadError(f"not a PostgreSQL URL: {url!r}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def url_with_search_path(url: str, schema: str) -> str:
    """``url`` whose sessions resolve unqualified table names in ``schema`` first."""
    _check_schema(schema)
    parsed: URL = make_url(url)
    options = " ".join(o for o in (parsed.query.get("options", ""), f"-csearch_path={schema}") if o)
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def load(url: str = DEFAULT_URL, schema: str = DEFAULT_SCHEMA, *, sqlite_path: str | os.PathLike = DEFAULT_DB,
         force: bool = False, reader: str = READER_ROLE) -> dict[str, int]:
    """Load the sales tables into ``schema`` as the admin ``url``, readable by ``reader``
    (see the module docstring); returns rows per table."""
    _check_schema(schema)
    target = conninfo(url)  # refuse a bad URL before building anything
    source = build(sqlite_path)  # no-op when the file is current
    mark = _MARK.format(version=BUILD_VERSION)
    try:
        with psycopg.connect(target, connect_timeout=5) as conn:
            # One lock per schema name: concurrent loaders wait instead of racing the DROP.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(schema.encode()),))
            if not force and _comment(conn, schema) == mark:
                ensure_reader(conn, reader, [schema])
                return _counts(conn, schema)
            ident = sql.Identifier(schema)
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
            conn.execute(postgres_schema_sql())  # simple protocol: several statements in one call
            _copy_rows(conn, source)
            conn.execute(INDEXES_SQL)
            conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(ident, sql.Literal(mark)))
            ensure_reader(conn, reader, [schema])
            return _counts(conn, schema)  # the context manager commits on the way out
    except psycopg.Error as exc:
        raise LoadError(f"cannot load the sales data into {schema!r} at {_safe(url)}: {exc}") from exc


def drop(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (no error when it does not exist)."""
    _check_schema(schema)
    try:
        with psycopg.connect(conninfo(url), connect_timeout=5, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    except psycopg.Error as exc:
        raise LoadError(f"cannot drop {schema!r} at {_safe(url)}: {exc}") from exc


def _copy_rows(conn: psycopg.Connection, source: Path) -> None:
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as lite:
        for table in TABLES:
            columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
            copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
            with conn.cursor().copy(copy) as out:
                for row in lite.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid"):
                    out.write_row(row)


def _comment(conn: psycopg.Connection, schema: str) -> str | None:
    row = conn.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
                       (schema,)).fetchone()
    return None if row is None else row[0]


def _counts(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        query = sql.SQL("SELECT COUNT(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[table] = conn.execute(query).fetchone()[0]  # type: ignore[index]
    return counts


def _check_schema(schema: str) -> None:
    if not _IDENTIFIER.fullmatch(schema):
        raise LoadError(f"schema name {schema!r}: use lower-case letters, digits and '_' (not starting with a digit)")


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy the Cortex example sales database into PostgreSQL.")
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"SQLAlchemy URL (default: {DEFAULT_URL})")
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help=f"target schema (default: {DEFAULT_SCHEMA})")
    parser.add_argument("--force", action="store_true", help="reload even if the schema is up to date")
    args = parser.parse_args(argv)
    try:
        counts = load(args.url, args.schema, force=args.force)
    except (LoadError, OSError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"schema {args.schema} at {_safe(args.url)} (build {BUILD_VERSION}):")
    for table, n in counts.items():
        print(f"  {table:<10} {n:>6} rows")
    print(f"workflow URL (SELECT-only role {READER_ROLE}): "
          f"{url_with_search_path(reader_url(args.url), args.schema)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
