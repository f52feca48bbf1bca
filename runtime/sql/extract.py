"""Getting one SQL statement out of model output, and splitting SQL into statements.

:func:`split_statements` is a small lexer, not a parser: it knows string
literals (``'...'`` with ``''`` escapes), quoted identifiers (``"..."``,
`` `...` ``, ``[...]``), comments (``--`` and ``/* */``) and PostgreSQL
dollar quotes (``$tag$...$tag$``), so a ``;`` inside any of them does not
split. It is dialect-agnostic, for finding SQL in model output; what may run
is decided by the executor with the dialect's own lexer
(:mod:`runtime.sql.policy`), and enforced by the database.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"```(?:[ \t]*[A-Za-z0-9_+-]*[ \t]*\n)?(.*?)(?:```|\Z)", re.DOTALL)
"""A fenced block; the info string (``sql``) counts only when a newline follows it."""
_QUERY_START = re.compile(r"\b(SELECT|WITH|VALUES|EXPLAIN|PRAGMA|SHOW|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER)\b",
                          re.IGNORECASE)
"""Where SQL starts after prose ("Here is the query: SELECT ..."): keywords rarely used in prose."""
_DOLLAR_TAG = re.compile(r"\$[A-Za-z_]*\$")
_COMMANDS = (
    "SELECT|WITH|VALUES|TABLE|EXPLAIN|PRAGMA|SHOW|INSERT|UPDATE|DELETE|MERGE|REPLACE|UPSERT|CREATE|DROP|ALTER"
    "|TRUNCATE|COPY|LOAD|DO|CALL|SET|RESET|LISTEN|NOTIFY|UNLISTEN|PREPARE|EXECUTE|DEALLOCATE|VACUUM|ANALYZE"
    "|LOCK|GRANT|REVOKE|BEGIN|START|COMMIT|ROLLBACK|ABORT|END|SAVEPOINT|RELEASE|ATTACH|DETACH|DECLARE|FETCH"
    "|MOVE|CLOSE|DISCARD|CHECKPOINT|CLUSTER|REINDEX|REFRESH|COMMENT|IMPORT|SECURITY|REASSIGN")
STATEMENT_KEYWORDS = frozenset(_COMMANDS.split("|"))
"""The words any SQL statement of the dialects served here starts with (upper case)."""
_COMMAND = re.compile(rf"({_COMMANDS})\b", re.IGNORECASE)
"""What a statement starts with, in any case."""
_UPPER_COMMAND = re.compile(rf"\b({_COMMANDS})\b")
"""A statement keyword written in capitals: SQL after prose even when prose uses the word ("copy")."""
_PROSE = re.compile(r"[^\W\d_]")
"""A part that starts with a letter (and not with a statement keyword) is prose."""


def split_statements(sql: str) -> list[str]:
    """Statements of ``sql`` in order, stripped, without their terminating ``;``.

    Statements that hold only whitespace and comments are dropped.
    """
    statements: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            i += 1
            while i < n:
                if sql[i] == close:
                    if close in "'\"" and i + 1 < n and sql[i + 1] == close:  # doubled quote escape
                        i += 2
                        continue
                    break
                i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n - 1 if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n - 1 if end < 0 else end + 1
        elif ch == "$" and (m := _DOLLAR_TAG.match(sql, i)) and not (i and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            end = sql.find(m.group(0), m.end())
            i = n - 1 if end < 0 else end + len(m.group(0)) - 1
        elif ch == ";":
            statements.append(sql[start:i])
            start = i + 1
        i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(fragment: str) -> bool:
    return bool(_code_of(fragment))


def _code_of(fragment: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?(\*/|\Z)", "", fragment, flags=re.DOTALL).strip()


def extract_sql(text: str) -> str:
    """The SQL in model output ('' when there is none), never silently cut to part of it.

    Takes the first fenced code block if there is one (a missing closing fence
    is fine: a stop string may have cut it); else the whole text if it starts
    with a statement keyword; else the text from the first SQL keyword on,
    skipping prose such as "Here is the query:". Of its ``;``-separated parts,
    keeps the first and every later one that is not prose (prose starts with a
    letter but not with a statement keyword), joined with ``";\\n"`` (a
    newline, so a trailing ``--`` comment cannot swallow the next one): more
    than one statement then reaches the executor, which refuses them all.
    """
    body = text
    fence = _FENCE.search(text)
    if fence is not None:
        body = fence.group(1)
    elif not _COMMAND.match(_code_of(text)):
        starts = [m.start() for m in (_QUERY_START.search(text), _UPPER_COMMAND.search(text)) if m is not None]
        if starts:
            body = text[min(starts):]
    statements = split_statements(body)
    kept = statements[:1] + [s for s in statements[1:] if not _is_prose(_code_of(s))]
    return ";\n".join(kept)


def _is_prose(code: str) -> bool:
    return bool(_PROSE.match(code)) and not _COMMAND.match(code)
