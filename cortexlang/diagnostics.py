"""Diagnostics: one collector for every pass, stable error codes, compiler-style rendering.

Every problem found in user input becomes a :class:`Diagnostic` with a stable
code from :data:`CODES`. Rendering follows the familiar compiler layout::

    examples/errors/unknown_stage.cortex:12:5: error[CX301]: unknown node `fixx` in flow
       12 |     fixx -> execute
          |     ^^^^
       = help: did you mean `fix`?

Codes are grouped by the pass that emits them: CX0xx syntax, CX1xx structure,
CX2xx values and units, CX3xx names, CX4xx flow, CX5xx SLO, CX6xx templates,
CX9xx internal. A code, once published, keeps its meaning.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Span:
    """A source range; lines and columns are 1-based, ``end_col`` is exclusive."""

    line: int
    col: int
    end_line: int
    end_col: int

    @classmethod
    def point(cls, line: int, col: int) -> "Span":
        return cls(line, col, line, col + 1)


CODES: dict[str, str] = {
    # syntax
    "CX001": "unexpected token",
    "CX002": "unclosed block or unexpected end of file",
    "CX003": "invalid character",
    "CX004": "unterminated string",
    "CX005": "nested too deeply",
    # structure
    "CX101": "unknown block type",
    "CX102": "unknown attribute",
    "CX103": "missing required attribute",
    "CX104": "duplicate attribute",
    "CX105": "duplicate declaration",
    "CX106": "block needs a label",
    "CX107": "block takes no label",
    "CX108": "misplaced block",
    "CX109": "more than one flow block",
    "CX110": "workflow has no flow",
    # values and units
    "CX201": "wrong value type",
    "CX202": "unknown or wrong unit",
    "CX203": "value out of range",
    "CX204": "invalid choice",
    "CX205": "cannot read file",
    "CX206": "unknown function",
    "CX207": "inconsistent model facts",
    "CX208": "file outside the workflow's folder",
    "CX210": "stages sharing a pool prefer different models",
    "CX211": "invalid JSON schema",
    "CX212": "invalid regular expression",
    "CX213": "not exactly one output constraint",
    "CX214": "empty grammar",
    "CX215": "invalid autoscale limits",
    # names
    "CX301": "unknown name",
    "CX302": "wrong kind of name",
    "CX303": "stage used twice",
    # flow
    "CX401": "node has no way out",
    "CX402": "conflicting edges",
    "CX403": "branch does not cover every outcome",
    "CX404": "unknown outcome",
    "CX405": "probabilities do not add up",
    "CX406": "cycle without a loop",
    "CX407": "unreachable node",
    "CX408": "loop declared inconsistently",
    "CX409": "branch on a field of a stage without fields",
    "CX410": "unused stage",
    "CX411": "no probability given",
    # SLO
    "CX501": "SLO cannot be met even in principle",
    "CX502": "stage budgets exceed the SLO",
    # templates
    "CX601": "template syntax error",
    "CX602": "template uses an unknown variable",
    # internal
    "CX901": "internal compiler error",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    path: str
    span: Span | None = None
    hint: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple:
        s = self.span
        return (self.path, s.line if s else 0, s.col if s else 0, self.code, self.message)


@dataclass
class DiagnosticCollector:
    """Collects diagnostics for one source file; passes add to it, nobody raises."""

    path: str
    source: str = ""
    items: list[Diagnostic] = field(default_factory=list)
    _seen: set[Diagnostic] = field(default_factory=set, repr=False)

    def error(self, code: str, message: str, span: Span | None = None, *,
              hint: str | None = None, notes: Iterable[str] = ()) -> None:
        self._add(code, Severity.ERROR, message, span, hint, notes)

    def warning(self, code: str, message: str, span: Span | None = None, *,
                hint: str | None = None, notes: Iterable[str] = ()) -> None:
        self._add(code, Severity.WARNING, message, span, hint, notes)

    def _add(self, code: str, severity: Severity, message: str, span: Span | None,
             hint: str | None, notes: Iterable[str]) -> None:
        assert code in CODES, f"unregistered diagnostic code {code}"
        diag = Diagnostic(code, severity, message, self.path, span, hint, tuple(notes))
        if diag not in self._seen:  # a pass may reach the same fact twice
            self._seen.add(diag)
            self.items.append(diag)

    def absorb(self, other: "DiagnosticCollector") -> None:
        """Add what another collector (for the same file) gathered."""
        for d in other.items:
            self._add(d.code, d.severity, d.message, d.span, d.hint, d.notes)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)

    @property
    def errors(self) -> list[Diagnostic]:
        return sorted((d for d in self.items if d.is_error), key=Diagnostic.sort_key)

    @property
    def warnings(self) -> list[Diagnostic]:
        return sorted((d for d in self.items if not d.is_error), key=Diagnostic.sort_key)

    def sorted(self) -> list[Diagnostic]:
        """Errors first, then warnings, each in source order."""
        return self.errors + self.warnings


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    match = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


MAX_SHOWN = 50  # diagnostics printed per file, errors first; the summary counts them all
EXCERPT_WIDTH = 120  # characters of a source line shown around the caret
MAX_TEXT = 400  # characters of a message or hint


class SourceLines:
    """A source split once into lines as the lexer counts them (at ``\\n`` only): O(1) per lookup."""

    def __init__(self, source: str) -> None:
        self._lines = source.split("\n") if source else []

    def get(self, line: int) -> str | None:
        """Line ``line`` (1-based), or None when out of range."""
        return self._lines[line - 1] if 1 <= line <= len(self._lines) else None


def render(diag: Diagnostic, source: str | SourceLines | None) -> str:
    """``path:line:col: severity[CODE]: message``, the source line with a caret, then hints.

    The excerpt shows at most :data:`EXCERPT_WIDTH` characters of the line around the
    caret (``…`` marks a cut) with control characters blanked, so no input makes the
    output much larger than the input's number of diagnostics.
    """
    span = diag.span
    where = f"{diag.path}:{span.line}:{span.col}" if span else diag.path
    out = [f"{where}: {diag.severity.value}[{diag.code}]: {_clip(diag.message)}"]
    lines = SourceLines(source) if isinstance(source, str) else source
    text = lines.get(span.line) if span and lines is not None else None
    if span and text is not None:
        end = span.end_col if span.end_line == span.line else len(text) + 1
        shown, caret, width = _excerpt(text, span.col, end)
        gutter = str(span.line)
        pad = " " * len(gutter)
        out.append(f" {gutter} | {shown}")
        out.append(f" {pad} | {' ' * caret}{'^' * width}")
        for note in diag.notes:
            out.append(f" {pad} = note: {_clip(note)}")
        if diag.hint:
            out.append(f" {pad} = help: {_clip(diag.hint)}")
    else:
        out.extend(f"  = note: {_clip(n)}" for n in diag.notes)
        if diag.hint:
            out.append(f"  = help: {_clip(diag.hint)}")
    return "\n".join(out)


def _excerpt(line: str, col: int, end: int) -> tuple[str, int, int]:
    """(text shown, caret offset in it, caret width) for columns [col, end) of ``line``."""
    col = min(max(col, 1), len(line) + 1)
    width = max(1, min(end, len(line) + 1) - col)
    start = 0
    if len(line) > EXCERPT_WIDTH:
        start = max(0, min(col - 1 - EXCERPT_WIDTH // 3, len(line) - EXCERPT_WIDTH))
        width = min(width, EXCERPT_WIDTH - (col - 1 - start))
    head = "…" if start > 0 else ""
    tail = "…" if start + EXCERPT_WIDTH < len(line) else ""
    shown = "".join(c if c.isprintable() else " " for c in line[start:start + EXCERPT_WIDTH])  # a tab: one column
    return head + shown + tail, col - 1 - start + len(head), width


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def render_all(diags: Iterable[Diagnostic], sources: dict[str, str] | None = None, *, limit: int = MAX_SHOWN) -> str:
    """Render diagnostics (errors first) followed by a one-line summary.

    Like a C compiler's error limit, at most ``limit`` are printed; the summary still
    counts every one. Each source is split into lines once.
    """
    diags = list(diags)
    if not diags:
        return ""
    lines = {path: SourceLines(text) for path, text in (sources or {}).items()}
    blocks = [render(d, lines.get(d.path)) for d in diags[:limit]]
    if len(diags) > limit:
        blocks.append(f"... {len(diags) - limit} more not shown (the first {limit} are above)")
    n_err = sum(d.is_error for d in diags)
    n_warn = len(diags) - n_err
    parts = []
    if n_err:
        parts.append(f"{n_err} error{'s' if n_err != 1 else ''}")
    if n_warn:
        parts.append(f"{n_warn} warning{'s' if n_warn != 1 else ''}")
    blocks.append(", ".join(parts) + " found")
    return "\n\n".join(blocks)
