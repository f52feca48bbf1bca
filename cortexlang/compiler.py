"""The compiler driver: source -> AST -> passes -> IR, with every problem as a diagnostic.

Pipeline (each pass reports into one :class:`DiagnosticCollector` and never raises
for bad input):

1. ``syntax.parser``   text -> AST; past a syntax error, the blocks that parsed
2. ``passes.structure`` blocks/attributes against the schema, values and units
3. ``passes.flow``     each workflow's call graph
4. ``passes.lower``    names of models/databases, IR construction
5. ``passes.slo``      SLO satisfiable in principle
6. ``passes.templates`` jinja2 prompt templates

One run reports as many independent errors as it can find: a syntax error drops
only the contents of the block around it (see :mod:`cortexlang.syntax.recovery`);
each workflow's flow is checked whatever is wrong elsewhere, unless a syntax error
left it incomplete; passes 4-6 run on each workflow whose flow and stages are sound.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

from cortexlang import ir
from cortexlang.diagnostics import Diagnostic, DiagnosticCollector
from cortexlang.passes.flow import build_flow
from cortexlang.passes.lower import lower_databases, lower_inventory, lower_models, lower_workflow
from cortexlang.passes.schema import NODE_TYPES, STAGE_TYPES
from cortexlang.passes.slo import check_slo
from cortexlang.passes.structure import Decl, check_structure
from cortexlang.passes.templates import check_templates
from cortexlang.passes.values import ValueContext
from cortexlang.syntax import ast
from cortexlang.syntax.parser import parse


@dataclass
class CompileResult:
    path: str
    source: str
    module: ast.Module | None  # None when there are syntax errors
    program: ir.Program | None  # None when there are errors
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return self.program is not None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


def compile_source(source: str, path: str = "<input>", base_dir: Path | None = None) -> CompileResult:
    """Compile ``source``; ``base_dir`` is where ``file(...)`` paths are read from."""
    diags = DiagnosticCollector(path, source)
    module = parse(source, path, diags, recover=True)
    program = None
    if module is not None:
        try:
            program = _analyse(module, ValueContext(diags, base_dir))
        except Exception as exc:  # a compiler bug: still a diagnostic, never a traceback
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            diags.error("CX901", f"internal compiler error: {type(exc).__name__}: {str(exc)[:200]} "
                        f"(at {Path(frame.filename).name}:{frame.lineno})", None,
                        hint="please report it with the file that caused it")
        if diags.has_errors:
            program = None
    return CompileResult(path, source, None if module is None or module.recovered else module, program,
                         diags.sorted())


def compile_file(path: str | Path) -> CompileResult:
    """Compile a file; its directory is the base for ``file(...)`` paths. Raises OSError if unreadable."""
    p = Path(path)
    return compile_source(p.read_text(encoding="utf-8"), str(path), p.parent)


def _analyse(module: ast.Module, ctx: ValueContext) -> ir.Program:
    root = check_structure(module, ctx)
    models = lower_models(root, ctx)
    databases = lower_databases(root, ctx)
    names = _name_kinds(root)
    workflows = []
    for wf in root.children_of("workflow"):
        if not _flow_checkable(wf):
            continue
        # The flow pass gets a collector of its own: it gives up when *it* has seen errors,
        # so errors elsewhere in the file do not stop it, nor the passes after it.
        flow_ctx = ValueContext(DiagnosticCollector(ctx.diags.path, ctx.diags.source), ctx.base_dir)
        graph = build_flow(wf, flow_ctx)
        ctx.diags.absorb(flow_ctx.diags)
        if graph is None:
            continue
        lowered = lower_workflow(wf, graph, models, databases, names, ctx)
        if lowered is None:
            continue
        if not _holds_recovered(wf):  # a dropped `vars` or `slo` would make these checks wrong
            slo = wf.child("slo")
            check_slo(lowered, slo.span if slo else None, ctx.diags)
            check_templates(lowered, _prompt_spans(wf), ctx.diags)
        workflows.append(lowered)
    return ir.Program(
        models=tuple(sorted(models.values(), key=lambda m: m.name)),
        databases=tuple(sorted(databases.values(), key=lambda d: d.name)),
        inventory=lower_inventory(root, ctx),
        workflows=tuple(sorted(workflows, key=lambda w: w.name)),
    )


def _flow_checkable(wf: Decl) -> bool:
    """False when a syntax error dropped what the flow pass would need to check the flow soundly.

    A stage whose contents were dropped still exists as a node, so the flow around it can be
    checked, unless the flow branches on one of its fields (its `output` is unknown). A flow
    missing statements (the workflow's or a fan-out's), or a recovered fan-out, cannot be
    checked without false errors.
    """
    if wf.recovered or _holds_recovered_flow(wf):
        return False
    recovered = {d.label: d.type for d in wf.children if d.recovered}
    if any(t in NODE_TYPES and t not in STAGE_TYPES for t in recovered.values()):
        return False
    branched_on_fields = {s.subject for s in wf.flow.statements if isinstance(s, ast.OnBlock) and s.field} \
        if wf.flow is not None else set()
    return not branched_on_fields & recovered.keys()


def _holds_recovered_flow(decl: Decl) -> bool:
    return (decl.flow is not None and decl.flow.recovered) or any(_holds_recovered_flow(c) for c in decl.children)


def _holds_recovered(decl: Decl) -> bool:
    return decl.recovered or any(_holds_recovered(c) for c in decl.children)


def _name_kinds(root: Decl) -> dict[str, str]:
    """Every declared name and what it is, for "`x` is a database, not a model" messages."""
    kinds = {d.label: d.type for d in root.children_of("model", "database", "workflow")}
    for wf in root.children_of("workflow"):
        for d in wf.children_of("llm", "sql", "tool", "fanout"):
            kinds.setdefault(d.label, f"{d.type} stage" if d.type != "fanout" else "fan-out")
    return kinds


def _prompt_spans(wf: Decl) -> dict:
    spans = {}
    for d in wf.children_of("llm"):
        if "prompt" in d.value_spans:
            spans[d.label] = d.value_spans["prompt"]
        if "system" in d.value_spans:
            spans[f"{d.label}.system"] = d.value_spans["system"]
    return spans
