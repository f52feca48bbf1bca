"""Read-only SQL execution with warm connection pools (SQLAlchemy), per ``cortexlang.ir.Database``.

Read-only access is enforced by the database, in layers:

* SQLite: the file is opened with a read-only URI (``file:...?mode=ro``), so
  SQLite refuses every write; ``PRAGMA query_only=ON`` is a second layer; an
  authorizer refuses ``ATTACH``/``DETACH`` and pragma assignments, so a
  statement can neither read other files nor switch ``query_only`` off.
* PostgreSQL: sessions start with ``default_transaction_read_only=on``; every
  statement runs in a transaction opened with ``SET TRANSACTION READ ONLY`` and
  is always rolled back (even ``SET`` is undone). Statements go through the
  extended query protocol, where the server itself refuses more than one
  command per call. Use a role without write privileges for defence in depth.
* Up front, input with more than one statement is refused without touching the
  database (a fast, clear message for the fix stage; not the enforcement).

Limits: ``statement_timeout_s`` (PostgreSQL ``statement_timeout``; SQLite a
progress-handler deadline that interrupts the VM) and ``row_limit``
(``fetchmany(limit + 1)``; the extra row only reports truncation).

Outcomes mirror the IR's SQL stage: ``ok`` (rows), ``empty`` (no rows),
``error`` (the database's message, for the fix stage). Bad SQL never raises.
Values are converted to JSON-safe types (Decimal -> float, dates -> ISO text,
bytes -> hex) so results can be cached and rendered into prompts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cortexlang.ir import Database
from runtime.sql.extract import split_statements

SQLOutcome = Literal["ok", "empty", "error"]
JsonValue = str | int | float | bool | None

_SQLITE_PROGRESS_OPS = 1000
"""VM instructions between deadline checks (~microseconds of work)."""


class SQLConfigError(ValueError):
    """A database declaration that cannot be served (missing file, unsupported backend)."""


class SQLResult(BaseModel):
    """What one statement produced."""

    model_config = ConfigDict(frozen=True)

    database: str
    statement: str
    outcome: SQLOutcome
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[JsonValue, ...], ...] = ()
    truncated: bool = False
    error: str | None = None
    elapsed_s: float = 0.0
    cached: bool = False


def _json_safe(value: Any) -> JsonValue:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


_SQLITE_READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list"})
"""Pragmas that take an argument but only read the schema."""


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None and (arg1 or "").lower() not in _SQLITE_READ_PRAGMAS:
        return sqlite3.SQLITE_DENY  # "PRAGMA x = value" changes a setting (e.g. query_only)
    return sqlite3.SQLITE_OK


class SQLExecutor:
    """One database: a warm SQLAlchemy pool and read-only execution (see module docstring).

    ``base_dir`` anchors relative SQLite paths (the .cortex file's directory).
    """

    def __init__(self, database: Database, base_dir: Path | None = None) -> None:
        self.database = database
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        try:
            url = make_url(database.url)
        except ArgumentError as exc:
            raise SQLConfigError(f"database {database.name!r}: bad SQLAlchemy URL {database.url!r}: {exc}") from exc
        self.backend = url.get_backend_name()
        self.sqlite_path: Path | None = None
        if self.backend == "sqlite":
            self.engine = self._sqlite_engine(url)
        elif self.backend == "postgresql":
            self.engine = self._postgres_engine(url)
        else:
            raise SQLConfigError(
                f"database {database.name!r}: backend {self.backend!r} is not supported "
                "(read-only enforcement is implemented for sqlite and postgresql)"
            )
        self._threads = ThreadPoolExecutor(max_workers=database.pool_size, thread_name_prefix=f"sql:{database.name}")

    # ------------------------------------------------------------------ engines
    def _sqlite_engine(self, url: Any) -> SAEngine:
        raw = url.database or ""
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
        self.sqlite_path = path.resolve()
        ro_url = f"sqlite+pysqlite:///file:{quote(str(self.sqlite_path))}?mode=ro&uri=true"
        engine = create_engine(
            ro_url,
            pool_size=self.database.pool_size,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _lock_down(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA query_only = ON")
            dbapi_conn.set_authorizer(_sqlite_authorizer)

        return engine

    def _postgres_engine(self, url: Any) -> SAEngine:
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        timeout_ms = int(self.database.statement_timeout_s * 1000)
        # connect_args replace the URL's own ``options`` (e.g. ``-csearch_path=sales``): keep
        # them, and put ours last so the URL cannot switch read-only off (the last -c wins).
        url_options = url.query.get("options", "")
        url_options = " ".join(url_options) if isinstance(url_options, tuple) else url_options
        options = f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}"
        return create_engine(
            url,
            pool_size=self.database.pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args={
                "options": f"{url_options} {options}".strip(),
                "connect_timeout": 5,
            },
        )

    # ------------------------------------------------------------------ lifecycle
    def warm(self) -> None:
        """Open ``pool_size`` connections now so the first statements do not pay for them."""
        connections = [self.engine.connect() for _ in range(self.database.pool_size)]
        for conn in connections:
            conn.close()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._threads, self.warm)

    def close(self) -> None:
        self.engine.dispose()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ execution
    async def execute(self, statement: str) -> SQLResult:
        """Run one statement read-only on the pool's threads; never raises for bad SQL."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.execute_sync, statement)

    def execute_sync(self, statement: str) -> SQLResult:
        started = time.monotonic()
        statements = split_statements(statement)
        if not statements:
            return self._error(statement, "no SQL statement to run", started)
        if len(statements) > 1:
            return self._error(statement, f"only one statement may run at a time (got {len(statements)})", started)
        sql = statements[0]
        try:
            if self.backend == "sqlite":
                columns, rows, truncated = self._run_sqlite(sql)
            else:
                columns, rows, truncated = self._run_postgres(sql)
        except _StatementError as exc:
            return self._error(sql, str(exc), started)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            return self._error(sql, _db_message(exc), started)
        except Exception as exc:  # driver errors (psycopg) and anything unforeseen
            return self._error(sql, _db_message(exc), started)
        return SQLResult(
            database=self.database.name, statement=sql, outcome="ok" if rows else "empty",
            columns=columns, rows=rows, truncated=truncated, elapsed_s=time.monotonic() - started,
        )

    def _fetch(self, cursor: Any) -> tuple[tuple[str, ...], tuple[tuple[JsonValue, ...], ...], bool]:
        if cursor.description is None:
            raise _StatementError("the statement returned no result set; only queries are allowed")
        columns = tuple(str(d[0]) for d in cursor.description)
        limit = self.database.row_limit
        fetched = cursor.fetchmany(limit + 1)
        rows = tuple(tuple(_json_safe(v) for v in row) for row in fetched[:limit])
        return columns, rows, len(fetched) > limit

    def _run_sqlite(self, sql: str) -> tuple[tuple[str, ...], tuple[tuple[JsonValue, ...], ...], bool]:
        deadline = time.monotonic() + self.database.statement_timeout_s
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert isinstance(dbapi, sqlite3.Connection)
            dbapi.set_progress_handler(lambda: int(time.monotonic() > deadline), _SQLITE_PROGRESS_OPS)
            cursor = dbapi.cursor()
            try:
                cursor.execute(sql)
                return self._fetch(cursor)
            except sqlite3.OperationalError as exc:
                if time.monotonic() > deadline and "interrupt" in str(exc):
                    raise _StatementError(
                        f"statement timeout: cancelled after {self.database.statement_timeout_s:g} s"
                    ) from exc
                raise
            finally:
                cursor.close()
                dbapi.set_progress_handler(None, 0)
                conn.rollback()

    def _run_postgres(self, sql: str) -> tuple[tuple[str, ...], tuple[tuple[JsonValue, ...], ...], bool]:
        timeout_ms = int(self.database.statement_timeout_s * 1000)
        with self.engine.connect() as conn:
            try:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                dbapi = conn.connection.dbapi_connection
                with dbapi.cursor() as cursor:  # type: ignore[union-attr]
                    # prepare=True: extended protocol, one command per call, no client-side splitting.
                    cursor.execute(sql, prepare=True)
                    return self._fetch(cursor)
            finally:
                conn.rollback()

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


class _StatementError(Exception):
    """A statement refused by the executor's own checks (message goes to the result)."""


def _db_message(exc: BaseException) -> str:
    """The database's own message, without SQLAlchemy's wrapping and links."""
    original = getattr(exc, "orig", None) or exc
    diag = getattr(original, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        detail = getattr(diag, "message_detail", None)
        return f"{primary} ({detail})" if detail else str(primary)
    return str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
