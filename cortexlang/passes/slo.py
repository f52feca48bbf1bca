"""Pass 5: is the SLO satisfiable, in principle, before any planning?

Two profile-free necessary conditions:

1. **Success probability.** A run that ends in ``fail`` misses its SLO. With
   the declared branch probabilities and loop budgets, the probability that a
   run reaches ``done`` is computed exactly by dynamic programming over states
   ``(node, loop counters)``::

       P(node, c) = Σ_e  p_e · P(next(e, c))

   where taking a loop edge whose budget is spent leads to the loop's
   ``on_exhausted`` target, and taking an edge of loop L resets the counters of
   loops nested within L. Counters only grow between resets of inner loops, so
   the recursion terminates. If ``P(entry, 0) < attainment`` the SLO cannot be
   met by any plan (CX501).
2. **Time floor.** Declared SQL/tool service times along the fastest path to
   ``done`` (LLM stages counted as zero) must fit the latency target (CX501);
   per-stage budgets on that path should too (CX502, a warning).
"""

from __future__ import annotations

import heapq
import sys
from functools import lru_cache

from cortexlang import ir
from cortexlang.diagnostics import DiagnosticCollector, Span

MAX_STATES = 200_000


def success_probability(wf: ir.Workflow, max_states: int = MAX_STATES) -> float | None:
    """P(a run reaches ``done``) under the declared probabilities and preferred loop budgets.

    Returns None when the state space exceeds ``max_states`` (the check is then skipped).
    Fan-out nodes are treated through their out-edges' probabilities.
    """
    loop_names = [lp.name for lp in wf.loops]
    index = {n: i for i, n in enumerate(loop_names)}
    budget = [lp.max_iterations.preferred for lp in wf.loops]
    exhausted = [lp.on_exhausted for lp in wf.loops]
    children: list[list[int]] = [[] for _ in loop_names]
    for lp in wf.loops:
        if lp.parent is not None:
            children[index[lp.parent]].append(index[lp.name])
    descendants = [_descendants(i, children) for i in range(len(loop_names))]
    out = {n: wf.out_edges(n) for n in wf.nodes}
    states = 0

    @lru_cache(maxsize=None)
    def p(node: str, counters: tuple[int, ...]) -> float:
        nonlocal states
        if node == "done":
            return 1.0
        if node == "fail":
            return 0.0
        states += 1
        if states > max_states:
            raise _TooLarge
        total = 0.0
        for e in out[node]:
            if e.probability == 0.0:
                continue
            if e.loop is None:
                total += e.probability * p(e.target, counters)
                continue
            i = index[e.loop]
            if counters[i] >= budget[i]:
                total += e.probability * p(exhausted[i], counters)
                continue
            nxt = list(counters)
            nxt[i] += 1
            for j in descendants[i]:
                nxt[j] = 0
            total += e.probability * p(e.target, tuple(nxt))
        return total

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return p(wf.entry, tuple(0 for _ in loop_names))
    except (_TooLarge, RecursionError):
        return None
    finally:
        sys.setrecursionlimit(limit)


class _TooLarge(Exception):
    pass


def _descendants(i: int, children: list[list[int]]) -> list[int]:
    out, stack = [], list(children[i])
    while stack:
        j = stack.pop()
        out.append(j)
        stack.extend(children[j])
    return out


def _node_floor(wf: ir.Workflow, node: str, use_budget: bool) -> float:
    """A lower bound on a node's time: declared service (sql/tool) or budget; LLM = 0."""
    kind = wf.node_kind(node)
    if kind == "terminal":
        return 0.0
    if kind == "fanout":
        fo = wf.fanout(node)
        return max(sum(_stage_floor(wf.stage(s), use_budget) for s in branch) for branch in fo.branches)
    return _stage_floor(wf.stage(node), use_budget)


def _stage_floor(stage, use_budget: bool) -> float:
    if use_budget:
        return stage.budget_s or 0.0
    return 0.0 if stage.kind == "llm" else stage.service_s


def fastest_path_s(wf: ir.Workflow, use_budget: bool = False) -> tuple[float, list[str]]:
    """Dijkstra from the entry to ``done`` over node floors; (seconds, path)."""
    dist = {wf.entry: _node_floor(wf, wf.entry, use_budget)}
    prev: dict[str, str] = {}
    heap = [(dist[wf.entry], wf.entry)]
    while heap:
        d, node = heapq.heappop(heap)
        if node == "done":
            path = [node]
            while path[-1] in prev:
                path.append(prev[path[-1]])
            return d, path[::-1]
        if d > dist.get(node, float("inf")) or node == "fail":
            continue
        for e in wf.out_edges(node):
            nd = d + _node_floor(wf, e.target, use_budget)
            if nd < dist.get(e.target, float("inf")):
                dist[e.target], prev[e.target] = nd, node
                heapq.heappush(heap, (nd, e.target))
    return float("inf"), []


def check_slo(wf: ir.Workflow, slo_span: Span | None, diags: DiagnosticCollector) -> None:
    if wf.slo is None:
        return
    slo = wf.slo
    p = success_probability(wf)
    if p is not None and p + 1e-12 < slo.attainment:
        diags.error("CX501", f"the SLO asks {slo.attainment * 100:.4g}% of runs of `{wf.name}` to finish in time, "
                    f"but by the declared probabilities only {p * 100:.4g}% reach `done`", slo_span,
                    hint="raise a retry budget, lower the attainment, or revisit the branch probabilities")
    floor, path = fastest_path_s(wf)
    if floor > slo.latency_s:
        diags.error("CX501", f"the SQL and tool stages on the fastest path ({' -> '.join(path)}) are expected to "
                    f"take {floor:.3g}s, more than the {slo.latency_s:.3g}s SLO", slo_span)
    budget, bpath = fastest_path_s(wf, use_budget=True)
    if budget > slo.latency_s:
        diags.warning("CX502", f"stage budgets on the fastest path ({' -> '.join(bpath)}) add up to {budget:.3g}s, "
                      f"more than the {slo.latency_s:.3g}s SLO", slo_span)
