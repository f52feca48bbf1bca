"""Pass 1: structure. Checks blocks and attributes against the schema and converts values.

Output: a tree of :class:`Decl`, one per block, holding converted attribute
values (failed conversions are reported and left out). Later passes work on
Decls, never on raw attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cortexlang.diagnostics import Span, did_you_mean
from cortexlang.passes import schema as S
from cortexlang.passes.values import INVALID, ValueContext, text_or_file
from cortexlang.syntax import ast
from cortexlang.syntax.errors import RESERVED


@dataclass
class Decl:
    """One checked block."""

    type: str
    label: str | None
    block: ast.Block
    values: dict[str, Any] = field(default_factory=dict)
    attr_spans: dict[str, Span] = field(default_factory=dict)
    value_spans: dict[str, Span] = field(default_factory=dict)
    children: list["Decl"] = field(default_factory=list)
    flow: ast.Flow | None = None
    vars: dict[str, str] = field(default_factory=dict)  # only for `vars` and `args` blocks
    broken_names: set[str] = field(default_factory=set)  # labels of children that failed their own checks

    @property
    def span(self) -> Span:
        return self.label_span or self.block.type_span

    @property
    def label_span(self) -> Span | None:
        return self.block.label_span

    @property
    def recovered(self) -> bool:
        """A syntax error dropped this block's contents (reported); only its header is known."""
        return self.block.recovered

    def child(self, type_: str) -> "Decl | None":
        return next((c for c in self.children if c.type == type_), None)

    def children_of(self, *types: str) -> list["Decl"]:
        return [c for c in self.children if c.type in types]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def check_structure(module: ast.Module, ctx: ValueContext) -> Decl:
    """Check the whole file; the returned root Decl has type 'file'."""
    root = Decl("file", None, ast.Block("file", Span(1, 1, 1, 1), None, None, False, module.blocks, Span(1, 1, 1, 1)))
    _check_children(root, module.blocks, S.FILE, ctx)
    return root


def _check_children(parent: Decl, members: tuple[ast.Member, ...] | tuple[ast.Block, ...],
                    schema: S.BlockSchema, ctx: ValueContext) -> None:
    seen_once: dict[str, ast.Block] = {}
    labels: dict[tuple[str, str], ast.Block] = {}
    for member in members:
        if isinstance(member, ast.Flow):
            _check_flow_placement(parent, member, schema, ctx)
            continue
        if isinstance(member, ast.Attribute):
            continue  # attributes are handled by _check_attributes
        child_schema = schema.blocks.get(member.type)
        if child_schema is None:
            _unknown_block(member, schema, ctx)
            if member.label is not None:
                parent.broken_names.add(member.label)  # reported once; later passes stay quiet about it
            continue
        if not child_schema.repeatable:
            if member.type in seen_once:
                first = seen_once[member.type].type_span
                ctx.diags.error("CX105", f"`{member.type}` is declared twice", member.type_span,
                                notes=[f"first declared at line {first.line}"])
                continue
            seen_once[member.type] = member
        if not _check_label(member, child_schema, ctx):
            if member.label is not None:
                parent.broken_names.add(member.label)
            continue
        if member.label is not None:
            namespace = "node" if member.type in S.NODE_TYPES else member.type
            key = (namespace, member.label)
            if key in labels:
                first = labels[key]
                ctx.diags.error("CX105", f"`{member.label}` is already declared", member.label_span,
                                notes=[f"first declared as `{first.type} {first.label}` at line {first.label_span.line}"])
                continue
            labels[key] = member
        decl = Decl(member.type, member.label, member)
        if member.recovered:  # the name stands; what it held is unknown, so nothing is missing
            if member.label is not None:
                parent.broken_names.add(member.label)
            parent.children.append(decl)
            continue
        _check_attributes(decl, child_schema, ctx)
        _check_children(decl, member.members, child_schema, ctx)
        parent.children.append(decl)


def _check_label(block: ast.Block, schema: S.BlockSchema, ctx: ValueContext) -> bool:
    if schema.labelled and block.label is None:
        ctx.diags.error("CX106", f"`{block.type}` needs a name: `{block.type} NAME {{ ... }}`", block.type_span)
        return False
    if not schema.labelled and block.label is not None:
        ctx.diags.error("CX107", f"`{block.type}` takes no name", block.label_span,
                        hint=f"write `{block.type} {{ ... }}`")
        return False
    if block.label is not None and block.label in RESERVED:
        ctx.diags.error("CX201", f"`{block.label}` is a reserved word and cannot name a `{block.type}`",
                        block.label_span)
        return False
    return True


def _unknown_block(block: ast.Block, schema: S.BlockSchema, ctx: ValueContext) -> None:
    elsewhere = _where_allowed(block.type)
    if elsewhere:
        ctx.diags.error("CX108", f"`{block.type}` blocks belong inside {elsewhere}, not in "
                        f"{'the file' if schema.type == 'file' else '`' + schema.type + '`'}", block.type_span)
        return
    allowed = list(schema.blocks) + (["flow"] if schema.has_flow else [])
    where = "at the top level" if schema.type == "file" else f"inside `{schema.type}`"
    ctx.diags.error("CX101", f"unknown block type `{block.type}` {where}", block.type_span,
                    hint=did_you_mean(block.type, allowed) or (f"expected one of: {', '.join(allowed)}" if allowed else None))


def _where_allowed(block_type: str) -> str | None:
    def walk(schema: S.BlockSchema, path: str) -> str | None:
        for name, child in schema.blocks.items():
            if name == block_type:
                return path or "the file"
            found = walk(child, f"`{name}`")
            if found:
                return found
        return None
    return walk(S.FILE, "")


def _check_flow_placement(parent: Decl, flow: ast.Flow, schema: S.BlockSchema, ctx: ValueContext) -> None:
    if not schema.has_flow:
        ctx.diags.error("CX108", "`flow` belongs inside a `workflow` or a `fanout`", flow.span)
    elif parent.flow is not None:
        ctx.diags.error("CX109", f"a {parent.type} has one `flow` block", flow.span,
                        notes=[f"the first is at line {parent.flow.span.line}"])
    else:
        parent.flow = flow


def _check_attributes(decl: Decl, schema: S.BlockSchema, ctx: ValueContext) -> None:
    seen: dict[str, ast.Attribute] = {}
    misspelt: set[str] = set()  # known attributes an unknown one was probably meant to be
    for attr in decl.block.attributes():
        if attr.name in seen:
            ctx.diags.error("CX104", f"`{attr.name}` is set twice", attr.name_span,
                            notes=[f"first set at line {seen[attr.name].name_span.line}"])
            continue
        seen[attr.name] = attr
        if schema is S.VARS or schema is S.ARGS:  # free-form names, each a template
            _check_var(decl, attr, ctx)
            continue
        spec = schema.attrs.get(attr.name)
        if spec is None:
            hint = did_you_mean(attr.name, schema.attrs)
            if hint is not None:
                misspelt.add(hint.split("`")[1])
            if hint is None and attr.name in schema.blocks:
                hint = f"`{attr.name}` is a block: `{attr.name} {{ ... }}`"
            ctx.diags.error("CX102", f"unknown attribute `{attr.name}` in `{schema.type}`", attr.name_span,
                            hint=hint or (f"known attributes: {', '.join(schema.attrs)}" if schema.attrs else None))
            continue
        value = spec.convert(attr.value, ctx)
        decl.attr_spans[attr.name] = attr.name_span
        decl.value_spans[attr.name] = attr.value.span
        if value is not INVALID:
            decl.values[attr.name] = value
    for name, spec in schema.attrs.items():
        if spec.required and name not in seen and name not in misspelt:
            where = f"`{decl.type} {decl.label}`" if decl.label else f"`{decl.type}`"
            ctx.diags.error("CX103", f"{where} is missing `{name}`", decl.span,
                            hint=f"add `{name} = ...`" + (f" ({spec.doc})" if spec.doc else ""))


def _check_var(decl: Decl, attr: ast.Attribute, ctx: ValueContext) -> None:
    value = text_or_file(attr.value, ctx)
    if value is not INVALID:
        decl.vars[attr.name] = value[0]
