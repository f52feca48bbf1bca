"""Which statements an executor sends to the database at all: one read-only query, nothing else.

:func:`check_query` reads the text with the dialect's lexer
(:mod:`runtime.sql.lexer`) and refuses, with a message meant for the fix
stage, anything the runtime can recognise as more than one plain query:

* text that cannot be read exactly (unterminated quotes or comments);
* more than one statement (a ``;`` outside quotes and comments): refused
  whole, never cut to its first statement;
* unbalanced parentheses (which could close the executor's own wrapper
  subquery early, see :func:`_check_parentheses`), in the database's own words;
* text that starts with no statement keyword at all: the database's own
  syntax error (``near "1": syntax error`` on SQLite);
* a statement that does not start with a query keyword (``COPY``, ``LOAD``,
  ``DO``, ``CALL``, ``SET``, ``LISTEN``, ``PREPARE``, ``VACUUM``, ``LOCK``,
  ``GRANT``, DDL, DML, ...);
* data changes or row locks inside a query: ``INSERT``/``UPDATE``/``DELETE``/
  ``MERGE`` anywhere (data-modifying CTEs), ``INTO`` (``SELECT ... INTO``),
  ``FOR UPDATE``/``FOR SHARE``;
* on PostgreSQL, calls to functions with side effects or access outside the
  database (:data:`PG_DENIED_FUNCTIONS`, :data:`PG_DENIED_PREFIXES`), and
  unicode-escaped identifiers (``U&"..."``), which could spell a denied name.

This is defence in depth. The enforcement is the database's: a role without
dangerous privileges and read-only transactions on PostgreSQL
(:mod:`runtime.sql.postgres_backend`), a read-only file, ``query_only`` and a
function allow-list in the authorizer on SQLite
(:mod:`runtime.sql.sqlite_backend`). A keyword used as a bare identifier (a
column named ``update``) is refused too; quoting it (``"update"``) passes.
"""

from __future__ import annotations

from typing import Literal

from runtime.sql.extract import STATEMENT_KEYWORDS
from runtime.sql.lexer import LexError, Token, code_tokens, tokenize

Backend = Literal["sqlite", "postgresql"]

QUERY_STARTS: dict[Backend, frozenset[str]] = {
    # PostgreSQL runs queries through DECLARE ... CURSOR, which takes exactly these.
    "postgresql": frozenset({"SELECT", "WITH", "VALUES", "TABLE"}),
    # EXPLAIN only compiles on SQLite; PRAGMA is held to schema reads by the authorizer.
    "sqlite": frozenset({"SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA"}),
}
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})
_ROW_LOCKS = frozenset({"UPDATE", "SHARE", "NO", "KEY"})  # FOR UPDATE | SHARE | NO KEY UPDATE | KEY SHARE

PG_DENIED_FUNCTIONS = frozenset({
    "set_config", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_switch_wal", "pg_promote", "pg_notify", "nextval", "setval", "pg_export_snapshot", "pg_stat_file",
    "pg_current_logfile", "pg_start_backup", "pg_stop_backup", "pg_prewarm", "pg_stat_statements_reset",
    "pg_create_restore_point", "ts_stat", "ts_rewrite", "setseed", "pg_stat_get_activity",
    "pg_stat_get_backend_activity",
})
"""PostgreSQL functions that change state outside the (rolled-back) transaction or read the host."""
PG_DENIED_PREFIXES = (
    "pg_read_", "pg_ls_", "pg_file_", "lo_", "dblink", "pg_sleep", "pg_advisory_", "pg_try_advisory_",
    "pg_create_", "pg_drop_", "pg_copy_", "pg_replication_", "pg_logical_", "pg_stat_reset", "pg_backup_",
    "pg_wal_replay_", "pg_log_", "pg_import_", "query_to_xml", "cursor_to_xml", "txid_current",
    "pg_current_xact_id", "table_to_xml", "schema_to_xml", "database_to_xml",
)
"""Families: server files, large objects, other servers, sleeps and advisory locks (session state that
outlives a rollback), replication slots, statistics resets, xid assignment, and functions that run SQL
given as a string (``query_to_xml``), which would bypass these checks; and functions that read
a relation named by a value (``table_to_xml('pg_catalog.pg_stat_activity', ...)``: a string or an
oid that no name check sees), which bypassed :data:`PG_DENIED_RELATIONS` (hostile-user pass, round 4).

Single names in :data:`PG_DENIED_FUNCTIONS` that run SQL given as a string: ``ts_stat(sqlquery)`` and
``ts_rewrite(query, select)`` (the hostile-user pass ran
``pg_advisory_lock`` and ``set_config`` through ``ts_stat``); ``setseed`` sets the session's random
seed, which ``DISCARD ALL`` does not reset, so the next query on the pooled connection would see it."""


PG_DENIED_RELATIONS = frozenset({"pg_stat_activity", "pg_stat_statements"})
"""Views that show other sessions' SQL text. Every executor connects as the same reader role, and a role
sees its own sessions' queries: a generated query could read the SQL (with its literals) of other users'
requests running at the time (hostile-user pass, round 3). The functions behind them are denied above."""


class RefusedStatement(ValueError):
    """A statement the executor will not send; the message is for the caller (and the fix stage)."""


def check_query(sql: str, backend: Backend) -> str:
    """The one query in ``sql``, from its first to its last code token (no trailing ``;``).

    Raises :class:`RefusedStatement` for anything else (see the module docstring).
    """
    try:
        tokens = tokenize(sql, backend)
    except LexError as exc:
        raise RefusedStatement(f"cannot read the statement: {exc}") from exc
    statements = _statements(code_tokens(tokens))
    if not statements:
        raise RefusedStatement("no SQL statement to run")
    if len(statements) > 1:
        raise RefusedStatement(
            f"only one statement may run at a time; this text holds {len(statements)} "
            "(separated by ';'). Send a single query.")
    code = statements[0]
    _check_start(code, backend)  # first: prose gets the database's syntax error, whatever its brackets
    _check_parentheses(code, backend)
    _check_body(code, backend)
    return sql[code[0].start:code[-1].start + len(code[-1].text)]


def _statements(code: list[Token]) -> list[list[Token]]:
    out: list[list[Token]] = [[]]
    for token in code:
        if token.text == ";":
            out.append([])
        else:
            out[-1].append(token)
    return [s for s in out if s]


def _check_parentheses(code: list[Token], backend: Backend) -> None:
    """Refuse unbalanced parentheses. The PostgreSQL executor sends the query as a subquery
    (:func:`runtime.sql.postgres_backend.row_bounded`); a ``)`` that closes nothing would close
    that wrapper early and move its row bound onto a subquery of the attacker's choosing
    (``SELECT 1) AS q UNION ALL SELECT repeat('x', 300000000) FROM (SELECT 1``). The refusal says
    what the database itself would (:data:`SYNTAX_ERROR`, :data:`INCOMPLETE`): a model repairing a
    query cut at ``max_tokens`` reads the error it would have read without this check."""
    depth = 0
    for token in code:
        depth += (token.text == "(") - (token.text == ")")
        if depth < 0:
            raise RefusedStatement(SYNTAX_ERROR[backend].format(")"))
    if depth:
        raise RefusedStatement(INCOMPLETE[backend])


SYNTAX_ERROR: dict[Backend, str] = {"sqlite": 'near "{}": syntax error', "postgresql": 'syntax error at or near "{}"'}
"""The database's own words for text that is no statement at all (see :func:`_check_start`)."""
INCOMPLETE: dict[Backend, str] = {"sqlite": "incomplete input", "postgresql": "syntax error at end of input"}
"""The database's own words for a query that ends inside parentheses (see :func:`_check_parentheses`)."""


def _check_start(code: list[Token], backend: Backend) -> None:
    """Refuse a statement that is no query.

    Text that starts with no statement keyword at all ("1", "The answer is", "Based on ...") is not
    SQL: it gets the database's own syntax error (:data:`SYNTAX_ERROR`), which is what the fix stage
    saw before this check existed. Told instead that "'1' statements are not allowed (statements
    starting with EXPLAIN, ...)", SmolLM2-135M answered with the schema's CREATE TABLE (cut at
    max_tokens) rather than a SELECT: 1 of 10 nl2sql runs done instead of 4 (measured,
    benchmarks/results/nl2sql_isolation.md). Statements of another kind (CREATE, COPY, ...) are named.
    """
    first = next((t for t in code if t.text != "("), code[0])  # "(SELECT 1) UNION (SELECT 2)"
    allowed = QUERY_STARTS[backend]
    if first.kind != "word" or first.upper not in STATEMENT_KEYWORDS:
        raise RefusedStatement(SYNTAX_ERROR[backend].format(first.text))
    if first.upper not in allowed:
        raise RefusedStatement(
            f"{first.upper} statements are not allowed: only read-only queries may run "
            f"(statements starting with {', '.join(sorted(allowed))})")


def _check_body(code: list[Token], backend: Backend) -> None:
    for i, token in enumerate(code):
        nxt = code[i + 1] if i + 1 < len(code) else None
        if token.kind == "word":
            word = token.upper
            if word == "FOR" and nxt is not None and nxt.kind == "word" and nxt.upper in _ROW_LOCKS:
                raise RefusedStatement(f"row locks (FOR {nxt.upper} ...) are not allowed in a read-only query")
            if word in _WRITES:
                raise RefusedStatement(f"{word} is not allowed: queries may only read (no data-modifying WITH)")
            if word == "INTO":
                raise RefusedStatement("INTO is not allowed: SELECT ... INTO creates a table; queries may only read")
        if backend == "postgresql" and token.kind == "quoted" and _unicode_escaped(code, i):
            # U&"pg!005fsleep" UESCAPE '!' (10) names pg_sleep: this module reads no escapes, so it
            # refuses them all rather than miss a denied name (a UESCAPE clause may sit before "(").
            raise RefusedStatement('unicode-escaped identifiers (U&"...") are not allowed: write the name plainly')
        if backend == "postgresql" and token.kind in ("word", "quoted") and _identifier(token) in PG_DENIED_RELATIONS:
            raise RefusedStatement(f"{_identifier(token)} is not allowed: it shows other sessions' queries")
        if backend == "postgresql" and nxt is not None and nxt.text == "(" and token.kind in ("word", "quoted"):
            _check_function(code, i)


def _unicode_escaped(code: list[Token], i: int) -> bool:
    """Whether the quoted identifier ``code[i]`` is written ``U&"..."`` (``U``, ``&`` and the quote adjacent)."""
    if i < 2:
        return False
    amp, u = code[i - 1], code[i - 2]
    return (amp.text == "&" and u.upper == "U" and amp.start == u.start + 1
            and code[i].start == amp.start + 1)


def _identifier(token: Token) -> str:
    """The lower-cased name a word or quoted-identifier token spells (U&"..." names never get here:
    :func:`_check_body` refused them first)."""
    name = token.text[1:-1].replace('""', '"') if token.kind == "quoted" else token.text
    return name.lower()


def _check_function(code: list[Token], i: int) -> None:
    """Refuse a denied function called at ``code[i]`` (bare, quoted or schema-qualified)."""
    name = _identifier(code[i])
    if name in PG_DENIED_FUNCTIONS or name.startswith(PG_DENIED_PREFIXES):
        raise RefusedStatement(
            f"function {name}() is not allowed: it has effects outside a read-only query "
            "(server files, other sessions, locks or settings)")
