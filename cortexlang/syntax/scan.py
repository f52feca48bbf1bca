"""A lexical pre-scan of Cortex source: braces, nesting and indentation, strings and comments skipped.

The parser's error recovery reasons about blocks in text that does not parse, so
this scan follows the lexer's rules (grammar/cortex.lark) for what is *not* code:

* ``#`` to the end of the line is a comment;
* ``\"\"\"`` starts a long string when another ``\"\"\"`` follows anywhere, and runs to it;
* otherwise ``"`` starts a one-line string that ends at the next unescaped ``"`` on
  its line. The lexer stops at a ``"`` left open; the scan then goes on right after
  it, so a brace written after the stray quote still counts.

One pass in O(n) (the regex engine skips everything else); offsets are into the
scanned text.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

MAX_NESTING = 32  # `{`, `[` and `(` together; real workflows nest 3-5 deep

# One match per thing the scan looks at; the order of the alternatives is the lexer's.
_TOKEN = re.compile(r'"""[\s\S]*?"""|"(?:\\.|[^"\\\n])*"|"|#[^\n]*|\n[ \t]*|[{}\[\]()]')


@dataclass(slots=True)
class Brace:
    """A ``{``: where it opened, the block it is in, and its ``}`` once matched."""

    open_at: int
    line: int  # 1-based line of the `{`
    indent: int  # indentation of that line
    parent: int | None  # index in Scan.braces of the enclosing `{`
    close_at: int | None = None


@dataclass(frozen=True, slots=True)
class EarlyEnd:
    """The indentation says ``brace`` ended before line ``before_line``; its ``}`` belongs at
    ``insert_at``, right after the last code on line ``after_line``."""

    brace: Brace
    before_line: int
    after_line: int
    insert_at: int


@dataclass
class Scan:
    braces: list[Brace] = field(default_factory=list)  # every `{`, in order of opening
    unclosed: list[Brace] = field(default_factory=list)  # still open at the end, outermost first
    early_ends: list[EarlyEnd] = field(default_factory=list)  # see scan(close_early=...)
    too_deep_at: int | None = None  # the first bracket nested deeper than MAX_NESTING (the scan stops there)

    def innermost_around(self, pos: int) -> Brace | None:
        """The innermost matched block whose braces enclose offset ``pos`` (its ``}`` counts as inside).

        From the last ``{`` before ``pos`` up its chain of enclosing blocks: at most the nesting depth.
        """
        i = bisect.bisect_left(self.braces, pos, key=lambda b: b.open_at) - 1
        while i is not None and i >= 0:
            b = self.braces[i]
            if b.close_at is not None and pos <= b.close_at:
                return b
            i = b.parent
        return None


def scan(text: str, *, close_early: int = 0) -> Scan:
    """Scan ``text`` once; see the module docstring for what counts as code.

    With ``close_early`` = k, the first k times a line's indentation shows that the
    innermost open block has ended (the line is indented no deeper than the line that
    opened it, or is a ``}`` indented less), the block is taken as closed right after
    the last code before that line, and recorded in ``early_ends``: as if its missing
    ``}`` had been written there.
    """
    out = Scan()
    stack: list[int] = []  # indices into out.braces
    depth, line = 0, 1
    indent = len(text) - len(text.lstrip(" \t"))  # of the current line
    last_code, last_code_line = -1, 0  # offset after the last code character, and its line
    code_from = 0  # code between matches is whatever is not blank
    for m in _TOKEN.finditer(text):
        start, tok = m.start(), m.group()
        if start > code_from and text[code_from:start].strip():
            last_code, last_code_line = code_from + len(text[code_from:start].rstrip()), line
        code_from = m.end()
        first = tok[0]
        if first == "\n":
            line, indent = line + 1, len(tok) - 1
            nxt = text[m.end():m.end() + 1]
            if nxt and nxt not in "\r\n#" and stack:
                close_early = _check_indentation(out, stack, nxt, indent, line,
                                                 last_code, last_code_line, close_early)
            continue
        if first == "#":
            continue
        if first == '"':
            line += tok.count("\n")
            last_code, last_code_line = m.end(), line
            continue
        last_code, last_code_line = m.end(), line
        if first in "{[(":
            depth += 1
            if depth > MAX_NESTING:
                out.too_deep_at = start
                break  # nothing more to learn: the file is refused
            if first == "{":
                out.braces.append(Brace(start, line, indent, stack[-1] if stack else None))
                stack.append(len(out.braces) - 1)
        else:
            depth = max(depth - 1, 0)
            if first == "}" and stack:
                out.braces[stack.pop()].close_at = start
    out.unclosed = [out.braces[i] for i in stack]
    return out


def _check_indentation(out: Scan, stack: list[int], first: str, indent: int, line: int,
                       last_code: int, last_code_line: int, close_early: int) -> int:
    """At the first code character of a line: close blocks its indentation ends (see :func:`scan`).

    Returns how many early closes are still allowed.
    """
    while stack and close_early > 0:
        top = out.braces[stack[-1]]
        ended = indent < top.indent if first == "}" else indent <= top.indent
        if not ended or top.line >= line:
            break
        stack.pop()
        out.early_ends.append(EarlyEnd(top, line, last_code_line, last_code))
        close_early -= 1
    return close_early
