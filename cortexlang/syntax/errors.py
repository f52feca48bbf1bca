"""Syntax errors as diagnostics: Lark's exceptions, unclosed blocks and spaced units, in the user's words.

Every function here reports into a :class:`DiagnosticCollector` and never raises.
Offsets are into the text the parser saw, which keeps every line and column of
the user's source (see :mod:`cortexlang.syntax.parser`), so spans are the source's.
"""

from __future__ import annotations

import re
import unicodedata

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from cortexlang.diagnostics import DiagnosticCollector, Span
from cortexlang.syntax.scan import MAX_NESTING, Brace, EarlyEnd
from cortexlang.units import UNIT_WORDS

RESERVED = {"flow", "on", "loop", "max", "then", "within", "else", "done", "fail", "true", "false"}

# What each terminal looks like to a user, for "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name", "STRING": "a string", "LONG_STRING": "a string", "QUANTITY": "a number",
    "MONEY": "an amount like `$3.50/h`", "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`",
    "RSQB": "`]`", "LPAR": "`(`", "RPAR": "`)`", "COMMA": "`,`", "EQUAL": "`=`", "DOT": "`.`",
    "VBAR": "`|`", "AT": "`@`", "ARROW": "`->`", "DOTDOT": "`..`", "FLOW": "`flow`",
    "ON": "`on`", "ELSE": "`else`", "DONE": "`done`", "FAIL": "`fail`", "LOOP": "`loop`",
    "MAX": "`max`", "THEN": "`then`", "WITHIN": "`within`", "TRUE": "`true`", "FALSE": "`false`",
    "$END": "end of file",
}

# A number, blanks, then a unit: `5 GiB`, `10 s`, `99 %`, `5 /s`. The lexer reads a number and
# its unit as one token, so the blank splits them and the parse fails a token or two later.
_SPACED_UNIT = re.compile(r"(?<![\w.$])([0-9][0-9_]*(?:\.[0-9]+)?)([ \t]*)(%|/[ \t]*[A-Za-z]+|[A-Za-z]+\b)")
# Between the unit and where the parse failed: blanks and at most the name that followed.
_UNTIL_ERROR = re.compile(r"\s*(?:[A-Za-z_]\w*\s*)?")
_LOOKBACK = 200  # characters before the error searched for a spaced unit


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of ``offset`` in ``text``, as Lark counts them."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def error_offset(exc: UnexpectedInput) -> int | None:
    """Where in the text the parse failed; None at the end of the input."""
    if isinstance(exc, UnexpectedToken):
        return None if exc.token.type == "$END" else exc.token.start_pos
    if isinstance(exc, UnexpectedCharacters):
        return exc.pos_in_stream
    return None


def spaced_unit(text: str, exc: UnexpectedInput) -> tuple[int, int, str] | None:
    """(start, end, fixed) when the parse failed just after a number written apart from its unit."""
    pos = error_offset(exc)
    if pos is None:
        return None
    window_start = max(0, pos - _LOOKBACK)
    found = None
    for m in _SPACED_UNIT.finditer(text, window_start, min(len(text), pos + 40)):
        unit = re.sub(r"[ \t]", "", m.group(3))
        if "/" not in m.group(3) and not m.group(2):
            continue  # `5GiB` is one token: nothing split
        if m.start(3) > pos or not _UNTIL_ERROR.fullmatch(text, m.end(), max(pos, m.end())):
            continue
        if unit.lstrip("/") in UNIT_WORDS or unit == "%":
            found = (m.start(), m.end(), m.group(1) + unit)
    return found


def report_spaced_unit(text: str, start: int, end: int, fixed: str, diags: DiagnosticCollector) -> None:
    line, col = position(text, start)
    written = text[start:end]
    diags.error("CX001", f"`{written}`: a number and its unit are written together",
                Span(line, col, line, col + len(written)), hint=f"write `{fixed}`")


def report_unclosed(text: str, brace: Brace, early: EarlyEnd | None, diags: DiagnosticCollector) -> None:
    """CX002 at the ``{`` of a block that is never closed, with where its ``}`` belongs."""
    # the block's header: from the last brace or line break before its `{`
    header = text[max(text.rfind(c, 0, brace.open_at) for c in "{}\n") + 1:brace.open_at].strip()
    header = header if len(header) <= 40 else header[:37] + "..."
    what = f"`{header} {{`" if header else "this `{`"
    _, col = position(text, brace.open_at)
    if early is not None:
        hint = f"add `}}` after line {early.after_line}: line {early.before_line} is indented as if {what} had ended"
    else:
        hint = "add `}` at the end of the file"
    diags.error("CX002", f"unclosed `{{` opened here: {what} is never closed", Span.point(brace.line, col),
                hint=hint)


def report_too_deep(text: str, offset: int, diags: DiagnosticCollector) -> None:
    line, col = position(text, offset)
    diags.error("CX005", f"brackets and blocks nest more than {MAX_NESTING} deep", Span.point(line, col),
                hint="flatten the structure: real workflows nest a few levels")


def report(exc: UnexpectedInput, text: str, diags: DiagnosticCollector) -> None:
    """One diagnostic for a Lark parse error."""
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        end = len(text.rstrip())
        line, col = position(text, end)
        diags.error("CX002", "unexpected end of file; the last statement is incomplete", Span.point(line, col))
        return
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = set(exc.accepts or exc.expected)
        hint = None
        if str(tok) in RESERVED and "NAME" in expected:
            hint = f"`{tok}` is a reserved word; choose another name"
        elif tok.type == "NAME" and "EQUAL" in expected:
            hint = "attributes are written `name = value`"
        elif tok.type == "NAME" and "__ANON_0" in expected:
            hint = "flow statements are edges: `a -> b`"
        diags.error("CX001", f"unexpected {_token_text(tok)}; expected {_describe_expected(expected)}",
                    Span(tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + 1), hint=hint)
        return
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        span = Span.point(exc.line, exc.column)
        if char == '"':
            diags.error("CX004", "unterminated string", span,
                        hint='close it with `"` on the same line, or use `"""` for text over several lines')
        else:
            diags.error("CX003", f"invalid character {_show_char(char)}", span)
        return
    diags.error("CX001", str(exc).splitlines()[0][:200], None)  # pragma: no cover - other Lark errors


def _describe_expected(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(e, f"`{e.lower()}`") for e in expected})
    if len(names) > 6:
        names = names[:6] + ["…"]
    return ", ".join(names)


def _token_text(tok: Token) -> str:
    text = str(tok)
    return f"`{text if len(text) <= 30 else text[:27] + '...'}`"


def _show_char(char: str) -> str:
    """`x`, or the code point for characters a terminal would not show (controls, blanks, NUL)."""
    if char.isprintable() and not char.isspace():
        return f"`{char}`"
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name.lower()})" if name else "")
