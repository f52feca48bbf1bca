"""Pass 3: the call graph. Turns a workflow's ``flow { ... }`` into checked edges.

Checks, in order: fan-out membership; node names (with did-you-mean); one way
out per node (one unconditional edge, or one ``on`` block); outcome and field
labels; every outcome covered or defaulted; planning probabilities (explicit
shares sum to at most 100%, the rest is split evenly over unlabelled cases);
loop declarations (budget stated once, consistent ``then``/``within``); no cycle
except through a loop edge (also counting the edge a loop takes once its budget
is spent); every node reachable from the entry; no dead ends.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from cortexlang import ir
from cortexlang.diagnostics import Span, did_you_mean
from cortexlang.passes.structure import Decl
from cortexlang.passes.values import INVALID, NameUse, ValueContext, int_knob
from cortexlang.syntax import ast


@dataclass
class EdgeInfo:
    source: str
    target: str
    kind: str  # always | outcome | field | else
    values: tuple[str, ...]
    field: str | None
    explicit_probability: float | None
    loop: str | None
    span: Span
    probability: float = 0.0


@dataclass
class LoopInfo:
    name: str
    max: ir.IntKnob | None = None
    max_span: Span | None = None
    then: str | None = None
    within: str | None = None
    within_span: Span | None = None
    first_span: Span | None = None
    rejoin: bool = False  # spent, it goes back into its `within` loop: that counts as the parent's iteration


@dataclass
class FanOutInfo:
    name: str
    branches: tuple[tuple[str, ...], ...]
    width: ir.IntKnob | None
    join: str
    flow: ast.Flow | None = None  # a branch written as a sub-flow (`flow { ... }` in the fan-out)
    subflow: "FlowGraph | None" = None  # that sub-flow, checked
    over: str | None = None
    widths: tuple[ir.WidthShare, ...] = ()


@dataclass
class FlowGraph:
    entry: str
    node_kinds: dict[str, str]
    edges: list[EdgeInfo] = field(default_factory=list)
    loops: dict[str, LoopInfo] = field(default_factory=dict)
    fanouts: dict[str, FanOutInfo] = field(default_factory=dict)


def build_flow(workflow: Decl, ctx: ValueContext) -> FlowGraph | None:
    """Check one workflow's flow and its fan-outs' sub-flows; None when it has none (reported) or
    errors make it unusable."""
    diags = ctx.diags
    stages = {d.label: d for d in workflow.children_of("llm", "sql", "tool")}
    fanout_decls = {d.label: d for d in workflow.children_of("fanout")}
    fanouts, member_of = _fanouts(fanout_decls, stages, ctx)
    node_kinds = {n: d.type for n, d in stages.items() if n not in member_of}
    node_kinds.update({n: "fanout" for n in fanout_decls if n not in member_of})

    if workflow.flow is None or not workflow.flow.statements:
        span = workflow.flow.span if workflow.flow else workflow.span
        diags.error("CX110", f"workflow `{workflow.label}` has no flow", span,
                    hint="add `flow { first_stage -> ... -> done }`")
        return None
    graph = _graph(workflow.flow, node_kinds, member_of, stages, workflow.broken_names, ctx)
    ok = graph is not None
    for info in fanouts.values():
        if info.flow is None:
            continue
        if not info.flow.statements:
            diags.error("CX110", f"fan-out `{info.name}` has an empty flow", info.flow.span,
                        hint="write its branch: `flow { first_stage -> ... -> done }`")
            ok = False
            continue
        kinds = {n: stages[n].type if n in stages else "fanout" for n, f in member_of.items() if f == info.name}
        info.subflow = _graph(info.flow, kinds, member_of, stages, workflow.broken_names, ctx)
        ok = ok and info.subflow is not None
    if not ok or graph is None:
        return None
    graph.fanouts = fanouts
    _check_loop_names(graph, ctx)
    _check_unused(stages, fanout_decls, member_of, graph, ctx)
    _check_map_sources(fanouts, stages, member_of, ctx)
    return None if diags.has_errors else graph


def _graph(flow: ast.Flow, node_kinds: dict[str, str], member_of: dict[str, str], stages: dict[str, Decl],
           broken: set[str], ctx: ValueContext) -> FlowGraph | None:
    """Check one call graph (a workflow's flow, or a fan-out's sub-flow) over ``node_kinds``."""
    first = flow.statements[0]
    entry_ref = first.nodes[0] if isinstance(first, ast.Chain) else ast.NodeRef(first.subject, first.subject_span)
    graph = FlowGraph(entry=entry_ref.name, node_kinds=node_kinds)
    resolver = _Resolver(node_kinds, member_of, broken, ctx)
    for stmt in flow.statements:
        if isinstance(stmt, ast.Chain):
            _chain_edges(stmt, resolver, graph)
        else:
            _on_block_edges(stmt, resolver, graph, stages, ctx)
    if not resolver.ok:
        return None
    by_source: dict[str, list[EdgeInfo]] = defaultdict(list)
    for e in graph.edges:
        by_source[e.source].append(e)
    if not _repeats(graph, by_source, stages, ctx):
        return None
    ok = all([
        _check_one_way_out(by_source, ctx),
        _check_coverage(by_source, node_kinds, ctx),
        _assign_probabilities(by_source, ctx),
        _check_loops(graph, resolver, ctx),
    ])
    if not ok:
        return None
    _check_dead_ends_and_reachability(graph, by_source, ctx)
    if not _check_acyclic(graph, ctx):
        return None
    return graph


def _repeats(graph: FlowGraph, by_source: dict[str, list[EdgeInfo]], stages: dict[str, Decl],
             ctx: ValueContext) -> bool:
    """``repeat = N`` on a stage: it runs N times in a row, then takes its way out. Written as the
    loop ``STAGE.repeat`` (a self-edge, budget N - 1, exit the stage's one unconditional edge), so
    every consumer sees an ordinary loop; a choice ``3 | 1 @ 90%`` makes its budget a knob."""
    ok = True
    for node in list(by_source):
        decl = stages.get(node)
        knob = decl.get("repeat") if decl is not None else None
        if knob is None:
            continue
        edges = by_source[node]
        if len(edges) != 1 or edges[0].kind != "always" or edges[0].loop is not None:
            ctx.diags.error("CX402", f"`{node}` repeats, so it needs one unconditional way out", edges[0].span,
                            hint=f"write `{node} -> next`; branch on the repeated results in the next stage")
            ok = False
            continue
        (edge,) = edges
        name = f"{node}.repeat"
        times = ir.IntKnob(options=tuple(o.model_copy(update={"value": o.value - 1}) for o in knob.options))
        graph.loops[name] = LoopInfo(name, max=times, max_span=decl.value_spans["repeat"], then=edge.target,
                                     first_span=decl.value_spans["repeat"])
        edge.target, edge.loop = node, name
    return ok


def _flow_names(flow: ast.Flow) -> list[ast.NodeRef]:
    """Every node a flow names (terminals included)."""
    out: list[ast.NodeRef] = []
    for stmt in flow.statements:
        if isinstance(stmt, ast.Chain):
            out.extend(stmt.nodes)
            clauses = [stmt.loop]
        else:
            out.append(ast.NodeRef(stmt.subject, stmt.subject_span))
            out.extend(c.target for c in stmt.cases)
            clauses = [c.loop for c in stmt.cases]
        out.extend(c.then for c in clauses if c is not None and c.then is not None)
    return out


def _check_loop_names(graph: FlowGraph, ctx: ValueContext) -> None:
    """A loop's name is its knob's name: one loop per name across the workflow and its sub-flows."""
    seen: dict[str, LoopInfo] = dict(graph.loops)
    for info in graph.fanouts.values():
        for name, loop in (info.subflow.loops.items() if info.subflow else ()):
            if name in seen:
                ctx.diags.error("CX408", f"loop `{name}` is declared in two flows", loop.first_span,
                                hint="give each loop its own name: it names a retry-depth knob")
            seen[name] = loop


def _check_map_sources(fanouts: dict[str, FanOutInfo], stages: dict[str, Decl], member_of: dict[str, str],
                       ctx: ValueContext) -> None:
    """``over`` names a list field of a stage with named fields, or another fan-out."""
    for info in fanouts.values():
        if info.over is None:
            continue
        source, _, field_name = info.over.partition(".")
        if not field_name:
            if source not in fanouts or source == info.name:
                ctx.diags.error("CX301", f"fan-out `{info.name}` maps over `{source}`, which is not another fan-out",
                                None, hint="write `over = stage.field` for a list in a stage's JSON result")
            continue
        decl = stages.get(source)
        if decl is None:
            ctx.diags.error("CX301", f"fan-out `{info.name}` maps over `{info.over}`: no stage `{source}`", None,
                            hint=did_you_mean(source, stages))
        elif not (decl.type == "tool" or (decl.type == "llm" and decl.get("output") == "json")):
            ctx.diags.error("CX409", f"fan-out `{info.name}` maps over `{info.over}`, but `{source}` has no "
                            "named fields", None, hint=f"set `output = json` on `{source}`")


# ---------------------------------------------------------------- fan-outs


def _fanouts(decls: dict[str, Decl], stages: dict[str, Decl], ctx: ValueContext
             ) -> tuple[dict[str, FanOutInfo], dict[str, str]]:
    """Each fan-out's branch shape, and which fan-out every branch node belongs to.

    A branch is one stage per branch (``branches``), a chain run ``width``
    times (``each``), or a sub-flow (a ``flow`` block, run ``width`` times,
    or once per item with ``over``): every stage or fan-out its flow names
    belongs to that fan-out.
    """
    out: dict[str, FanOutInfo] = {}
    member_of: dict[str, str] = {}
    for name, d in decls.items():
        branches_v, each_v, width, over = d.get("branches"), d.get("each"), d.get("width"), d.get("over")
        shapes = [k for k, v in (("branches", branches_v), ("each", each_v), ("flow", d.flow)) if v is not None]
        if len(shapes) > 1:
            ctx.diags.error("CX201", f"fan-out `{name}` sets both `{shapes[0]}` and `{shapes[1]}`",
                            d.attr_spans.get(shapes[1], d.span),
                            hint="`branches` lists one stage per branch; `each` is one chain and `flow` one "
                                 "sub-flow, run `width` times or once per item of `over`")
            continue
        if not shapes:
            ctx.diags.error("CX103", f"fan-out `{name}` needs `branches = [...]`, `each = [...]` or a `flow`",
                            d.span)
            continue
        if shapes[0] != "branches" and width is None and over is None:
            ctx.diags.error("CX103", f"fan-out `{name}` runs one branch shape and needs `width` or `over`",
                            d.attr_spans.get("each", d.span),
                            hint="add `width = 4` (or a choice like `4 | 2 @ 90%`), or `over = stage.field`")
            continue
        if branches_v is not None and (width is not None or over is not None):
            key = "width" if width is not None else "over"
            ctx.diags.error("CX201", f"`{key}` applies to `each` or `flow`; fan-out `{name}` lists its branches",
                            d.attr_spans[key])
            continue
        widths = d.get("widths", ())
        if over is not None and "." in over.name and not widths:
            ctx.diags.error("CX103", f"fan-out `{name}` maps over `{over.name}` and needs `widths` for planning",
                            d.attr_spans["over"], hint="add `widths = 2..4` or `widths = 2 @ 30% | 3 @ 70%`")
            continue
        if widths and (over is None or "." not in over.name):
            ctx.diags.error("CX201", f"`widths` describes a map over a stage's list; fan-out `{name}` has none",
                            d.attr_spans["widths"], hint="use `width` for a fixed number of branches")
            continue
        uses: list[NameUse] = list(branches_v or each_v or ())
        if d.flow is not None:
            uses = [NameUse(r.name, r.span) for r in _flow_names(d.flow) if r.name not in ir.TERMINALS]
        valid = True
        for use in uses:
            nested = use.name in decls
            if nested and d.flow is None:
                ctx.diags.error("CX302", f"`{use.name}` is a fan-out; nest fan-outs inside a fan-out's `flow`",
                                use.span)
                valid = False
            elif use.name == name:
                ctx.diags.error("CX302", f"fan-out `{name}` cannot run inside itself", use.span)
                valid = False
            elif not nested and use.name not in stages:
                if d.flow is not None:
                    continue  # the sub-flow's own check reports it, with did-you-mean
                ctx.diags.error("CX301", f"unknown stage `{use.name}` in fan-out `{name}`", use.span,
                                hint=did_you_mean(use.name, stages))
                valid = False
            elif use.name in member_of and member_of[use.name] != name:
                ctx.diags.error("CX303", f"`{use.name}` already runs in fan-out `{member_of[use.name]}`",
                                use.span, hint="declare a separate stage for each branch")
                valid = False
            elif use.name in member_of and branches_v is not None:
                ctx.diags.error("CX303", f"stage `{use.name}` is listed twice in fan-out `{name}`", use.span)
                valid = False
            else:
                member_of[use.name] = name
        if not valid:
            continue
        names = tuple(u.name for u in uses)
        branches = tuple((n,) for n in names) if branches_v is not None else (names,) if each_v else ()
        out[name] = FanOutInfo(name, branches, width, d.get("join", "all"), flow=d.flow,
                               over=over.name if over is not None else None, widths=widths)
    return out, member_of


# ---------------------------------------------------------------- names and edges


class _Resolver:
    def __init__(self, node_kinds: dict[str, str], member_of: dict[str, str], broken: set[str],
                 ctx: ValueContext) -> None:
        self.node_kinds = node_kinds
        self.member_of = member_of
        self.broken = broken
        self.ctx = ctx
        self.ok = True

    def node(self, ref: ast.NodeRef, *, as_source: bool) -> bool:
        name = ref.name
        if name in ir.TERMINALS:
            if as_source:
                self.ctx.diags.error("CX302", f"`{name}` ends the run; nothing can follow it", ref.span)
                self.ok = False
                return False
            return True
        if name in self.node_kinds:
            return True
        if name in self.broken:
            pass  # its declaration is already reported
        elif name in self.member_of:
            self.ctx.diags.error("CX303", f"stage `{name}` runs inside fan-out `{self.member_of[name]}`",
                                 ref.span, hint=f"refer to the fan-out `{self.member_of[name]}` in the flow")
        else:
            self.ctx.diags.error("CX301", f"unknown node `{name}` in flow", ref.span,
                                 hint=did_you_mean(name, list(self.node_kinds) + list(ir.TERMINALS)))
        self.ok = False
        return False


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" or word == "llm" else "a"


def _loop_name(clause: ast.LoopClause | None) -> str | None:
    return clause.name if clause else None


def _chain_edges(chain: ast.Chain, resolver: _Resolver, graph: FlowGraph) -> None:
    nodes = chain.nodes
    valid = [resolver.node(n, as_source=i < len(nodes) - 1) for i, n in enumerate(nodes)]
    if not all(valid):
        return
    for i, (a, b) in enumerate(zip(nodes, nodes[1:])):
        last = i == len(nodes) - 2
        loop = chain.loop if last else None
        graph.edges.append(EdgeInfo(a.name, b.name, "always", (), None, None, _loop_name(loop),
                                    Span(a.span.line, a.span.col, b.span.end_line, b.span.end_col)))
        if loop:
            _record_loop(loop, graph, resolver)


def _on_block_edges(block: ast.OnBlock, resolver: _Resolver, graph: FlowGraph,
                    stages: dict[str, Decl], ctx: ValueContext) -> None:
    if not resolver.node(ast.NodeRef(block.subject, block.subject_span), as_source=True):
        return
    kind = graph.node_kinds[block.subject]
    if block.field is not None:
        decl = stages.get(block.subject)
        has_fields = (kind == "tool") or (kind == "llm" and decl is not None and decl.get("output") == "json")
        if not has_fields:
            hint = "set `output = json` on the stage so its fields can be read" if kind == "llm" else None
            ctx.diags.error("CX409", f"`{block.subject}` is {_article(kind)} {kind} stage without named fields", block.subject_span,
                            hint=hint or f"branch on its outcomes instead: `on {block.subject} {{ ... }}`")
            resolver.ok = False
            return
    outcomes = ir.OUTCOMES[kind]
    seen: dict[str, Span] = {}
    for case in block.cases:
        if not resolver.node(case.target, as_source=False):
            continue
        labels = case.labels
        if any(lab.is_else for lab in labels):
            if len(labels) > 1:
                ctx.diags.error("CX402", "`else` stands alone in its case", case.span)
                resolver.ok = False
                continue
            edge_kind, values = "else", ()
            if "else" in seen:
                ctx.diags.error("CX402", f"`on {block.subject}` has two `else` cases", labels[0].span)
                resolver.ok = False
                continue
            seen["else"] = labels[0].span
        else:
            edge_kind = "field" if block.field else "outcome"
            values = tuple(lab.text for lab in labels)
            for lab in labels:
                if edge_kind == "outcome" and lab.text not in outcomes:
                    ctx.diags.error("CX404", f"{kind} stages have no outcome `{lab.text}`", lab.span,
                                    hint=did_you_mean(lab.text, outcomes) or f"its outcomes: {', '.join(outcomes)}")
                    resolver.ok = False
                elif lab.text in seen:
                    ctx.diags.error("CX402", f"`{lab.text}` is handled twice", lab.span,
                                    notes=[f"first handled at line {seen[lab.text].line}"])
                    resolver.ok = False
                else:
                    seen[lab.text] = lab.span
        prob = None
        if case.probability is not None:
            q = case.probability
            if q.unit != "%" or q.per or not 0 <= q.number <= 100:
                ctx.diags.error("CX202", f"`{q.raw}` is not a probability", q.span, hint="write it like `(20%)`")
                resolver.ok = False
            else:
                prob = q.number / 100.0
        graph.edges.append(EdgeInfo(block.subject, case.target.name, edge_kind, values, block.field, prob,
                                    _loop_name(case.loop), case.span))
        if case.loop:
            _record_loop(case.loop, graph, resolver)


def _record_loop(clause: ast.LoopClause, graph: FlowGraph, resolver: _Resolver) -> None:
    ctx = resolver.ctx
    for part in clause.repeated:
        ctx.diags.error("CX408", f"`{part}` is written twice for loop `{clause.name}`", clause.span)
        resolver.ok = False
    info = graph.loops.setdefault(clause.name, LoopInfo(clause.name, first_span=clause.name_span))
    if clause.max is not None:
        if info.max_span is not None:
            ctx.diags.error("CX408", f"the budget of loop `{clause.name}` is stated twice", clause.max.span,
                            notes=[f"first stated at line {info.max_span.line}"],
                            hint="state `max` on one of the loop's edges only")
            resolver.ok = False
        else:
            knob = int_knob(1, 10_000)(clause.max, ctx)
            if knob is INVALID:
                resolver.ok = False
            else:
                info.max, info.max_span = knob, clause.max.span
    if clause.then is not None and resolver.node(clause.then, as_source=False):
        if info.then is not None and info.then != clause.then.name:
            ctx.diags.error("CX408", f"loop `{clause.name}` ends in two places: `{info.then}` and "
                            f"`{clause.then.name}`", clause.then.span)
            resolver.ok = False
        info.then = clause.then.name
    if clause.within is not None:
        if info.within is not None and info.within != clause.within:
            ctx.diags.error("CX408", f"loop `{clause.name}` is nested in two loops", clause.within_span)
            resolver.ok = False
        info.within, info.within_span = clause.within, clause.within_span


# ---------------------------------------------------------------- checks


def _check_one_way_out(by_source: dict[str, list[EdgeInfo]], ctx: ValueContext) -> bool:
    ok = True
    for source, edges in by_source.items():
        always = [e for e in edges if e.kind == "always"]
        branched = [e for e in edges if e.kind != "always"]
        if len(always) > 1 or (always and branched):
            second = always[1] if len(always) > 1 else (branched[0] if always[0].span.line <= branched[0].span.line else always[0])
            ctx.diags.error("CX402", f"`{source}` has more than one way out", second.span,
                            hint="a node has one unconditional edge or one `on` block; "
                                 "for parallel calls declare a `fanout`")
            ok = False
        fields = {e.field for e in branched if e.kind != "else"}
        if len(fields) > 1 or (branched and len({(e.field is None) for e in branched if e.kind != "else"}) > 1):
            ctx.diags.error("CX402", f"`{source}` is branched on in two `on` blocks", branched[-1].span)
            ok = False
    return ok


def _check_coverage(by_source: dict[str, list[EdgeInfo]], node_kinds: dict[str, str], ctx: ValueContext) -> bool:
    ok = True
    for source, edges in by_source.items():
        if edges[0].kind == "always":
            continue
        has_else = any(e.kind == "else" for e in edges)
        is_field = any(e.kind == "field" for e in edges)
        if is_field and not has_else:
            ctx.diags.error("CX403", f"the branch on `{source}.{edges[0].field}` needs an `else` case", edges[-1].span,
                            hint="fields can take any value; add `else -> ...`")
            ok = False
        elif not is_field:
            covered = {v for e in edges for v in e.values}
            missing = [o for o in ir.OUTCOMES[node_kinds[source]] if o not in covered]
            if missing and not has_else:
                ctx.diags.error("CX403", f"the branch on `{source}` does not handle "
                                + ", ".join(f"`{m}`" for m in missing), edges[-1].span,
                                hint="add " + " or ".join(f"`{m} -> ...`" for m in missing) + ", or `else -> fail`")
                ok = False
            for e in edges:
                if e.kind == "else":
                    e.values = tuple(missing)  # an outcome branch's else matches what is not listed
    return ok


def _assign_probabilities(by_source: dict[str, list[EdgeInfo]], ctx: ValueContext) -> bool:
    ok = True
    for source, edges in by_source.items():
        if edges[0].kind == "always":
            edges[0].probability = 1.0
            continue
        given = [e.explicit_probability for e in edges if e.explicit_probability is not None]
        rest = [e for e in edges if e.explicit_probability is None]
        total = sum(given)
        if total > 1.0 + 1e-9:
            ctx.diags.error("CX405", f"the probabilities on the branch of `{source}` add up to {total:.0%}",
                            edges[-1].span, hint="they must not exceed 100%")
            ok = False
            continue
        if not rest and abs(total - 1.0) > 1e-6:
            ctx.diags.error("CX405", f"the probabilities on the branch of `{source}` add up to {total:.0%}, "
                            "not 100%", edges[-1].span, hint="leave one case without a probability to take the rest")
            ok = False
            continue
        if not given and len(edges) > 1:
            ctx.diags.warning("CX411", f"no probabilities on the branch of `{source}`; planning assumes "
                              "equal shares", edges[0].span, hint="annotate cases like `error (20%) -> fix`")
        for e in edges:
            e.probability = e.explicit_probability if e.explicit_probability is not None else (1.0 - total) / len(rest)
    return ok


def _check_loops(graph: FlowGraph, resolver: _Resolver, ctx: ValueContext) -> bool:
    ok = resolver.ok
    for name, info in graph.loops.items():
        if info.max is None:
            ctx.diags.error("CX408", f"loop `{name}` has no budget", info.first_span,
                            hint=f"write `loop {name} max 3` on one of its edges")
            ok = False
        if info.within is not None and info.within not in graph.loops:
            ctx.diags.error("CX301", f"unknown loop `{info.within}`", info.within_span or info.first_span,
                            hint=did_you_mean(info.within, graph.loops))
            ok = False
    for name in graph.loops:  # the nesting relation must be a forest
        seen, cur = {name}, graph.loops[name].within
        while cur is not None and cur in graph.loops:
            if cur in seen:
                ctx.diags.error("CX408", f"loop `{name}` is nested within itself", graph.loops[name].first_span)
                return False
            seen.add(cur)
            cur = graph.loops[cur].within
    return ok


def _successors(graph: FlowGraph) -> dict[str, set[str]]:
    succ: dict[str, set[str]] = defaultdict(set)
    for e in graph.edges:
        succ[e.source].add(e.target)
        if e.loop:
            succ[e.source].add(graph.loops[e.loop].then or "fail")
    return succ


def _check_dead_ends_and_reachability(graph: FlowGraph, by_source: dict[str, list[EdgeInfo]],
                                      ctx: ValueContext) -> None:
    mentioned: dict[str, Span] = {}
    for e in graph.edges:
        mentioned.setdefault(e.source, e.span)
        mentioned.setdefault(e.target, e.span)
    for node, span in mentioned.items():
        if node not in ir.TERMINALS and node not in by_source:
            ctx.diags.error("CX401", f"`{node}` has no way out", span, hint=f"add `{node} -> done` or an `on {node}` block")
    succ = _successors(graph)
    reached, stack = {graph.entry}, [graph.entry]
    while stack:
        for nxt in succ.get(stack.pop(), ()):
            if nxt not in reached:
                reached.add(nxt)
                stack.append(nxt)
    for node, span in mentioned.items():
        if node not in reached and node not in ir.TERMINALS:
            ctx.diags.error("CX407", f"`{node}` can never run: no path leads to it from `{graph.entry}`", span,
                            notes=[f"the flow starts at `{graph.entry}`, the first node of its first statement"])
    if "done" not in reached:
        ctx.diags.error("CX401", f"no path from `{graph.entry}` reaches `done`", mentioned.get(graph.entry))


def _check_unused(stages: dict[str, Decl], fanouts: dict[str, Decl], member_of: dict[str, str],
                  graph: FlowGraph, ctx: ValueContext) -> None:
    used = {e.source for e in graph.edges} | {e.target for e in graph.edges} | {graph.entry}
    for name, decl in stages.items():
        if name not in member_of and name not in used:
            ctx.diags.warning("CX410", f"stage `{name}` is declared but never used in the flow", decl.span)
    for name, decl in fanouts.items():
        if name not in used:
            ctx.diags.warning("CX410", f"fan-out `{name}` is declared but never used in the flow", decl.span)


def _check_acyclic(graph: FlowGraph, ctx: ValueContext) -> bool:
    """No cycle except through a loop edge, counting each loop's exhaustion edge.

    A nested loop whose exhaustion edge leads back into it (``then think
    within rounds``, where ``think`` starts the next round) *rejoins* its
    parent: leaving it counts as an iteration of the parent, so that edge is
    bounded too and marked (``LoopInfo.rejoin``) instead of reported.
    """
    while True:
        cycle = _find_cycle(graph)
        if cycle is None:
            return True
        path, edge, via_exhaustion = cycle
        loop = graph.loops[edge.loop] if edge.loop else None
        if via_exhaustion and loop is not None and loop.within is not None and not loop.rejoin:
            loop.rejoin = True
            continue
        if via_exhaustion:
            hint = ("end the loop at `done`, `fail` or a node after it (`then done`), or, if it runs inside an "
                    "outer loop, make it start the outer loop's next iteration: `within OUTER`")
            ctx.diags.error("CX406", f"when loop `{edge.loop}` runs out it goes to `{loop.then or 'fail'}`, which "
                            f"leads back into it: {' -> '.join(path)}", edge.span, hint=hint)
        else:
            ctx.diags.error("CX406", f"cycle without a loop: {' -> '.join(path)}", edge.span,
                            hint=f"bound it: `{edge.source} -> {edge.target} loop NAME max 3`")
        return False


def _find_cycle(graph: FlowGraph) -> tuple[list[str], EdgeInfo, bool] | None:
    """A cycle over plain edges and the exhaustion edges of loops that do not rejoin their parent:
    (its nodes, the edge to blame, whether that is an exhaustion edge); None if acyclic. An
    exhaustion edge on the cycle is blamed first: bounding the loop it leaves is the fix."""
    succ: dict[str, list[tuple[str, EdgeInfo, bool]]] = defaultdict(list)
    for e in graph.edges:
        if e.loop is None:
            succ[e.source].append((e.target, e, False))
        elif not graph.loops[e.loop].rejoin:
            succ[e.source].append((graph.loops[e.loop].then or "fail", e, True))
    WHITE, GREY, BLACK = 0, 1, 2
    color: dict[str, int] = defaultdict(int)
    for root in sorted({e.source for e in graph.edges}):
        if color[root] != WHITE:
            continue
        path: list[str] = [root]
        via: list[tuple[EdgeInfo, bool] | None] = [None]  # the edge that led to each node of the path
        stack = [iter(succ[root])]
        color[root] = GREY
        while stack:
            step = next(stack[-1], None)
            if step is None:
                color[path.pop()] = BLACK
                via.pop()
                stack.pop()
                continue
            nxt, edge, via_exhaustion = step
            if color[nxt] == GREY:
                start = path.index(nxt)
                edges = [v for v in via[start + 1:] if v is not None] + [(edge, via_exhaustion)]
                blamed = next((v for v in edges if v[1]), edges[-1])
                return path[start:] + [nxt], blamed[0], blamed[1]
            if color[nxt] == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                via.append((edge, via_exhaustion))
                stack.append(iter(succ[nxt]))
    return None
