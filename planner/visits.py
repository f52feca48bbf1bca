"""Visits per stage: an absorbing Markov chain over (node, loop counters).

The maths
---------
A workflow's call graph with branch probabilities and loop budgets is an
absorbing Markov chain over run states ``(node, loop counters)``; the rules
(taking a loop edge, exhaustion, nested resets) and the expansion are defined
once in :mod:`cortexlang.semantics`. This module computes visit statistics
from that chain.

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

Stages inside a fan-out's branches: each branch run walks its sub-flow's own
chain (the same rules), so, with ``V_f`` the visits to fan-out ``f``, ``W_f``
the branches per visit (its width distribution; 1 for a listed branch) and
``B_s`` the visits to ``s`` in one branch run, all independent,
``V_s = sum_{i <= sum_{j <= V_f} W_j} B_{s,i}``: a compound distribution,
computed exactly by convolution; ``E[V_s] = E[V_f] E[W_f] E[B_s]``. Nested
fan-outs apply the same step again. A map that shares another fan-out's width
is drawn independently here (exact in expectation). Cancellation by a
``first`` join is ignored (a conservative load).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cortexlang.ir import Graph, Loop, Workflow
from cortexlang.semantics import ExpandedChain, Semantics, SemanticsError


class ChainError(SemanticsError):
    """The workflow's graph cannot be expanded (a cycle without a loop edge, a bad reference)."""


@dataclass(frozen=True)
class VisitChain(ExpandedChain):
    """The expanded absorbing chain (:class:`cortexlang.semantics.ExpandedChain`: ``states`` in
    topological order, ``succ`` as ``(j, p)`` pairs, then ``done`` and ``fail``) of one call graph --
    a workflow, or one fan-out branch's sub-flow -- under fixed loop budgets, with what visit
    statistics need. ``loop_budget`` holds the budget of every loop of the workflow, branches' included.
    """

    workflow: Workflow
    loop_budget: Mapping[str, int]
    graph: Graph | None = None
    """The graph expanded; None for the workflow itself."""

    def reach(self) -> np.ndarray:  # type: ignore[override]
        """Reach probability of every state (transient states, then done, fail)."""
        return np.array(super().reach())

    def p_done(self) -> float:
        return float(self.reach()[self.done_index])

    def p_fail(self) -> float:
        return float(self.reach()[self.fail_index])

    def expected_node_visits(self) -> dict[str, float]:
        """E[visits] of every node of the graph (its stages and fan-outs)."""
        r = self.reach()
        out: dict[str, float] = {n: 0.0 for n in (self.graph or self.workflow).nodes}
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


def all_loops(workflow: Workflow) -> tuple[Loop, ...]:
    """Every loop of the workflow: its own and those of its fan-outs' branches."""
    return workflow.loops + tuple(lp for f in workflow.fanouts for b in f.branches for lp in b.loops)


def build_chain(workflow: Workflow, loop_budget: Mapping[str, int] | None = None) -> VisitChain:
    """Expand ``workflow`` into its absorbing chain (:meth:`cortexlang.semantics.Semantics.expand_bounded`:
    long loops cut where runs reach them with probability at most 1e-12).

    ``loop_budget`` overrides loops' ``max_iterations`` (a malleable knob);
    loops not named use their preferred budget. Raises :class:`ChainError` on
    a graph that is not a DAG once loop edges are counted.
    """
    budget = {lp.name: lp.max_iterations.preferred for lp in all_loops(workflow)}
    budget.update({k: v for k, v in (loop_budget or {}).items() if k in budget})
    return _expand(Semantics(workflow, budget), budget)


def _expand(sem: Semantics, budget: dict[str, int]) -> VisitChain:
    try:
        chain = sem.expand_bounded()
    except SemanticsError as exc:
        raise ChainError(str(exc)) from None
    graph = None if sem.graph is sem.workflow else sem.graph
    return VisitChain(workflow=sem.workflow, loop_budget=budget, states=chain.states, succ=chain.succ, graph=graph,
                      cut=chain.cut)


def branch_chain(chain: VisitChain, fanout: str, index: int = 0,
                 fanout_width: Mapping[str, int] | None = None) -> VisitChain:
    """The chain of ``fanout``'s sub-flow ``index`` under ``chain``'s loop budgets."""
    sem = Semantics(chain.workflow, chain.loop_budget, fanout_width).branch(fanout, index)
    return _expand(sem, dict(chain.loop_budget))


def branch_multiplicity(workflow: Workflow, fanout_width: Mapping[str, int] | None = None) -> dict[str, tuple[str, int]]:
    """Node inside a fan-out -> (that fan-out, the most copies of it one top-level visit starts at
    once): the largest width of every fan-out it is nested in, multiplied (1 for a listed branch)."""
    sem = Semantics(workflow, fanout_width=fanout_width)
    owner = workflow.branch_owner()

    def copies(fanout: str) -> int:
        fo = sem.fanout(fanout)
        own = 1 if len(fo.branches) > 1 else max(w for w, _ in sem.width_pmf(fanout))
        return own * (copies(owner[fanout]) if fanout in owner else 1)

    return {node: (f, copies(f)) for node, f in owner.items()}


def expected_stage_visits(chain: VisitChain, fanout_width: Mapping[str, int] | None = None) -> dict[str, float]:
    """E[visits] per stage per run, stages in fan-out branches included (see module docstring)."""
    sem = Semantics(chain.workflow, chain.loop_budget, fanout_width)
    out = {s.name: 0.0 for s in chain.workflow.stages}

    def add(ch: VisitChain, scale: float) -> None:
        for node, v in ch.expected_node_visits().items():
            if node not in chain.workflow._index["fanout"]:
                out[node] += scale * v
                continue
            fo = sem.fanout(node)
            if len(fo.branches) > 1:
                for i in range(len(fo.branches)):
                    add(branch_chain(chain, node, i, fanout_width), scale * v)
            else:
                add(branch_chain(chain, node, 0, fanout_width), scale * v * sem.expected_width(node))

    add(chain, 1.0)
    return out


def stage_visit_distribution(
    chain: VisitChain, stage: str, fanout_width: Mapping[str, int] | None = None
) -> np.ndarray:
    """``pmf[k] = P(stage runs exactly k times in a run)``, branch runs included (see module docstring)."""
    wf = chain.workflow
    owner = wf.branch_owner()
    fanout = owner.get(stage)
    if fanout is None:
        return chain.node_visit_distribution(stage)
    sem = Semantics(wf, chain.loop_budget, fanout_width)
    fo = sem.fanout(fanout)
    index = next(i for i, b in enumerate(fo.branches) if stage in b.nodes)
    per_visit = np.zeros(1 + max(w for w, _ in sem.width_pmf(fanout))) if len(fo.branches) == 1 else np.array([0.0, 1.0])
    if len(fo.branches) == 1:
        for w, p in sem.width_pmf(fanout):
            per_visit[w] += p
    branch_runs = compound(stage_visit_distribution(chain, fanout, fanout_width), per_visit)
    inner = branch_chain(chain, fanout, index, fanout_width)
    return compound(branch_runs, inner.node_visit_distribution(stage))


def compound(count: np.ndarray, each: np.ndarray) -> np.ndarray:
    """The distribution of ``X_1 + ... + X_N`` with ``N ~ count`` and i.i.d. ``X_i ~ each`` (pmfs
    over 0, 1, 2, ...): ``sum_n count[n] each^{*n}``."""
    out = np.zeros((len(count) - 1) * (len(each) - 1) + 1)
    power = np.array([1.0])
    for n, p in enumerate(count):
        if p:
            out[: len(power)] += p * power
        if n + 1 < len(count):
            power = np.convolve(power, each)
    return out
