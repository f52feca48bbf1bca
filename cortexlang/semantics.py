"""Execution semantics of the IR: how one run moves through a workflow's call graph.

This module is the one definition of those rules. The compiler's SLO pass, the
planner (visit distributions, path sampling), the simulator's run walker and
the orchestrator's executor all consume it; it imports nothing but the IR.

A run's *state* between two node visits is ``(node, counters)``: the node about
to run and one iteration counter per loop, in ``Workflow.loops`` order.

Choosing an edge
    When a node finishes, exactly one out-edge is taken. At run time it is the
    edge the node's outcome or result selects (:meth:`Semantics.select_edge`:
    the only ``always`` edge, else the first matching ``outcome``/``field``
    edge, else the ``else`` edge). For planning and simulation it is drawn by
    the edges' planning probabilities (:meth:`Semantics.draw_edge`,
    :meth:`Semantics.edge_weights`, normalised to sum to 1).
Taking an edge (:meth:`Semantics.take`)
    A plain edge moves to its target, counters unchanged. An edge of loop ``L``
    whose counter is below the budget ``B_L`` increments ``c_L`` and resets the
    counters of every loop nested in ``L`` (transitively): a new iteration of
    ``L`` starts its inner loops afresh. Once ``c_L = B_L`` the same edge leads
    to ``L.on_exhausted`` with counters unchanged. A policy may give up on a
    retry early (:meth:`Semantics.exhaust`): the edge then behaves as if the
    budget were spent. Budgets are the loops' preferred values unless a plan's
    knobs override them (``loop_budget``).
Fan-outs
    A fan-out visit runs its branches concurrently. How many
    (:meth:`Semantics.width_pmf`): one per listed branch; ``width`` copies of a
    templated branch (the knob's preferred value unless ``fanout_width``
    overrides it); or, for a map, one per item of a list produced at run time,
    planned by its declared width distribution (capped by ``width`` when set).
    Each branch is a :class:`~cortexlang.ir.SubFlow` walked by these same rules
    (:meth:`Semantics.branch`, with its own loop counters) until ``done`` (the
    branch is ok) or ``fail``. The join decides the fan-out's outcome
    (:func:`join_succeeds`): ``all`` waits for every branch and is ok iff all
    are (vacuously, with no branch); ``first`` finishes with the first ok branch
    and cancels the rest; ``vote`` and ``best`` wait for every branch and are ok
    iff one is.
Retries inside a call (:meth:`Semantics.attempts_pmf`)
    A tool stage with ``retry`` makes up to ``R + 1`` attempts per call; for
    planning, attempts fail independently with ``q = P(error)^(1/(R+1))`` so
    the stage's declared error probability is that of the whole call.
    (``repeat = N`` is lowered by the compiler to an ordinary loop.)
Rejoining a loop
    A nested loop whose ``rejoin_parent`` is set leaves through
    ``on_exhausted`` by iterating its parent: the step counts an iteration of
    the parent (resetting the nested counters, the spent one included), or, if
    the parent's budget is spent too, leaves the parent by its own rule.
The expanded chain (:meth:`Semantics.expand`)
    With edges drawn by probability, states form an absorbing Markov chain whose
    absorbing states are ``done`` and ``fail``. Because the graph without loop
    edges is acyclic and every loop edge increases the counter vector in the
    order "outer loops first", the chain is a DAG: a run visits each state at
    most once, and one forward pass in topological order gives reach
    probabilities and visit distributions exactly. Counters of loops that can no
    longer be iterated from a node are dropped from its state (they cannot
    change what happens next), which keeps the chain small. A loop's budget
    (up to 10,000) would still size the chain, and nested loops multiply;
    :meth:`Semantics.expand_bounded` cuts loops where the runs that reach the
    cut have probability at most a tolerance (:data:`CUT_TOLERANCE`).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from cortexlang.ir import TERMINALS, Edge, FanOut, Graph, Workflow

DONE, FAIL = TERMINALS

Counters = tuple[int, ...]
"""One iteration counter per loop, in ``Workflow.loops`` order."""

State = tuple[str, Counters]
"""``(node about to run, loop counters)``."""

CUT_PROBE = 16
"""The budget :meth:`Semantics.expand_bounded` first expands a loop allowed more iterations with
(every example's loops are allowed at most 10, so their chains are never cut)."""
CUT_TOLERANCE = 1e-12
"""Run probability :meth:`Semantics.expand_bounded` may give up, by default, to cut long loops short:
far below any SLO attainment's tail (at most 99.9999%) and below the chance that one of a few
thousand sampled runs reaches the cut."""


class SemanticsError(ValueError):
    """The workflow cannot be executed as written (a cycle without a loop edge, an unknown target)."""


class Step(NamedTuple):
    """The result of taking one edge."""

    target: str
    """Where the run goes: the edge's target, or the loop's ``on_exhausted`` target."""
    counters: Counters
    loop: str | None
    """The loop this step iterates (None for a plain edge or an exhausted loop)."""
    iteration: int
    """The 1-based iteration of ``loop`` this step starts (0 when ``loop`` is None)."""
    exhausted: str | None
    """The loop whose spent budget (or pruned retry) redirected the edge, if any."""


def join_succeeds(join: str, branch_ok: Sequence[bool]) -> bool:
    """The outcome of a fan-out's join from its branches' ok flags, one per branch (a branch
    cancelled by a ``first`` join counts as not ok); see the module docstring."""
    if join == "all":
        return all(branch_ok)
    return any(branch_ok)


def join_waits_for_all(join: str) -> bool:
    """Whether the join waits for every branch (``first`` finishes with the first ok one)."""
    return join != "first"


@dataclass(frozen=True)
class ExpandedChain:
    """The absorbing chain of one workflow under fixed knobs (see module docstring).

    ``states[i]`` are the transient states in topological order, ``states[0]``
    the start; index ``len(states)`` stands for ``done`` and ``len(states) + 1``
    for ``fail``. ``succ[i]`` lists ``(j, p)`` pairs with ``p > 0`` summing to 1.
    """

    states: tuple[State, ...]
    succ: tuple[tuple[tuple[int, float], ...], ...]
    cut: float = field(default=0.0, kw_only=True)
    """Probability that a run of the full chain differs from a run of this one: 0, or at most the
    tolerance of :meth:`Semantics.expand_bounded` where it cut long loops short."""

    @property
    def done_index(self) -> int:
        return len(self.states)

    @property
    def fail_index(self) -> int:
        return len(self.states) + 1

    def reach(self) -> list[float]:
        """Probability of reaching every state (transient states, then done, fail)."""
        r = [0.0] * (len(self.states) + 2)
        r[0] = 1.0
        for i, out in enumerate(self.succ):
            ri = r[i]
            if ri:
                for j, p in out:
                    r[j] += ri * p
        return r


class Semantics:
    """The execution rules of one workflow under fixed knobs (see module docstring).

    ``loop_budget`` maps loops to the budget a plan chose (others use their
    preferred ``max_iterations``); ``fanout_width`` does the same for templated
    fan-outs. Instances are immutable after construction and cheap to query.
    """

    def __init__(self, workflow: Workflow, loop_budget: Mapping[str, int] | None = None,
                 fanout_width: Mapping[str, int] | None = None, graph: Graph | None = None) -> None:
        self.workflow = workflow
        self.graph: Graph = workflow if graph is None else graph
        """The call graph walked: the workflow, or one fan-out branch's sub-flow (:meth:`branch`)."""
        self._knobs = (dict(loop_budget or {}), dict(fanout_width or {}))
        loops = self.graph.loops
        self.loop_names: tuple[str, ...] = tuple(lp.name for lp in loops)
        self.loop_index = {name: i for i, name in enumerate(self.loop_names)}
        budget = {lp.name: lp.max_iterations.preferred for lp in loops}
        budget.update({k: v for k, v in self._knobs[0].items() if k in budget})
        self.budget: dict[str, int] = budget
        self._budget = tuple(budget[n] for n in self.loop_names)
        self._exit = tuple(lp.on_exhausted for lp in loops)
        self._rejoin = tuple(self.loop_index[lp.parent] if lp.rejoin_parent and lp.parent else -1 for lp in loops)
        self.nested: dict[str, tuple[str, ...]] = {n: self._nested_in(n) for n in self.loop_names}
        """Loop -> every loop nested in it, transitively: their counters reset when it iterates."""
        self._reset = tuple(tuple(self.loop_index[c] for c in self.nested[n]) for n in self.loop_names)
        self.width: dict[str, int] = {
            f.name: self._knobs[1].get(f.name, f.width.preferred)
            for f in workflow.fanouts if f.width is not None}
        self._fanouts = {f.name: f for f in workflow.fanouts}
        self._branch_sem: dict[tuple[str, int], Semantics] = {}
        self._weights: dict[str, tuple[tuple[Edge, float], ...]] = {}
        self._cumulative: dict[str, tuple[list[float], tuple[Edge, ...]]] = {}
        for node in self.graph.nodes:
            out = self.graph.out_edges(node)
            total = sum(e.probability for e in out)
            weights = tuple((e, e.probability / total) for e in out if e.probability > 0) if total > 0 else ()
            self._weights[node] = weights
            acc, cum = 0.0, []
            for e in out:
                acc += e.probability / total if total > 0 else 1.0 / len(out)
                cum.append(acc)
            if cum:
                cum[-1] = 1.0
            self._cumulative[node] = (cum, out)
        self._live: dict[str, frozenset[int]] | None = None

    @property
    def start(self) -> State:
        """The state every run (or branch run) starts in."""
        return self.graph.entry, self.initial_counters()

    def initial_counters(self) -> Counters:
        return (0,) * len(self.loop_names)

    def counters_dict(self, counters: Counters) -> dict[str, int]:
        """``{loop: count}`` for the loops iterated at least once (for reports and events)."""
        return {name: c for name, c in zip(self.loop_names, counters) if c}

    # ------------------------------------------------------------------ choosing an edge
    def select_edge(self, node: str, outcome: str, result: object) -> Edge | None:
        """The out-edge ``node`` takes after finishing with ``outcome`` and ``result`` (None: none matches)."""
        fallback = None
        for e in self.graph.out_edges(node):
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

    def edge_weights(self, node: str) -> tuple[tuple[Edge, float], ...]:
        """``node``'s out-edges with positive planning probability, normalised to sum to 1."""
        return self._weights[node]

    def cumulative(self, node: str) -> tuple[list[float], tuple[Edge, ...]]:
        """Cumulative normalised probabilities of ``node``'s out-edges (last = 1), and the edges."""
        return self._cumulative[node]

    def draw_edge(self, node: str, u: float) -> Edge:
        """The out-edge chosen by a uniform draw ``u`` in [0, 1): the first whose cumulative
        probability exceeds ``u``."""
        cum, edges = self._cumulative[node]
        i = bisect_right(cum, u)
        return edges[i if i < len(cum) else len(cum) - 1]

    # ------------------------------------------------------------------ taking an edge
    def take(self, counters: Counters, edge: Edge) -> Step:
        """Take ``edge`` with ``counters``: iterate its loop while the budget lasts, else exit it."""
        if edge.loop is None:
            return Step(edge.target, counters, None, 0, None)
        return self._iterate(counters, self.loop_index[edge.loop], edge.target)

    def _iterate(self, counters: Counters, i: int, target: str) -> Step:
        used = counters[i]
        if used >= self._budget[i]:
            return self._leave(counters, i)
        nxt = list(counters)
        nxt[i] = used + 1
        for j in self._reset[i]:
            nxt[j] = 0
        return Step(target, tuple(nxt), self.loop_names[i], used + 1, None)

    def _leave(self, counters: Counters, i: int) -> Step:
        """Leave loop ``i`` through its exit; a rejoining loop iterates its parent instead."""
        parent = self._rejoin[i]
        if parent < 0:
            return Step(self._exit[i], counters, None, 0, self.loop_names[i])
        step = self._iterate(counters, parent, self._exit[i])
        return step._replace(exhausted=step.exhausted or self.loop_names[i])

    def exhaust(self, counters: Counters, edge: Edge) -> Step:
        """Take loop edge ``edge`` as if its budget were spent (a retry a policy gave up on)."""
        assert edge.loop is not None, "only a loop edge can be exhausted"
        return self._leave(counters, self.loop_index[edge.loop])

    def holder(self, node: str) -> "Semantics":
        """The rules of the graph ``node`` belongs to: this one, or (recursively) a fan-out branch's."""
        if node in self.graph.nodes:
            return self
        for fo in self._fanouts.values():
            if node in fo.stages and fo.name in self.graph.nodes:
                for i, branch in enumerate(fo.branches):
                    if node in branch.nodes or any(node in self._fanouts[n].stages
                                                   for n in branch.nodes if n in self._fanouts):
                        return self.branch(fo.name, i).holder(node)
        raise KeyError(node)

    # ------------------------------------------------------------------ tool retries
    def error_probability(self, node: str) -> float:
        """Planning probability that ``node`` ends with ``error``: the share of its out-edges an
        ``error`` outcome takes (an ``else`` edge counts when no edge lists ``error``)."""
        edges = self.graph.out_edges(node)
        listed = [e for e in edges if e.condition.kind == "outcome" and "error" in e.condition.values]
        if not listed:
            listed = [e for e in edges if e.condition.kind == "else"]
        total = sum(e.probability for e in edges)
        return sum(e.probability for e in listed) / total if total > 0 else 0.0

    def attempts_pmf(self, stage: str) -> tuple[tuple[int, float], ...]:
        """Distribution of the attempts one call of ``stage`` makes: ``((k, p), ...)``.

        A tool with ``retry`` retries a failed attempt up to ``R`` times. With
        ``P`` the planning probability that the stage ends ``error`` (every
        attempt failed), attempts fail independently with ``q = P^(1/(R+1))``,
        so ``P(k) = q^(k-1) (1-q)`` for ``k <= R`` and ``P(R+1) = q^R``.
        Without ``retry``: one attempt.
        """
        st = self.workflow.stage(stage)
        retry = getattr(st, "retry", None)
        if retry is None:
            return ((1, 1.0),)
        q = self.error_probability(stage) ** (1.0 / (retry.max_retries + 1))
        pmf = [(k, q ** (k - 1) * (1 - q)) for k in range(1, retry.max_retries + 1)]
        return tuple(pmf + [(retry.max_retries + 1, q ** retry.max_retries)])

    # ------------------------------------------------------------------ fan-outs
    def fanout(self, name: str) -> FanOut:
        return self._fanouts[name]

    def width_pmf(self, fanout: str) -> tuple[tuple[int, float], ...]:
        """Planning distribution of the number of branches one visit of ``fanout`` runs:
        ``((width, probability), ...)`` (see module docstring)."""
        fo = self._fanouts[fanout]
        if fo.over is not None:
            source = self._fanouts.get(fo.over)
            shares = self.width_pmf(source.name) if source is not None else tuple(
                (w.width, w.probability) for w in fo.widths)
            cap = self.width.get(fanout)
            if cap is None:
                return shares
            merged: dict[int, float] = {}
            for w, p in shares:
                merged[min(w, cap)] = merged.get(min(w, cap), 0.0) + p
            return tuple(sorted(merged.items()))
        if fo.width is not None:
            return ((self.width[fanout], 1.0),)
        return ((len(fo.branches), 1.0),)

    def expected_width(self, fanout: str) -> float:
        return sum(w * p for w, p in self.width_pmf(fanout))

    def branch_index(self, fanout: str, branch: int) -> int:
        """Which of ``fanout``'s sub-flows branch number ``branch`` of a visit runs."""
        return branch if len(self._fanouts[fanout].branches) > 1 else 0

    def branch(self, fanout: str, index: int = 0) -> "Semantics":
        """The rules of ``fanout``'s sub-flow ``index`` (same workflow and knobs; its own loops)."""
        key = (fanout, index)
        sem = self._branch_sem.get(key)
        if sem is None:
            sem = self._branch_sem[key] = Semantics(self.workflow, *self._knobs,
                                                    graph=self._fanouts[fanout].branches[index])
        return sem

    # ------------------------------------------------------------------ the expanded chain
    def successors(self, state: State, include_unplanned: bool = False) -> list[tuple[State, float]]:
        """The states ``state`` moves to, with probabilities (see :meth:`expand`).

        ``include_unplanned`` also follows edges of planning probability 0 (with
        probability 0): they can still be taken at run time.
        """
        node, counters = state
        if include_unplanned:
            edges: Iterable[tuple[Edge, float]] = ((e, e.probability) for e in self.graph.out_edges(node))
        else:
            edges = self._weights[node]
        out: list[tuple[State, float]] = []
        for e, p in edges:
            step = self.take(counters, e)
            out.append(((step.target, self._canonical(step.target, step.counters)), p))
        return out

    def _canonical(self, node: str, counters: Counters) -> Counters:
        """``counters`` with the loops that can no longer iterate from ``node`` zeroed."""
        if node in TERMINALS or not any(counters):
            return counters if node not in TERMINALS else ()
        live = self.live_loops()[node]
        return tuple(c if i in live else 0 for i, c in enumerate(counters))

    def expand(self, max_states: int | None = None) -> ExpandedChain:
        """The expanded absorbing chain (see module docstring).

        Raises :class:`SemanticsError` on a cycle without a loop edge, an edge
        to an unknown node, or more than ``max_states`` transient states.
        """
        g = self.graph
        nodes = set(g.nodes)
        if g.entry not in nodes:
            raise SemanticsError(f"entry {g.entry!r} is not a node of the graph")
        for e in g.edges:
            if e.source in nodes and e.target not in nodes and e.target not in TERMINALS:
                raise SemanticsError(f"edge {e.source} -> {e.target}: unknown target")
        start = self.start
        edges: dict[State, list[tuple[State, float]]] = {}
        queue = deque([start])
        while queue:
            s = queue.popleft()
            if s in edges:
                continue
            edges[s] = out = self.successors(s)
            if max_states is not None and len(edges) > max_states:
                raise SemanticsError(f"more than {max_states} run states")
            for t, _ in out:
                if t[0] not in TERMINALS and t not in edges:
                    queue.append(t)
        # Topological order (Kahn); a leftover means a cycle without a loop edge.
        indeg = dict.fromkeys(edges, 0)
        for out in edges.values():
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
            placed = set(order)
            stuck = sorted({s[0] for s in edges if s not in placed})
            raise SemanticsError(f"cycle without a loop edge through {', '.join(stuck)}")
        if order[0] != start:
            raise SemanticsError("the entry is reachable from another node without a loop edge")
        index = {s: i for i, s in enumerate(order)}
        term = {DONE: len(order), FAIL: len(order) + 1}
        succ = []
        for s in order:
            merged: dict[int, float] = {}
            for t, p in edges[s]:
                j = term[t[0]] if t[0] in TERMINALS else index[t]
                merged[j] = merged.get(j, 0.0) + p
            succ.append(tuple(sorted(merged.items())))
        return ExpandedChain(states=tuple(order), succ=tuple(succ))

    def expand_bounded(self, tolerance: float = CUT_TOLERANCE, max_states: int | None = None) -> ExpandedChain:
        """:meth:`expand` with loop budgets cut where the cut changes runs with probability at most
        ``tolerance``; the chain's size then depends on how fast runs leave a loop, not on its budget.

        Every loop of budget ``B`` is first expanded with budget ``b = min(B, CUT_PROBE)``. The cut
        chain takes the same transitions as the full one except one: a loop edge taken while a cut
        loop's counter sits at ``b`` leads to the loop's exit instead of a new iteration. Coupling a
        run of each chain step by step, the two differ only after such a transition, so the total
        variation distance between their run distributions (and hence every visit statistic's) is at
        most ``m = sum_s r'(s) P'(s, cut)``, with ``r'`` the cut chain's reach. While ``m`` exceeds
        ``tolerance``, the budgets of the loops carrying more than ``tolerance / loops`` of it double
        (never past ``B``). A loop that iterates again with probability ``q < 1`` stops growing near
        ``log(tolerance) / log(q)`` iterations, whatever ``B`` is; one that always iterates
        (``q = 1``) is expanded to its full budget. ``tolerance = 0`` is :meth:`expand` exactly.
        """
        full = self._budget
        cut = tuple(min(b, CUT_PROBE) for b in full)
        while True:
            sem = self if cut == full else Semantics(
                self.workflow, {**self._knobs[0], **dict(zip(self.loop_names, cut))}, self._knobs[1], self.graph)
            chain = sem.expand(max_states)
            if cut == full:
                return chain
            mass = sem._cut_mass(chain, self)
            total = sum(mass)
            if total <= tolerance:
                return replace(chain, cut=total)
            cut = tuple(min(full[i], 2 * c) if mass[i] > tolerance / len(cut) else c for i, c in enumerate(cut))

    def _cut_mass(self, chain: ExpandedChain, full: "Semantics") -> list[float]:
        """Per loop, the probability mass of ``chain``'s transitions (expanded under these budgets) that
        ``full``'s budgets would take elsewhere, charged to the loops whose counters sit at a cut budget
        (see :meth:`expand_bounded`)."""
        cut_loops = [i for i, (b, f) in enumerate(zip(self._budget, full._budget)) if b < f]
        mass = [0.0] * len(self.loop_names)
        reach = chain.reach()
        for (node, counters), r in zip(chain.states, reach):
            if not r:
                continue
            at_cut = [i for i in cut_loops if counters[i] >= self._budget[i]]
            if not at_cut:
                continue
            for e, p in self._weights[node]:
                if e.loop is not None and self.take(counters, e) != full.take(counters, e):
                    for i in at_cut:
                        mass[i] += r * p / len(at_cut)
        return mass

    def fastest_path(self, cost: Callable[[str], float]) -> tuple[float, list[str]]:
        """The cheapest way from the entry to ``done`` as (total cost, nodes visited, then ``done``).

        Each visit to node ``n`` costs ``cost(n) >= 0``. The search runs over
        run states, so it follows loops' exhaustion exits and counts repeated
        visits (a path that must iterate a loop pays for every iteration).
        Edges of planning probability 0 are followed too: they are possible.
        Returns ``(inf, [])`` when ``done`` cannot be reached.
        """
        start = self.start
        dist: dict[State, float] = {start: cost(start[0])}
        prev: dict[State, State] = {}
        heap: list[tuple[float, int, State]] = [(dist[start], 0, start)]
        tie = 1
        while heap:
            d, _, state = heapq.heappop(heap)
            if state[0] == DONE:
                path = [state]
                while path[-1] in prev:
                    path.append(prev[path[-1]])
                return d, [s[0] for s in reversed(path)]
            if d > dist.get(state, float("inf")) or state[0] == FAIL:
                continue
            for nxt, _ in self.successors(state, include_unplanned=True):
                nd = d + (0.0 if nxt[0] in TERMINALS else cost(nxt[0]))
                if nd < dist.get(nxt, float("inf")):
                    dist[nxt], prev[nxt] = nd, state
                    heapq.heappush(heap, (nd, tie, nxt))
                    tie += 1
        return float("inf"), []

    # ------------------------------------------------------------------ static structure
    def _nested_in(self, loop: str) -> tuple[str, ...]:
        children: dict[str, list[str]] = {}
        for lp in self.graph.loops:
            if lp.parent is not None:
                children.setdefault(lp.parent, []).append(lp.name)
        out: list[str] = []
        stack = list(children.get(loop, ()))
        while stack:
            name = stack.pop()
            out.append(name)
            stack.extend(children.get(name, ()))
        return tuple(out)

    def live_loops(self) -> dict[str, frozenset[int]]:
        """Per node, the indices of loops with an edge reachable from it (their counters still matter).

        ``live(n) = own(n) ∪ live(successors)``, solved on strongly connected
        components in reverse topological order (linear in the graph size).
        """
        if self._live is not None:
            return self._live
        g = self.graph
        succ: dict[str, list[str]] = {n: [] for n in g.nodes}
        own: dict[str, set[int]] = {n: set() for n in g.nodes}
        for e in g.edges:
            if e.source not in succ:
                continue
            targets = [e.target]
            if e.loop is not None:
                i = self.loop_index[e.loop]
                own[e.source].add(i)
                while i >= 0:  # the exit, and for a rejoining loop its parent's iteration too
                    targets.append(self._exit[i])
                    if self._rejoin[i] >= 0:
                        own[e.source].add(self._rejoin[i])
                    i = self._rejoin[i]
            succ[e.source].extend(t for t in targets if t in succ)
        live: dict[str, frozenset[int]] = {}
        for component in strongly_connected_components(succ):  # sinks first
            members = set(component)
            loops = set().union(*(own[n] for n in component))
            for n in component:
                for m in succ[n]:
                    if m not in members:
                        loops |= live[m]
            frozen = frozenset(loops)
            for n in component:
                live[n] = frozen
        self._live = live
        return live

    def loop_body(self, loop: str) -> frozenset[str]:
        """Nodes on a path from ``loop``'s targets to its sources within one iteration.

        Paths follow plain edges and the edges (and exhaustion exits) of loops
        nested in this one; the loop's own edges and outer loops' edges would
        leave the iteration.
        """
        inner = set(self.nested[loop])
        adj: dict[str, set[str]] = {}
        g = self.graph
        for e in g.edges:
            if e.loop is None or e.loop in inner:
                adj.setdefault(e.source, set()).add(e.target)
            if e.loop in inner:
                adj.setdefault(e.source, set()).add(g.loop(e.loop).on_exhausted)
        own = [e for e in g.edges if e.loop == loop]
        forward = _reach({e.target for e in own}, adj)
        radj: dict[str, set[str]] = {}
        for src, targets in adj.items():
            for dst in targets:
                radj.setdefault(dst, set()).add(src)
        backward = _reach({e.source for e in own}, radj)
        return frozenset(forward & backward)

    def innermost_loops(self) -> dict[str, str]:
        """Node -> the smallest loop body holding it, for ``attempt``. A node inside a fan-out's
        branch takes its branch's innermost loop, else the fan-out's (recursively)."""
        bodies = {name: self.loop_body(name) for name in self.loop_names}
        innermost: dict[str, str] = {}
        for node in self.graph.nodes:
            holding = [lp for lp, body in bodies.items() if node in body]
            if holding:
                innermost[node] = min(holding, key=lambda lp: (len(bodies[lp]), lp))
            if node in self._fanouts:
                for index in range(len(self._fanouts[node].branches)):
                    inner = self.branch(node, index).innermost_loops()
                    for member in self.branch(node, index).graph.nodes:
                        loop = inner.get(member, innermost.get(node))
                        if loop is not None:
                            innermost[member] = loop
        return innermost


def field_text(value: object) -> str:
    """How a result field compares with a branch's literal values (JSON spelling for booleans/null)."""
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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


def strongly_connected_components(succ: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively, in reverse topological order (sinks first)."""
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
