"""Execution semantics of a workflow's call graph (the IR's rules, see :mod:`cortexlang.ir`).

:class:`ExecGraph` answers, for the run walker:

* which out-edge a finished node takes (:meth:`ExecGraph.choose_edge`): the
  node's only ``always`` edge, else the first ``outcome`` / ``field`` edge that
  matches, else its ``else`` edge;
* which loop a node belongs to, for the ``attempt`` builtin: a loop's *body*
  is every node on a path from one of its edges' targets to one of its edges'
  sources within one iteration (plain edges, and nested loops' edges and
  exits); a node's innermost loop is the smallest body that holds it (a
  fan-out's branch stages share the fan-out's loops);
* estimates for the policies: each node's expected standalone time and the
  expected remaining critical path from it, from
  :class:`runtime.simulator.graph.WorkflowGraph` (the same estimator the
  simulator uses, so policies see the same numbers in both executors).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cortexlang.ir import TERMINALS, Edge, FanOut, LLMStage, Program, Workflow
from planner.profiles import LatencyProfile, all_profiles
from runtime.simulator.graph import WorkflowGraph


def field_text(value: object) -> str:
    """How a result field compares with a branch's literal values (JSON spelling for booleans/null)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class ExecGraph:
    """Lookups for one workflow version (see module docstring)."""

    def __init__(self, program: Program, workflow: Workflow, profiles: Mapping[str, LatencyProfile]) -> None:
        self.workflow = workflow
        self.stages = {s.name: s for s in workflow.stages}
        self.fanouts: dict[str, FanOut] = {f.name: f for f in workflow.fanouts}
        self.loops = {lp.name: lp for lp in workflow.loops}
        self.children = {lp.name: tuple(c.name for c in workflow.loops if c.parent == lp.name)
                         for lp in workflow.loops}
        self.branch_of = {s: f.name for f in workflow.fanouts for b in f.branches for s in b}
        self.innermost_loop = self._innermost_loops()
        self._estimates = WorkflowGraph(program, workflow, _complete_profiles(program, workflow, profiles))

    # ------------------------------------------------------------------ edges
    def choose_edge(self, node: str, outcome: str, result: object) -> Edge | None:
        """The out-edge ``node`` takes after finishing with ``outcome`` and ``result`` (None: no edge matches)."""
        fallback = None
        for e in self.workflow.out_edges(node):
            kind = e.condition.kind
            if kind == "always":
                return e
            if kind == "outcome" and outcome in e.condition.values:
                return e
            if kind == "field" and isinstance(result, dict) and e.condition.field in result:
                if field_text(result[e.condition.field]) in e.condition.values:
                    return e
            if kind == "else":
                fallback = e
        return fallback

    def loops_reset_by(self, loop: str) -> tuple[str, ...]:
        """Loops nested (transitively) in ``loop``: their counters reset when ``loop`` iterates."""
        out: list[str] = []
        stack = list(self.children.get(loop, ()))
        while stack:
            name = stack.pop()
            out.append(name)
            stack.extend(self.children.get(name, ()))
        return tuple(out)

    # ------------------------------------------------------------------ loops
    def _innermost_loops(self) -> dict[str, str]:
        bodies = {lp.name: self._body(lp.name) for lp in self.workflow.loops}
        innermost: dict[str, str] = {}
        for name in (*self.workflow.nodes, *self.branch_of):
            node = self.branch_of.get(name, name)
            holding = [lp for lp, body in bodies.items() if node in body]
            if holding:
                innermost[name] = min(holding, key=lambda lp: (len(bodies[lp]), lp))
        return innermost

    def _body(self, loop: str) -> set[str]:
        """Nodes on a path from the loop's targets to its sources, inside one iteration.

        Paths follow plain edges and the edges (and exhaustion exits) of loops
        nested in this one; the loop's own edges and outer loops' edges would
        leave the iteration.
        """
        inner = set(self.loops_reset_by(loop))
        adj: dict[str, set[str]] = {}
        for e in self.workflow.edges:
            if e.loop is None or e.loop in inner:
                adj.setdefault(e.source, set()).add(e.target)
            if e.loop in inner:
                adj.setdefault(e.source, set()).add(self.loops[e.loop].on_exhausted)
        own = [e for e in self.workflow.edges if e.loop == loop]
        forward = _reach({e.target for e in own}, adj)
        radj: dict[str, set[str]] = {}
        for src, targets in adj.items():
            for dst in targets:
                radj.setdefault(dst, set()).add(src)
        backward = _reach({e.source for e in own}, radj)
        return forward & backward

    # ------------------------------------------------------------------ estimates
    def expected_s(self, node: str) -> float:
        """Expected standalone time of a stage or fan-out."""
        if node in self._estimates.node_time:
            return self._estimates.node_time[node]
        return self._estimates.stage_time.get(node, 0.0)

    def remaining_s(self, node: str) -> float:
        """Expected standalone time from ``node`` (inclusive) to the end of the run."""
        return self._estimates.remaining.get(node, self.expected_s(node))

    def remaining_std_s(self, node: str) -> float:
        return self._estimates.remaining_std.get(node, 0.0)


def _reach(start: set[str], adj: dict[str, set[str]]) -> set[str]:
    """``start`` and every non-terminal node reachable from it along ``adj``."""
    seen = set(start)
    stack = list(start)
    while stack:
        for nxt in adj.get(stack.pop(), ()):
            if nxt not in seen and nxt not in TERMINALS:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _complete_profiles(program: Program, workflow: Workflow,
                       profiles: Mapping[str, LatencyProfile]) -> dict[str, LatencyProfile]:
    """``profiles`` plus a stand-in for every model a stage prefers that has none.

    The stand-in is the model's declared profile family on any device, else
    the first shipped profile: estimates only rank calls, they promise nothing.
    """
    out = dict(profiles)
    for s in workflow.stages:
        if isinstance(s, LLMStage):
            model = s.models[0].model
            if model in out:
                continue
            family = program.model(model).profile
            candidates = [p for p in all_profiles() if p.model == family] or list(all_profiles())
            out[model] = candidates[0]
    return out
