"""End-to-end latency by seeded Monte Carlo over the expanded call graph.

The maths
---------
A run's latency is the sum, over the nodes it visits, of each visit's latency;
a fan-out visit takes the ``max`` over its branches (join ``all``, ``vote``,
``best``) or the ``min`` (join ``first``) of each branch's chain sum. Runs are
sampled in two independent layers:

1. *Paths*: ``n`` runs walk the expanded absorbing chain of
   :mod:`planner.visits` (one vectorised step for all runs at a time; next
   states by inverse-CDF on per-state cumulative transition rows). Each visit
   to a stage gets its own uniform ``u``; every fan-out visit gets one ``u``
   per branch and chain position. Paths depend only on the workflow and its
   knobs, never on pool sizes, so they are drawn once per knob scenario.
2. *Latencies*: a visit with uniform ``u`` to a stage whose chosen candidate
   has quantile table ``Q`` takes ``Q(u)`` (linear interpolation on
   :data:`planner.candidates.U_GRID`).

Because the same ``u`` are reused for every candidate (common random numbers),
a run's latency is a non-decreasing function of every stage's quantile table:
if each stage's new table is elementwise no faster, no run gets faster and
the predicted SLO attainment cannot rise. The solver's latency cuts rely on
exactly this monotonicity. With the seed fixed, predictions are deterministic.

Runs ending at ``fail`` count with their latency (an exhausted retry loop is
a slow answer, not a missing one); ``P(done)`` is reported separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cortexlang.ir import Workflow
from cortexlang.semantics import Semantics, join_waits_for_all
from planner.candidates import U_GRID
from planner.plan import LatencyDistribution
from planner.visits import VisitChain

DEFAULT_SAMPLES = 10_000


@dataclass(frozen=True)
class Visits:
    """Visits to one stage at the top level: the run of each visit and its grid position."""

    runs: np.ndarray
    index: np.ndarray
    weight: np.ndarray

    def values(self, table: np.ndarray) -> np.ndarray:
        return table[self.index] * (1.0 - self.weight) + table[self.index + 1] * self.weight


@dataclass(frozen=True)
class FanoutVisits:
    """Visits to one fan-out: per branch, per chain position, the stage and its draws."""

    name: str
    join: str
    runs: np.ndarray
    branches: tuple[tuple[tuple[str, Visits], ...], ...]


def _grid_position(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.clip(np.searchsorted(U_GRID, u, side="right") - 1, 0, len(U_GRID) - 2)
    w = (u - U_GRID[idx]) / (U_GRID[idx + 1] - U_GRID[idx])
    return idx, w


@dataclass
class PathSample:
    """Sampled paths of ``n`` runs; evaluates run latencies for any choice of stage tables."""

    workflow: Workflow
    n: int
    stage_visits: dict[str, Visits]
    fanouts: tuple[FanoutVisits, ...]
    done: np.ndarray
    _node_of_stage: dict[str, str] = field(default_factory=dict)

    def node_of(self, stage: str) -> str:
        """The graph node whose latency depends on ``stage`` (the stage itself, or its fan-out)."""
        return self._node_of_stage.get(stage, stage)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self.stage_visits) + tuple(f.name for f in self.fanouts)

    def node_latency(self, node: str, tables: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-run total latency spent in ``node`` (length ``n``)."""
        if node in self.stage_visits:
            v = self.stage_visits[node]
            return np.bincount(v.runs, weights=v.values(tables[node]), minlength=self.n)
        fan = next((f for f in self.fanouts if f.name == node), None)
        if fan is None or len(fan.runs) == 0:
            return np.zeros(self.n)
        per_branch = np.stack([
            sum((vis.values(tables[stage]) for stage, vis in chain), np.zeros(len(fan.runs)))
            for chain in fan.branches
        ])
        joined = per_branch.max(axis=0) if join_waits_for_all(fan.join) else per_branch.min(axis=0)
        return np.bincount(fan.runs, weights=joined, minlength=self.n)

    def run_latency(self, tables: Mapping[str, np.ndarray]) -> np.ndarray:
        total = np.zeros(self.n)
        for node in self.nodes:
            total += self.node_latency(node, tables)
        return total


def sample_paths(chain: VisitChain, n: int = DEFAULT_SAMPLES, seed: int = 0,
                 fanout_width: Mapping[str, int] | None = None) -> PathSample:
    """Draw ``n`` runs through ``chain`` (see the module docstring)."""
    wf = chain.workflow
    rng = np.random.default_rng(seed)
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
    current = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    while alive.size:
        states = current[alive]
        nodes = state_node[states]
        order = np.argsort(nodes, kind="stable")
        bounds = np.searchsorted(nodes[order], np.arange(len(node_names) + 1))
        for k in range(len(node_names)):
            if bounds[k + 1] > bounds[k]:
                runs_of_node[k].append(alive[order[bounds[k]: bounds[k + 1]]])
        u = rng.random(alive.size)
        choice = (u[:, None] > cum[states]).sum(axis=1)
        current[alive] = nxt[states, choice]
        alive = alive[current[alive] < n_states]
    done = current == chain.done_index

    stage_names = {s.name for s in wf.stages}
    fanout_names = {f.name for f in wf.fanouts}
    sem = Semantics(wf, chain.loop_budget, fanout_width)
    stage_visits: dict[str, Visits] = {}
    fanouts: list[FanoutVisits] = []
    node_of_stage: dict[str, str] = {}
    for name in node_names:
        runs = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *runs_of_node[node_id[name]]]))
        if name in stage_names and name not in fanout_names:
            stage_visits[name] = Visits(runs, *_grid_position(rng.random(runs.size)))
        else:
            fan = wf.fanout(name)
            templates = sem.branches(name)
            branches = tuple(
                tuple((stage, Visits(runs, *_grid_position(rng.random(runs.size)))) for stage in chain_)
                for chain_ in templates
            )
            for chain_ in templates:
                for stage in chain_:
                    node_of_stage[stage] = name
            fanouts.append(FanoutVisits(name, fan.join, runs, branches))
    # Stages never reached still get an (empty) entry so tables can be passed uniformly.
    inside = sem.branch_multiplicity()
    for s in wf.stages:
        if s.name not in stage_visits and s.name not in inside:
            empty = np.zeros(0, dtype=np.int64)
            stage_visits[s.name] = Visits(empty, empty, np.zeros(0))
    return PathSample(wf, n, stage_visits, tuple(fanouts), done, node_of_stage)


def distribution(latency: np.ndarray) -> LatencyDistribution:
    """Summary percentiles of run latencies."""
    q = np.quantile(latency, [0.5, 0.9, 0.95, 0.99])
    return LatencyDistribution(mean=round(float(latency.mean()), 6), p50=round(float(q[0]), 6),
                               p90=round(float(q[1]), 6), p95=round(float(q[2]), 6), p99=round(float(q[3]), 6))


def attainment(latency: np.ndarray, slo_latency_s: float) -> float:
    """Fraction of runs that finish within ``slo_latency_s``."""
    return float(np.mean(latency <= slo_latency_s))
