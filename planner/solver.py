"""Choosing one candidate per stage: CP-SAT with Monte Carlo latency cuts.

Formulation
-----------
Data, per workflow ``w`` and stage ``s``: candidates ``c in C(w, s)``
(:mod:`planner.candidates`) with cost ``k_c`` ($/h), quality ``q_c``, resource
use ``r_c[d]`` (devices of kind ``d``; ``"CPU"`` = CPU slots) and latency table
``Q_c``. Inventory ``R[d]``. SLO of ``w``: latency ``T_w`` at attainment ``a_w``.

Variables: ``x[w, s, c] in {0, 1}``.

    minimise    sum k_c x[w,s,c]  +  M * sum ql_c x[w,s,c]
    subject to  sum_c x[w,s,c] = 1                         for every (w, s)
                sum r_c[d] x[w,s,c] <= R[d]                 for every device kind d
                A_w(x) >= a_w                               for every w with an SLO

``ql_c = round(-1000 ln q_c)`` is the quality loss; ``M`` exceeds any cost
difference, so malleable knobs leave their preferred value only when the SLO
or the inventory leaves no other way (lexicographic: quality, then cost).
Costs are integers in milli-dollars per hour.

``A_w(x)`` (predicted attainment, :mod:`planner.latency`) is nonlinear and
given only by a Monte Carlo oracle, so it enters as *lazy cuts*. Under common
random numbers ``A_w`` is monotone: replacing any stage's table by an
elementwise-slower one cannot raise it. So when an assignment ``a`` violates
the SLO, every assignment whose every stage is at least as slow as in ``a``
does too, which gives the valid cut (a no-good over a dominance cone)::

    sum_s sum_{c not in Slower(a_s)} x[w,s,c] >= 1,
    Slower(a_s) = {c : Q_c >= Q_{a_s} elementwise}

Before cutting, ``a`` is *lifted*: stages are moved to faster candidates
while the assignment stays infeasible, which widens the cone.

Algorithm:

1. *Per-candidate bounds*: a candidate that misses the SLO even with every
   other stage at the elementwise-fastest envelope of its candidates can be in
   no feasible plan (monotonicity): fixed to 0.
2. *Incumbent*: per workflow a greedy (cheapest start, then the upgrade with
   the best gain in the SLO quantile per dollar, scored on the slowest runs);
   shared devices are arbitrated by damped shadow prices per device kind and,
   failing that, first come first served on the residual inventory; then a
   local descent. Every infeasible point the greedy passes becomes a cut.
3. *Cut loop*: CP-SAT solves the relaxation (constraints, cuts so far, and
   ``objective <= incumbent - 1``). INFEASIBLE proves the incumbent optimal; a
   proposal that meets every SLO is optimal (cuts only ever remove infeasible
   points, so CP-SAT's optimum of the relaxation that is feasible is the true
   optimum); otherwise its lifted cut is added and the loop repeats. Each
   iteration removes the current proposal, so the loop terminates. Its budget
   is counted in relaxations solved, not seconds (:func:`solve_budget`), so the
   plan is the same on a busy and on an idle machine; large instances then
   report status ``feasible`` (the incumbent or the best proven-feasible
   proposal) instead of ``optimal``. A wall-clock limit (:data:`TIME_LIMIT_S`)
   remains as a safety net only.
4. *Repair* (primal heuristic, inside the loop): a violating proposal is
   cheap where the SLO allows, so the greedy's upgrades from it (then the
   local descent) often give a plan below the incumbent; it becomes the new
   incumbent (tightening ``objective <= incumbent - 1``), and the infeasible
   points the upgrades pass become cuts too.
5. *Early stop*: the relaxation's optimum is a lower bound that must reach the
   incumbent for a proof. The no-goods remove few points each, so on binding
   SLOs over many stages the bound crawls (plan_bench's binding 20-stage
   chain, ``benchmarks/plan_cut_trace.py``: 6% of the gap in 10 solves, 78%
   in 100); the loop stops once the gap to the incumbent, closed by the bound's
   rise and by repairs, shrinks too slowly per solve to close in the solves left
   of the budget (:class:`_BoundProgress`), returning the incumbent as ``feasible``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from ortools.sat.python import cp_model

from planner.candidates import Candidate, FanoutSplit
from planner.latency import PathSample, attainment

QUALITY_SCALE = 1000
MAX_ITERATIONS = 400
TIME_LIMIT_S = 10.0
"""Wall-clock safety net of the cut loop per solve (past it the best feasible plan is returned as
'feasible'). Normal runs end well before it, by proof or by :class:`_BoundProgress` (counted in solves):
a plan that depends on the wall clock differs between a busy and an idle machine."""
SOLVE_BUDGET_STAGES = 200
"""The cut loop's budget in relaxations solved to optimality, times the stages planned
(:func:`solve_budget`): an iteration's work (the CP-SAT model, the lifts and repairs over the stages)
grows with the stages, so a 5-stage chain may run 40 solves, a 20-stage one 10, and 10 x 20 stages 1."""
MIN_SOLVES = 1
"""Fewest relaxations the budget allows: on the largest instances (10 x 20 stages) one relaxation and
its repair, as many as fitted in the former 0.6 s wall-clock budget on a busy machine."""
STALL_FRACTION = 0.2
"""Fraction of the solve budget spent before :class:`_BoundProgress` judges the gap's closure (the bound
rises in steps: a cut that removes a whole cone can lift it after a few flat solves)."""
_CACHE_LIMIT = 4000
ROUNDING = 1e-9
"""Relative bound, far above the float64 rounding of a few hundred additions (about 1e-14), on how far
run latencies updated node by node (:meth:`WorkflowProblem.shifted`) may lie from their full sum."""


def quality_loss(c: Candidate) -> int:
    return _quality_loss(c.quality)


@lru_cache(maxsize=4096)
def _quality_loss(quality: float) -> int:
    """``round(-QUALITY_SCALE ln quality)`` (memoised: the search asks for a handful of qualities many times)."""
    return int(round(-QUALITY_SCALE * math.log(max(quality, 1e-9))))


def cost_milli(c: Candidate) -> int:
    return int(round(c.cost_per_hour * 1000))


@dataclass
class WorkflowProblem:
    """One workflow's stages, their candidates, its sampled paths and its SLO."""

    name: str
    candidates: dict[str, list[Candidate]]
    paths: PathSample
    slo_latency_s: float | None
    slo_attainment: float | None
    run_scale: np.ndarray | None = None
    """Per-run divisor of the latency (length ``paths.n``); None = 1. With each run's
    standalone latency here and ``slo_latency_s`` a target *ratio*, the SLO reads "a
    fraction ``slo_attainment`` of runs finish within ratio x their standalone latency"
    -- the simulator's SLO-scale metric. A fixed positive divisor per run keeps the
    attainment monotone in every stage's table, so the cuts stay valid."""
    _cache: dict = field(default_factory=dict, repr=False)
    _slower: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.stages = sorted(self.candidates)
        self.groups: dict[str, dict[str, int]] = {}
        """Shared-pool key -> {member stage: its candidate index}; members are chosen together."""
        for s in self.stages:
            for i, c in enumerate(self.candidates[s]):
                if c.group is not None:
                    self.groups.setdefault(c.group, {})[s] = i
        for key, members in self.groups.items():
            if len(members) != len(self.candidates[next(iter(members))][next(iter(members.values()))].group_stages):
                raise ValueError(f"shared pool {key} lacks members")
        self.envelope = {s: np.min(np.stack([c.table for c in cs]), axis=0) for s, cs in self.candidates.items()}
        self.split_envelope = {s: FanoutSplit.envelope([c.fanout_split for c in cs])
                               for s, cs in self.candidates.items()
                               if cs and all(c.fanout_split is not None for c in cs)}
        self.node_stages: dict[str, tuple[str, ...]] = {}
        for s in self.stages:
            node = self.paths.node_of(s)
            self.node_stages[node] = tuple(sorted(set(self.node_stages.get(node, ())) | {s}))

    # -- the oracle -----------------------------------------------------------------
    def _tables(self, assign: Mapping[str, int | None]) -> dict[str, np.ndarray]:
        return {s: self.envelope[s] if assign.get(s) is None else self.candidates[s][assign[s]].table
                for s in self.stages}

    def _splits(self, assign: Mapping[str, int | None]) -> dict[str, FanoutSplit]:
        out = {}
        for s in self.split_envelope:
            split = self.split_envelope[s] if assign.get(s) is None else self.candidates[s][assign[s]].fanout_split
            if split is not None:
                out[s] = split
        return out

    def node_latency(self, node: str, assign: Mapping[str, int | None]) -> np.ndarray:
        key = (node, tuple([assign.get(s) for s in self.node_stages[node]]))
        vec = self._cache.get(key)
        if vec is None:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            vec = self._cache[key] = self._evaluate(node, assign)
        return vec

    def _evaluate(self, node: str, assign: Mapping[str, int | None]) -> np.ndarray:
        """``paths.node_latency`` of ``node`` under ``assign``, given only the tables and splits of the
        node's own stages (all it reads) rather than every stage's."""
        stages = self.node_stages[node]
        tables = {s: self.envelope[s] if assign.get(s) is None else self.candidates[s][assign[s]].table
                  for s in stages}
        splits = {s: split for s, split in self._splits(assign).items() if s in tables}
        return self.paths.node_latency(node, tables, splits)

    def run_latency(self, assign: Mapping[str, int | None]) -> np.ndarray:
        total = np.zeros(self.paths.n)
        for node in self.node_stages:
            total += self.node_latency(node, assign)
        return total

    def run_latency_from(self, partial: list[tuple[np.ndarray, np.ndarray]], assign: Mapping[str, int | None]
                         ) -> np.ndarray:
        """:meth:`run_latency` (the same floats: the same additions in the same order), reusing the
        partial sums of a previous call that ``partial`` holds (and is updated with): per node, its
        latency and the sum up to it. A search that changes one unit per step (:meth:`greedy_layout`)
        recomputes only the sums from the first node whose latency changed."""
        vecs = [self.node_latency(node, assign) for node in self.node_stages]
        first = next((k for k, (vec, _) in enumerate(partial) if vec is not vecs[k]), len(partial))
        del partial[first:]
        total = partial[-1][1] if partial else np.zeros(self.paths.n)
        for vec in vecs[first:]:
            total = total + vec
            partial.append((vec, total))
        return total.copy()

    def target(self, scale: float) -> float | None:
        return None if self.slo_latency_s is None else self.slo_latency_s * scale

    def normalised(self, latency: np.ndarray) -> np.ndarray:
        """Run latencies in the SLO's unit: seconds, or multiples of each run's ``run_scale``."""
        return latency if self.run_scale is None else latency / self.run_scale

    def meets(self, latency: np.ndarray, scale: float) -> bool:
        if self.slo_latency_s is None:
            return True
        return attainment(self.normalised(latency), self.slo_latency_s * scale) >= self.slo_attainment - 1e-12

    def feasible(self, assign: Mapping[str, int | None], scale: float = 1.0) -> bool:
        return self.slo_latency_s is None or self.meets(self.run_latency(assign), scale)

    def shifted(self, latency: np.ndarray, mass: np.ndarray, assign: Mapping[str, int], trial: Mapping[str, int],
                nodes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``trial``'s run latencies from ``assign``'s when the two differ only in ``nodes``' stages:
        ``latency - sum_n L_n(assign) + sum_n L_n(trial)``, one vector operation per node instead of
        :meth:`run_latency`'s sum over every node. ``mass`` bounds every partial sum involved (the node
        latencies are non-negative: it is ``run_latency`` plus every vector added since), so the result
        is within ``n_ops x 2^-53 x mass`` of :meth:`run_latency`'s; returned with its own mass."""
        for n in nodes:
            vec = self.node_latency(n, trial)
            latency = latency - self.node_latency(n, assign) + vec
            mass = mass + vec
        return latency, mass

    def feasible_near(self, trial: Mapping[str, int], latency: np.ndarray, mass: np.ndarray, scale: float) -> bool:
        """:meth:`feasible` of ``trial`` given its run latencies up to rounding (:meth:`shifted`).

        Each run's exact latency lies within ``ROUNDING x mass`` of ``latency``; counting the runs
        surely within the target and those possibly within it brackets the exact attainment. The
        exact sum is evaluated only when the SLO's attainment falls inside that bracket, so the
        verdict is always :meth:`feasible`'s."""
        if self.slo_latency_s is None:
            return True
        slack = ROUNDING * mass
        target, need = self.slo_latency_s * scale, self.slo_attainment - 1e-12
        if attainment(self.normalised(latency + slack), target) >= need:
            return True
        if attainment(self.normalised(latency - slack), target) < need:
            return False
        return self.meets(self.run_latency(trial), scale)

    def slower(self, stage: str, idx: int) -> frozenset[int]:
        """Indices of the candidates of ``stage`` at least as slow as candidate ``idx`` everywhere."""
        key = (stage, idx)
        if key not in self._slower:
            cands = self.candidates[stage]
            ref = cands[idx]
            if ref.fanout_split is None and all(c.fanout_split is None for c in cands):
                # Candidate.slower_or_equal for every candidate at once (the same comparisons, stacked)
                found = np.flatnonzero((self._stacked(stage) >= ref._table_less_tol).all(axis=1)).tolist()
            else:  # fan-out splits are compared part by part
                found = [i for i, c in enumerate(cands) if c.slower_or_equal(ref)]
            self._slower[key] = frozenset(found)
        return self._slower[key]

    # -- pruning, lifting, greedy ---------------------------------------------------------
    def hopeless(self, scale: float) -> dict[str, set[int]]:
        """Candidates that miss the SLO even with every other stage at its envelope (safe to drop).

        Slowest (by mean) first: once a candidate passes, every candidate whose table is
        no larger anywhere passes too (the run latencies are sums, maxima and minima of
        interpolated table entries, all monotone under IEEE rounding, so the attainment
        cannot fall) and is not evaluated. Stages whose fan-out copies share waits
        (:class:`FanoutSplit`) are evaluated candidate by candidate.
        """
        out: dict[str, set[int]] = {s: set() for s in self.stages}
        if self.slo_latency_s is None:
            return out
        env = {s: None for s in self.stages}
        base = self.run_latency(env)
        for s in self.stages:
            node = self.paths.node_of(s)
            without = base - self.node_latency(node, env)
            tables = self._stacked(s)
            passes = np.zeros(len(tables), dtype=bool)
            for i in sorted(range(len(tables)), key=lambda i: -self.candidates[s][i].mean):
                if passes[i]:
                    continue
                trial = dict(env)
                trial[s] = i
                if not self.meets(without + self.node_latency(node, trial), scale):
                    out[s].add(i)
                elif s in self.split_envelope:
                    passes[i] = True
                else:
                    passes |= np.all(tables <= tables[i], axis=1)
        return out

    def lift(self, assign: dict[str, int], scale: float) -> dict[str, int]:
        """Move stages to faster candidates while the assignment still misses the SLO."""
        current = dict(assign)
        if self.slo_latency_s is None:  # every assignment meets it: nothing to lift
            return current
        latency = self.run_latency(current)
        mass = latency
        for s in self.stages:
            nodes = (self.paths.node_of(s),)
            for i in self._faster(s, current[s]):
                trial = dict(current)
                trial[s] = i
                moved, moved_mass = self.shifted(latency, mass, current, trial, nodes)
                if not self.feasible_near(trial, moved, moved_mass, scale):
                    current, latency, mass = trial, moved, moved_mass
                    break
        return current

    def _faster(self, stage: str, idx: int) -> list[int]:
        """The two fastest (by mean) candidates of ``stage`` no slower than candidate ``idx`` anywhere and
        faster somewhere: the moves :meth:`lift` tries (memoised: the cut loop lifts the same
        stage from the same candidate many times)."""
        key = ("faster", stage, idx)
        found = self._slower.get(key)
        if found is None:
            tables = self._stacked(stage)
            ref = tables[idx]
            no_slower = np.all(tables <= ref + 1e-12, axis=1)
            somewhere_faster = ~np.all(tables >= ref - 1e-12, axis=1)
            faster = np.flatnonzero(no_slower & somewhere_faster).tolist()
            faster.sort(key=lambda i: self.candidates[stage][i].mean)
            found = self._slower[key] = faster[:2]
        return found

    # -- layouts and units -------------------------------------------------------------
    def option(self, s: str, i: int) -> dict[str, int]:
        """Choosing candidate ``i`` of ``s``: the assignments it implies (its whole group, if shared)."""
        c = self.candidates[s][i]
        return dict(self.groups[c.group]) if c.group is not None else {s: i}

    def consistent(self, assign: Mapping[str, int]) -> bool:
        """Whether every chosen group member comes with all its co-members."""
        return all(all(assign.get(t) == j for t, j in self.groups[self.candidates[s][i].group].items())
                   for s, i in assign.items() if self.candidates[s][i].group is not None)

    def layouts(self) -> list[list[tuple[str, ...]]]:
        """Partitions of the stages the greedy starts from: every stage alone (stage isolation), and,
        when shared pools are on offer, the largest blocks that cover each stage at most once."""
        isolated = [(s,) for s in self.stages]
        if not self.groups:
            return [isolated]
        shared: list[tuple[str, ...]] = []
        covered: set[str] = set()
        blocks = {self.candidates[next(iter(m))][next(iter(m.values()))].group_stages for m in self.groups.values()}
        for block in sorted(blocks, key=lambda b: (-len(b), b)):
            if covered.isdisjoint(block):
                shared.append(tuple(sorted(block)))
                covered.update(block)
        return [isolated, shared + [(s,) for s in self.stages if s not in covered]]

    def unit_options(self, unit: tuple[str, ...], allowed: Mapping[str, set[int]]) -> list[dict[str, int]]:
        """The allowed options of one unit: dedicated candidates of a lone stage, or groups with exactly its stages."""
        if len(unit) == 1:
            s = unit[0]
            return [{s: i} for i in sorted(allowed[s]) if self.candidates[s][i].group is None]
        return [dict(m) for m in self.groups.values()
                if tuple(sorted(m)) == unit and all(i in allowed[t] for t, i in m.items())]

    def greedy(self, allowed: Mapping[str, set[int]], scale: float, cuts: list[dict[str, int]],
               prices: Mapping[str, float] | None = None,
               limits: Mapping[str, int] | None = None) -> dict[str, int] | None:
        """The best (quality loss, then priced cost) of :meth:`greedy_layout` over :meth:`layouts`."""
        best, best_key = None, None
        for layout in self.layouts():
            found = self.greedy_layout(layout, allowed, scale, cuts, prices, limits)
            if found is None:
                continue
            key = (sum(quality_loss(self.candidates[s][i]) for s, i in found.items()),
                   sum(_eff(self.candidates[s][i], prices or {}) for s, i in found.items()))
            if best_key is None or key < best_key:
                best, best_key = found, key
        return best

    def greedy_layout(self, layout: Sequence[tuple[str, ...]], allowed: Mapping[str, set[int]], scale: float,
                      cuts: list[dict[str, int]], prices: Mapping[str, float] | None = None,
                      limits: Mapping[str, int] | None = None,
                      start: Mapping[str, int] | None = None) -> dict[str, int] | None:
        """Cheapest start, then the best latency-gain-per-dollar upgrade until the SLO holds, with the
        stages grouped into ``layout``'s units (a unit of several stages takes shared pools only).

        ``prices`` adds a shadow price per device of a kind (the caller raises it for
        kinds the workflows over-use together). With ``limits`` every step stays
        within them; without, the inventory is not checked here. ``start`` replaces
        the cheapest start by a given assignment (its units must be ``layout``'s).
        """
        prices = prices or {}
        # What depends only on the options, ``allowed`` and ``prices`` is kept on the problem for the next
        # call with the same (the greedy runs per layout and price round, the repairs per proposal): each
        # unit's options, their eff and loss, and the ranking below.
        memo_key = ("greedy", id(allowed), tuple(sorted(prices.items())))
        memo = self._slower.get(memo_key)
        if memo is None or memo[0] is not allowed:
            memo = self._slower[memo_key] = (allowed, {}, {}, {})
        _, unit_memo, effs, ranking = memo
        options = {}
        for u in layout:
            if u not in unit_memo:
                unit_memo[u] = self.unit_options(u, allowed)
            options[u] = unit_memo[u]
        losses: dict[tuple[tuple[str, int], ...], int] = self._slower.setdefault(("losses",), {})

        def eff(o: Mapping[str, int]) -> float:
            key = tuple(o.items())
            value = effs.get(key)
            if value is None:
                value = effs[key] = sum(_eff(self.candidates[s][i], prices) for s, i in key)
            return value

        def loss(o: Mapping[str, int]) -> int:
            key = tuple(o.items())
            value = losses.get(key)
            if value is None:
                value = losses[key] = sum(quality_loss(self.candidates[s][i]) for s, i in key)
            return value

        resources: dict[tuple[tuple[str, int], ...], dict[str, int]] = self._slower.setdefault(("resources",), {})

        def res(o: Mapping[str, int]) -> dict[str, int]:
            """The devices option ``o`` occupies (memoised per option; callers only read it)."""
            key = tuple(o.items())
            out = resources.get(key)
            if out is None:
                out = resources[key] = {}
                for s, i in key:
                    for k, n in self.candidates[s][i].resources.items():
                        out[k] = out.get(k, 0) + n
            return out

        used: dict[str, int] = {}
        cur: dict[str, int] = {}
        chosen: dict[tuple[str, ...], dict[str, int]] = {}

        def fits_swap(u: tuple[str, ...], o: Mapping[str, int]) -> bool:
            if limits is None:
                return True
            old = res(chosen[u]) if u in chosen else {}
            return all(used.get(k, 0) - old.get(k, 0) + n <= limits.get(k, 0) for k, n in res(o).items())

        def apply(u: tuple[str, ...], o: dict[str, int]) -> None:
            for k, n in (res(chosen[u]) if u in chosen else {}).items():
                used[k] -= n
            for k, n in res(o).items():
                used[k] = used.get(k, 0) + n
            chosen[u] = o
            cur.update(o)

        def mean(o: Mapping[str, int]) -> float:
            return sum(self.candidates[s][i].mean for s, i in o.items())

        for u in layout:
            if start is not None:
                apply(u, {s: start[s] for s in u})
                continue
            ok = sorted((o for o in options[u] if fits_swap(u, o)), key=lambda o: (loss(o), eff(o), mean(o)))
            if not ok:
                return None
            apply(u, ok[0])
        if self.slo_latency_s is None:
            return cur
        # Upgrades are tried cheapest (priced) first; per unit and stage, the options' tables stacked
        # in that order, to find the options faster than the current one somewhere in one pass.
        for u in layout:
            if u not in ranking:
                order = sorted(options[u], key=lambda o: (eff(o), loss(o)))
                ranking[u] = (order, {s: np.stack([self.candidates[s][o[s]].table for o in order]) for s in u}
                              if order else None, [eff(o) for o in order], [loss(o) for o in order])
        ranked = {u: ranking[u][0] for u in layout}
        stacks = {u: ranking[u][1] for u in layout if ranked[u]}
        unit_nodes = {u: sorted({self.paths.node_of(s) for s in u}) for u in stacks}
        ranked_eff = {u: ranking[u][2] for u in stacks}  # (the same floats, read by position)
        ranked_loss = {u: ranking[u][3] for u in stacks}
        somewheres: dict[tuple[tuple[str, ...], tuple[tuple[str, int], ...]], list[int]] = {}

        def somewhere_faster(u: tuple[str, ...], now: Mapping[str, int]) -> list[int]:
            """The positions in ``ranked[u]`` of the options faster than ``now`` at some level of some
            member's table, in order (memoised per unit and current option: a step changes one unit only)."""
            key = (u, tuple(now.items()))
            found = somewheres.get(key)
            if found is None:
                somewhere = np.zeros(len(ranked[u]), dtype=bool)
                for s in u:
                    somewhere |= ~np.all(stacks[u][s] >= self.candidates[s][now[s]].table - 1e-12, axis=1)
                found = somewheres[key] = np.flatnonzero(somewhere).tolist()
            return found

        partial: list[tuple[np.ndarray, np.ndarray]] = []
        scored: np.ndarray | None = None  # rows of picks' scores, reused across steps (the tail's size is fixed)
        for _ in range(500):
            total = self.run_latency_from(partial, cur)
            if self.meets(total, scale):
                return cur
            cuts.append(dict(cur))
            # Score upgrades on the slowest runs only: the quantile is decided there.
            norm = self.normalised(total)
            tail = np.argpartition(norm, -self._tail_size())[-self._tail_size():]
            div = None if self.run_scale is None else self.run_scale.take(tail)  # None: seconds, x / 1 = x
            rank = self._tail_rank()
            q_now = float(np.partition(norm.take(tail), rank)[rank])
            total_tail = total.take(tail)
            # Every unit's picks scored together: row r is the unit's base + the tail sum of its pick (each
            # element the same sum as scoring it alone), all rows divided and partitioned in one call each
            # (the same order statistic per row as unit by unit).
            if scored is None:
                scored = np.empty((4 * len(stacks), tail.size))
            picked: list[tuple[tuple[str, ...], list[int]]] = []
            row = 0
            for u in layout:
                if u not in stacks:
                    continue
                # the first four options (cheapest first) faster somewhere that fit
                faster = somewhere_faster(u, chosen[u])
                if limits is None:
                    picks = faster[:4]
                else:
                    picks = list(itertools.islice((j for j in faster if fits_swap(u, ranked[u][j])), 4))
                if not picks:
                    continue
                nodes = unit_nodes[u]
                base = total_tail - self._tail_sum(nodes, cur, tail)
                rows = scored[row:row + len(picks)]
                for k, j in enumerate(picks):
                    self._tail_sum(nodes, {**cur, **ranked[u][j]}, tail, out=rows[k])
                np.add(base, rows, out=rows)
                picked.append((u, picks))
                row += len(picks)
            rows = scored[:row]
            if div is not None:
                rows /= div
            rows.partition(rank, axis=1)
            quantiles = rows[:, rank].tolist()
            best = self._best_upgrade(picked, quantiles, q_now, chosen, ranked, ranked_eff, ranked_loss, eff, loss)
            if best is None:
                return None
            apply(*best)
        return None

    @staticmethod
    def _best_upgrade(picked: Sequence[tuple[tuple[str, ...], list[int]]], quantiles: Sequence[float], q_now: float,
                      chosen: Mapping[tuple[str, ...], Mapping[str, int]], ranked: Mapping[tuple[str, ...], list],
                      ranked_eff: Mapping[tuple[str, ...], list[float]],
                      ranked_loss: Mapping[tuple[str, ...], list[int]], eff: Callable[[Mapping[str, int]], float],
                      loss: Callable[[Mapping[str, int]], int]) -> tuple[tuple[str, ...], dict[str, int]] | None:
        """:meth:`greedy_layout`'s step: of the scored picks (per unit, its pick positions in ``ranked``;
        ``quantiles`` their SLO quantiles, row by row in that order), the one lowering the quantile most
        per extra priced cost (quality loss weighing 10 each) -- the first of equal scores; None if none lowers it."""
        best, best_score = None, 0.0
        at = iter(quantiles)
        for u, picks in picked:
            now = chosen[u]
            e_now, l_now = eff(now), loss(now)
            for j in picks:
                q = next(at)
                extra = (ranked_eff[u][j] - e_now) + 0.01 + 10.0 * (ranked_loss[u][j] - l_now)
                score = (q_now - q) / max(extra, 1e-3)
                if q < q_now and score > best_score:
                    best, best_score = (u, ranked[u][j]), score
        return best

    def _tail_sum(self, nodes: Sequence[str], assign: Mapping[str, int], tail: np.ndarray,
                  out: np.ndarray | None = None) -> np.ndarray:
        """``sum(node_latency(n, assign)[tail] for n in nodes)``, the same values (a fresh array) without
        the generator and the ``0 +`` that ``sum`` starts from (adding 0.0 changes no latency: the
        latencies are sums of non-negative table entries, so no -0.0 is lost). With ``out``, written there."""
        first, *rest = nodes
        if out is None:
            out = self.node_latency(first, assign).take(tail)
        else:
            self.node_latency(first, assign).take(tail, out=out)
        for n in rest:
            out += self.node_latency(n, assign).take(tail)
        return out

    def _stacked(self, stage: str) -> np.ndarray:
        key = ("stack", stage)
        if key not in self._slower:
            self._slower[key] = np.stack([c.table for c in self.candidates[stage]])
        return self._slower[key]

    def _tail_size(self) -> int:
        """Runs scored by the greedy: a few times the runs beyond the SLO quantile."""
        return min(self.paths.n, max(64, int(4 * (1.0 - self.slo_attainment) * self.paths.n)))

    def _tail_rank(self) -> int:
        """Rank, within the tail, of the run at the SLO quantile."""
        beyond = int(round((1.0 - self.slo_attainment) * self.paths.n))
        return max(0, min(self._tail_size() - 1, self._tail_size() - 1 - beyond))

    def repair(self, assign: Mapping[str, int], limits: Mapping[str, int], allowed: Mapping[str, set[int]],
               scale: float, cuts: list[dict[str, int]]) -> dict[str, int] | None:
        """A plan that meets the SLO near an infeasible ``assign``: :meth:`greedy_layout`'s upgrades
        from it (its own units kept), then :meth:`improve`. Every infeasible point passed is
        appended to ``cuts``. None when the upgrades cannot reach the SLO within ``limits``."""
        units = sorted({tuple(sorted(self.option(s, i))) for s, i in assign.items()})
        fixed = self.greedy_layout(units, allowed, scale, cuts, limits=limits, start=assign)
        return None if fixed is None else self.improve(fixed, limits, allowed, scale)

    def improve(self, assign: dict[str, int], limits: Mapping[str, int], allowed: Mapping[str, set[int]],
                scale: float) -> dict[str, int]:
        """Local descent: move single units (a lone stage, or a shared pool's stages together) to
        better-ranked (quality, cost) options of the same unit while the SLO holds."""
        cur = dict(assign)
        units = sorted({tuple(sorted(self.option(s, i))) for s, i in cur.items()})
        # Each unit's options ranked once (a stable sort: filtering it keeps the order of sorting the
        # filtered ones); a move's verdict from the run latencies updated at the unit's nodes
        # (:meth:`shifted`, :meth:`feasible_near`: always :meth:`feasible`'s verdict).
        ranked = {u: sorted(((self._unit_key(o), o) for o in self.unit_options(u, allowed)), key=lambda t: t[0])
                  for u in units}
        nodes = {u: tuple(sorted({self.paths.node_of(s) for s in u})) for u in units}
        latency = mass = self.run_latency(cur) if self.slo_latency_s is not None else None
        changed = True
        while changed:
            changed = False
            for u in units:
                now = self._unit_key({s: cur[s] for s in u})
                for key, o in ranked[u]:
                    if not key < now:
                        continue
                    trial = {**cur, **o}
                    if not _fits(self, trial, limits):
                        continue
                    if latency is None:  # no SLO: every move that fits is taken
                        cur, changed = trial, True
                        break
                    moved, moved_mass = self.shifted(latency, mass, cur, trial, nodes[u])
                    if self.feasible_near(trial, moved, moved_mass, scale):
                        cur, latency, mass, changed = trial, moved, moved_mass, True
                        break
        return cur

    def _unit_key(self, option: Mapping[str, int]) -> tuple[int, int]:
        keys = [_key(self.candidates[s][i]) for s, i in option.items()]
        return sum(k[0] for k in keys), sum(k[1] for k in keys)


def _key(c: Candidate) -> tuple[int, int]:
    return quality_loss(c), cost_milli(c)


def _eff(c: Candidate, prices: Mapping[str, float]) -> float:
    """Cost plus the shadow price of the devices it occupies."""
    return c.cost_per_hour + sum(prices.get(k, 0.0) * n for k, n in c.resources.items())


def _fits(problem: WorkflowProblem, assign: Mapping[str, int], limits: Mapping[str, int]) -> bool:
    use: dict[str, int] = {}
    for s, i in assign.items():
        for kind, n in problem.candidates[s][i].resources.items():
            use[kind] = use.get(kind, 0) + n
    return all(n <= limits.get(kind, 0) for kind, n in use.items())


@dataclass
class SolveResult:
    assignments: list[dict[str, int]] | None
    status: str  # "optimal" | "feasible" | "infeasible" (proven) | "unknown" (budget spent) | "slo_unreachable"
    iterations: int
    unreachable: list[str] = field(default_factory=list)  # workflows whose SLO no candidate mix meets


def solve(problems: Sequence[WorkflowProblem], limits: Mapping[str, int], scale: float = 1.0,
          max_iterations: int = MAX_ITERATIONS, time_limit_s: float = TIME_LIMIT_S,
          workers: int = 1, max_quality_loss: int | None = None,
          trace: list[tuple[float, tuple[int, int], tuple[int, int] | None]] | None = None,
          budget: int | None = None) -> SolveResult:
    """Minimise cost (after quality) subject to inventory and every SLO scaled by ``scale``.

    The cut loop ends with a proof, after ``budget`` relaxations solved to optimality
    (default :func:`solve_budget`) or earlier when the gap stalls (:class:`_BoundProgress`),
    after ``max_iterations`` solves, or at the ``time_limit_s`` safety net (wall clock, counted
    from the start of the loop); only the last makes the result depend on the machine's speed.

    ``max_quality_loss`` bounds the summed quality loss (headroom mode keeps the
    quality reached at the unscaled SLO instead of trading it for headroom).
    ``trace`` receives, per relaxation solved to optimality, the seconds since the cut
    loop started, its (quality loss, cost) -- a lower bound -- and the incumbent's after
    that iteration (for ``benchmarks/plan_cut_trace.py``).
    """
    allowed: list[dict[str, set[int]]] = []
    unreachable = []
    for p in problems:
        hopeless = p.hopeless(scale)
        ok = {s: set(range(len(p.candidates[s]))) - hopeless[s] for s in p.stages}
        for members in p.groups.values():  # a group with a hopeless member is hopeless
            if any(i not in ok[s] for s, i in members.items()):
                for s, i in members.items():
                    ok[s].discard(i)
        allowed.append(ok)
        if p.slo_latency_s is not None and (not p.feasible({s: None for s in p.stages}, scale)
                                            or any(not a for a in allowed[-1].values())):
            unreachable.append(p.name)
    if unreachable:
        return SolveResult(None, "slo_unreachable", 0, unreachable)

    cuts: list[list[dict[str, int]]] = [[] for _ in problems]
    hints = _priced_greedy(problems, allowed, limits, scale, cuts)
    incumbent: list[dict[str, int]] | None = None
    if hints is not None and (max_quality_loss is None or objective_milli(problems, hints)[0] <= max_quality_loss):
        incumbent = [dict(h) for h in hints]

    model = cp_model.CpModel()
    x: list[dict[str, list]] = []
    use: dict[str, list] = {}
    cost_terms, quality_terms = [], []
    for w, p in enumerate(problems):
        xs = {}
        for s in p.stages:
            vars_ = [model.new_bool_var(f"x_{w}_{s}_{i}") for i in range(len(p.candidates[s]))]
            model.add_exactly_one(vars_)
            for i, v in enumerate(vars_):
                c = p.candidates[s][i]
                if i not in allowed[w][s]:
                    model.add(v == 0)
                for kind, n in c.resources.items():
                    use.setdefault(kind, []).append(n * v)
                cost_terms.append(cost_milli(c) * v)
                quality_terms.append(quality_loss(c) * v)
            if hints is not None:  # model.add_hint per variable, in the same order, in two bulk appends
                model.proto.solution_hint.vars.extend([v.index for v in vars_])
                model.proto.solution_hint.values.extend([int(hints[w][s] == i) for i in range(len(vars_))])
            xs[s] = vars_
        for members in p.groups.values():  # a shared pool serves all its stages or none
            first, *rest = sorted(members.items())
            for s, i in rest:
                model.add(xs[s][i] == xs[first[0]][first[1]])
        x.append(xs)
    for kind, terms in use.items():
        model.add(sum(terms) <= limits.get(kind, 0))
    if max_quality_loss is not None:
        model.add(sum(quality_terms) <= max_quality_loss)
    big = sum(max(cost_milli(c) for c in cs) for p in problems for cs in p.candidates.values()) + 1
    objective = sum(cost_terms) + big * sum(quality_terms)
    model.minimize(objective)
    if incumbent is not None:  # only strictly better plans are of interest: the incumbent is feasible
        q, c = objective_milli(problems, incumbent)
        model.add(objective <= c + big * q - 1)

    def add_cut(w: int, assign: dict[str, int]) -> None:
        p = problems[w]
        lits = [x[w][s][i] for s in p.stages for i in range(len(p.candidates[s])) if i not in p.slower(s, assign[s])]
        model.add_bool_or(lits)

    for w, found in enumerate(cuts):
        for a in found[-3:]:  # the last greedy points dominate the earlier ones
            add_cut(w, problems[w].lift(a, scale))

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = workers
    iterations = 0
    started = time.monotonic()  # the budget is the cut loop's; the heuristics above always run
    progress = _BoundProgress(solve_budget(problems) if budget is None else budget)
    while iterations < max_iterations:
        remaining = time_limit_s - (time.monotonic() - started)
        if remaining <= 0:
            break
        solver.parameters.max_time_in_seconds = remaining
        status = solver.solve(model)
        iterations += 1
        if status == cp_model.INFEASIBLE:  # nothing better than the incumbent exists
            return SolveResult(incumbent, "optimal" if incumbent else "infeasible", iterations)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            break
        proposal = [{s: next(i for i, v in enumerate(x[w][s]) if solver.value(v)) for s in p.stages}
                    for w, p in enumerate(problems)]
        violated = [w for w, p in enumerate(problems) if not p.feasible(proposal[w], scale)]
        if not violated:
            return SolveResult(proposal, "optimal" if status == cp_model.OPTIMAL else "feasible", iterations)
        for w in violated:
            add_cut(w, problems[w].lift(proposal[w], scale))
        passed: list[list[dict[str, int]]] = [[] for _ in problems]
        repaired = _repair(problems, proposal, violated, allowed, limits, scale, passed)
        for w, found in enumerate(passed):
            for a in found[-2:]:  # the points nearest the SLO dominate the earlier ones
                add_cut(w, problems[w].lift(a, scale))
        if repaired is not None and (max_quality_loss is None
                                     or objective_milli(problems, repaired)[0] <= max_quality_loss) and (
                incumbent is None or objective_milli(problems, repaired) < objective_milli(problems, incumbent)):
            incumbent = repaired
            q, c = objective_milli(problems, incumbent)
            model.add(objective <= c + big * q - 1)
        if trace is not None and status == cp_model.OPTIMAL:
            trace.append((time.monotonic() - started, objective_milli(problems, proposal),
                          None if incumbent is None else objective_milli(problems, incumbent)))
        if status == cp_model.OPTIMAL and incumbent is not None:
            q, c = objective_milli(problems, incumbent)
            if progress.stalled(solver.objective_value, c + big * q):
                break
    if incumbent is not None:
        return SolveResult(incumbent, "feasible", iterations)
    return SolveResult(None, "unknown", iterations)


def solve_budget(problems: Sequence[WorkflowProblem]) -> int:
    """Relaxations the cut loop may solve to optimality: :data:`SOLVE_BUDGET_STAGES` over the stages
    planned, rounded, and at least :data:`MIN_SOLVES`."""
    stages = sum(len(p.stages) for p in problems)
    return max(MIN_SOLVES, round(SOLVE_BUDGET_STAGES / max(stages, 1)))


@dataclass
class _BoundProgress:
    """Whether the cut loop can still finish within its budget of ``budget`` solves.

    Each relaxation solved to optimality gives a lower bound ``b`` on the optimum;
    the loop ends with a proof only when ``b`` reaches the incumbent's objective
    ``z``. The gap ``g = z - b`` closes from both sides: cuts raise ``b`` and
    repairs lower ``z``. The loop stops at ``k = budget``; before, with ``g_1`` the
    first gap and ``g_k`` the ``k``-th, once ``k >= max(2, ceil(STALL_FRACTION x
    budget))`` it stops when the mean closure per solve, ``r = (g_1 - g_k) / (k - 1)``,
    is not positive or would need more than the ``budget - k`` solves left:
    ``g_k / r > budget - k``. The incumbent is then returned as ``feasible``. Only counts enter:
    the same instance stops after the same solve on any machine.
    """

    budget: int
    solves: int = 0
    """Relaxations solved to optimality so far (with an incumbent to compare against)."""
    first: float | None = None
    """The first of their gaps."""

    def stalled(self, bound: float, incumbent: float) -> bool:
        """Record one more relaxation's optimum ``bound`` and the ``incumbent``'s objective; whether to stop."""
        self.solves += 1
        gap = incumbent - bound
        if self.first is None:
            self.first = gap
        if self.solves >= self.budget:
            return True
        if self.solves < max(2, math.ceil(STALL_FRACTION * self.budget)):  # one closure at least to judge by
            return False
        rate = (self.first - gap) / (self.solves - 1)
        return rate <= 0.0 or gap / rate > self.budget - self.solves


def _repair(problems: Sequence[WorkflowProblem], proposal: Sequence[Mapping[str, int]], violated: Sequence[int],
            allowed: Sequence[Mapping[str, set[int]]], limits: Mapping[str, int], scale: float,
            passed: list[list[dict[str, int]]]) -> list[dict[str, int]] | None:
    """A joint plan meeting every SLO near a proposal that violates some: each violated workflow is
    repaired (:meth:`WorkflowProblem.repair`) within what the others leave of ``limits``, in turn.
    The infeasible points each repair passes are appended to ``passed[w]``. None if one fails."""
    joint = [dict(a) for a in proposal]
    for w in violated:
        others = _usage([q for v, q in enumerate(problems) if v != w], [a for v, a in enumerate(joint) if v != w])
        residual = {k: n - others.get(k, 0) for k, n in limits.items()}
        fixed = problems[w].repair(joint[w], residual, allowed[w], scale, passed[w])
        if fixed is None:
            return None
        joint[w] = fixed
    return joint


PRICE_ROUNDS = 6


def _priced_greedy(problems: Sequence[WorkflowProblem], allowed: Sequence[Mapping[str, set[int]]],
                   limits: Mapping[str, int], scale: float,
                   cuts: list[list[dict[str, int]]]) -> list[dict[str, int]] | None:
    """Per-workflow greedy plans made to share the inventory by shadow prices, then local descent.

    Kinds the workflows over-use together get a rising price per device (a
    Lagrangian-style heuristic) until the joint use fits; each workflow is then
    improved with the devices the others leave. None when no joint fit is found.
    """
    unit: dict[str, float] = {}
    for p in problems:
        for cs in p.candidates.values():
            for c in cs:
                for k, n in c.resources.items():
                    if n:
                        unit[k] = max(unit.get(k, 0.0), c.cost_per_hour / n, 0.01)
    prices: dict[str, float] = {}
    hints = None
    for _ in range(PRICE_ROUNDS):
        hints = [p.greedy(a, scale, c, prices) for p, a, c in zip(problems, allowed, cuts)]
        if any(h is None for h in hints):
            hints = None
            break
        use = _usage(problems, hints)
        over = [k for k, n in use.items() if n > limits.get(k, 0)]
        if not over:
            break
        for k in over:  # a damped rise: whole-kind switches oscillate otherwise
            prices[k] = prices.get(k, 0.0) + 0.25 * unit.get(k, 0.01) * min(use[k] / max(limits.get(k, 0), 1) - 1.0, 1.0)
    else:
        hints = None
    if hints is None:
        # Fall back to first come, first served: each workflow plans within what the previous ones left.
        residual = dict(limits)
        hints = []
        for p, a, c in sorted(zip(problems, allowed, cuts), key=lambda t: -len(t[0].stages)):
            h = p.greedy(a, scale, c, prices, residual)
            if h is None:
                return None
            hints.append(h)
            for k, n in _usage([p], [h]).items():
                residual[k] -= n
        order = sorted(range(len(problems)), key=lambda w: -len(problems[w].stages))
        hints = [hints[order.index(w)] for w in range(len(problems))]
    for w, p in enumerate(problems):
        others = _usage([q for v, q in enumerate(problems) if v != w], [h for v, h in enumerate(hints) if v != w])
        residual = {k: n - others.get(k, 0) for k, n in limits.items()}
        hints[w] = p.improve(hints[w], residual, allowed[w], scale)
    return hints


def _usage(problems: Sequence[WorkflowProblem], assigns: Sequence[Mapping[str, int]]) -> dict[str, int]:
    use: dict[str, int] = {}
    for p, a in zip(problems, assigns):
        for s, i in a.items():
            for kind, n in p.candidates[s][i].resources.items():
                use[kind] = use.get(kind, 0) + n
    return use


def _joint_fits(problems: Sequence[WorkflowProblem], assigns: Sequence[Mapping[str, int]],
                limits: Mapping[str, int]) -> bool:
    return all(n <= limits.get(kind, 0) for kind, n in _usage(problems, assigns).items())


def brute_force(problems: Sequence[WorkflowProblem], limits: Mapping[str, int],
                scale: float = 1.0) -> tuple[int, list[dict[str, int]]] | None:
    """Exhaustive reference: the lexicographic (quality loss, cost) optimum, for tests on small instances."""
    import itertools

    flat = [(w, s) for w, p in enumerate(problems) for s in p.stages]
    best = None
    for combo in itertools.product(*(range(len(problems[w].candidates[s])) for w, s in flat)):
        assigns: list[dict[str, int]] = [{} for _ in problems]
        for (w, s), i in zip(flat, combo):
            assigns[w][s] = i
        if not _joint_fits(problems, assigns, limits) or not all(p.consistent(a) for p, a in zip(problems, assigns)):
            continue
        key = (sum(quality_loss(problems[w].candidates[s][assigns[w][s]]) for w, s in flat),
               sum(cost_milli(problems[w].candidates[s][assigns[w][s]]) for w, s in flat))
        if best is not None and key >= best[0]:
            continue
        if all(p.feasible(a, scale) for p, a in zip(problems, assigns)):
            best = (key, assigns)
    return None if best is None else (best[0][1], best[1])


def objective_milli(problems: Sequence[WorkflowProblem], assigns: Sequence[Mapping[str, int]]) -> tuple[int, int]:
    """(quality loss, cost in milli-$/h) of a joint assignment: what :func:`solve` minimises lexicographically."""
    q = sum(quality_loss(p.candidates[s][i]) for p, a in zip(problems, assigns) for s, i in a.items())
    c = sum(cost_milli(p.candidates[s][i]) for p, a in zip(problems, assigns) for s, i in a.items())
    return q, c
