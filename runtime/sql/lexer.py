"""A SQL lexer that reads text the way SQLite's and PostgreSQL's own lexers do.

It is what the executors' statement checks (:mod:`runtime.sql.policy`) and the
cache key (:func:`runtime.cache.normalise_sql`) stand on, so it errs towards
refusing: anything it cannot read exactly as the server would raises
:class:`LexError` instead of guessing.

Contract of :func:`tokenize`: the tokens cover the input exactly, in order
(``"".join(t.text for t in tokens) == sql``), trivia (whitespace, comments)
included. Rules per dialect:

* both: ``'...'`` strings and ``"..."`` identifiers with doubled-quote escapes;
  ``--`` line comments; ``/* */`` block comments; whitespace is
  ``[ \\t\\n\\r\\f]`` (other characters, ``\\v`` and non-ASCII spaces included,
  are code, as the servers treat them).
* ``postgresql`` (``standard_conforming_strings=on``, which the executor
  forces): ``E'...'`` strings with backslash escapes, ``$tag$...$tag$`` dollar
  quotes, ``$1`` parameters, nested block comments, ``$`` inside identifiers,
  line comments ending at ``\\n`` or ``\\r``. ``U&'...'``, ``B'...'``,
  ``X'...'`` and ``N'...'`` are a word followed by an ordinary string, which
  spans the same text.
* ``sqlite``: ``[...]`` and backtick identifiers, ``$name``/``:name``/``@name``
  parameters, block comments that do not nest, line comments ending at ``\\n``.
* ``portable``: only what both servers read identically; ``E'``, ``$``, ``[``,
  backticks, ``/*`` and a ``\\r`` inside a line comment raise :class:`LexError`.

Unterminated strings, identifiers, dollar quotes and block comments raise
:class:`LexError` (SQLite would accept an unterminated block comment; refusing
it costs nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql", "portable"]
TokenKind = Literal["space", "comment", "word", "quoted", "string", "number", "param", "op"]
TRIVIA: frozenset[TokenKind] = frozenset({"space", "comment"})

SQL_WHITESPACE = " \t\n\r\f"
"""What both servers skip between tokens (not ``\\v``, not non-ASCII spaces)."""
_DIGITS = "0123456789"
_WORD_START = re.compile(r"[A-Za-z_\u0080-\U0010ffff]")
_WORD_REST = re.compile(r"[A-Za-z0-9_$\u0080-\U0010ffff]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_PG_PARAM = re.compile(r"\$[0-9]+")
_SQLITE_PARAM = re.compile(r"[$:@][A-Za-z0-9_$\u0080-\U0010ffff]+|\?[0-9]*")


class LexError(ValueError):
    """Text the lexer cannot read exactly as the server would (unterminated, or ambiguous across dialects)."""


@dataclass(frozen=True, slots=True)
class Token:
    """One lexeme: its kind, its exact text and where it starts in the input."""

    kind: TokenKind
    text: str
    start: int

    @property
    def upper(self) -> str:
        return self.text.upper()


def tokenize(sql: str, dialect: Dialect) -> list[Token]:
    """All tokens of ``sql`` under ``dialect``'s rules (see the module docstring)."""
    return _Lexer(sql, dialect).run()


def code_tokens(tokens: list[Token]) -> list[Token]:
    """``tokens`` without whitespace and comments."""
    return [t for t in tokens if t.kind not in TRIVIA]


class _Lexer:
    def __init__(self, sql: str, dialect: Dialect) -> None:
        self.sql = sql
        self.dialect = dialect
        self.pos = 0
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
        sql = self.sql
        while self.pos < len(sql):
            ch = sql[self.pos]
            if ch in SQL_WHITESPACE:
                self._emit("space", self._span_while(SQL_WHITESPACE))
            elif sql.startswith("--", self.pos):
                self._line_comment()
            elif sql.startswith("/*", self.pos):
                self._block_comment()
            elif ch == "'":
                self._quoted("string", "'")
            elif ch == '"':
                self._quoted("quoted", '"')
            elif ch == "[" and self.dialect != "postgresql":
                self._ambiguous_in_portable("[")
                self._until("quoted", "]")
            elif ch == "`" and self.dialect != "postgresql":
                self._ambiguous_in_portable("`")
                self._quoted("quoted", "`")
            elif ch == "$":
                self._dollar()
            elif ch in ":@?" and self.dialect == "sqlite" and (m := _SQLITE_PARAM.match(sql, self.pos)):
                self._emit("param", m.end())
            elif ch in _DIGITS:
                self._emit("number", _NUMBER.match(sql, self.pos).end())  # type: ignore[union-attr]
            elif _WORD_START.match(ch):
                self._word()
            else:
                self._emit("op", self.pos + 1)
        return self.tokens

    # ---------------------------------------------------------------- pieces
    def _emit(self, kind: TokenKind, end: int) -> None:
        self.tokens.append(Token(kind, self.sql[self.pos:end], self.pos))
        self.pos = end

    def _span_while(self, chars: str) -> int:
        end = self.pos
        while end < len(self.sql) and self.sql[end] in chars:
            end += 1
        return end

    def _fail(self, what: str) -> LexError:
        line = self.sql.count("\n", 0, self.pos) + 1
        return LexError(f"{what} (line {line})")

    def _ambiguous_in_portable(self, what: str) -> None:
        if self.dialect == "portable":
            raise self._fail(f"{what!r} is read differently by SQLite and PostgreSQL")

    def _line_comment(self) -> None:
        stops = "\n\r" if self.dialect == "postgresql" else "\n"
        end = self.pos
        while end < len(self.sql) and self.sql[end] not in stops:
            end += 1
        if self.dialect == "portable" and "\r" in self.sql[self.pos:end]:
            raise self._fail("a '\\r' ends a line comment for PostgreSQL but not for SQLite")
        self._emit("comment", end)

    def _block_comment(self) -> None:
        self._ambiguous_in_portable("/*")  # PostgreSQL nests block comments, SQLite does not
        sql, depth, i = self.sql, 1, self.pos + 2
        nests = self.dialect == "postgresql"
        while i < len(sql):
            if sql.startswith("*/", i):
                depth -= 1
                i += 2
                if depth == 0:
                    self._emit("comment", i)
                    return
            elif nests and sql.startswith("/*", i):
                depth += 1
                i += 2
            else:
                i += 1
        raise self._fail("unterminated /* comment")

    def _quoted(self, kind: TokenKind, quote: str, *, backslash: bool = False) -> None:
        """From the opening quote at ``self.pos`` (or a prefix before it) to the closing one."""
        sql = self.sql
        i = sql.index(quote, self.pos) + 1
        while i < len(sql):
            ch = sql[i]
            if backslash and ch == "\\":
                i += 2
            elif ch == quote:
                if i + 1 < len(sql) and sql[i + 1] == quote:  # doubled quote: an escaped quote
                    i += 2
                else:
                    self._emit(kind, i + 1)
                    return
            else:
                i += 1
        raise self._fail(f"unterminated {'string' if kind == 'string' else 'quoted identifier'} ({quote}...)")

    def _until(self, kind: TokenKind, close: str) -> None:
        end = self.sql.find(close, self.pos + 1)
        if end < 0:
            raise self._fail(f"unterminated {self.sql[self.pos]}...{close}")
        self._emit(kind, end + 1)

    def _dollar(self) -> None:
        sql, pos = self.sql, self.pos
        self._ambiguous_in_portable("$")
        if self.dialect == "sqlite":
            m = _SQLITE_PARAM.match(sql, pos)
            self._emit("param", m.end()) if m else self._emit("op", pos + 1)
            return
        if m := _PG_PARAM.match(sql, pos):
            self._emit("param", m.end())
        elif m := _DOLLAR_TAG.match(sql, pos):
            close = sql.find(m.group(0), m.end())
            if close < 0:
                raise self._fail(f"unterminated dollar quote {m.group(0)}")
            self._emit("string", close + len(m.group(0)))
        else:
            self._emit("op", pos + 1)

    def _word(self) -> None:
        sql, pos = self.sql, self.pos
        end = _WORD_REST.match(sql, pos + 1).end()  # type: ignore[union-attr]
        if end < len(sql) and sql[end] == "'" and sql[pos:end] in ("e", "E"):
            self._ambiguous_in_portable("E'")
            if self.dialect == "postgresql":  # E'...': backslash escapes, so E'\'' is one string
                self._quoted("string", "'", backslash=True)
                return
        self._emit("word", end)
