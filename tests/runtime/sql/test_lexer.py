"""The lexer reads text as each server does: literals, comments and dialect differences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sql.lexer import LexError, code_tokens, tokenize


def kinds(sql: str, dialect: str) -> list[tuple[str, str]]:
    return [(t.kind, t.text) for t in code_tokens(tokenize(sql, dialect))]  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="'\"`[]$;-/*\\\n\r Eabc1()", max_size=40))
def test_tokens_cover_the_input_exactly_or_it_is_refused(sql: str) -> None:
    for dialect in ("sqlite", "postgresql", "portable"):
        try:
            tokens = tokenize(sql, dialect)  # type: ignore[arg-type]
        except LexError:
            continue
        assert "".join(t.text for t in tokens) == sql
        assert all(sql.startswith(t.text, t.start) for t in tokens)


def test_strings_identifiers_and_comments_hide_semicolons() -> None:
    sql = "SELECT 'a;''b', \"c;\"\"d\" -- e;\n FROM t"
    assert [t for t in kinds(sql, "sqlite") if t[1] == ";"] == []
    assert kinds(sql, "postgresql")[1] == ("string", "'a;''b'")


def test_escape_strings_dollar_quotes_and_nested_comments_on_postgres() -> None:
    assert kinds("SELECT E'\\''; x", "postgresql")[1] == ("string", "E'\\''")
    assert kinds("SELECT e'\\\\'", "postgresql")[1] == ("string", "e'\\\\'")
    assert kinds("SELECT ne'x'", "postgresql")[1:] == [("word", "ne"), ("string", "'x'")]  # only a bare E prefixes
    assert kinds("SELECT $t$ ; $$ $t$", "postgresql")[1] == ("string", "$t$ ; $$ $t$")
    assert kinds("SELECT $1, a$b", "postgresql")[1:] == [("param", "$1"), ("op", ","), ("word", "a$b")]
    assert kinds("/* /* */ ; */ SELECT", "postgresql") == [("word", "SELECT")]
    assert kinds("SELECT 1 --\r; x", "postgresql")[2] == ("op", ";")  # \r ends a comment here


def test_sqlite_reads_the_same_text_differently() -> None:
    trick = "SELECT E'\\'; DELETE FROM t; --'"  # one string on PostgreSQL, two statements on SQLite
    assert kinds(trick, "sqlite")[1:4] == [("word", "E"), ("string", "'\\'"), ("op", ";")]
    assert ("op", ";") not in kinds(trick, "postgresql")
    assert ("op", ";") in kinds("/* /* */ ; */ SELECT", "sqlite")  # comments do not nest
    assert kinds("SELECT [a;b], `c;d`", "sqlite")[1] == ("quoted", "[a;b]")
    assert kinds("SELECT $$", "sqlite")[1] == ("param", "$$")
    assert ("op", ";") not in kinds("SELECT 1 --\r; x", "sqlite")  # the comment runs to \n


@pytest.mark.parametrize("sql", ["SELECT 'x", 'SELECT "x', "SELECT 1 /* x", "SELECT $$x", "SELECT E'\\'"])
def test_unterminated_text_is_refused(sql: str) -> None:
    with pytest.raises(LexError, match="unterminated"):
        tokenize(sql, "postgresql")


@pytest.mark.parametrize("sql", ["SELECT E'x'", "SELECT $$x$$", "SELECT /* */ 1", "SELECT [x]", "SELECT `x`",
                                 "SELECT 1 -- a\rb\n"])
def test_portable_refuses_what_the_dialects_read_differently(sql: str) -> None:
    with pytest.raises(LexError):
        tokenize(sql, "portable")
