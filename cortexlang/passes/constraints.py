"""An LLM stage's ``constrain { ... }`` block: checked and lowered to an :class:`ir.OutputConstraint`.

The block names exactly one constraint (CX213 otherwise):

* ``json = "..."`` / ``json = file("schema.json")``: a JSON schema; it must parse as a JSON
  object and be a valid schema (Draft 2020-12 meta-schema), else CX211;
* ``regex = "..."``: it must compile (Python's ``re`` syntax, which the engines' regex
  dialects share for everything but exotic constructs), else CX212;
* ``grammar = file("sql.ebnf")``: an EBNF/GBNF grammar; unreadable files are CX205 (reported
  while reading); an empty one is CX211's sibling CX214;
* ``sql = DATABASE``: a database declared in the file (CX301/CX302 otherwise); the runtime builds
  the grammar from its live schema.

``jsonschema`` is imported only when a JSON constraint is checked: ``cortexc check`` starts fast.
"""

from __future__ import annotations

import json
import re

from cortexlang import ir
from cortexlang.diagnostics import did_you_mean
from cortexlang.passes.structure import Decl
from cortexlang.passes.values import NameUse, ValueContext

KINDS = ("json", "regex", "grammar", "sql")

INVALID_CONSTRAINT = object()
"""Returned by :func:`lower_constraint` after reporting an error (distinct from None: no constraint)."""


def lower_constraint(stage: Decl, databases: dict[str, ir.Database], names: dict[str, str],
                     ctx: ValueContext) -> ir.OutputConstraint | None | object:
    """The stage's constraint; None when it declares none; :data:`INVALID_CONSTRAINT` after an error (reported)."""
    block = stage.child("constrain")
    if block is None:
        return None
    written = sorted((k for k in KINDS if k in block.attr_spans),
                     key=lambda k: (block.attr_spans[k].line, block.attr_spans[k].col))
    if not written:
        ctx.diags.error("CX213", f"`constrain` in `llm {stage.label}` names no constraint", block.block.type_span,
                        hint="write one of `json = ...`, `regex = \"...\"`, `grammar = file(...)`, `sql = DATABASE`")
        return INVALID_CONSTRAINT
    if len(written) > 1:
        ctx.diags.error("CX213", f"`llm {stage.label}` declares {len(written)} output constraints "
                        f"({', '.join(f'`{k}`' for k in written)}); an engine enforces one",
                        block.attr_spans[written[1]], hint="keep one; a grammar can express the others' rules")
        return INVALID_CONSTRAINT
    kind = written[0]
    if kind not in block.values:
        return INVALID_CONSTRAINT  # its value was refused (reported)
    value, span = block.get(kind), block.value_spans[kind]
    if kind == "sql":
        return _sql(value, databases, names, ctx)
    if kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            ctx.diags.error("CX212", f"invalid regular expression: {exc}", span)
            return INVALID_CONSTRAINT
        except (RecursionError, OverflowError):
            ctx.diags.error("CX212", "the regular expression is nested too deeply or too large", span)
            return INVALID_CONSTRAINT
        return ir.OutputConstraint(kind="regex", regex=value)
    text, path = value
    if kind == "grammar":
        if not text.strip():
            ctx.diags.error("CX214", "the grammar is empty", span)
            return INVALID_CONSTRAINT
        return ir.OutputConstraint(kind="grammar", grammar=text, path=path)
    schema = _json_schema(text, span, ctx)
    if schema is None:
        return INVALID_CONSTRAINT
    return ir.OutputConstraint(kind="json", json_schema=json.dumps(schema, sort_keys=True), path=path)


def _sql(use: NameUse, databases: dict[str, ir.Database], names: dict[str, str],
         ctx: ValueContext) -> ir.OutputConstraint | object:
    if use.name in databases:
        return ir.OutputConstraint(kind="sql", database=use.name)
    if names.get(use.name) == "database":
        return INVALID_CONSTRAINT  # declared with errors (reported)
    if use.name in names:
        ctx.diags.error("CX302", f"`{use.name}` is a {names[use.name]}, not a database", use.span)
    else:
        ctx.diags.error("CX301", f"unknown database `{use.name}`", use.span, hint=did_you_mean(use.name, databases))
    return INVALID_CONSTRAINT


def _json_schema(text: str, span, ctx: ValueContext) -> dict | None:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        ctx.diags.error("CX211", f"the JSON schema is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                        span)
        return None
    except RecursionError:
        ctx.diags.error("CX211", "the JSON schema is nested too deeply", span)
        return None
    if not isinstance(schema, dict):
        ctx.diags.error("CX211", f"a JSON schema is an object, found {type(schema).__name__}", span)
        return None
    import jsonschema  # only here: it costs ~0.1 s of start-up

    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        ctx.diags.error("CX211", f"invalid JSON schema at {where}: {exc.message[:200]}", span)
        return None
    except RecursionError:
        ctx.diags.error("CX211", "the JSON schema is nested too deeply", span)
        return None
    return schema
