"""Static analysis of a workflow's call graph for the simulator and the policies.

:class:`WorkflowGraph` precomputes, once per workflow and cluster:

* the run rules (:class:`cortexlang.semantics.Semantics`) under the knobs
  simulated, and every node's out-edges with cumulative probabilities (for sampling);
* each stage's standalone time ``t(n)`` on the cluster's fastest device for the
  stage's model, its shared prefix warm in the cache (LLM: ``LatencyProfile.request_s``
  at the declared tokens, less the prefix's prefill;
  SQL/tool: ``service_s``), and a fan-out's time as its slowest branch chain
  (fastest for ``join = first``);
* the expected remaining critical path ``R(n)`` and its second moment ``M(n)``.
  Over the run states of :meth:`Semantics.expand_bounded` (a node with its loops'
  counters, so loop budgets, ``repeat`` and exhaustion edges hold; long loops are cut
  where runs no longer reach, so a budget of 10,000 costs what its runs reach)::

      R(s) = t(s) + sum_j p_sj R(j)
      M(s) = var(s) + t(s)^2 + 2 t(s) sum_j p_sj R(j) + sum_j p_sj M(j)

  with ``R = M = 0`` at the terminals (one backward pass: the chain is acyclic);
  ``R(n)`` and ``M(n)`` are their means over the states of node ``n``, weighted
  by how often a run visits each. A graph with more than :data:`MAX_STATES` run
  states falls back to the per-node fixed point of the same equations, which
  follows loop edges by their probabilities and ignores budgets (it then
  overestimates bounded loops).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from cortexlang.ir import TERMINALS, Edge, LLMStage, Program, Workflow
from cortexlang.semantics import Semantics, SemanticsError, join_waits_for_all
from planner.profiles import LatencyProfile

MAX_STATES = 50_000
"""Run states beyond which ``R``/``M`` fall back to the budget-blind per-node fixed point."""


def llm_standalone_s(p: LatencyProfile, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
    """Closed form of ``LatencyProfile.request_s``: prefill, then ``output-1`` decode steps alone.

    ``cached_tokens`` of the prompt (a resident shared prefix) are not prefilled.
    """
    return StandaloneTime(p).of(input_tokens, output_tokens, cached_tokens)


class StandaloneTime:
    """:func:`llm_standalone_s` on one profile, its five coefficients read once (C doubles in the
    compiled build: graph.pxd). The run walker keeps one per LLM stage and asks it once per
    scripted call: no attribute lookup on the profile per call."""

    __slots__ = ("prefill_fixed_s", "prefill_per_token_s", "decode_fixed_s", "decode_per_seq_s",
                 "decode_per_kv_token_s")

    def __init__(self, p: LatencyProfile):
        self.prefill_fixed_s = p.prefill_fixed_s
        self.prefill_per_token_s = p.prefill_per_token_s
        self.decode_fixed_s = p.decode_fixed_s
        self.decode_per_seq_s = p.decode_per_seq_s
        self.decode_per_kv_token_s = p.decode_per_kv_token_s

    def of(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Standalone seconds of one call: ``p.prefill_s(input_tokens - cached_tokens)`` and the
        ``output_tokens - 1`` decode steps at batch 1, written out (the same operations in the same
        order as ``LatencyProfile.request_s``)."""
        n = output_tokens - 1 if output_tokens > 1 else 0
        decode = n * (self.decode_fixed_s + self.decode_per_seq_s) + self.decode_per_kv_token_s * (
            n * input_tokens + n * (n - 1) / 2.0)
        tokens = input_tokens - cached_tokens
        return (self.prefill_fixed_s + self.prefill_per_token_s * tokens if tokens > 0 else 0.0) + decode


class KnobChoices(Protocol):
    """The knob values a simulation applies (a plan's :class:`~planner.plan.KnobSettings` or a
    runtime spec's knobs): stage -> model, max_tokens and hedge width, loop -> budget, fan-out -> width."""

    models: Mapping[str, str]
    max_tokens: Mapping[str, int]
    hedge: Mapping[str, int]
    retry_depth: Mapping[str, int]
    fanout_width: Mapping[str, int]


class WorkflowGraph:
    """Lookups and estimates for one workflow on one cluster (see module docstring)."""

    def __init__(self, program: Program, workflow: Workflow, ref_profiles: dict[str, LatencyProfile],
                 knobs: KnobChoices | None = None):
        self.program = program
        self.workflow = workflow
        self.ref_profiles = ref_profiles
        self.semantics = Semantics(workflow, knobs.retry_depth if knobs else None,
                                   knobs.fanout_width if knobs else None)
        """The run rules under the knobs simulated (a plan's retry depths and fan-out widths)."""
        self.stages = {s.name: s for s in workflow.stages}
        llm = [s for s in workflow.stages if isinstance(s, LLMStage)]
        self.model = {s.name: (knobs.models.get(s.name) if knobs else None) or s.models[0].model for s in llm}
        """LLM stage -> the model its calls run on (the plan's model variant, else the preferred one)."""
        self.max_tokens = {s.name: (knobs.max_tokens.get(s.name) if knobs else None) or s.max_tokens.preferred
                           for s in llm}
        """LLM stage -> its output cap (the plan's, else the preferred one)."""
        self.hedge = {s.name: (knobs.hedge.get(s.name) if knobs else None) or s.hedge.preferred for s in llm}
        """LLM stage -> candidates per call (the plan's hedge width, else the preferred one), as the runtime's
        executor sends them."""
        self.alike = any(s.output_correlation > 0.0 for s in llm)
        """Whether some LLM stage draws its output lengths alike the run's others (``output_correlation``):
        each run then draws its shared normal first (``runs._run_latent``)."""
        self.input_limits = {s.name: {o.model: program.model(o.model).max_context - self.max_tokens[s.name]
                                      for o in s.models} for s in llm}
        """LLM stage -> model option -> the longest prompt an engine accepts for the stage's calls: the
        model's ``max_context`` less the stage's ``max_tokens`` (vLLM refuses ``prompt + max_tokens >
        max_model_len``; :func:`runtime.engines.base.check_context`)."""
        self.fanouts = {f.name: f for f in workflow.fanouts}
        self.edges: dict[str, tuple[Edge, ...]] = {}
        self.cum: dict[str, list[float]] = {}
        for node in workflow.nodes:
            cum, out = self.semantics.cumulative(node)
            if not out:
                raise ValueError(f"workflow {workflow.name!r}: node {node!r} has no out-edge")
            self.edges[node] = out
            self.cum[node] = cum
        self.plain_next: dict[str, tuple[str | None, ...]] = {
            node: tuple(e.target if e.loop is None else None for e in out) for node, out in self.edges.items()}
        """Per node, per out-edge: its target when it is not a loop edge, else None (the walk's hot
        path follows a plain edge without reading the Edge's fields)."""
        self.stage_time = {name: self._stage_time(name) for name in self.stages}
        self.stage_var = {name: self._stage_var(name) for name in self.stages}
        self.node_time = {n: self._node_time(n) for n in workflow.nodes}
        self.remaining, self.remaining_std = self._remaining()
        self.steps: dict[tuple[str, int, tuple[int, ...]], object] = {}
        """Memo of ``semantics.take`` on the workflow's own graph, by (node, out-edge index, loop
        counters): a pure function of them, asked again by every run that takes a loop edge."""
        self.draw_cache: dict[tuple[float, str], dict[str, tuple]] = {}
        """Per-stage sampling parameters of scripted runs, by (token CV, service family); see runs.py."""
        self.start_counters = self.semantics.initial_counters()
        """The loop counters every run's own walk starts from (all zero; a tuple, shared: every run
        would otherwise ask the interpreted ``Semantics.initial_counters`` for the same value)."""

    # -- per-node facts ------------------------------------------------------
    def profile_for(self, model: str) -> LatencyProfile:
        try:
            return self.ref_profiles[model]
        except KeyError:
            raise ValueError(f"no replica in the cluster serves model {model!r}") from None

    def _stage_time(self, name: str) -> float:
        s = self.stages[name]
        if isinstance(s, LLMStage):
            return llm_standalone_s(self.profile_for(self.model[name]), s.input_tokens,
                                    round(s.mean_output_tokens(self.max_tokens[name])), s.prefix_tokens)
        attempts = self.semantics.holder(name).attempts_pmf(name) if getattr(s, "retry", None) else ((1, 1.0),)
        backoff = s.retry.backoff_s if getattr(s, "retry", None) else 0.0
        return sum(p * (k * s.service_s + backoff * (2 ** (k - 1) - 1)) for k, p in attempts)

    def _stage_var(self, name: str) -> float:
        s = self.stages[name]
        if isinstance(s, LLMStage):
            return 0.0
        return (s.service_s * s.service_cv) ** 2

    def _node_time(self, node: str) -> float:
        if node in self.fanouts:
            return self._fanout_time(self.semantics, node)
        return self.stage_time[node]

    def _fanout_time(self, sem: Semantics, node: str) -> float:
        """Expected time of a fan-out visit: its branch runs' expected times joined (the slowest,
        or the fastest for ``first``); a map's count does not change it, unless it can be 0."""
        fo = sem.fanout(node)
        times = [self._graph_remaining(sem.branch(node, i))[2] for i in range(len(fo.branches))]
        return max(times) if join_waits_for_all(fo.join) else min(times)

    def _graph_remaining(self, sem: Semantics) -> tuple[dict[str, float], dict[str, float], float]:
        """``R`` and ``M`` (module docstring) over one graph's nodes, and ``R`` of its start state (a run
        of the graph: its expected standalone time)."""
        times = {n: (self._fanout_time(sem, n) if n in self.fanouts else self.stage_time[n]) for n in sem.graph.nodes}
        try:
            chain = sem.expand_bounded(max_states=MAX_STATES)
        except SemanticsError:
            r, m = self._fixed_point_remaining(sem, times)
            return r, m, r[sem.graph.entry]
        n_states = len(chain.states)
        r_s = [0.0] * (n_states + 2)  # the two terminals at the end stay 0
        m_s = [0.0] * (n_states + 2)
        for i in range(n_states - 1, -1, -1):  # states are in topological order
            node = chain.states[i][0]
            t, var = times[node], self.stage_var.get(node, 0.0)
            er = sum(p * r_s[j] for j, p in chain.succ[i])
            r_s[i] = t + er
            m_s[i] = var + t * t + 2 * t * er + sum(p * m_s[j] for j, p in chain.succ[i])
        reach = chain.reach()
        weight: dict[str, float] = {}
        r = {n: 0.0 for n in (*sem.graph.nodes, *TERMINALS)}
        m = dict(r)
        first: dict[str, int] = {}
        for i, (node, _) in enumerate(chain.states):
            first.setdefault(node, i)
            w = reach[i]
            weight[node] = weight.get(node, 0.0) + w
            r[node] += w * r_s[i]
            m[node] += w * m_s[i]
        for node, i in first.items():
            if weight[node] > 0.0:
                r[node] /= weight[node]
                m[node] /= weight[node]
            else:  # a node no run reaches under these knobs: its first state's values
                r[node], m[node] = r_s[i], m_s[i]
        return r, m, r_s[0]

    def _fixed_point_remaining(self, sem: Semantics, times: Mapping[str, float]) -> tuple[dict[str, float],
                                                                                          dict[str, float]]:
        """``R`` and ``M`` per node by fixed-point iteration, loop budgets ignored (the fallback)."""
        nodes = sem.graph.nodes
        r = {n: 0.0 for n in (*nodes, *TERMINALS)}
        m = dict(r)
        out = {n: sem.cumulative(n) for n in nodes}
        for _ in range(200):
            delta = 0.0
            for n in nodes:
                t = times[n]
                var = self.stage_var.get(n, 0.0)
                cum, edges = out[n]
                probs = [c - (cum[i - 1] if i else 0.0) for i, c in enumerate(cum)]
                er = sum(p * r[e.target] for p, e in zip(probs, edges))
                em = sum(p * m[e.target] for p, e in zip(probs, edges))
                new_r = t + er
                delta = max(delta, abs(new_r - r[n]))
                r[n] = new_r
                m[n] = var + t * t + 2 * t * er + em
            if delta < 1e-9:
                break
        return r, m

    def _remaining(self) -> tuple[dict[str, float], dict[str, float]]:
        r, m, self._start_remaining = self._graph_remaining(self.semantics)
        std = {n: math.sqrt(max(m[n] - r[n] ** 2, 0.0)) for n in r}
        self._branch_remaining(self.semantics, r, std)
        return r, std

    def _branch_remaining(self, sem: Semantics, r: dict[str, float], std: dict[str, float]) -> None:
        """Nodes inside fan-out branches: remaining = the rest of their branch run + what follows
        the fan-out (its remaining less its own time), recursively for nested fan-outs."""
        for node in sem.graph.nodes:
            if node not in self.fanouts:
                continue
            after = r[node] - self._fanout_time(sem, node)
            for i in range(len(sem.fanout(node).branches)):
                branch = sem.branch(node, i)
                inner, _, _ = self._graph_remaining(branch)
                for n in branch.graph.nodes:
                    r[n] = max(r.get(n, 0.0), inner[n] + after)
                    std.setdefault(n, std[node])
                self._branch_remaining(branch, r, std)

    def _probs(self, node: str) -> list[float]:
        cum = self.cum[node]
        return [c - (cum[i - 1] if i else 0.0) for i, c in enumerate(cum)]

    def expected_standalone_s(self) -> float:
        """Expected standalone latency of a run: ``R`` of the start state (the entry node's ``R`` is
        averaged over its visits, which differ when a loop returns to it)."""
        return self._start_remaining
