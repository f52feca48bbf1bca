"""Syntax-error recovery: edit the text so the rest of the file parses, and report each error once.

Every edit keeps every other character's line and column, so the AST of the edited
text has the source's spans and the passes can go on to check what survived:

* a block never closed gets its ``}`` where the indentation says it ends (or at the
  end of the file), which is also what the hint tells the user to write;
* a number written apart from its unit (``5 GiB``) is joined (``5GiB ``);
* any other error blanks the contents of the innermost block around it, leaving
  ``llm a { }``: the block is *recovered*, and its name still exists for the passes.
  An error outside every block, or in a block with nothing left to blank, stops
  recovery: the file is then too broken to check further.

Each step removes a bracket, a blank inside a number or a whole block's contents; at
most :data:`MAX_SYNTAX_ERRORS` are reported and at most :data:`PARSE_BUDGET` characters
parsed, so recovery always ends, and soon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lark.exceptions import UnexpectedInput

from cortexlang.diagnostics import DiagnosticCollector
from cortexlang.syntax import errors
from cortexlang.syntax.scan import Scan, scan

MAX_SYNTAX_ERRORS = 20
# Characters the parser may read in all for one file: each recovery step parses the whole
# text again, so a large file stops sooner (a 10 KB file gets every step, a 100 KB one two).
PARSE_BUDGET = 200_000
_NOT_NEWLINE = re.compile(r"[^\n]")


@dataclass
class Recovery:
    """The text being parsed, as edited so far."""

    text: str
    stubs: set[int] = field(default_factory=set)  # offsets of `{` whose block contents were blanked
    errors: int = 0  # syntax errors reported
    complete: bool = True  # False once something was dropped that leaves nothing worth checking
    # The blocks of the text. Blanking never moves a brace, and a blanked one cannot enclose a
    # later error, so one scan serves every step after the braces are balanced.
    blocks: Scan | None = None

    def blank(self, start: int, end: int) -> None:
        """Spaces over ``[start, end)``, line breaks kept: every other position stays where it was."""
        self.text = self.text[:start] + _NOT_NEWLINE.sub(" ", self.text[start:end]) + self.text[end:]


def close_unclosed_blocks(state: Recovery, diags: DiagnosticCollector) -> bool:
    """Report blocks nested too deep (False: do not parse) and close blocks left open (CX002).

    Three scans whatever the number of open blocks: one to count them, one to find where
    the indentation ends each (:func:`~cortexlang.syntax.scan.scan`'s ``close_early``; the
    rest close at the end of the file, innermost first), and one of the closed text.
    """
    found = scan(state.text)
    if found.too_deep_at is not None:
        errors.report_too_deep(state.text, found.too_deep_at, diags)
        state.errors += 1
        return False
    if found.unclosed:
        budget = MAX_SYNTAX_ERRORS - state.errors
        ends = scan(state.text, close_early=min(len(found.unclosed), budget))
        insert_at = []
        for end in ends.early_ends:
            errors.report_unclosed(state.text, end.brace, end, diags)
            insert_at.append(end.insert_at)
        remaining = max(budget - len(ends.early_ends), 0)
        for brace in ends.unclosed[::-1][:remaining]:  # innermost first, each closed at the end
            errors.report_unclosed(state.text, brace, None, diags)
            insert_at.append(len(state.text))
        for at in sorted(insert_at, reverse=True):
            state.text = state.text[:at] + "}" + state.text[at:]
        state.errors += len(insert_at)
        found = scan(state.text)
    state.blocks = found
    return True


def recover_from(exc: UnexpectedInput, state: Recovery, diags: DiagnosticCollector) -> bool:
    """Report the parse error ``exc`` and edit the text past it; False when parsing should stop."""
    state.errors += 1
    spaced = errors.spaced_unit(state.text, exc)
    if spaced is not None:
        start, end, fixed = spaced
        errors.report_spaced_unit(state.text, start, end, fixed, diags)
        state.text = state.text[:start] + fixed.ljust(end - start) + state.text[end:]
        return state.errors < MAX_SYNTAX_ERRORS
    errors.report(exc, state.text, diags)
    pos = errors.error_offset(exc)
    brace = state.blocks.innermost_around(pos) if pos is not None and state.blocks else None
    if state.errors >= MAX_SYNTAX_ERRORS or brace is None or brace.close_at is None:
        state.complete = False
        return False
    if state.text[brace.open_at + 1:brace.close_at].strip():
        state.blank(brace.open_at + 1, brace.close_at)
        state.stubs.add(brace.open_at)
        return True
    # Nothing inside to drop: the header itself is wrong. Drop the block, header and all.
    line_start = state.text.rfind("\n", 0, brace.open_at) + 1
    state.blank(line_start, brace.close_at + 1)
    state.complete = False
    return True
