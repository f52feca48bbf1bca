"""SQLite lock-down: a read-only file, ``query_only``, an authorizer and a length limit per connection.

Layers, each enforced by SQLite itself on every pooled connection:

* the file is opened with a read-only URI (``file:...?mode=ro``), so every
  write fails; ``PRAGMA query_only=ON`` is a second layer;
* :class:`Authorizer` denies ``ATTACH``/``DETACH`` (other files), pragma
  assignments (``query_only = OFF``), pragmas that tell host paths
  (:data:`HOST_PRAGMAS`) and every function outside
  :data:`ALLOWED_FUNCTIONS` (``load_extension``, ``fts3_tokenizer``, which
  leaks a native pointer, ``randomblob``/``zeroblob``, ...);
* ``SQLITE_LIMIT_LENGTH`` caps every string or blob value, intermediate ones
  included, so a value doubled until it is a gigabyte (``x || x``,
  ``replace``, ``group_concat``) fails at once instead of allocating
  gigabytes inside one function call that no deadline can interrupt.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list"})
"""Pragmas that take an argument but only read the schema."""
HOST_PRAGMAS = frozenset({"database_list", "temp_store_directory", "data_store_directory"})
"""Pragmas that only read, but tell host file paths (the database file's among them): denied, as a
statement and as a table-valued function (``pragma_database_list``) alike."""

ALLOWED_FUNCTIONS = frozenset({
    # core scalar functions (https://sqlite.org/lang_corefunc.html), less the ones with effects or
    # native pointers (load_extension, fts3_tokenizer), blob factories (randomblob, zeroblob),
    # connection state (changes, last_insert_rowid, sqlite_compileoption_*) and printf/format, whose
    # '%.*c' repeats a character up to 2^31 times in one call that no deadline can interrupt
    "abs", "char", "coalesce", "concat", "concat_ws", "glob", "hex", "ifnull", "iif", "if",
    "instr", "length", "like", "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif",
    "octet_length", "quote", "random", "replace", "round", "rtrim", "sign", "soundex",
    "sqlite_version", "substr", "substring", "trim", "typeof", "unhex", "unicode", "unlikely", "upper",
    # date and time
    "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
    # aggregates and window functions
    "avg", "count", "group_concat", "string_agg", "sum", "total", "row_number", "rank", "dense_rank",
    "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value", "nth_value",
    # math
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh",
    "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power", "radians",
    "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
    # JSON (pure functions of their arguments)
    "json", "jsonb", "json_array", "jsonb_array", "json_array_length", "json_error_position",
    "json_extract", "jsonb_extract", "json_insert", "jsonb_insert", "json_object", "jsonb_object",
    "json_patch", "jsonb_patch", "json_pretty", "json_remove", "jsonb_remove", "json_replace",
    "jsonb_replace", "json_set", "jsonb_set", "json_type", "json_valid", "json_quote",
    "json_group_array", "jsonb_group_array", "json_group_object", "jsonb_group_object",
    "json_each", "json_tree",
})


class Authorizer:
    """The per-connection SQLite authorizer; remembers the last function it denied, for the message."""

    def __init__(self) -> None:
        self.denied_function: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and arg2 is not None and (arg1 or "").lower() not in READ_PRAGMAS:
            return sqlite3.SQLITE_DENY  # "PRAGMA x = value" changes a setting (e.g. query_only)
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in HOST_PRAGMAS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in ALLOWED_FUNCTIONS:
            self.denied_function = arg2
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


def lockdown_refusal(exc: sqlite3.DatabaseError, authorizer: Authorizer, max_value_bytes: int) -> str | None:
    """A clear message for an error that one of the lock-down layers caused, else None (SQLite's own is fine)."""
    if authorizer.denied_function and "not authorized" in str(exc):
        return (f"function {authorizer.denied_function}() is not allowed: only the SQLite functions "
                "on the read-only allow-list may run")
    if "string or blob too big" in str(exc):
        return f"a value exceeds max_result_bytes ({max_value_bytes} bytes): select smaller values"
    return None


AUTHORIZER_INFO = "cortex_authorizer"
"""Key of a pooled connection's :class:`Authorizer` in its ``info`` dict (SQLAlchemy's connection record)."""


def sqlite_engine(path: Path, *, pool_size: int, max_value_bytes: int) -> Engine:
    """A pool of locked-down read-only connections to the SQLite file at ``path`` (see module docstring)."""
    url = f"sqlite+pysqlite:///file:{quote(str(path))}?mode=ro&uri=true"
    engine = create_engine(url, pool_size=pool_size, max_overflow=0, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _lock_down(dbapi_conn: sqlite3.Connection, record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only = ON")
        dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
        authorizer = Authorizer()
        dbapi_conn.set_authorizer(authorizer)
        record.info[AUTHORIZER_INFO] = authorizer

    return engine
