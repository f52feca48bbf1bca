"""What the executors send at all: one read-only query; everything else refused with a clear reason."""

from __future__ import annotations

import pytest

from runtime.sql.policy import RefusedStatement, check_query


@pytest.mark.parametrize(("sql", "backend", "sent"), [
    ("SELECT 1", "postgresql", "SELECT 1"),
    ("  -- why\n SELECT a FROM t WHERE b LIKE '%;%' ;  -- done", "postgresql", "SELECT a FROM t WHERE b LIKE '%;%'"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "sqlite", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("(SELECT 1) UNION (SELECT 2)", "postgresql", "(SELECT 1) UNION (SELECT 2)"),
    ("VALUES (1), (2)", "postgresql", "VALUES (1), (2)"),
    ("TABLE sales", "postgresql", "TABLE sales"),
    ("PRAGMA table_info(sales)", "sqlite", "PRAGMA table_info(sales)"),
    ("SELECT E'\\'; DELETE FROM t; --'", "postgresql", "SELECT E'\\'; DELETE FROM t; --'"),  # one string literal
    ('SELECT "update", last_update, "insert"(x) FROM t', "postgresql",
     'SELECT "update", last_update, "insert"(x) FROM t'),  # quoted or longer names are not keywords
    ("SELECT substring(name FROM 1 FOR 3) FROM t", "postgresql", "SELECT substring(name FROM 1 FOR 3) FROM t"),
    ("SELECT ')', '(' FROM t WHERE (a IN (SELECT (1)))", "postgresql",
     "SELECT ')', '(' FROM t WHERE (a IN (SELECT (1)))"),  # parentheses in strings do not count
])
def test_one_read_only_query_is_sent_as_written(sql: str, backend: str, sent: str) -> None:
    assert check_query(sql, backend) == sent  # type: ignore[arg-type]


@pytest.mark.parametrize(("sql", "backend", "reason"), [
    ("", "sqlite", "no SQL statement"),
    ("-- only a comment\n;", "postgresql", "no SQL statement"),
    ("SELECT 1; SELECT 2", "postgresql", "only one statement may run at a time; this text holds 2"),
    ("SELECT $$;$$; SELECT 2", "postgresql", "holds 2"),
    ("SELECT 'x", "sqlite", "cannot read the statement: unterminated string"),
    ("COPY (SELECT 1) TO PROGRAM 'id'", "postgresql", "COPY statements are not allowed"),
    ("LOAD 'x'", "postgresql", "LOAD statements are not allowed"),
    ("DO $$ BEGIN END $$", "postgresql", "DO statements are not allowed"),
    ("SET search_path = x", "postgresql", "SET statements are not allowed"),
    ("SHOW ALL", "postgresql", "SHOW statements are not allowed"),
    ("EXPLAIN ANALYZE DELETE FROM t", "postgresql", "EXPLAIN statements are not allowed"),
    ("ATTACH 'x.db' AS x", "sqlite", "ATTACH statements are not allowed"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "postgresql", "DELETE is not allowed"),
    ("WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d", "sqlite", "UPDATE is not allowed"),
    ("SELECT * INTO t2 FROM t", "postgresql", "INTO is not allowed"),
    ("SELECT * FROM t FOR UPDATE", "postgresql", "row locks (FOR UPDATE"),
    ("SELECT * FROM t FOR KEY SHARE", "postgresql", "row locks (FOR KEY"),
    ("SELECT pg_catalog.pg_read_file('/etc/passwd')", "postgresql", "function pg_read_file() is not allowed"),
    ('SELECT "PG_SLEEP"(1)', "postgresql", "function pg_sleep() is not allowed"),
    ("SELECT pg_advisory_xact_lock (1)", "postgresql", "function pg_advisory_xact_lock() is not allowed"),
    ("SELECT lo_import('/etc/passwd')", "postgresql", "function lo_import() is not allowed"),
    ("SELECT set_config('role', 'postgres', true)", "postgresql", "function set_config() is not allowed"),
    # SQL given as a string ran past the function check (hostile-user pass, round 3): ts_stat took an
    # advisory lock and set a session setting; setseed's seed survives DISCARD ALL on the pooled connection.
    ("SELECT * FROM ts_stat('SELECT to_tsvector(pg_advisory_lock(42)::text)')", "postgresql",
     "function ts_stat() is not allowed"),
    ("SELECT pg_catalog.ts_rewrite('a'::tsquery, 'SELECT 1')", "postgresql", "function ts_rewrite() is not allowed"),
    ("SELECT setseed(0.5)", "postgresql", "function setseed() is not allowed"),
    # Every executor is the same role, which sees its own sessions' SQL: other users' requests' queries.
    ("SELECT query FROM pg_stat_activity", "postgresql", "pg_stat_activity is not allowed"),
    ('SELECT query FROM pg_catalog."pg_stat_activity"', "postgresql", "pg_stat_activity is not allowed"),
    ("SELECT pg_stat_get_backend_activity(1)", "postgresql", "function pg_stat_get_backend_activity()"),
    ("SELECT * FROM pg_stat_get_activity(NULL)", "postgresql", "function pg_stat_get_activity()"),
    ('SELECT U&"pg\\005fsleep"(1)', "postgresql", "unicode-escaped identifiers"),
    # A UESCAPE clause between the name and "(" hid the call from the function check (found by hand):
    ("SELECT U&\"pg!005fadvisory!005flock\" UESCAPE '!' (42)", "postgresql", "unicode-escaped identifiers"),
    ("SELECT u&\"set!005fconfig\" UESCAPE '!'('x.y', 'z', false)", "postgresql", "unicode-escaped identifiers"),
    # A relation named by a value bypassed the relation check (hostile-user pass, round 4):
    ("SELECT table_to_xml('pg_catalog.pg_stat_activity', true, false, '')", "postgresql",
     "function table_to_xml() is not allowed"),
    ("SELECT pg_catalog.schema_to_xml('pg_catalog', true, false, '')", "postgresql", "function schema_to_xml()"),
    ("SELECT database_to_xmlschema(true, false, '')", "postgresql", "function database_to_xmlschema()"),
    # A ')' closing nothing would close the executor's wrapper subquery (postgres_backend.row_bounded):
    ("SELECT '1') AS cortex_q UNION ALL SELECT repeat('x', 9) FROM (SELECT 1", "postgresql",
     'syntax error at or near ")"'),
    ("SELECT 1) UNION ALL SELECT 2 FROM (SELECT 1", "sqlite", 'near ")": syntax error'),
    ("SELECT count(* FROM t", "postgresql", "syntax error at end of input"),
    ("SELECT count(* FROM t", "sqlite", "incomplete input"),
])
def test_anything_else_is_refused_with_a_reason(sql: str, backend: str, reason: str) -> None:
    with pytest.raises(RefusedStatement) as refused:
        check_query(sql, backend)  # type: ignore[arg-type]
    assert reason in str(refused.value)


@pytest.mark.parametrize(("sql", "backend", "message"), [
    ("1\n\nThe answer is 1", "sqlite", 'near "1": syntax error'),
    ("1. 2023 to 2024", "sqlite", 'near "1.": syntax error'),
    ("The regional directors are", "sqlite", 'near "The": syntax error'),
    ("Based on the provided table", "postgresql", 'syntax error at or near "Based"'),
    ("'a string'", "sqlite", "near \"'a string'\": syntax error"),
])
def test_text_that_is_no_statement_gets_the_databases_syntax_error(sql: str, backend: str, message: str) -> None:
    """Model prose or a bare number is refused in the database's words, not as a forbidden statement
    kind: SmolLM2 answers "statements starting with EXPLAIN, ..." with the schema's CREATE TABLE."""
    with pytest.raises(RefusedStatement) as refused:
        check_query(sql, backend)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_only_an_adjacent_u_ampersand_quote_is_a_unicode_identifier() -> None:
    assert check_query('SELECT u & "x" FROM t', "postgresql") == 'SELECT u & "x" FROM t'  # a bitwise AND


def test_function_names_are_only_checked_on_postgres() -> None:
    # SQLite's authorizer holds functions to an allow-list; a table called like a PostgreSQL function is fine.
    assert check_query("SELECT * FROM pg_sleep", "postgresql") == "SELECT * FROM pg_sleep"
    assert check_query("SELECT pg_sleep(1)", "sqlite") == "SELECT pg_sleep(1)"
