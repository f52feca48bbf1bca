"""One semantics, three executions: the planner's exact visit distributions, the simulator's
walks and the orchestrator's real executions agree on random workflows.

The workflows are random DAGs of tool stages with outcome branches, retry
loops (nested or not, with budgets and exhaustion targets) and fan-outs whose
branches are random sub-flows of the same kind; some tools retry failed attempts. Each
tool succeeds with exactly the planning probability of its ``ok`` edge (see
``tests/semantics_tools/flaky.py``), so all three must produce the same
distribution of visits per stage and the same P(done). The planner's numbers
are exact (:mod:`planner.visits`); the other two are sampled, and must fall
within 4.5 standard errors per outcome (plus a small floor), with fixed seeds.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cortexlang.ir import (
    Condition, Edge, FanOut, IntKnob, Loop, Program, Retry, SubFlow, ToolStage, Workflow,
)
from cortexlang.semantics import Semantics
from planner.visits import build_chain, stage_visit_distribution
from runtime.build.layout import default_spec
from runtime.orchestrator import Orchestrator
from runtime.policies.fcfs import FCFS
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.sim import SimConfig, Simulator, Stream

TOOLS = Path(__file__).resolve().parent / "semantics_tools"


def _edge(src: str, dst: str, p: float = 1.0, outcome: str | None = None, loop: str | None = None) -> Edge:
    cond = Condition(kind="always") if outcome is None else Condition(kind="outcome", values=(outcome,))
    return Edge(source=src, target=dst, condition=cond, probability=p, loop=loop)


def random_graph(rng: random.Random, names: list[str], ok_p: dict[str, float], loop_prefix: str,
                 fixed: frozenset[str] = frozenset()) -> tuple[list[Edge], list[Loop]]:
    """Random edges and loops over ``names`` (in topological order); fills each node's ok probability.
    Nodes in ``fixed`` (fan-outs, whose branches decide their outcome) get one unconditional edge."""
    n = len(names)
    edges: list[Edge] = []
    loops: list[Loop] = []
    spans: list[tuple[int, int, str]] = []  # (back-edge target index, source index, loop), for nesting

    def forward(i: int) -> str:  # mostly the next node, so most nodes are reached
        if i + 1 >= n:
            return "done"
        return names[i + 1] if rng.random() < 0.7 else rng.choice(names[i + 1:] + ["done"])

    for i, name in enumerate(names):
        if rng.random() < 0.35 or name in fixed:
            ok_p[name] = 1.0
            edges.append(_edge(name, forward(i)))
            continue
        p = rng.choice([0.5, 0.6, 0.7, 0.8, 0.9])
        ok_p[name] = p
        edges.append(_edge(name, forward(i), p, "ok"))
        roll = rng.random()
        if roll < 0.55:  # a retry loop back to an earlier (or the same) node
            back = rng.randint(0, i)
            loop = f"{loop_prefix}l{i}"
            parent = next((lp for b, src, lp in sorted(spans, key=lambda t: t[1] - t[0])
                           if b <= back and i < src), None)
            spans.append((back, i, loop))
            loops.append(Loop(name=loop, max_iterations=IntKnob.fixed(rng.randint(1, 3)),
                              on_exhausted=rng.choice(["fail", forward(i)]), parent=parent))
            edges.append(_edge(name, names[back], 1 - p, "error", loop=loop))
        else:
            edges.append(_edge(name, "fail" if roll < 0.8 else forward(i), 1 - p, "error"))
    # Loops are declared outer first (the order the expanded chain's counters use).
    by_name = {x.name: x for x in loops}
    loops.sort(key=lambda lp: _depth(lp, by_name))
    return edges, loops


def random_workflow(seed: int) -> Workflow:
    """A random valid workflow: stages s0..s{n-1} in topological order, maybe one of them a
    fan-out whose branch is a random sub-flow with its own branches and loops."""
    rng = random.Random(seed)
    n = rng.randint(2, 6)
    names = [f"s{i}" for i in range(n)]
    ok_p: dict[str, float] = {}
    fanout: FanOut | None = None
    if n >= 3 and rng.random() < 0.5:
        k = rng.randint(1, n - 2)
        inner = [f"b{k}{c}" for c in "abc"[: rng.randint(1, 3)]]
        edges, loops = random_graph(rng, inner, ok_p, f"{names[k]}_")
        branch = SubFlow(entry=inner[0], edges=tuple(edges), loops=tuple(loops))
        fanout = FanOut(name=names[k], branches=(branch,), width=IntKnob.fixed(rng.randint(2, 3)),
                        join=rng.choice(["all", "first", "vote", "best"]))
    edges, loops = random_graph(rng, names, ok_p, "", frozenset({fanout.name}) if fanout else frozenset())
    stages = [_tool(rng, name, ok_p[name])
              for name in names + list(fanout.stages if fanout else ()) if not (fanout and name == fanout.name)]
    return Workflow(name=f"w{seed}", stages=tuple(stages), fanouts=(fanout,) if fanout else (),
                    entry="s0", edges=tuple(edges), loops=tuple(loops))


def _tool(rng: random.Random, name: str, p_ok: float) -> ToolStage:
    """A flaky tool stage ending ``ok`` with probability ``p_ok``; some retry failed attempts, each
    attempt then succeeding with ``1 - (1 - p_ok)^(1/(R+1))`` so the stage's outcome keeps ``p_ok``."""
    if p_ok < 1.0 and rng.random() < 0.3:
        retries = rng.randint(1, 2)
        per_attempt = 1 - (1 - p_ok) ** (1 / (retries + 1))
        return ToolStage(name=name, entry=f"flaky:ok_{round(per_attempt * 1000)}", service_s=0.01,
                         retry=Retry(max_retries=retries))
    return ToolStage(name=name, entry=f"flaky:ok_{round(p_ok * 1000)}", service_s=0.01)


def _depth(lp: Loop, by_name: dict[str, Loop]) -> int:
    d = 0
    while lp.parent is not None:
        lp, d = by_name[lp.parent], d + 1
    return d


def exact(wf: Workflow) -> tuple[dict[str, np.ndarray], float]:
    chain = build_chain(wf)
    return {s.name: stage_visit_distribution(chain, s.name) for s in wf.stages}, chain.p_done()


def assert_agrees(wf: Workflow, observed: list[Counter], done: int, what: str) -> None:
    """``observed`` (calls per stage, one Counter per run) and ``done`` runs match :func:`exact`.

    Stages inside a ``first`` fan-out are skipped: executions cancel the losing
    branches, while the planner counts every branch (a deliberately
    conservative load, see :mod:`planner.visits`).
    """
    pmfs, p_done = exact(wf)
    cancelled = {s for f in wf.fanouts if f.join == "first" for s in f.stages}
    n = len(observed)
    for stage, pmf in pmfs.items():
        if stage in cancelled:
            continue
        counts = np.bincount([c[stage] for c in observed], minlength=len(pmf))
        assert len(counts) <= len(pmf) or counts[len(pmf):].sum() == 0, (what, wf.name, stage, counts, pmf)
        emp = counts[: len(pmf)] / n
        tol = 4.5 * np.sqrt(pmf * (1 - pmf) / n) + 0.01
        assert np.all(np.abs(emp - pmf) <= tol), (what, wf.name, stage, emp.round(3), pmf.round(3))
    tol = 4.5 * np.sqrt(p_done * (1 - p_done) / n) + 0.01
    assert abs(done / n - p_done) <= tol, (what, wf.name, done / n, p_done)


WORKFLOW_SEEDS = range(40)


@pytest.mark.parametrize("seed", WORKFLOW_SEEDS)
def test_random_workflows_expand(seed: int) -> None:
    wf = random_workflow(seed)
    pmfs, p_done = exact(wf)
    for pmf in pmfs.values():
        assert pmf.sum() == pytest.approx(1.0)
    assert 0.0 <= p_done <= 1.0
    # The fastest run to done (when done is reachable) is a path the semantics can take.
    cost, path = Semantics(wf).fastest_path(lambda node: 1.0)
    assert (cost == float("inf")) == (p_done == 0.0) or p_done > 0


@pytest.mark.parametrize("seed", WORKFLOW_SEEDS)
def test_simulator_walks_match_the_planners_distributions(seed: int) -> None:
    wf = random_workflow(seed)
    runs = 3000
    sim = Simulator(Program(workflows=(wf,)), [ReplicaSpec(name="x", kind="executor", slots=10_000)], FCFS(),
                    [Stream(wf.name, 50.0)], SimConfig(runs=runs, warmup_fraction=0.0, record_calls=True,
                                                       seed=seed))
    res = sim.run()
    per_run: dict[int, Counter] = {i: Counter() for i in range(runs)}
    for call in sim.call_records:
        per_run[call[0]][call[2]] += 1
    assert_agrees(wf, list(per_run.values()), int(np.sum(res.status == "done")), "simulator")


ORCHESTRATOR_SEEDS = range(0, 40, 4)


@pytest.mark.parametrize("seed", ORCHESTRATOR_SEEDS)
def test_orchestrator_executions_match_the_planners_distributions(seed: int) -> None:
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    wf = random_workflow(seed)
    spec = default_spec(Program(workflows=(wf,)), base_dir=TOOLS, backend="simulated")
    runs = 600

    async def body() -> tuple[list[Counter], int]:
        import flaky

        flaky.reseed(seed)
        orch = Orchestrator(spec, lambda *a, **k: None)
        await orch.start()
        try:
            infos = []
            for start in range(0, runs, 100):
                infos += await asyncio.gather(*(orch.run({}) for _ in range(start, min(start + 100, runs))))
        finally:
            await orch.stop()
        counts = [Counter(c.stage for c in info.calls if c.kind != "fanout") for info in infos]
        return counts, sum(info.status == "done" for info in infos)

    observed, done = asyncio.run(body())
    assert_agrees(wf, observed, done, "orchestrator")
