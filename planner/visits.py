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

Stages inside a fan-out are visited once per branch that runs them each time
the fan-out is visited: ``V_s = m_s * V_f`` where ``m_s`` is the number of
branches of fan-out ``f`` that contain ``s`` (``width`` copies for a templated
fan-out). Cancellation by a ``first`` join is ignored (a conservative load).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cortexlang.ir import Workflow
from cortexlang.semantics import Semantics, SemanticsError


class ChainError(SemanticsError):
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


def build_chain(workflow: Workflow, loop_budget: Mapping[str, int] | None = None) -> VisitChain:
    """Expand ``workflow`` into its absorbing chain (:meth:`cortexlang.semantics.Semantics.expand`).

    ``loop_budget`` overrides loops' ``max_iterations`` (a malleable knob);
    loops not named use their preferred budget. Raises :class:`ChainError` on
    a graph that is not a DAG once loop edges are counted.
    """
    sem = Semantics(workflow, loop_budget)
    try:
        chain = sem.expand()
    except SemanticsError as exc:
        raise ChainError(str(exc)) from None
    return VisitChain(workflow=workflow, loop_budget=dict(sem.budget), states=chain.states, succ=chain.succ)


def branch_multiplicity(workflow: Workflow, fanout_width: Mapping[str, int] | None = None) -> dict[str, tuple[str, int]]:
    """Stage inside a fan-out -> (fan-out, branches of one fan-out visit that run it)."""
    return Semantics(workflow, fanout_width=fanout_width).branch_multiplicity()


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
