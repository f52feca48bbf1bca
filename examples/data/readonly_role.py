"""Create a least-privilege PostgreSQL role for generated SQL: it can log in and SELECT, nothing else.

Usage::

    python examples/data/readonly_role.py [ADMIN_URL] [--role NAME] [--schema NAME]... [--password-env VAR]
    python examples/data/readonly_role.py --print-sql [--role NAME] [--schema NAME]...   # for psql

(defaults: ``postgresql://postgres@127.0.0.1:5432/test``, role ``cortex_reader``,
schema ``cortex_sales``). Run it as a role that may create roles and grant on
the schemas (their owner, or a superuser); point the workflow's ``database``
URL at the printed reader URL. Cortex's PostgreSQL executor refuses to start
as a superuser or a role with dangerous privileges (see docs/security.md).

Contract of :func:`ensure_reader`, which :func:`examples.data.load_postgres.load`
also calls after every load:

* idempotent, and safe to run concurrently (serialised by an advisory lock);
* the role ends up ``LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  NOBYPASSRLS``, with ``default_transaction_read_only`` on, even if it existed
  with more;
* it gets ``USAGE`` on each schema and ``SELECT`` on the tables and views in
  it (now and, through default privileges, those the granting role creates
  later); no other grant is made. What ``PUBLIC`` holds (``CONNECT``,
  ``EXECUTE`` on ordinary functions) it holds too.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import ArgumentError  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
READER_ROLE = "cortex_reader"
DEFAULT_SCHEMA = "cortex_sales"
_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


class RoleError(RuntimeError):
    """The role cannot be created or granted (bad URL, server unreachable, not allowed)."""


def reader_sql(role: str, schemas: list[str], *, exists: bool = False, fix_attributes: bool = True,
               password: str | None = None) -> list[sql.Composed]:
    """The statements that make ``role`` a SELECT-only reader of ``schemas``.

    ``exists``: alter the role instead of creating it; ``fix_attributes``: (re)state its
    attributes, which altering needs a superuser for.
    """
    ident = sql.Identifier(role)
    statements: list[sql.Composed] = []
    if not exists or fix_attributes or password is not None:
        create = sql.SQL("ALTER ROLE {}" if exists else "CREATE ROLE {}").format(ident)
        if not exists or fix_attributes:
            create += sql.SQL(" " + _ATTRIBUTES)
        if password is not None:
            create += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        statements.append(create)
    statements.append(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
    for schema in schemas:
        s = sql.Identifier(schema)
        statements += [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, ident),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, ident),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(s, ident),
        ]
    return statements


def ensure_reader(conn: psycopg.Connection, role: str = READER_ROLE, schemas: list[str] | tuple[str, ...] = (),
                  *, password: str | None = None) -> None:
    """Create or fix ``role`` and grant it reads on ``schemas``, in ``conn``'s transaction (see module docstring)."""
    # Roles are cluster-wide and GRANT rewrites catalog rows: concurrent callers take turns.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(f"cortex reader role {role}".encode()),))
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
    superuser = conn.execute("SELECT current_setting('is_superuser') = 'on'").fetchone()[0]  # type: ignore[index]
    # Without superuser, an existing role's attributes stay as they are: the executor refuses a dangerous one.
    for statement in reader_sql(role, list(schemas), exists=exists, fix_attributes=superuser, password=password):
        conn.execute(statement)


def reader_url(url: str, role: str = READER_ROLE, password: str | None = None) -> str:
    """``url`` (any PostgreSQL SQLAlchemy URL) logging in as ``role`` instead."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise RoleError(f"bad database URL {url!r}: {exc}") from exc
    return parsed.set(username=role, password=password).render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create a SELECT-only PostgreSQL role for Cortex's generated SQL.")
    parser.add_argument("url", nargs="?", default=DEFAULT_ADMIN_URL,
                        help=f"an admin SQLAlchemy URL (default: {DEFAULT_ADMIN_URL})")
    parser.add_argument("--role", default=READER_ROLE, help=f"role to create (default: {READER_ROLE})")
    parser.add_argument("--schema", action="append", help=f"schema to grant reads on (repeatable; "
                                                          f"default: {DEFAULT_SCHEMA})")
    parser.add_argument("--password-env", metavar="VAR", help="set the role's password from this variable")
    parser.add_argument("--print-sql", action="store_true", help="print the SQL instead of running it")
    args = parser.parse_args(argv)
    schemas = args.schema or [DEFAULT_SCHEMA]
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and password is None:
        print(f"error: ${args.password_env} is not set", file=sys.stderr)
        return 1
    if args.print_sql:
        for statement in reader_sql(args.role, schemas, password=password):
            print(statement.as_string() + ";")
        return 0
    try:
        admin = make_url(args.url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, connect_timeout=5) as conn:
            ensure_reader(conn, args.role, schemas, password=password)
    except (ArgumentError, psycopg.Error) as exc:
        print(f"error: cannot create role {args.role!r}: {exc}", file=sys.stderr)
        return 1
    print(f"role {args.role}: SELECT on {', '.join(schemas)}")
    print(f"reader URL: {reader_url(args.url, args.role)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
