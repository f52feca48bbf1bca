"""The abstract syntax tree: what was written, with source spans, before any meaning.

The parser builds these nodes; the passes read them and the formatter prints
them back. Every node carries the :class:`Span` it came from so diagnostics can
point at it. Values keep their source text (``raw``) so ``cortexc fmt`` never
rewrites how a number or string was spelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from cortexlang.diagnostics import Span


# ----------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Str:
    value: str
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with an optional unit and an optional ``/per`` suffix: ``250ms``, ``5/s``, ``99%``."""

    number: float
    unit: str
    per: str
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class Money:
    amount: float
    per: str
    raw: str
    span: Span


@dataclass(frozen=True, slots=True)
class Range:
    lo: Quantity
    hi: Quantity
    span: Span


@dataclass(frozen=True, slots=True)
class Ref:
    """A name or a dotted path: ``sales``, ``generate.text``."""

    parts: tuple[str, ...]
    span: Span

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Alternative:
    """One option of a choice, with its declared quality (``@ 90%``) if any."""

    value: "Expr"
    quality: Quantity | None
    span: Span


@dataclass(frozen=True, slots=True)
class Choice:
    """``a | b @ 90% | c @ 75%``: a malleability knob; the first option is preferred."""

    options: tuple[Alternative, ...]
    span: Span


Expr = Union[Str, Quantity, Money, Range, Ref, Call, ListExpr, Bool, Alternative, Choice]


# ----------------------------------------------------------------- flow


@dataclass(frozen=True, slots=True)
class NodeRef:
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class LoopClause:
    name: str
    name_span: Span
    max: Expr | None
    then: NodeRef | None
    within: str | None
    within_span: Span | None
    span: Span
    repeated: tuple[str, ...] = ()  # parts written more than once (`max`, `then`, `within`)


@dataclass(frozen=True, slots=True)
class Chain:
    """``a -> b -> c [loop ...]``; a loop clause applies to the chain's last edge."""

    nodes: tuple[NodeRef, ...]
    loop: LoopClause | None
    span: Span


@dataclass(frozen=True, slots=True)
class CaseLabel:
    text: str
    quoted: bool
    span: Span

    @property
    def is_else(self) -> bool:
        return self.text == "else" and not self.quoted


@dataclass(frozen=True, slots=True)
class Case:
    labels: tuple[CaseLabel, ...]
    probability: Quantity | None
    target: NodeRef
    loop: LoopClause | None
    span: Span


@dataclass(frozen=True, slots=True)
class OnBlock:
    """``on subject { cases }`` or ``on subject.field { cases }``."""

    subject: str
    field: str | None
    subject_span: Span
    cases: tuple[Case, ...]
    span: Span


FlowStmt = Union[Chain, OnBlock]


@dataclass(frozen=True, slots=True)
class Flow:
    statements: tuple[FlowStmt, ...]
    span: Span
    recovered: bool = False  # a syntax error dropped some of its statements: the graph is incomplete


# ----------------------------------------------------------------- structure


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    name_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Block:
    type: str
    type_span: Span
    label: str | None
    label_span: Span | None
    label_quoted: bool
    members: tuple["Member", ...]
    span: Span
    recovered: bool = False  # a syntax error inside: its contents were dropped, only the header remains

    def attributes(self) -> list[Attribute]:
        return [m for m in self.members if isinstance(m, Attribute)]

    def blocks(self) -> list["Block"]:
        return [m for m in self.members if isinstance(m, Block)]

    def flows(self) -> list[Flow]:
        return [m for m in self.members if isinstance(m, Flow)]


Member = Union[Attribute, Block, Flow]


@dataclass(frozen=True, slots=True)
class Comment:
    text: str
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed source file."""

    path: str
    source: str
    blocks: tuple[Block, ...]
    comments: tuple[Comment, ...] = field(default=())
    recovered: bool = False  # parsed past syntax errors: some blocks are `recovered`; never format it
