"""PostgreSQL lock-down: a least-privilege role, read-only sessions, and a reset on every check-in.

Layers, each enforced by the server:

* **The role** (primary): every new pooled connection runs :func:`check_role`,
  which refuses (:class:`~runtime.sql.errors.SQLConfigError`) a login or
  current role that is a superuser, has ``REPLICATION`` or ``CREATEROLE``, or
  is a member of a predefined role in :data:`REFUSED_ROLES` (server programs
  and files, signalling other backends, writing all data). A read-only
  transaction protects table data only: these privileges reach the host
  (``COPY ... TO PROGRAM``, ``pg_read_file``), other sessions
  (``pg_terminate_backend``) or state that outlives a rollback (replication
  slots). ``BYPASSRLS``, ``CREATEDB``, :data:`WARNED_ROLES` and write
  privileges on tables only log a warning: a read-only transaction cannot use
  them, but a SELECT-only role should not have them either.
* **The session**: startup options ``default_transaction_read_only=on``,
  ``statement_timeout`` and ``standard_conforming_strings=on`` (which the
  lexer assumes) come last, after the URL's own options, so a URL cannot turn
  them off. The server's ``statement_timeout`` is the executor's timeout plus
  :data:`TIMEOUT_BACKSTOP_S`: the executor's watchdog cancels first, from
  outside, and the server's limit stays as a backstop.
* **Each statement** (:func:`run_query`): a transaction opened ``READ ONLY``
  with ``SET LOCAL statement_timeout``, the query run through ``DECLARE ...
  CURSOR`` (the extended protocol: one command; and the server accepts only a
  ``SELECT``/``VALUES`` there, without data-modifying ``WITH``), rows fetched
  in bounded batches, and always a rollback.
* **Each row** (:func:`row_bounded`): the query is wrapped so that the server
  itself refuses a row over ``max_row_bytes``, before sending
  it. A row arrives whole (the protocol has no partial rows), so without this
  ``SELECT repeat('x', 1000000000)`` would make this process receive and
  decode a gigabyte, several times over, before any limit could look at it.
* **Check-in** (:func:`_reset`): ``DISCARD ALL`` after the rollback, which
  releases session advisory locks, prepared statements, ``LISTEN`` s and
  session settings (back to the startup options), so nothing one statement
  left behind reaches the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine

from runtime.sql.errors import READ_ONLY_ROLE_HELP, SQLConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

REFUSED_ROLES = (
    "pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", "pg_signal_backend",
    "pg_write_all_data", "pg_checkpoint", "pg_create_subscription",
)
"""Predefined roles whose members an executor refuses to run as (names absent on older servers never match)."""
TIMEOUT_BACKSTOP_S = 1.0
"""How much later than the executor's watchdog the server's own ``statement_timeout`` fires."""
WARNED_ROLES = ("pg_read_all_data", "pg_read_all_settings", "pg_read_all_stats", "pg_monitor")
"""Predefined roles that only widen what can be read: a warning, not a refusal."""

_ROLE_QUERY = """
SELECT r.rolname, r.rolsuper, r.rolreplication, r.rolcreaterole, r.rolbypassrls, r.rolcreatedb,
       ARRAY(SELECT p.rolname::text FROM pg_roles p
             WHERE p.rolname = ANY(%(refused)s) AND pg_has_role(r.oid, p.oid, 'MEMBER') ORDER BY 1),
       ARRAY(SELECT p.rolname::text FROM pg_roles p
             WHERE p.rolname = ANY(%(warned)s) AND pg_has_role(r.oid, p.oid, 'MEMBER') ORDER BY 1)
FROM pg_roles r WHERE r.rolname IN (session_user, current_user)
"""
_WRITABLE_TABLES_QUERY = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
  AND (pg_has_role(c.relowner, 'MEMBER') OR has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'))
ORDER BY 1 LIMIT 5
"""


def check_role(dbapi_conn: Any) -> list[str]:
    """Refuse an unsafe role (see the module docstring); returns the warnings for a merely broad one."""
    with dbapi_conn.cursor() as cur:
        rows = cur.execute(_ROLE_QUERY, {"refused": list(REFUSED_ROLES), "warned": list(WARNED_ROLES)}).fetchall()
        writable = [r[0] for r in cur.execute(_WRITABLE_TABLES_QUERY).fetchall()]
    dbapi_conn.rollback()
    warnings: list[str] = []
    for name, superuser, replication, createrole, bypassrls, createdb, refused, warned in rows:
        if superuser:  # a superuser is a member of every role: name the one attribute that matters
            problems = ["SUPERUSER"]
        else:
            problems = [attr for attr, held in (("REPLICATION", replication), ("CREATEROLE", createrole)) if held]
            problems += [f"membership of {role}" for role in refused]
        if problems:
            raise SQLConfigError(
                f"refusing to run generated SQL as PostgreSQL role {name!r} ({', '.join(problems)}): "
                "a read-only transaction does not keep such a role from server programs and files, other "
                f"sessions or replication slots; {READ_ONLY_ROLE_HELP}")
        warnings += [f"role {name!r} has {attr}" for attr, held in (("BYPASSRLS", bypassrls),
                                                                     ("CREATEDB", createdb)) if held]
        warnings += [f"role {name!r} is a member of {role}" for role in warned]
    if writable:
        warnings.append(f"the role may write or owns tables ({', '.join(writable)}, ...); "
                        "read-only transactions stop writes, but a SELECT-only role is safer")
    return warnings


def postgres_engine(url: URL, *, pool_size: int, statement_timeout_s: float, database: str) -> Engine:
    """A pool of connections that pass :func:`check_role` and are reset on check-in."""
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    # connect_args replace the URL's own ``options`` (e.g. ``-csearch_path=sales``): keep
    # them, and put ours last so the URL cannot switch them off (the last -c wins).
    url_options = url.query.get("options", "")
    url_options = " ".join(url_options) if isinstance(url_options, tuple) else url_options
    ours = (f"-c default_transaction_read_only=on -c statement_timeout={_server_timeout_ms(statement_timeout_s)} "
            "-c standard_conforming_strings=on")
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True,
        connect_args={"options": f"{url_options} {ours}".strip(), "connect_timeout": 5},
    )
    warned: set[str] = set()

    @event.listens_for(engine, "connect")
    def _check(dbapi_conn: Any, _record: Any) -> None:
        for warning in check_role(dbapi_conn):
            if warning not in warned:  # once per executor, not once per pooled connection
                warned.add(warning)
                log.warning("database %r: %s", database, warning)

    event.listen(engine, "reset", _reset)
    return engine


def _server_timeout_ms(statement_timeout_s: float) -> int:
    return int((statement_timeout_s + TIMEOUT_BACKSTOP_S) * 1000)


def _reset(dbapi_conn: Any, _record: Any, reset_state: Any) -> None:
    """Roll back, then ``DISCARD ALL`` (outside a transaction, as it must run)."""
    if reset_state.terminate_only:
        return
    dbapi_conn.rollback()
    dbapi_conn.autocommit = True
    try:
        dbapi_conn.execute("DISCARD ALL")
    finally:
        dbapi_conn.autocommit = False


ROW_TOO_BIG = "cortex: a row of the result is over"
"""The start of the server's error for a row :func:`row_bounded` refused (inside its "invalid input" message)."""


def row_bounded(sql: str, max_row_bytes: int) -> str:
    """``sql`` as a subquery whose rows the server refuses (an error naming :data:`ROW_TOO_BIG`) when the
    row is over ``max_row_bytes``; same columns, names and order otherwise.

    The row's size is ``pg_column_size`` of the whole row: its binary form, built by copying (a
    500 MB value costs a memcpy, where measuring its text would run the output functions, which
    do not stop for a cancel). Numbers are smaller than their text, and a value stored compressed
    in a table counts compressed: the executor's JSON byte limit still applies to what arrives;
    this bound is against the gigabyte a generated value can be.

    ``sql`` is one query checked by :func:`runtime.sql.policy.check_query` (no ``;``, no trailing
    comment); it goes on lines of its own all the same. The refusal is a cast of a computed text to
    boolean: PostgreSQL has no ``raise`` expression, and a computed (not constant) text is only cast,
    and fails, for a row that is over the limit.
    """
    n = int(max_row_bytes)
    # left(clock_timestamp()::text, 0) is '' but volatile: it keeps the planner from folding (and so
    # failing) the cast for every query, and costs nothing, unlike measuring the huge row again.
    return (f"SELECT cortex_q.* FROM (\n{sql}\n) AS cortex_q WHERE CASE WHEN pg_column_size(cortex_q.*) <= {n} "
            f"THEN true ELSE ('{ROW_TOO_BIG} {n} bytes' || left(clock_timestamp()::text, 0))::boolean END")


def run_query(dbapi_conn: Any, sql: str, statement_timeout_s: float, fetch: Callable[[Any], T],
              max_row_bytes: int | None = None) -> T:
    """``fetch(cursor)`` over a server-side cursor for ``sql`` in a read-only transaction, always rolled back;
    with ``max_row_bytes``, the server refuses any larger row (:func:`row_bounded`)."""
    if max_row_bytes is not None:
        sql = row_bounded(sql, max_row_bytes)
    try:
        # One round trip (simple protocol, our own text): the session's defaults again, for this transaction.
        dbapi_conn.execute(
            f"SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {_server_timeout_ms(statement_timeout_s)}")
        with dbapi_conn.cursor(name="cortex_query") as cursor:
            cursor.execute(sql)  # DECLARE "cortex_query" CURSOR FOR <sql>, extended protocol
            return fetch(cursor)  # each fetchmany(n) is one FETCH FORWARD n
    finally:
        dbapi_conn.rollback()
