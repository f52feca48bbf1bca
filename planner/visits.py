"""Visits per stage: an absorbing Markov chain over (node, loop counters).

The maths
---------
A workflow's call graph with branch probabilities is a Markov chain over its
nodes, except that loops carry budgets: a loop edge may be taken at most
``max_iterations`` times, after which it leads to the loop's ``on_exhausted``
target. Making the budget part of the state restores the Markov property. The
*expanded* chain has states ``(node, c)`` where ``c`` is the vector of loop
counters (one per loop, in declaration order), and, for an out-edge ``e`` of
``node`` taken with probability ``p_e``:

* ``e`` is not a loop edge: ``(node, c) -> (e.target, c)``;
* ``e`` iterates loop ``L`` and ``c[L] < max_L``: ``-> (e.target, c')`` with
  ``c'[L] = c[L] + 1`` and the counters of loops nested in ``L`` reset to 0;
* ``e`` iterates ``L`` and ``c[L] = max_L``: ``-> (L.on_exhausted, c)``.

``done`` and ``fail`` are the absorbing states. Because the graph without loop
edges is acyclic and every loop edge increases the counter vector in the
lexicographic order "outer loops first" (nested counters only reset when an
outer counter grows), the expanded chain is a DAG: each state is visited at
most once per run. Hence, with ``r(s)`` the probability of reaching state
``s`` (one forward pass in topological order, ``r(start) = 1``,
``r(t) = sum_s r(s) P(s, t)``):

* expected visits to node ``n``: ``E[V_n] = sum_{s=(n, c)} r(s)`` (equal to
  the row of the fundamental matrix ``(I - Q)^-1`` for the start state);
* absorption probabilities: ``P(done) = r(done)``, ``P(fail) = r(fail)``;
* the *distribution* of ``V_n``: a forward pass that carries, per state, the
  probability mass of "reached here having visited ``n`` k times so far",
  ``m_s[k]``; leaving a state of node ``n`` shifts its mass by one. The mass
  reaching the terminals is the distribution of ``V_n`` (tail latency in
  NL2SQL-style workflows is dominated by this retry depth, not its mean).

Stages inside a fan-out are visited once per branch that runs them each time
the fan-out is visited: ``V_s = m_s * V_f`` where ``m_s`` is the number of
branches of fan-out ``f`` that contain ``s`` (``width`` copies for a templated
fan-out). Cancellation by a ``first`` join is ignored (a conservative load).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cortexlang.ir import TERMINALS, Workflow

DONE, FAIL = TERMINALS


class ChainError(ValueError):
    """The workflow's graph cannot be expanded (a cycle without a loop edge, a bad reference)."""


@dataclass(frozen=True)
class VisitChain:
    """The expanded absorbing chain of one workflow under fixed loop budgets.

    ``states[i] = (node, counters)`` for transient states, in topological
    order (``states[0]`` is the start); index ``len(states)`` is ``done`` and
    ``len(states) + 1`` is ``fail``. ``succ[i]`` lists ``(j, p)`` pairs.
    """

    workflow: Workflow
    loop_budget: Mapping[str, int]
    states: tuple[tuple[str, tuple[int, ...]], ...]
    succ: tuple[tuple[tuple[int, float], ...], ...]

    @property
    def done_index(self) -> int:
        return len(self.states)

    @property
    def fail_index(self) -> int:
        return len(self.states) + 1

    def reach(self) -> np.ndarray:
        """Reach probability of every state (transient states, then done, fail)."""
        r = np.zeros(len(self.states) + 2)
        r[0] = 1.0
        for i, out in enumerate(self.succ):
            if r[i]:
                for j, p in out:
                    r[j] += r[i] * p
        return r

    def p_done(self) -> float:
        return float(self.reach()[self.done_index])

    def p_fail(self) -> float:
        return float(self.reach()[self.fail_index])

    def expected_node_visits(self) -> dict[str, float]:
        """E[visits] of every graph node (stages outside fan-outs, and fan-outs)."""
        r = self.reach()
        out: dict[str, float] = {n: 0.0 for n in self.workflow.nodes}
        for i, (node, _) in enumerate(self.states):
            out[node] += float(r[i])
        return out

    def node_visit_distribution(self, node: str) -> np.ndarray:
        """``pmf[k] = P(node is visited exactly k times in a run)``."""
        max_k = sum(1 for n, _ in self.states if n == node)
        mass = np.zeros((len(self.states) + 2, max_k + 1))
        mass[0, 0] = 1.0
        for i, out in enumerate(self.succ):
            m = mass[i]
            if not m.any():
                continue
            if self.states[i][0] == node:
                m = np.concatenate(([0.0], m[:-1]))
            for j, p in out:
                mass[j] += p * m
        return mass[self.done_index] + mass[self.fail_index]


def _loop_children(workflow: Workflow) -> dict[str, set[str]]:
    """Loop -> every loop nested in it (transitively), whose counters reset when it iterates."""
    children: dict[str, set[str]] = defaultdict(set)
    for lp in workflow.loops:
        parent = lp.parent
        while parent is not None:
            children[parent].add(lp.name)
            parent = workflow.loop(parent).parent
    return children


def build_chain(workflow: Workflow, loop_budget: Mapping[str, int] | None = None) -> VisitChain:
    """Expand ``workflow`` into its absorbing chain.

    ``loop_budget`` overrides loops' ``max_iterations`` (a malleable knob);
    loops not named use their preferred budget. Raises :class:`ChainError` on
    a graph that is not a DAG once loop edges are counted.
    """
    loops = [lp.name for lp in workflow.loops]
    budget = {lp.name: lp.max_iterations.preferred for lp in workflow.loops}
    budget.update(loop_budget or {})
    children = _loop_children(workflow)
    nodes = set(workflow.nodes)
    out_edges = {n: workflow.out_edges(n) for n in nodes}
    for n in nodes:
        for e in out_edges[n]:
            if e.target not in nodes and e.target not in TERMINALS:
                raise ChainError(f"edge {e.source} -> {e.target}: unknown target")

    def step(node: str, counters: tuple[int, ...]) -> list[tuple[tuple[str, tuple[int, ...]], float]]:
        result = []
        for e in out_edges[node]:
            if e.probability <= 0.0:
                continue
            if e.loop is None:
                result.append(((e.target, counters), e.probability))
                continue
            k = loops.index(e.loop)
            if counters[k] < budget[e.loop]:
                nxt = list(counters)
                nxt[k] += 1
                for child in children.get(e.loop, ()):
                    nxt[loops.index(child)] = 0
                result.append(((e.target, tuple(nxt)), e.probability))
            else:
                target = workflow.loop(e.loop).on_exhausted
                result.append(((target, counters), e.probability))
        return result

    if workflow.entry not in nodes:
        raise ChainError(f"entry {workflow.entry!r} is not a node of the graph")
    start = (workflow.entry, tuple(0 for _ in loops))
    # Discover the transient states and their edges.
    edges: dict[tuple, list] = {}
    queue = deque([start])
    while queue:
        s = queue.popleft()
        if s in edges or s[0] in TERMINALS:
            continue
        edges[s] = step(*s)
        for t, _ in edges[s]:
            if t[0] not in TERMINALS and t not in edges:
                queue.append(t)
    # Topological order (Kahn); a leftover means a cycle without a loop edge.
    indeg: dict[tuple, int] = {s: 0 for s in edges}
    for s, out in edges.items():
        for t, _ in out:
            if t in indeg:
                indeg[t] += 1
    order, ready = [], deque(s for s in edges if indeg[s] == 0)
    while ready:
        s = ready.popleft()
        order.append(s)
        for t, _ in edges[s]:
            if t in indeg:
                indeg[t] -= 1
                if indeg[t] == 0:
                    ready.append(t)
    if len(order) != len(edges):
        stuck = sorted({s[0] for s in edges if s not in order})
        raise ChainError(f"cycle without a loop edge through {', '.join(stuck)}")
    if order[0] != start:
        raise ChainError("the entry is reachable from another node without a loop edge")
    index = {s: i for i, s in enumerate(order)}
    n = len(order)
    term = {DONE: n, FAIL: n + 1}
    succ = []
    for s in order:
        merged: dict[int, float] = defaultdict(float)
        for t, p in edges[s]:
            merged[term[t[0]] if t[0] in TERMINALS else index[t]] += p
        succ.append(tuple(sorted(merged.items())))
    return VisitChain(workflow=workflow, loop_budget=dict(budget), states=tuple(order), succ=tuple(succ))


def branch_multiplicity(workflow: Workflow, fanout_width: Mapping[str, int] | None = None) -> dict[str, tuple[str, int]]:
    """Stage inside a fan-out -> (fan-out, branches of one fan-out visit that run it)."""
    widths = dict(fanout_width or {})
    result: dict[str, tuple[str, int]] = {}
    for f in workflow.fanouts:
        copies = f.branch_count(widths.get(f.name)) if f.width is not None else 1
        count: dict[str, int] = defaultdict(int)
        for branch in f.branches:
            for s in branch:
                count[s] += copies
        for s, k in count.items():
            result[s] = (f.name, k)
    return result


def expected_stage_visits(chain: VisitChain, fanout_width: Mapping[str, int] | None = None) -> dict[str, float]:
    """E[visits] per stage per run, fan-out branch stages included."""
    node_visits = chain.expected_node_visits()
    out = {s.name: node_visits.get(s.name, 0.0) for s in chain.workflow.stages}
    for stage, (fanout, k) in branch_multiplicity(chain.workflow, fanout_width).items():
        out[stage] = k * node_visits[fanout]
    return out


def stage_visit_distribution(
    chain: VisitChain, stage: str, fanout_width: Mapping[str, int] | None = None
) -> np.ndarray:
    """``pmf[k] = P(stage runs exactly k times in a run)`` (fan-out copies included)."""
    inside = branch_multiplicity(chain.workflow, fanout_width)
    if stage not in inside:
        return chain.node_visit_distribution(stage)
    fanout, k = inside[stage]
    per_node = chain.node_visit_distribution(fanout)
    pmf = np.zeros(k * (len(per_node) - 1) + 1)
    pmf[:: k] = per_node
    return pmf
