"""A lexical pre-scan of Cortex source: brackets, line indentation and nesting, strings and comments skipped.

The parser's error recovery reasons about blocks in text that does not parse, so
this scan follows the lexer's rules (grammar/cortex.lark) for what is *not* code:

* ``#`` to the end of the line is a comment;
* ``\"\"\"`` starts a long string when another ``\"\"\"`` follows anywhere, and runs to it;
* otherwise ``"`` starts a one-line string that ends at the next unescaped ``"`` on
  its line. The lexer stops at a ``"`` left open; the scan then goes on right after
  it, so a brace written after the stray quote still counts.

One pass, O(n) time; the result holds offsets into the scanned text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_NESTING = 32  # `{`, `[` and `(` together; real workflows nest 3-5 deep

_OPEN, _CLOSE = "{[(", "}])"


@dataclass(frozen=True, slots=True)
class Brace:
    """A ``{`` with where it was opened and, once matched, its ``}``."""

    open_at: int
    line: int  # 1-based line of the `{`
    indent: int  # indentation of that line
    close_at: int | None = None


@dataclass(frozen=True, slots=True)
class Misplaced:
    """Indentation says ``brace``'s ``}`` is missing before line ``before_line``."""

    brace: Brace
    before_line: int


@dataclass
class Scan:
    braces: list[Brace] = field(default_factory=list)  # every `{`, in order of opening
    unclosed: list[Brace] = field(default_factory=list)  # still open at the end, outermost first
    first_misplaced: Misplaced | None = None  # the first block whose indentation ended before its `}`
    too_deep_at: int | None = None  # offset of the first bracket nested deeper than MAX_NESTING
    line_code_end: dict[int, int] = field(default_factory=dict)  # line -> offset after its last code character

    def innermost_around(self, pos: int) -> Brace | None:
        """The innermost matched block whose braces enclose offset ``pos`` (its ``}`` counts as inside)."""
        best = None
        for b in self.braces:
            if b.close_at is not None and b.open_at < pos <= b.close_at and (best is None or b.open_at > best.open_at):
                best = b
        return best


_EVENT = re.compile(r'[{}\[\]()"#\n]')  # everything else is skipped in one regex step
_BLANKS = re.compile(r"[ \t]*")


def scan(text: str) -> Scan:
    """Scan ``text`` once; see the module docstring for what counts as code."""
    out = Scan()
    stack: list[Brace] = []
    depth, line, n = 0, 1, len(text)
    i = _line_start(text, 0, 1, out, stack)
    last_code = -1  # offset after the last code character seen
    while True:
        m = _EVENT.search(text, i)
        pos = m.start() if m else n
        run = text[i:pos].rstrip()
        if run.strip():
            last_code = i + len(run)
        if m is None:
            break
        ch = text[pos]
        if ch == "\n":
            if last_code > text.rfind("\n", 0, pos):
                out.line_code_end[line] = last_code
            line += 1
            i = _line_start(text, pos + 1, line, out, stack)
            continue
        if ch == "#":
            nl = text.find("\n", pos)
            i = n if nl < 0 else nl
            continue
        if ch == '"':
            i = last_code = _string_end(text, pos)
            line += text.count("\n", pos, i)
            continue
        last_code = i = pos + 1
        if ch in _OPEN:
            depth += 1
            if depth > MAX_NESTING and out.too_deep_at is None:
                out.too_deep_at = pos
            if ch == "{":
                stack.append(Brace(pos, line, _indent_of(text, pos)))
        else:
            depth = max(depth - 1, 0)
            if ch == "}" and stack:
                opened = stack.pop()
                out.braces.append(Brace(opened.open_at, opened.line, opened.indent, pos))
    if last_code > text.rfind("\n"):
        out.line_code_end[line] = last_code
    out.braces.extend(stack)
    out.braces.sort(key=lambda b: b.open_at)
    out.unclosed = stack
    return out


def _line_start(text: str, i: int, line: int, out: Scan, stack: list[Brace]) -> int:
    """At the start of a line: check its indentation if it holds code; return where its text begins."""
    j = _BLANKS.match(text, i).end()
    if j < len(text) and text[j] not in "\n#":
        _check_indentation(out, stack, text[j], j - i, line)
    return j


def _string_end(text: str, i: int) -> int:
    """Offset just after the string starting at ``text[i] == '"'`` (see the module docstring)."""
    if text.startswith('"""', i):
        close = text.find('"""', i + 3)
        if close >= 0:
            return close + 3
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if c == '"':
            return j + 1
        if c == "\n" or (c == "\\" and (j + 1 == n or text[j + 1] == "\n")):
            break
        j += 2 if c == "\\" else 1
    return i + 1  # left open: only the quote itself


def _indent_of(text: str, i: int) -> int:
    start = text.rfind("\n", 0, i) + 1
    k = start
    while k < i and text[k] in " \t":
        k += 1
    return k - start


def _check_indentation(out: Scan, stack: list[Brace], first: str, indent: int, line: int) -> None:
    """At the first code character of a line: does the indentation end an open block early?

    A line indented no deeper than the line that opened a still-open block (and not
    that block's own ``}``) means the block's ``}`` was left out before it; so does a
    ``}`` indented less than the line that opened the block it closes.
    """
    if out.first_misplaced is not None or not stack:
        return
    top = stack[-1]  # the innermost block: when several lost their `}`, they are found inside out
    ended = indent < top.indent if first == "}" else indent <= top.indent
    if ended and top.line < line:
        out.first_misplaced = Misplaced(top, line)
