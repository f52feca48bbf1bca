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
    descendants = [frozenset(_descendants(i, children)) for i in range(len(loop_names))]
    out = {n: wf.out_edges(n) for n in wf.nodes}
    live = _live_loops(wf, index)
    states = 0

    # Counters are kept sparse: a sorted tuple of (loop index, count) for non-zero counts.
    @lru_cache(maxsize=None)
    def p(node: str, counters: tuple[tuple[int, int], ...]) -> float:
        nonlocal states
        if node == "done":
            return 1.0
        if node == "fail":
            return 0.0
        relevant = tuple(kv for kv in counters if kv[0] in live[node])
        if relevant != counters:
            return p(node, relevant)
        states += 1
        if states > max_states:
            raise _TooLarge
        count = dict(counters)
        total = 0.0
        for e in out[node]:
            if e.probability == 0.0:
                continue
            if e.loop is None:
                total += e.probability * p(e.target, counters)
                continue
            i = index[e.loop]
            if count.get(i, 0) >= budget[i]:
                total += e.probability * p(exhausted[i], counters)
                continue
            nxt = {k: v for k, v in count.items() if k not in descendants[i]}
            nxt[i] = count.get(i, 0) + 1
            total += e.probability * p(e.target, tuple(sorted(nxt.items())))
        return total

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return p(wf.entry, ())
    except (_TooLarge, RecursionError):
        return None
    finally:
        sys.setrecursionlimit(limit)


class _TooLarge(Exception):
    pass


def _live_loops(wf: ir.Workflow, index: dict[str, int]) -> dict[str, frozenset[int]]:
    """Per node, the loops with an edge reachable from it (whose counters still matter).

    live(n) = own(n) ∪ live(successors), solved on the strongly connected
    components (Tarjan), in reverse topological order: linear in the graph size
    plus the size of the sets.
    """
    succ: dict[str, list[str]] = {n: [] for n in wf.nodes}
    own: dict[str, set[int]] = {n: set() for n in wf.nodes}
    for e in wf.edges:
        targets = [e.target] + ([wf.loop(e.loop).on_exhausted] if e.loop is not None else [])
        succ[e.source].extend(t for t in targets if t in succ)
        if e.loop is not None:
            own[e.source].add(index[e.loop])
    live: dict[str, frozenset[int]] = {}
    for component in _tarjan(succ):  # emitted sinks first
        members = set(component)
        loops = set().union(*(own[n] for n in component))
        for n in component:
            for m in succ[n]:
                if m not in members:
                    loops |= live[m]
        frozen = frozenset(loops)
        for n in component:
            live[n] = frozen
    return live


def _tarjan(succ: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components, iteratively, in reverse topological order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in succ:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                out.append(comp)
    return out


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
