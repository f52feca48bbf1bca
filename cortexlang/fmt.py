"""``cortexc fmt``: print a parsed module in the canonical layout, keeping every comment.

Layout rules:

* two-space indentation, one member per line, one blank line between top-level blocks;
* a blank line the author left between members is kept (runs collapse to one);
* ``=`` signs of consecutive attributes are aligned (like ``terraform fmt``);
* a block written on one line that holds only attributes stays on one line
  (``slo { latency = 8s  attainment = 99% }``), attributes two spaces apart;
* flows and ``on`` blocks are always one statement/case per line; the ``->`` of
  an ``on`` block's cases are aligned;
* values are printed as written (numbers, units and strings keep their spelling).

Comments: a comment alone on its line is printed before the member that follows
it, at that member's indentation; a comment after code stays at the end of that
line. Formatting is idempotent and preserves the IR (both are property-tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cortexlang.syntax import ast

INDENT = "  "


def format_expr(e: ast.Expr) -> str:
    if isinstance(e, (ast.Str, ast.Quantity, ast.Money)):
        return e.raw
    if isinstance(e, ast.Range):
        return f"{e.lo.raw}..{e.hi.raw}"
    if isinstance(e, ast.Ref):
        return e.dotted
    if isinstance(e, ast.Call):
        return f"{e.name}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, ast.ListExpr):
        return "[" + ", ".join(format_expr(i) for i in e.items) + "]"
    if isinstance(e, ast.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ast.Alternative):
        return format_expr(e.value) + (f" @ {e.quality.raw}" if e.quality else "")
    if isinstance(e, ast.Choice):
        return " | ".join(format_expr(o) for o in e.options)
    raise TypeError(f"unknown expression {type(e).__name__}")  # pragma: no cover


def _loop(clause: ast.LoopClause | None) -> str:
    if clause is None:
        return ""
    out = f" loop {clause.name}"
    if clause.max is not None:
        out += f" max {format_expr(clause.max)}"
    if clause.then is not None:
        out += f" then {clause.then.name}"
    if clause.within is not None:
        out += f" within {clause.within}"
    return out


def _label(lab: ast.CaseLabel) -> str:
    return f'"{lab.text}"' if lab.quoted else lab.text


@dataclass
class _Printer:
    module: ast.Module
    lines: list[str] = field(default_factory=list)
    _own_line: list[ast.Comment] = field(default_factory=list)
    _trailing: dict[int, list[ast.Comment]] = field(default_factory=dict)
    _last_src: int | None = None

    def __post_init__(self) -> None:
        src = self.module.source.splitlines()
        for c in self.module.comments:
            before = src[c.line - 1][: c.col - 1] if c.line <= len(src) else ""
            if before.strip():
                self._trailing.setdefault(c.line, []).append(c)
            else:
                self._own_line.append(c)
        self._own_line.sort(key=lambda c: (c.line, c.col))
        self._src = src

    # -- comments and blank lines
    def _gap(self, line: int) -> None:
        """Keep one blank line where the author left any between the last output and ``line``."""
        last = self._last_src
        if last is None or not self.lines or self.lines[-1] == "" or self.lines[-1].endswith("{"):
            return
        if any(not self._src[i - 1].strip() for i in range(last + 1, line) if 0 < i <= len(self._src)):
            self.lines.append("")

    def _flush_comments(self, before_line: int, depth: int) -> None:
        while self._own_line and self._own_line[0].line < before_line:
            c = self._own_line.pop(0)
            self._gap(c.line)
            self.lines.append(INDENT * depth + c.text)
            self._last_src = c.line

    def _trailing_for(self, first: int, last: int) -> str:
        """Comments that end the printed line: trailing ones, and any written inside the member."""
        found = [c for line in range(first, last + 1) for c in self._trailing.pop(line, [])]
        inside = [c for c in self._own_line if first < c.line <= last]
        for c in inside:
            self._own_line.remove(c)
        return "".join("  " + c.text for c in sorted(found + inside, key=lambda c: (c.line, c.col)))

    def _start(self, line: int, depth: int) -> None:
        """Before printing something that starts at source ``line``: its comments and blank lines."""
        self._flush_comments(line, depth)
        self._gap(line)

    def _emit(self, depth: int, text: str, first: int, last: int) -> None:
        self.lines.append(INDENT * depth + text + self._trailing_for(first, last))
        self._last_src = last

    # -- structure
    def module_text(self) -> str:
        for i, block in enumerate(self.module.blocks):
            if i:
                self.lines.append("")  # exactly one blank line between top-level blocks
            self._start(block.span.line, 0)
            self._block(block, 0)
        self._flush_comments(10**9, 0)
        return "\n".join(self.lines).rstrip("\n") + "\n" if self.lines else ""

    def _header(self, b: ast.Block) -> str:
        label = "" if b.label is None else (f' "{b.label}"' if b.label_quoted else f" {b.label}")
        return f"{b.type}{label}"

    def _one_line(self, b: ast.Block) -> bool:
        if b.span.line != b.span.end_line or not all(isinstance(m, ast.Attribute) for m in b.members):
            return False
        return len(b.members) <= 4

    def _block(self, b: ast.Block, depth: int) -> None:
        if self._one_line(b):
            inner = "  ".join(f"{a.name} = {format_expr(a.value)}" for a in b.members)
            self._emit(depth, f"{self._header(b)} {{ {inner} }}" if inner else f"{self._header(b)} {{}}",
                       b.span.line, b.span.end_line)
            return
        self._emit(depth, f"{self._header(b)} {{", b.span.line, b.span.line)
        self._members(list(b.members), depth + 1)
        self._flush_comments(b.span.end_line, depth + 1)
        self._emit(depth, "}", b.span.end_line, b.span.end_line)

    def _members(self, members: list[ast.Member], depth: int) -> None:
        width = self._alignment(members)
        for i, m in enumerate(members):
            self._start(m.span.line, depth)
            if isinstance(m, ast.Attribute):
                self._emit(depth, f"{m.name.ljust(width[i])} = {format_expr(m.value)}", m.span.line, m.span.end_line)
            elif isinstance(m, ast.Block):
                self._block(m, depth)
            else:
                self._flow(m, depth)

    def _alignment(self, members: list[ast.Member]) -> list[int]:
        """Per member, the width its attribute name is padded to.

        Runs are attributes printed on consecutive lines: no blank line, comment
        line or block between them in the output (so the result is idempotent).
        """
        widths = [0] * len(members)
        run: list[int] = []

        def close() -> None:
            w = max((len(members[j].name) for j in run), default=0)
            for j in run:
                widths[j] = w
            run.clear()

        for i, m in enumerate(members):
            if not isinstance(m, ast.Attribute):
                close()
                continue
            if run and not self._adjacent(members[run[-1]].span.end_line, m.span.line):
                close()
            run.append(i)
        close()
        return widths

    def _adjacent(self, prev_end: int, line: int) -> bool:
        """True when nothing but code would print between source lines ``prev_end`` and ``line``."""
        between = range(prev_end + 1, line)
        if any(not self._src[i - 1].strip() for i in between if 0 < i <= len(self._src)):
            return False
        return not any(prev_end < c.line < line for c in self._own_line)

    # -- flow
    def _flow(self, f: ast.Flow, depth: int) -> None:
        self._emit(depth, "flow {", f.span.line, f.span.line)
        for s in f.statements:
            self._start(s.span.line, depth + 1)
            if isinstance(s, ast.Chain):
                text = " -> ".join(n.name for n in s.nodes) + _loop(s.loop)
                self._emit(depth + 1, text, s.span.line, s.span.end_line)
            else:
                self._on_block(s, depth + 1)
        self._flush_comments(f.span.end_line, depth + 1)
        self._emit(depth, "}", f.span.end_line, f.span.end_line)

    def _on_block(self, o: ast.OnBlock, depth: int) -> None:
        subject = o.subject + (f".{o.field}" if o.field else "")
        self._emit(depth, f"on {subject} {{", o.span.line, o.span.line if o.cases else o.span.end_line)
        lefts = []
        for c in o.cases:
            left = " | ".join(_label(lab) for lab in c.labels)
            if c.probability is not None:
                left += f" ({c.probability.raw})"
            lefts.append(left)
        width = max((len(x) for x in lefts), default=0)
        for c, left in zip(o.cases, lefts):
            self._start(c.span.line, depth + 1)
            self._emit(depth + 1, f"{left.ljust(width)} -> {c.target.name}{_loop(c.loop)}", c.span.line, c.span.end_line)
        self._flush_comments(o.span.end_line, depth + 1)
        self._emit(depth, "}", o.span.end_line, o.span.end_line)


def format_module(module: ast.Module) -> str:
    """The canonical text of ``module``."""
    return _Printer(module).module_text()
