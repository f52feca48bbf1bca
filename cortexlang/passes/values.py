"""Typed value converters: AST expressions -> normalised Python values, with unit checks.

Each converter takes an expression and a :class:`ValueContext` and returns the
normalised value, or :data:`INVALID` after reporting a CX2xx diagnostic. Units
are normalised to the IR's: seconds, bytes, per-second rates, fractions,
dollars per hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cortexlang import ir
from cortexlang.diagnostics import DiagnosticCollector, did_you_mean
from cortexlang.passes.files import FileRefused, read_workflow_file
from cortexlang.syntax import ast
from cortexlang.units import COUNT_UNITS, DURATION_UNITS, RATE_PER, SIZE_UNITS


class _Invalid:
    """Marker for a value that failed to convert (already reported)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()



# A written number above this is a typo, and past float precision anyway (`params = 7.6B` is 7.6 before its unit).
MAX_NUMBER = 1e15
MAX_RANGE_VALUES = 1024  # a range knob lists every value it spans: `1..99999999` would be 10^8 options


@dataclass
class ValueContext:
    diags: DiagnosticCollector
    base_dir: Path | None  # the workflow's folder: file(...) reads inside it (None: the current directory)


Converter = Callable[[ast.Expr, ValueContext], Any]


def _describe(expr: ast.Expr) -> str:
    return {
        ast.Str: "a string", ast.Quantity: "a number", ast.Money: "an amount of money",
        ast.Range: "a range", ast.Ref: "a name", ast.Call: "a function call",
        ast.ListExpr: "a list", ast.Bool: "a boolean", ast.Choice: "a choice",
        ast.Alternative: "a weighted value",
    }.get(type(expr), "a value")


def _wrong(expr: ast.Expr, ctx: ValueContext, wanted: str, hint: str | None = None) -> Any:
    ctx.diags.error("CX201", f"expected {wanted}, found {_describe(expr)}", expr.span, hint=hint)
    return INVALID


def _no_choice(expr: ast.Expr, ctx: ValueContext, wanted: str) -> bool:
    if isinstance(expr, (ast.Choice, ast.Alternative)):
        ctx.diags.error("CX204", f"this setting is not malleable; expected {wanted}", expr.span,
                        hint="choices (`a | b @ 90%`) are allowed on model, max_tokens, hedge, width and loop max")
        return True
    return False


def _too_large(q: ast.Quantity | ast.Money, ctx: ValueContext) -> bool:
    """Report (CX203) a number past :data:`MAX_NUMBER`, including one too long to be a float."""
    if (q.number if isinstance(q, ast.Quantity) else q.amount) <= MAX_NUMBER:
        return False
    shown = q.raw if len(q.raw) <= 24 else q.raw[:20] + "…"
    ctx.diags.error("CX203", f"`{shown}` is too large", q.span, hint=f"numbers are at most {MAX_NUMBER:.0e}")
    return True


def _unit_value(q: ast.Quantity, ctx: ValueContext, units: dict[str, float], what: str,
                example: str) -> Any:
    if _too_large(q, ctx):
        return INVALID
    if q.per:
        ctx.diags.error("CX202", f"`{q.raw}` is a rate; expected {what}", q.span)
        return INVALID
    if q.unit not in units:
        if not q.unit:
            ctx.diags.error("CX202", f"`{q.raw}` needs a unit: expected {what}", q.span,
                            hint=f"write it like `{example}`")
        else:
            hint = did_you_mean(q.unit, [u for u in units if u]) or f"units: {', '.join(u for u in units if u)}"
            ctx.diags.error("CX202", f"unknown unit `{q.unit}` for {what}", q.span, hint=hint)
        return INVALID
    return q.number * units[q.unit]


def duration(expr: ast.Expr, ctx: ValueContext) -> Any:
    if _no_choice(expr, ctx, "a duration"):
        return INVALID
    if not isinstance(expr, ast.Quantity):
        return _wrong(expr, ctx, "a duration like `250ms` or `8s`")
    return _unit_value(expr, ctx, DURATION_UNITS, "a duration", "250ms")


def size(expr: ast.Expr, ctx: ValueContext) -> Any:
    if _no_choice(expr, ctx, "a size"):
        return INVALID
    if not isinstance(expr, ast.Quantity):
        return _wrong(expr, ctx, "a size like `128KiB` or `80GiB`")
    v = _unit_value(expr, ctx, SIZE_UNITS, "a size", "128KiB")
    return INVALID if v is INVALID else int(round(v))


def count(expr: ast.Expr, ctx: ValueContext) -> Any:
    """A large count with an optional K/M/B/T multiplier (``7.6B`` parameters)."""
    if _no_choice(expr, ctx, "a count"):
        return INVALID
    if not isinstance(expr, ast.Quantity):
        return _wrong(expr, ctx, "a count like `8B` or `135M`")
    return _unit_value(expr, ctx, COUNT_UNITS, "a count (K, M, B or T)", "7.6B")


def integer(lo: int = 0, hi: int | None = None) -> Converter:
    def convert(expr: ast.Expr, ctx: ValueContext) -> Any:
        if _no_choice(expr, ctx, "a whole number"):
            return INVALID
        return _int(expr, ctx, lo, hi)
    return convert


def _int(expr: ast.Expr, ctx: ValueContext, lo: int, hi: int | None) -> Any:
    if not isinstance(expr, ast.Quantity):
        return _wrong(expr, ctx, "a whole number")
    if _too_large(expr, ctx):
        return INVALID
    if expr.unit or expr.per:
        v = _unit_value(expr, ctx, {"": 1, "K": 1000}, "a whole number", "128")
        if v is INVALID:
            return INVALID
    else:
        v = expr.number
    if v != int(v):
        ctx.diags.error("CX201", f"expected a whole number, found `{expr.raw}`", expr.span)
        return INVALID
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        ctx.diags.error("CX203", f"`{expr.raw}` is out of range: must be {bound}", expr.span)
        return INVALID
    return v


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Converter:
    def convert(expr: ast.Expr, ctx: ValueContext) -> Any:
        if _no_choice(expr, ctx, "a number"):
            return INVALID
        if not isinstance(expr, ast.Quantity):
            return _wrong(expr, ctx, "a number")
        if _too_large(expr, ctx):
            return INVALID
        if expr.unit or expr.per:
            ctx.diags.error("CX202", f"`{expr.raw}` takes no unit here", expr.span)
            return INVALID
        v = expr.number
        if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
            ctx.diags.error("CX203", f"`{expr.raw}` is out of range: must be within "
                            f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else '∞'}]", expr.span)
            return INVALID
        return v
    return convert


def rate(expr: ast.Expr, ctx: ValueContext) -> Any:
    if _no_choice(expr, ctx, "a rate"):
        return INVALID
    if not isinstance(expr, ast.Quantity):
        return _wrong(expr, ctx, "a rate like `5/s`")
    if _too_large(expr, ctx):
        return INVALID
    if not expr.per or expr.unit:
        ctx.diags.error("CX202", f"`{expr.raw}` is not a rate", expr.span, hint="write it like `5/s` or `120/min`")
        return INVALID
    if expr.per not in RATE_PER:
        ctx.diags.error("CX202", f"unknown time unit `/{expr.per}` in a rate", expr.span,
                        hint=did_you_mean(expr.per, RATE_PER) or "use /s, /min or /h")
        return INVALID
    if expr.number <= 0:
        ctx.diags.error("CX203", "a rate must be positive", expr.span)
        return INVALID
    return expr.number * RATE_PER[expr.per]


def percent(expr: ast.Expr, ctx: ValueContext) -> Any:
    if _no_choice(expr, ctx, "a percentage"):
        return INVALID
    return percentage_value(expr, ctx)


def percentage_value(expr: ast.Expr, ctx: ValueContext) -> Any:
    if not isinstance(expr, ast.Quantity):
        return _wrong(expr, ctx, "a percentage like `99%`")
    if _too_large(expr, ctx):
        return INVALID
    if expr.unit != "%" or expr.per:
        # A bare number up to 1 is a fraction (`0.95` means 95%), anything else already counts percent.
        suggested = expr.number * 100 if not expr.unit and not expr.per and expr.number <= 1 else expr.number
        ctx.diags.error("CX202", f"`{expr.raw}` is not a percentage", expr.span,
                        hint=f"write it like `{suggested:g}%`")
        return INVALID
    if not 0 <= expr.number <= 100:
        ctx.diags.error("CX203", f"`{expr.raw}` is not between 0% and 100%", expr.span)
        return INVALID
    return expr.number / 100.0


def money_per_hour(expr: ast.Expr, ctx: ValueContext) -> Any:
    if _no_choice(expr, ctx, "a price"):
        return INVALID
    if not isinstance(expr, ast.Money):
        return _wrong(expr, ctx, "a price like `$3.50/h`")
    if _too_large(expr, ctx):
        return INVALID
    if expr.per not in ("h", "hr", "hour"):
        ctx.diags.error("CX202", f"`{expr.raw}` needs a per-hour unit", expr.span, hint="write it like `$3.50/h`")
        return INVALID
    return expr.amount


def text(expr: ast.Expr, ctx: ValueContext) -> Any:
    if _no_choice(expr, ctx, "a string"):
        return INVALID
    if not isinstance(expr, ast.Str):
        hint = f'quote it: `"{expr.dotted}"`' if isinstance(expr, ast.Ref) else None
        return _wrong(expr, ctx, "a string", hint)
    return expr.value


def text_or_file(expr: ast.Expr, ctx: ValueContext) -> Any:
    """A string, or ``file("path")`` read from the workflow's folder (:mod:`.files`): (text, path|None)."""
    if isinstance(expr, ast.Call):
        if expr.name != "file":
            ctx.diags.error("CX206", f"unknown function `{expr.name}`", expr.span,
                            hint=did_you_mean(expr.name, ["file"]) or "the only function is `file(\"path\")`")
            return INVALID
        if len(expr.args) != 1 or not isinstance(expr.args[0], ast.Str):
            ctx.diags.error("CX201", "`file` takes one string: the path", expr.span)
            return INVALID
        rel = expr.args[0].value
        try:
            return read_workflow_file(ctx.base_dir or Path.cwd(), rel), rel
        except FileRefused as refused:
            shown = rel if len(rel) <= 60 and rel.isprintable() else repr(rel[:60])
            ctx.diags.error(refused.code, f"cannot read `{shown}`: {refused.reason}", expr.args[0].span,
                            hint=refused.hint)
            return INVALID
    value = text(expr, ctx)
    return INVALID if value is INVALID else (value, None)


def enum(*options: str) -> Converter:
    def convert(expr: ast.Expr, ctx: ValueContext) -> Any:
        if _no_choice(expr, ctx, "one of " + ", ".join(options)):
            return INVALID
        if isinstance(expr, ast.Ref) and len(expr.parts) == 1:
            value = expr.parts[0]
        elif isinstance(expr, ast.Str):
            value = expr.value
        else:
            return _wrong(expr, ctx, "one of " + ", ".join(f"`{o}`" for o in options))
        if value not in options:
            ctx.diags.error("CX204", f"`{value}` is not one of " + ", ".join(f"`{o}`" for o in options),
                            expr.span, hint=did_you_mean(value, options))
            return INVALID
        return value
    return convert


def boolean(expr: ast.Expr, ctx: ValueContext) -> Any:
    if not isinstance(expr, ast.Bool):
        return _wrong(expr, ctx, "`true` or `false`")
    return expr.value


@dataclass(frozen=True)
class NameUse:
    """A reference to a declared name, resolved by a later pass."""

    name: str
    span: ast.Span


def name(expr: ast.Expr, ctx: ValueContext) -> Any:
    if _no_choice(expr, ctx, "a name"):
        return INVALID
    if not isinstance(expr, ast.Ref) or len(expr.parts) != 1:
        hint = "names are written bare, without quotes" if isinstance(expr, ast.Str) else None
        return _wrong(expr, ctx, "a name", hint)
    return NameUse(expr.parts[0], expr.span)


def name_list(expr: ast.Expr, ctx: ValueContext) -> Any:
    if not isinstance(expr, ast.ListExpr):
        return _wrong(expr, ctx, "a list of names like `[a, b]`")
    out = [name(item, ctx) for item in expr.items]
    return INVALID if any(v is INVALID for v in out) else tuple(out)


def string_list(expr: ast.Expr, ctx: ValueContext) -> Any:
    if isinstance(expr, ast.Str):
        return (expr.value,)
    if not isinstance(expr, ast.ListExpr):
        return _wrong(expr, ctx, 'a list of strings like `[";"]`')
    out = [text(item, ctx) for item in expr.items]
    return INVALID if any(v is INVALID for v in out) else tuple(out)


_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def entry_point(expr: ast.Expr, ctx: ValueContext) -> Any:
    value = text(expr, ctx)
    if value is INVALID:
        return INVALID
    if not _ENTRY.match(value):
        ctx.diags.error("CX201", f"`{value}` is not a Python entry point", expr.span,
                        hint='write it as "package.module:function"')
        return INVALID
    return value


def _quality(alt: ast.Alternative, ctx: ValueContext) -> Any:
    if alt.quality is None:
        return 1.0
    return percentage_value(alt.quality, ctx)


def _int_range(expr: ast.Range, ctx: ValueContext, lo: int, hi: int | None) -> Any:
    """The bounds of ``a..b`` as integers in [lo, hi], the smaller first; INVALID (reported) otherwise."""
    a, b = _int(expr.lo, ctx, lo, hi), _int(expr.hi, ctx, lo, hi)
    if INVALID in (a, b):
        return INVALID
    if a > b:
        ctx.diags.error("CX203", f"empty range `{expr.lo.raw}..{expr.hi.raw}`", expr.span,
                        hint="write the smaller bound first")
        return INVALID
    return a, b


def int_knob(lo: int = 0, hi: int | None = None) -> Converter:
    """``3``, ``1..3`` (every value, largest preferred) or ``256 | 128 @ 95%``."""

    def convert(expr: ast.Expr, ctx: ValueContext) -> Any:
        if isinstance(expr, ast.Range):
            bounds = _int_range(expr, ctx, lo, hi)
            if bounds is INVALID:
                return INVALID
            a, b = bounds
            if b - a >= MAX_RANGE_VALUES:
                ctx.diags.error("CX203", f"`{expr.lo.raw}..{expr.hi.raw}` spans {b - a + 1:,} values; a range "
                                f"knob spans at most {MAX_RANGE_VALUES}", expr.span,
                                hint="list a few values as a choice: `512 | 256 @ 95% | 128 @ 90%`")
                return INVALID
            return ir.IntKnob(options=tuple(ir.IntOption(value=v) for v in range(b, a - 1, -1)))
        alts = _alternatives(expr)
        options = []
        for alt in alts:
            v = _int(alt.value, ctx, lo, hi)
            q = _quality(alt, ctx)
            if INVALID in (v, q):
                return INVALID
            options.append(ir.IntOption(value=v, quality=q))
        if not _distinct([o.value for o in options], expr, ctx):
            return INVALID
        return ir.IntKnob(options=tuple(options))
    return convert


def model_choice(expr: ast.Expr, ctx: ValueContext) -> Any:
    """``llama70b`` or ``llama70b | llama8b @ 90%``: a tuple of (NameUse, quality)."""
    out = []
    for alt in _alternatives(expr):
        n = name(alt.value, ctx)
        q = _quality(alt, ctx)
        if INVALID in (n, q):
            return INVALID
        out.append((n, q))
    if not _distinct([n.name for n, _ in out], expr, ctx):
        return INVALID
    return tuple(out)


def _alternatives(expr: ast.Expr) -> tuple[ast.Alternative, ...]:
    if isinstance(expr, ast.Choice):
        return expr.options
    if isinstance(expr, ast.Alternative):
        return (expr,)
    return (ast.Alternative(expr, None, expr.span),)


def _distinct(values: list, expr: ast.Expr, ctx: ValueContext) -> bool:
    if len(set(values)) != len(values):
        ctx.diags.error("CX204", "a choice lists the same option twice", expr.span)
        return False
    return True


def list_source(expr: ast.Expr, ctx: ValueContext) -> Any:
    """``plan.questions`` (a list field of a stage's JSON result) or ``candidates`` (a fan-out):
    what a map fan-out runs one branch per item of. Returns a :class:`NameUse` of the dotted path."""
    if _no_choice(expr, ctx, "a stage field or a fan-out"):
        return INVALID
    if not isinstance(expr, ast.Ref) or len(expr.parts) > 2:
        return _wrong(expr, ctx, "a stage field like `plan.questions` or a fan-out's name")
    return NameUse(expr.dotted, expr.span)


def width_distribution(expr: ast.Expr, ctx: ValueContext) -> Any:
    """A map's planning distribution of widths: ``3``, ``2..4`` (uniform) or
    ``2 @ 30% | 3 @ 50% | 4 @ 20%`` (the shares must add up to 100%)."""
    if isinstance(expr, ast.Range):
        bounds = _int_range(expr, ctx, 0, 4096)
        if bounds is INVALID:
            return INVALID
        a, b = bounds
        return tuple(ir.WidthShare(width=w, probability=1.0 / (b - a + 1)) for w in range(a, b + 1))
    shares = []
    alts = _alternatives(expr)
    for alt in alts:
        w = _int(alt.value, ctx, 0, 4096)
        if w is INVALID:
            return INVALID
        if alt.quality is None and len(alts) > 1:
            ctx.diags.error("CX202", f"width `{w}` needs its share, like `{w} @ 30%`", alt.span)
            return INVALID
        p = 1.0 if alt.quality is None else percentage_value(alt.quality, ctx)
        if p is INVALID:
            return INVALID
        if p <= 0:
            ctx.diags.error("CX202", f"width `{w}` has a share of 0%", alt.span, hint="leave it out")
            return INVALID
        shares.append(ir.WidthShare(width=w, probability=p))
    if not _distinct([s.width for s in shares], expr, ctx):
        return INVALID
    total = sum(s.probability for s in shares)
    if abs(total - 1.0) > 1e-6:
        ctx.diags.error("CX405", f"the width shares add up to {total:.0%}, not 100%", expr.span)
        return INVALID
    return tuple(sorted(shares, key=lambda s: s.width))


def int_range(lo: int = 0, hi: int | None = None) -> Converter:
    """``4`` or ``1..4``: a (low, high) pair of whole numbers in ``[lo, hi]``; their order is the caller's
    to check (so it can say what the bounds mean)."""
    def convert(expr: ast.Expr, ctx: ValueContext) -> Any:
        if not isinstance(expr, ast.Range):
            n = integer(lo, hi)(expr, ctx)
            return INVALID if n is INVALID else (n, n)
        bounds = (_int(expr.lo, ctx, lo, hi), _int(expr.hi, ctx, lo, hi))
        return INVALID if INVALID in bounds else bounds
    return convert


def duration_or_range(expr: ast.Expr, ctx: ValueContext) -> Any:
    """``250ms`` (a mean) or ``50ms..400ms`` (uniform on that range): a float, or a (low, high) pair."""
    if not isinstance(expr, ast.Range):
        return duration(expr, ctx)
    lo = _unit_value(expr.lo, ctx, DURATION_UNITS, "a duration", "50ms")
    hi = _unit_value(expr.hi, ctx, DURATION_UNITS, "a duration", "400ms")
    if INVALID in (lo, hi):
        return INVALID
    if not 0 < lo <= hi:
        ctx.diags.error("CX203", f"`{expr.lo.raw}..{expr.hi.raw}` is not a range of positive durations", expr.span,
                        hint="write the smaller bound first, above zero")
        return INVALID
    return (lo, hi)
