"""Views of a workflow's call graph: Graphviz dot, Mermaid, and JSON. They read the IR only."""

from __future__ import annotations

import json

from cortexlang import ir

_SHAPES_DOT = {"llm": "box", "sql": "cylinder", "tool": "component", "fanout": "box3d"}


def _edge_label(e: ir.Edge) -> str:
    c = e.condition
    if c.kind == "always":
        text = ""
    elif c.kind == "else":
        text = "else"
    elif c.kind == "field":
        text = f"{c.field} = " + " | ".join(c.values)
    else:
        text = " | ".join(c.values)
    if c.kind != "always":
        text += f" ({e.probability:.0%})"
    if e.loop:
        text += f" [loop {e.loop}]"
    return text.strip()


def _node_label(wf: ir.Workflow, name: str) -> str:
    kind = wf.node_kind(name)
    if kind == "fanout":
        fo = wf.fanout(name)
        width = f" ×{fo.width.preferred}" if fo.width else ""
        return f"{name}\\nfanout{width}, join {fo.join}"
    if kind == "llm":
        st = wf.stage(name)
        return f"{name}\\nllm: {' | '.join(m.model for m in st.models)}"
    return f"{name}\\n{kind}"


def _exhaustion_edges(wf: ir.Workflow) -> list[tuple[str, str, str]]:
    """(source, target, label) for where each loop edge goes once its budget is spent."""
    out = []
    for e in wf.edges:
        if e.loop:
            lp = wf.loop(e.loop)
            out.append((e.source, lp.on_exhausted, f"{lp.name} exhausted (max {lp.max_iterations.preferred})"))
    return out


def to_dot(wf: ir.Workflow) -> str:
    def q(s: str) -> str:
        return '"' + s.replace('"', '\\"') + '"'

    lines = [f"digraph {q(wf.name)} {{", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    lines.append(f'  {q("done")} [shape=doublecircle]; {q("fail")} [shape=doublecircle, color=red];')
    for name in wf.nodes:
        lines.append(f"  {q(name)} [shape={_SHAPES_DOT[wf.node_kind(name)]}, label={q(_node_label(wf, name))}];")
    lines.append(f'  start [shape=point]; start -> {q(wf.entry)};')
    for e in wf.edges:
        style = ", style=dashed" if e.loop else ""
        lines.append(f"  {q(e.source)} -> {q(e.target)} [label={q(_edge_label(e))}{style}];")
    for src, dst, label in _exhaustion_edges(wf):
        lines.append(f"  {q(src)} -> {q(dst)} [label={q(label)}, style=dotted, color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(wf: ir.Workflow) -> str:
    shapes = {"llm": ("[", "]"), "sql": ("[(", ")]"), "tool": ("[[", "]]"), "fanout": ("{{", "}}")}
    lines = ["flowchart LR", "  start((start)) --> " + wf.entry]
    for name in wf.nodes:
        a, b = shapes[wf.node_kind(name)]
        lines.append(f'  {name}{a}"{_node_label(wf, name).replace(chr(92) + "n", "<br/>")}"{b}')
    lines.append("  done((done))")
    lines.append("  fail((fail))")
    for e in wf.edges:
        label = _edge_label(e)
        arrow = "-.->" if e.loop else "-->"
        lines.append(f'  {e.source} {arrow}|"{label}"| {e.target}' if label else f"  {e.source} {arrow} {e.target}")
    for src, dst, label in _exhaustion_edges(wf):
        lines.append(f'  {src} -.->|"{label}"| {dst}')
    return "\n".join(lines) + "\n"


def to_json(wf: ir.Workflow) -> str:
    nodes = [{"name": n, "kind": wf.node_kind(n)} for n in wf.nodes]
    doc = {
        "workflow": wf.name,
        "entry": wf.entry,
        "nodes": nodes + [{"name": t, "kind": "terminal"} for t in ir.TERMINALS],
        "edges": [e.model_dump(mode="json") for e in wf.edges],
        "loops": [lp.model_dump(mode="json") for lp in wf.loops],
        "fanouts": [f.model_dump(mode="json") for f in wf.fanouts],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


RENDERERS = {"dot": to_dot, "mermaid": to_mermaid, "json": to_json}
