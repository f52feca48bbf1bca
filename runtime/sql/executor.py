"""Read-only SQL execution with warm connection pools (SQLAlchemy), per ``cortexlang.ir.Database``.

Every statement passes three gates, outermost first:

1. :func:`runtime.sql.policy.check_query`: one read-only query, or a clear
   refusal without touching the database (multi-statement text, ``COPY``,
   ``DO``, ``SET``, data-modifying ``WITH``, side-effecting functions, ...).
2. The database's own enforcement, per backend:
   :mod:`runtime.sql.sqlite_backend` (read-only file, ``query_only``, an
   authorizer with a function allow-list, a value-length limit) and
   :mod:`runtime.sql.postgres_backend` (a least-privilege role checked on
   every connection, read-only transactions always rolled back, a server-side
   cursor, ``DISCARD ALL`` on check-in).
3. Limits: ``statement_timeout_s`` enforced from outside the statement by a
   :class:`~runtime.sql.watchdog.Watchdog` (``interrupt()`` on SQLite, a
   cancel request on PostgreSQL, whose ``statement_timeout`` also applies),
   ``row_limit`` rows and ``max_result_bytes`` of result (its length as JSON),
   fetched in batches sized to the remaining budget; what does not fit is
   reported as ``truncated``. A single row over ``max_result_bytes`` is an
   error, refused before it reaches this process: by SQLite's value-length
   limit, and by PostgreSQL itself (:func:`~runtime.sql.postgres_backend.row_bounded`).

Outcomes mirror the IR's SQL stage: ``ok`` (rows), ``empty`` (no rows),
``error`` (a refusal or the database's message, for the fix stage). Bad SQL
never raises, and an executor stays usable after a refused, failed or
cancelled statement. Values are converted to JSON-safe types (Decimal ->
float, dates -> ISO text, bytes -> hex) so results can be cached and rendered
into prompts.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cortexlang.ir import Database
from runtime.sql import postgres_backend
from runtime.sql.errors import SQLConfigError, StatementError
from runtime.sql.lexer import SQL_WHITESPACE
from runtime.sql.policy import Backend, RefusedStatement, check_query
from runtime.sql.rows import Fetched, Row, fetch_bounded
from runtime.sql.sqlite_backend import AUTHORIZER_INFO, Authorizer, lockdown_refusal, sqlite_engine
from runtime.sql.watchdog import Watchdog

__all__ = ["DEFAULT_MAX_RESULT_BYTES", "SQLConfigError", "SQLExecutor", "SQLOutcome", "SQLResult"]

SQLOutcome = Literal["ok", "empty", "error"]

DEFAULT_MAX_RESULT_BYTES = 1 << 20
"""Result size bound when none is given: 1 MiB of JSON, far more than a prompt can hold."""
_CANCEL_TIMEOUT_S = 5.0


class SQLResult(BaseModel):
    """What one statement produced."""

    model_config = ConfigDict(frozen=True)

    database: str
    statement: str
    outcome: SQLOutcome
    columns: tuple[str, ...] = ()
    rows: tuple[Row, ...] = ()
    truncated: bool = False
    error: str | None = None
    elapsed_s: float = 0.0
    cached: bool = False


class SQLExecutor:
    """One database: a warm SQLAlchemy pool and read-only execution (see module docstring).

    ``base_dir`` anchors relative SQLite paths (the .cortex file's directory).
    ``max_result_bytes`` bounds each result (default :data:`DEFAULT_MAX_RESULT_BYTES`);
    on SQLite it also caps every single string or blob value.
    """

    def __init__(self, database: Database, base_dir: Path | None = None, *,
                 max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> None:
        if max_result_bytes < 1024:
            raise SQLConfigError(f"database {database.name!r}: max_result_bytes must be at least 1024")
        self.database = database
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.max_result_bytes = max_result_bytes
        try:
            url = make_url(database.url)
        except ArgumentError as exc:
            raise SQLConfigError(f"database {database.name!r}: bad SQLAlchemy URL {database.url!r}: {exc}") from exc
        backend = url.get_backend_name()
        self.sqlite_path: Path | None = None
        if backend == "sqlite":
            self.sqlite_path = self._sqlite_file(url.database or "")
            self.engine: SAEngine = sqlite_engine(self.sqlite_path, pool_size=database.pool_size,
                                                  max_value_bytes=max_result_bytes)
        elif backend == "postgresql":
            self.engine = postgres_backend.postgres_engine(
                url, pool_size=database.pool_size, statement_timeout_s=database.statement_timeout_s,
                database=database.name)
        else:
            raise SQLConfigError(
                f"database {database.name!r}: backend {backend!r} is not supported "
                "(read-only enforcement is implemented for sqlite and postgresql)"
            )
        self.backend: Backend = backend
        self._threads = ThreadPoolExecutor(max_workers=database.pool_size, thread_name_prefix=f"sql:{database.name}")
        self._watchdog = Watchdog(database.name)

    def _sqlite_file(self, raw: str) -> Path:
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise SQLConfigError(
                f"database {self.database.name!r}: give a SQLite file path (sqlite:///path.db); "
                "in-memory and URI forms cannot be opened read-only"
            )
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if not path.is_file():
            raise SQLConfigError(f"database {self.database.name!r}: SQLite file not found: {path}")
        return path.resolve()

    # ------------------------------------------------------------------ lifecycle
    def warm(self) -> None:
        """Open ``pool_size`` connections now, so the first statements do not pay for them.

        Raises :class:`SQLConfigError` when the PostgreSQL role is unsafe (see
        :func:`runtime.sql.postgres_backend.check_role`).
        """
        connections = [self.engine.connect() for _ in range(self.database.pool_size)]
        for conn in connections:
            conn.close()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._threads, self.warm)

    def close(self) -> None:
        self._watchdog.close()
        self.engine.dispose()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ execution
    async def execute(self, statement: str) -> SQLResult:
        """Run one statement read-only on the pool's threads; never raises for bad SQL."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.execute_sync, statement)

    def execute_sync(self, statement: str) -> SQLResult:
        """Run one statement read-only; ``result.statement`` is ``statement`` stripped (the cache keys on it)."""
        started = time.monotonic()
        statement = statement.strip(SQL_WHITESPACE)
        try:
            sql = check_query(statement, self.backend)
            if self.backend == "sqlite":
                columns, rows, truncated = self._run_sqlite(sql)
            else:
                columns, rows, truncated = self._run_postgres(sql)
        except (RefusedStatement, StatementError, SQLConfigError) as exc:
            return self._error(statement, str(exc), started)
        except Exception as exc:  # SQLAlchemy, sqlite3 and psycopg errors: the database's own message
            return self._error(statement, _db_message(exc), started)
        return SQLResult(
            database=self.database.name, statement=statement, outcome="ok" if rows else "empty",
            columns=columns, rows=rows, truncated=truncated, elapsed_s=time.monotonic() - started,
        )

    def _run_sqlite(self, sql: str) -> Fetched:
        timeout_s = self.database.statement_timeout_s
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert isinstance(dbapi, sqlite3.Connection)
            authorizer: Authorizer = conn.connection.info[AUTHORIZER_INFO]
            authorizer.denied_function = None
            cursor = dbapi.cursor()
            try:
                with self._watchdog.guard(timeout_s, dbapi.interrupt) as deadline:
                    try:
                        cursor.execute(sql)
                        return self._fetch(cursor)
                    except sqlite3.DatabaseError as exc:
                        if deadline.fired:
                            raise StatementError(f"statement timeout: cancelled after {timeout_s:g} s") from exc
                        if (refusal := lockdown_refusal(exc, authorizer, self.max_result_bytes)) is not None:
                            raise StatementError(refusal) from exc
                        raise
            finally:
                cursor.close()
                conn.rollback()

    def _run_postgres(self, sql: str) -> Fetched:
        timeout_s = self.database.statement_timeout_s
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            cancel = functools.partial(dbapi.cancel_safe, timeout=_CANCEL_TIMEOUT_S)  # type: ignore[union-attr]
            with self._watchdog.guard(timeout_s, cancel) as deadline:
                try:
                    return postgres_backend.run_query(dbapi, sql, timeout_s, self._fetch,
                                                      max_row_bytes=self.max_result_bytes)
                except Exception as exc:
                    if deadline.fired:
                        raise StatementError(f"statement timeout: cancelled after {timeout_s:g} s") from exc
                    if postgres_backend.ROW_TOO_BIG in _db_message(exc):
                        raise StatementError(f"a row alone is over max_result_bytes ({self.max_result_bytes} "
                                             "bytes): select fewer or smaller columns") from exc
                    raise

    def _fetch(self, cursor: Any) -> Fetched:
        return fetch_bounded(cursor, self.database.row_limit, self.max_result_bytes)

    def _error(self, statement: str, message: str, started: float) -> SQLResult:
        return SQLResult(
            database=self.database.name, statement=statement, outcome="error", error=message,
            elapsed_s=time.monotonic() - started,
        )

    # ------------------------------------------------------------------ versions (cache keys)
    def version_sync(self) -> str:
        """A token that changes whenever the database's data may have changed.

        SQLite: the file's (and its WAL's) mtime and size. PostgreSQL: the
        snapshot's xmax, which advances with every committed write transaction
        in the cluster (conservative: writes elsewhere also change it).
        """
        if self.sqlite_path is not None:
            parts = []
            for path in (self.sqlite_path, self.sqlite_path.with_name(self.sqlite_path.name + "-wal")):
                if path.exists():
                    st = path.stat()
                    parts.append(f"{st.st_mtime_ns}:{st.st_size}")
            return "sqlite:" + "/".join(parts)
        with self.engine.connect() as conn:
            try:
                xmax = conn.exec_driver_sql("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").scalar()
            finally:
                conn.rollback()
        return f"postgresql:{xmax}"

    async def version(self) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.version_sync)


def _db_message(exc: BaseException) -> str:
    """The database's own message, without SQLAlchemy's wrapping and links."""
    original = getattr(exc, "orig", None) or exc
    diag = getattr(original, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        detail = getattr(diag, "message_detail", None)
        return f"{primary} ({detail})" if detail else str(primary)
    return str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
