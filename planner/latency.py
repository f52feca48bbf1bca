"""End-to-end latency by seeded Monte Carlo over the expanded call graph.

The maths
---------
A run's latency is the sum, over the nodes it visits, of each visit's latency;
a fan-out visit takes the ``max`` over its branches (join ``all``, ``vote``,
``best``) or the ``min`` (join ``first``) of each branch run's latency, itself
the same sum over the branch's sub-flow. Runs are sampled in two independent
layers:

1. *Paths*: ``n`` runs walk the expanded absorbing chain of
   :mod:`planner.visits` (one vectorised step for all runs at a time; next
   states by inverse-CDF on per-state cumulative transition rows). Each visit
   to a stage gets its own uniform ``u``; every fan-out visit draws its width
   (a map's from its declared distribution) and walks each branch slot's
   sub-flow the same way, recursively. Paths depend only on the workflow and
   its knobs, never on pool sizes, so they are drawn once per knob scenario.
2. *Latencies*: a visit with uniform ``u`` to a stage whose chosen candidate
   has quantile table ``Q`` takes ``Q(u)`` (linear interpolation on
   :data:`planner.candidates.U_GRID`).

Because the same ``u`` are reused for every candidate (common random numbers),
a run's latency is a non-decreasing function of every stage's quantile table:
if each stage's new table is elementwise no faster, no run gets faster and
the predicted SLO attainment cannot rise. The solver's latency cuts rely on
exactly this monotonicity. With the seed fixed, predictions are deterministic.

Copies of one fan-out visit share their pools' waits: an executor stage fed by
a fan-out's batches has a :class:`~planner.candidates.FanoutSplit`; the first
visit of branch slot ``j`` of fan-out visit ``i`` to such a stage takes
``wait(u_c) + own[j] + service(u)``, where ``u_c`` is drawn once per (fan-out
visit, stage) from a separate stream (so adding it moved no other draw) and
``u`` is the visit's own. Later visits (retries) take the marginal table. Each
part is non-decreasing in its table, so the monotonicity above still holds.

Alike calls (an LLM stage's ``output_correlation`` ``r > 0``): one run's calls are not independent
when its output lengths are alike (greedy decoding of the same question repeats its answer). Such a
visit's uniform becomes ``Phi(sqrt(r) Z + sqrt(1 - r) Phi^-1(u))``, with ``Z`` one standard normal
per instance (run, or branch run) from a third stream, shared by its visits to every such stage: the
same Gaussian copula the simulator draws the output lengths with
(``runtime/simulator/runs.py``). It moves the whole latency quantile, wait included, not just the
output length's: the length is what varies most in a call's latency. Each visit's marginal stays
uniform, and the ``u`` are still fixed per visit, so the monotonicity above holds.

Congestion met again (:mod:`planner.congestion`): a run's top-level visits to one pool share the
pool's congestion -- each visit's uniform (after the alike transform above) becomes
``Phi(sqrt(a) X_k + sqrt(1 - a) Phi^-1(u))``, ``a`` the congestion's share of the visit's variance and
``X_k`` the run's latent congestion at its ``k``-th visit to the pool, an AR(1) chain from a fourth
stream. It depends on the pools chosen, so :func:`sample_paths` takes it as given (``congestion``)
and the planner redraws the paths with the congestion of its choice (``Planner._congestion_pass``):
within one sample the ``u`` stay fixed per visit and the monotonicity above holds.

Runs ending at ``fail`` count with their latency (an exhausted retry loop is
a slow answer, not a missing one); ``P(done)`` is reported separately.

Bounded work: every candidate the solver tries is evaluated on every sampled branch copy, so a
wide fan-out multiplies planning time (99 copies of a two-stage branch took 150 s to plan in
headroom mode). :func:`sampled_runs` lowers the number of runs so that runs x branch copies per
run stays within :data:`BRANCH_VISIT_BUDGET`, never below :data:`MIN_SAMPLES`; up to 10 copies
per run (every example and benchmark workflow) nothing changes. The plan reports the runs sampled.
A workflow with more than :data:`MAX_BRANCH_COPIES` copies per run is not planned (the planner says so).

All slots at once: a fan-out's branch slots are sampled one by one (the draws above), but evaluated
as one sample, :attr:`FanoutVisits.all_slots` (:func:`disjoint_union`: branch run ``i`` of slot ``j``
is instance ``j x visits + i``): one interpolation and one ``bincount`` per stage serve every slot,
so the numpy calls per evaluation do not grow with the width (128 slots evaluated one by one, ~45 us
of call overhead each, took deep_research ~25 s of planning). Each slot's latencies are bit-identical
to evaluating its branch sample alone: the same elementwise operations per visit, and the same order
of additions per instance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from statistics import NormalDist

import numpy as np

from cortexlang.ir import Workflow
from cortexlang.semantics import Semantics, join_waits_for_all
from planner.candidates import U_GRID, FanoutSplit
from planner.congestion import Congestion, correlate
from planner.plan import LatencyDistribution
from planner.visits import VisitChain, branch_chain

DEFAULT_SAMPLES = 10_000
BRANCH_VISIT_BUDGET = 100_000
"""Most sampled runs x branch copies per run (10 copies at :data:`DEFAULT_SAMPLES`; module docstring)."""
MIN_SAMPLES = 1_000
"""Fewest runs sampled however wide the fan-outs (the p99 then rests on the 10 runs beyond it)."""
MAX_BRANCH_COPIES = 128
"""Most branch copies per run the planner samples (:func:`branch_copies` at the widest knob settings):
at 128 a plan takes seconds; at 1,024 (the language's widest fan-out) it took minutes."""


@dataclass(frozen=True)
class Visits:
    """Visits to one stage: the instance (run, or branch run) of each visit and its grid position."""

    runs: np.ndarray
    index: np.ndarray
    weight: np.ndarray

    def values(self, table: np.ndarray) -> np.ndarray:
        """``table`` interpolated at each visit's grid position:
        ``table[index] (1 - weight) + table[index + 1] weight`` (in place: fewer large temporaries). The
        entries are gathered with ``ndarray.take``: the same values as ``table[index]``, without fancy
        indexing's general iterator (several times the instructions per element)."""
        out = table.take(self.index)
        out *= self._keep
        upper = table.take(self._next)
        upper *= self.weight
        out += upper
        return out

    @cached_property
    def each_once(self) -> int:
        """``k`` when the visits are exactly one per instance ``0..k-1``, in order (``runs`` is
        ``arange(k)``: a stage every run visits once); -1 otherwise."""
        k = self.runs.size
        return k if k and np.array_equal(self.runs, np.arange(k)) else -1

    @cached_property
    def _keep(self) -> np.ndarray:
        """``1 - weight``, computed once (:meth:`values` runs for every table the solver tries)."""
        return 1.0 - self.weight

    @cached_property
    def _next(self) -> np.ndarray:
        """``index + 1``, computed once."""
        return self.index + 1


@dataclass(frozen=True)
class BranchVisits(Visits):
    """Visits to one stage of a fan-out's branch sub-flow, with what the copies' shared wait needs
    per visit: the branch ``slot`` it runs in (the copy's position in its fan-out visit's batch) and
    the grid position (``common_index``, ``common_weight``) of its fan-out visit's shared draw for
    this stage. ``runs`` keeps each instance's visits together and in visit order (so the first
    visit of each instance is the first of its run of equal ``runs``)."""

    slot: np.ndarray
    common_index: np.ndarray
    common_weight: np.ndarray

    @cached_property
    def _first(self) -> tuple[np.ndarray, Visits, Visits, np.ndarray]:
        """The instances' first visits, gathered once (:meth:`split_values` runs for every table the
        solver tries, on every slot of a wide fan-out at once): their positions, their own draws, their
        fan-out visits' shared draws (as :class:`Visits`, so ``values(wait)`` interpolates the wait),
        and their slots."""
        first = np.ones(self.runs.size, dtype=bool)
        first[1:] = self.runs[1:] != self.runs[:-1]
        at = np.flatnonzero(first)
        runs = self.runs[at]
        return (at, Visits(runs, self.index[at], self.weight[at]),
                Visits(runs, self.common_index[at], self.common_weight[at]), self.slot[at])

    @cached_property
    def _later(self) -> tuple[np.ndarray, Visits]:
        """The other visits (retries): their positions and :class:`Visits`."""
        at = np.setdiff1d(np.arange(self.runs.size), self._first[0], assume_unique=True)
        return at, Visits(self.runs[at], self.index[at], self.weight[at])

    def split_values(self, table: np.ndarray, split: FanoutSplit) -> np.ndarray:
        """Per visit: an instance's first visit (a fan-out visit's copy in branch slot ``j``) takes the
        shared wait interpolated at its fan-out visit's common grid position ``(i, w)``,
        ``wait[i] (1 - w) + wait[i + 1] w``, plus ``own[j]`` (``own[-1]`` beyond its length), plus its
        own service draw; later visits take the marginal ``table``. Each visit's value is computed
        from its own draws alone, by the same operations whichever other visits come with it."""
        at, first, common, slot = self._first
        own = np.asarray(split.own, dtype=float).take(np.minimum(slot, len(split.own) - 1))
        first_values = common.values(split.wait) + own + first.values(split.service)
        later_at, later = self._later
        if later_at.size == 0:
            return first_values
        out = np.empty(self.runs.size)
        out[at] = first_values
        out[later_at] = later.values(table)
        return out


def _grid_position(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.clip(np.searchsorted(U_GRID, u, side="right") - 1, 0, len(U_GRID) - 2)
    w = (u - U_GRID[idx]) / (U_GRID[idx + 1] - U_GRID[idx])
    return idx, w


@dataclass
class GraphSample:
    """Sampled walks of ``n`` instances through one call graph (a workflow, or a fan-out
    branch's sub-flow); evaluates each instance's latency for any choice of stage tables.

    ``stage_visits`` and ``fanouts`` are each keyed in name order (as :func:`_walk` returns them), so
    :func:`disjoint_union` can add the nodes of several samples in an order that keeps every one's."""

    n: int
    stage_visits: dict[str, Visits]
    """Per stage its visits; :class:`BranchVisits` in a fan-out branch's sub-flow."""
    fanouts: dict[str, "FanoutVisits"]
    done: np.ndarray
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    """Per node, the step of the walk at which each visit came (in the order of its visits): the order
    of an instance's visits (empty in a :func:`disjoint_union`)."""

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self.stage_visits) + tuple(self.fanouts)

    def node_latency(self, node: str, tables: Mapping[str, np.ndarray],
                     splits: Mapping[str, FanoutSplit] | None = None) -> np.ndarray:
        """Per-instance total latency spent in ``node`` (length ``n``); ``splits`` gives the
        :class:`FanoutSplit` of stages whose fan-out copies share a wait (see the module docstring)."""
        if node in self.stage_visits:
            v = self.stage_visits[node]
            split = splits.get(node) if splits else None
            if split is not None and isinstance(v, BranchVisits):
                values = v.split_values(tables[node], split)
            else:
                values = v.values(tables[node])
            if v.each_once == self.n:  # bincount would add each value to 0.0: the same (non-negative) floats
                return values
            return np.bincount(v.runs, weights=values, minlength=self.n)
        fan = self.fanouts.get(node)
        if fan is None or len(fan.runs) == 0:
            return np.zeros(self.n)
        return np.bincount(fan.runs, weights=fan.latency(tables, splits), minlength=self.n)

    def latency(self, tables: Mapping[str, np.ndarray],
                splits: Mapping[str, FanoutSplit] | None = None) -> np.ndarray:
        total = np.zeros(self.n)
        for node in self.nodes:
            total += self.node_latency(node, tables, splits)
        return total


@dataclass(frozen=True)
class FanoutVisits:
    """Visits to one fan-out: the instance of each visit, and per branch slot whether that
    visit runs it (a map's width varies) and the slot's sampled branch runs (one per visit)."""

    name: str
    join: str
    runs: np.ndarray
    active: np.ndarray
    """``(slots, visits)`` booleans."""
    branches: tuple[GraphSample, ...]

    @cached_property
    def all_slots(self) -> GraphSample:
        """Every slot's branch runs as one sample (:func:`disjoint_union`): branch run ``i`` of slot
        ``j`` is instance ``j * visits + i``. Built on first use (a nested fan-out's own is never
        used: the enclosing fan-out's union carries a merged copy of it)."""
        return disjoint_union(self.branches)

    def latency(self, tables: Mapping[str, np.ndarray],
                splits: Mapping[str, FanoutSplit] | None = None) -> np.ndarray:
        """Per-visit latency: the slowest active branch (the fastest for ``first``); 0 without one.

        All slots are evaluated at once on :attr:`all_slots`, so the number of numpy calls does not
        grow with the slots; each slot's row is bit-identical to evaluating its branch sample alone
        (:func:`disjoint_union`)."""
        per_branch = self.all_slots.latency(tables, splits).reshape(len(self.branches), self.runs.size)
        if join_waits_for_all(self.join):
            return np.where(self.active, per_branch, 0.0).max(axis=0)
        fastest = np.where(self.active, per_branch, np.inf).min(axis=0)
        return np.where(np.isfinite(fastest), fastest, 0.0)


def disjoint_union(samples: Sequence[GraphSample]) -> GraphSample:
    """The samples side by side as one: instance ``i`` of ``samples[k]`` becomes instance
    ``offset[k] + i`` with ``offset[k] = sum_{l < k} samples[l].n``; per stage the visits are
    concatenated in sample order (instance ids shifted by the offset); per fan-out likewise its
    visits, ``active`` columns and, slot by slot, its branch samples (recursively).

    Contract: ``union.latency(t, s)[offset[k]: offset[k] + samples[k].n]`` is bit-identical to
    ``samples[k].latency(t, s)``. Why: every visit's value is elementwise (:meth:`Visits.values`,
    :meth:`BranchVisits.split_values`); ``np.bincount`` adds each instance's visits in array order,
    which the concatenation keeps (an instance's visits all come from one sample); a node a sample
    lacks adds ``+0.0`` to its instances (exact); and the nodes are added in name order, which
    keeps each sample's own order (its keys are in name order)."""
    offsets = np.cumsum([0] + [g.n for g in samples])
    for g in samples:
        if list(g.stage_visits) != sorted(g.stage_visits) or list(g.fanouts) != sorted(g.fanouts):
            raise ValueError("disjoint_union needs samples keyed in name order")
    stages = sorted(set().union(*(g.stage_visits for g in samples)))
    fans = sorted(set().union(*(g.fanouts for g in samples)))
    return GraphSample(
        n=int(offsets[-1]),
        stage_visits={s: _union_visits([(g.stage_visits[s], int(o)) for g, o in zip(samples, offsets)
                                        if s in g.stage_visits]) for s in stages},
        fanouts={f: _union_fanouts([(g.fanouts[f], int(o)) for g, o in zip(samples, offsets) if f in g.fanouts])
                 for f in fans},
        done=np.concatenate([np.zeros(0, dtype=bool), *(g.done for g in samples)]))


def _union_visits(parts: Sequence[tuple[Visits, int]]) -> Visits:
    """One stage's visits from several samples, instance ids shifted by each sample's offset."""
    runs = np.concatenate([v.runs + offset for v, offset in parts])
    index = np.concatenate([v.index for v, _ in parts])
    weight = np.concatenate([v.weight for v, _ in parts])
    branch = [isinstance(v, BranchVisits) for v, _ in parts]
    if not any(branch):
        return Visits(runs, index, weight)
    if not all(branch):
        raise ValueError("disjoint_union cannot mix a branch stage's visits with a top-level one's")
    return BranchVisits(runs, index, weight,
                        slot=np.concatenate([v.slot for v, _ in parts]),  # type: ignore[attr-defined]
                        common_index=np.concatenate([v.common_index for v, _ in parts]),  # type: ignore[attr-defined]
                        common_weight=np.concatenate([v.common_weight for v, _ in parts]))  # type: ignore[attr-defined]


def _union_fanouts(parts: Sequence[tuple[FanoutVisits, int]]) -> FanoutVisits:
    """One fan-out's visits from several samples: its visits in sample order (instance ids shifted),
    and slot by slot the union of the samples' branch runs (the visits' new order)."""
    first = parts[0][0]
    slots = len(first.branches)
    if any(f.name != first.name or f.join != first.join or len(f.branches) != slots for f, _ in parts):
        raise ValueError(f"disjoint_union: fan-out {first.name!r} differs between the samples")
    return FanoutVisits(first.name, first.join,
                        runs=np.concatenate([f.runs + offset for f, offset in parts]),
                        active=np.concatenate([f.active for f, _ in parts], axis=1),
                        branches=tuple(disjoint_union([f.branches[b] for f, _ in parts]) for b in range(slots)))


@dataclass
class PathSample(GraphSample):
    """Sampled paths of ``n`` runs through a workflow (see the module docstring)."""

    workflow: Workflow | None = None
    _node_of_stage: dict[str, str] = field(default_factory=dict)

    def node_of(self, stage: str) -> str:
        """The top-level node whose latency depends on ``stage`` (the stage itself, or its fan-out)."""
        return self._node_of_stage.get(stage, stage)

    def run_latency(self, tables: Mapping[str, np.ndarray],
                    splits: Mapping[str, FanoutSplit] | None = None) -> np.ndarray:
        return self.latency(tables, splits)


def _walk(chain: VisitChain, n: int, rng: np.random.Generator
          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Walk ``n`` instances through ``chain`` at once: per node, the instance of every visit
    (sorted; an instance's visits in the order it made them) and the step of the walk it came at,
    and which instances reached ``done``."""
    n_states = len(chain.states)
    width = max(len(s) for s in chain.succ)
    nxt = np.full((n_states, width), chain.fail_index, dtype=np.int64)
    cum = np.full((n_states, width), 2.0)
    for i, out in enumerate(chain.succ):
        probs = np.array([p for _, p in out])
        probs = probs / probs.sum()
        nxt[i, : len(out)] = [j for j, _ in out]
        cum[i, : len(out)] = np.cumsum(probs)
        cum[i, len(out) - 1] = 1.0
    node_names = sorted({node for node, _ in chain.states})
    node_id = {name: k for k, name in enumerate(node_names)}
    state_node = np.array([node_id[node] for node, _ in chain.states], dtype=np.int64)

    runs_of_node: dict[int, list[np.ndarray]] = {k: [] for k in range(len(node_names))}
    steps_of_node: dict[int, list[np.ndarray]] = {k: [] for k in range(len(node_names))}
    current = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    step = 0
    while alive.size:
        states = current[alive]
        nodes = state_node[states]
        order = np.argsort(nodes, kind="stable")
        bounds = np.searchsorted(nodes[order], np.arange(len(node_names) + 1))
        for k in range(len(node_names)):
            if bounds[k + 1] > bounds[k]:
                runs_of_node[k].append(alive[order[bounds[k]: bounds[k + 1]]])
                steps_of_node[k].append(np.full(bounds[k + 1] - bounds[k], step, dtype=np.int64))
        u = rng.random(alive.size)
        rows = cum[states]
        choice = (u > rows[:, 0]).astype(np.int64)  # the CDF levels u passes, counted column by column
        for j in range(1, width):  # (a sum over a short axis is numpy's slow case)
            choice += u > rows[:, j]
        current[alive] = nxt[states, choice]
        alive = alive[current[alive] < n_states]
        step += 1
    visits, steps = {}, {}
    for name in node_names:
        runs = np.concatenate([np.zeros(0, dtype=np.int64), *runs_of_node[node_id[name]]])
        at = np.argsort(runs, kind="stable")  # (the same values as np.sort; each run's visits in step order)
        visits[name] = runs[at]
        steps[name] = np.concatenate([np.zeros(0, dtype=np.int64), *steps_of_node[node_id[name]]])[at]
    return visits, steps, current == chain.done_index


_NORMAL = NormalDist()


def correlated_uniforms(u: np.ndarray, z: np.ndarray, r: float) -> np.ndarray:
    """``Phi(sqrt(r) z + sqrt(1 - r) Phi^-1(u))``: uniforms ``u`` made to share the standard normal
    ``z`` with correlation ``r`` in normal scores (still uniform each)."""
    a, b = math.sqrt(r), math.sqrt(1.0 - r)
    return np.array([_NORMAL.cdf(a * zi + b * _NORMAL.inv_cdf(min(max(ui, 1e-300), 1.0 - 1e-16)))
                     for ui, zi in zip(u.tolist(), z.tolist())])


def _sample_graph(chain: VisitChain, sem: Semantics, n: int, rng: np.random.Generator,
                  fanout_width: Mapping[str, int] | None, shared_rng: np.random.Generator | None = None,
                  alike: Mapping[str, float] | None = None, latent_rng: np.random.Generator | None = None,
                  congestion: Congestion | None = None, congestion_rng: np.random.Generator | None = None
                  ) -> GraphSample:
    """Walk ``n`` instances through ``chain``; every stage visit gets its own uniform ``u``;
    every fan-out visit draws its width and walks each branch slot's sub-flow (recursively), and
    per stage of its branches one shared uniform from ``shared_rng`` (the copies' common wait).
    ``alike``: stage -> ``output_correlation`` (> 0 only); their visits' ``u`` share each instance's
    normal from ``latent_rng`` (module docstring). ``congestion`` (top level only): the visits to one
    pool share each run's latent congestion, drawn from ``congestion_rng``
    (:func:`planner.congestion.correlate`); every other draw is as without it."""
    shared_rng = shared_rng if shared_rng is not None else np.random.default_rng(0)
    alike = alike or {}
    latent_rng = latent_rng if latent_rng is not None else np.random.default_rng(2)
    visits, steps, done = _walk(chain, n, rng)
    stage_visits: dict[str, Visits] = {}
    drawn: dict[str, np.ndarray] = {}  # with ``congestion``: the stages' uniforms, made Visits at the end
    fanouts: dict[str, FanoutVisits] = {}
    latent = latent_rng.standard_normal(n) if any(s in alike for s in visits) else None
    for name, runs in visits.items():
        if name not in sem.workflow._index["fanout"]:
            u = rng.random(runs.size)
            if latent is not None and name in alike:
                u = correlated_uniforms(u, latent[runs], alike[name])
            if congestion is not None:
                drawn[name] = u
            else:
                stage_visits[name] = Visits(runs, *_grid_position(u))
            continue
        fo = sem.fanout(name)
        pmf = sem.width_pmf(name)
        slots = len(fo.branches) if len(fo.branches) > 1 else max(w for w, _ in pmf)
        if len(pmf) == 1:
            active = np.ones((slots, runs.size), dtype=bool)
        else:  # a map: draw each visit's width by inverse CDF
            widths = np.array([w for w, _ in pmf])
            cdf = np.cumsum([p for _, p in pmf])
            cdf[-1] = 1.0
            drawn = widths[np.searchsorted(cdf, rng.random(runs.size), side="right").clip(max=len(widths) - 1)]
            active = np.arange(slots)[:, None] < drawn[None, :]
        branches = []
        for b in range(slots):
            index = sem.branch_index(name, b)
            sub = sem.branch(name, index)
            branches.append(_sample_graph(branch_chain(chain, name, index, fanout_width), sub, runs.size, rng,
                                          fanout_width, shared_rng, alike, latent_rng))
        stages = sorted({s for br in branches for s in br.stage_visits})
        common = {s: _grid_position(shared_rng.random(runs.size)) for s in stages}
        for b, br in enumerate(branches):  # each visit's slot and its fan-out visit's shared draw
            br.stage_visits = {s: BranchVisits(v.runs, v.index, v.weight, slot=np.full(v.runs.size, b),
                                               common_index=common[s][0][v.runs], common_weight=common[s][1][v.runs])
                               for s, v in br.stage_visits.items()}
        fanouts[name] = FanoutVisits(name, fo.join, runs, active, tuple(branches))
    if congestion is not None:
        drawn = correlate(congestion, drawn, visits, steps,
                          congestion_rng if congestion_rng is not None else np.random.default_rng(3))
        stage_visits = {name: Visits(visits[name], *_grid_position(u)) for name, u in drawn.items()}
    return GraphSample(n, stage_visits, fanouts, done, steps)


def branch_copies(workflow: Workflow, fanout_width: Mapping[str, int] | None = None) -> int:
    """Branch sub-flows sampled per run: every fan-out's slots (its listed branches, or its widest
    width), times the slots of every fan-out it is nested in."""
    sem = Semantics(workflow, fanout_width=fanout_width)
    owner = workflow.branch_owner()

    def slots(fanout: str) -> int:
        fo = sem.fanout(fanout)
        return len(fo.branches) if len(fo.branches) > 1 else max(w for w, _ in sem.width_pmf(fanout))

    def copies(fanout: str) -> int:
        return slots(fanout) * (copies(owner[fanout]) if fanout in owner else 1)

    return sum(copies(f.name) for f in workflow.fanouts)


def widest_branch_copies(workflow: Workflow) -> int:
    """:func:`branch_copies` with every fan-out's width knob at its widest option."""
    return branch_copies(workflow, {f.name: max(o.value for o in f.width.options)
                                    for f in workflow.fanouts if f.width is not None})


def sampled_runs(workflow: Workflow, n: int, fanout_width: Mapping[str, int] | None = None) -> int:
    """How many of the ``n`` requested runs :func:`sample_paths` draws: ``n``, or fewer where wide
    fan-outs would take runs x copies past :data:`BRANCH_VISIT_BUDGET` (never below
    :data:`MIN_SAMPLES`, nor above ``n``)."""
    copies = branch_copies(workflow, fanout_width)
    if copies * n <= BRANCH_VISIT_BUDGET:
        return n
    return min(n, max(MIN_SAMPLES, BRANCH_VISIT_BUDGET // copies))


def sample_paths(chain: VisitChain, n: int = DEFAULT_SAMPLES, seed: int = 0,
                 fanout_width: Mapping[str, int] | None = None, congestion: Congestion | None = None) -> PathSample:
    """Draw :func:`sampled_runs` (``n`` unless the fan-outs are wide) runs through ``chain`` (see the
    module docstring); ``congestion``: correlate each run's visits to one pool (:mod:`planner.congestion`),
    from a fourth stream (every other draw is the same)."""
    wf = chain.workflow
    n = sampled_runs(wf, n, fanout_width)
    rng = np.random.default_rng(seed)
    alike = {s.name: s.output_correlation for s in wf.stages if getattr(s, "output_correlation", 0.0) > 0.0}
    top = _sample_graph(chain, Semantics(wf, chain.loop_budget, fanout_width), n, rng, fanout_width,
                        np.random.default_rng([seed, 1]), alike, np.random.default_rng([seed, 2]),
                        congestion, np.random.default_rng([seed, 3]))
    # Stages never reached still get an (empty) entry so tables can be passed uniformly.
    owner = wf.branch_owner()
    for s in wf.stages:
        if s.name not in top.stage_visits and s.name not in owner:
            empty = np.zeros(0, dtype=np.int64)
            top.stage_visits[s.name] = Visits(empty, empty, np.zeros(0))
    node_of_stage = {}
    for node in owner:
        top_node = node
        while top_node in owner:
            top_node = owner[top_node]
        node_of_stage[node] = top_node
    return PathSample(top.n, top.stage_visits, top.fanouts, top.done, top.steps, workflow=wf,
                      _node_of_stage=node_of_stage)


def distribution(latency: np.ndarray) -> LatencyDistribution:
    """Summary percentiles of run latencies."""
    q = np.quantile(latency, [0.5, 0.9, 0.95, 0.99])
    return LatencyDistribution(mean=round(float(latency.mean()), 6), p50=round(float(q[0]), 6),
                               p90=round(float(q[1]), 6), p95=round(float(q[2]), 6), p99=round(float(q[3]), 6))


def attainment(latency: np.ndarray, slo_latency_s: float) -> float:
    """Fraction of runs that finish within ``slo_latency_s``.

    Counted with ``np.count_nonzero`` and one division: the same float as ``np.mean`` of the booleans
    (their float sum is an exact integer count, divided once by the length), at a quarter of the
    cost -- the solver asks this of every move it tries."""
    if latency.size == 0:
        return float("nan")  # (what the mean of no runs gave)
    return np.count_nonzero(latency <= slo_latency_s) / latency.size
