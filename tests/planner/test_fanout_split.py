"""A fan-out's copies share their executor pool's wait: the planner's join latency against the simulator.

One fan-out visit sends its ``k`` copies to the pool at once, so they wait for the same busy pool:
the planner's Monte Carlo gives them one shared draw of the batch's wait (``FanoutSplit``) instead
of ``k`` independent draws of the marginal latency, whose max over-predicts the join's tail.
"""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import SLO, Condition, Edge, FanOut, IntKnob, Load, Program, SubFlow, ToolStage, Workflow
from planner.candidates import StageLoad, executor_candidates
from planner.latency import sample_paths
from planner.synthetic import LLAMA_8B, SALES_DB, edge, gpu_inventory
from planner.visits import build_chain
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.sim import SimConfig, Simulator, Stream

RATE, WIDTH, SLOTS, SERVICE_S = 4.0, 5, 6, 0.2  # 67% busy


def _program() -> Program:
    search = ToolStage(name="search", entry="tools.web:search", service_s=SERVICE_S, service_cv=0.53)
    first = ToolStage(name="first", entry="tools.x:f", service_s=0.001, service_cv=0.0)
    branch = SubFlow(entry="search", edges=(
        Edge(source="search", target="done", condition=Condition(kind="always"), probability=1.0),))
    wf = Workflow(name="w", stages=(first, search), entry="first",
                  fanouts=(FanOut(name="explore", branches=(branch,), width=IntKnob.fixed(WIDTH), join="all"),),
                  edges=(edge("first", "explore"), edge("explore", "done")), loops=(),
                  slo=SLO(latency_s=60.0, attainment=0.9), load=Load(rate_per_s=RATE))
    return Program(models=(LLAMA_8B,), databases=(SALES_DB,), workflows=(wf,),
                   inventory=gpu_inventory(h100=1, cpu_slots=256))


@pytest.fixture(scope="module")
def simulated_p99() -> float:
    program = _program()
    layout = (ReplicaSpec(name="search", kind="executor", slots=SLOTS, stages=frozenset({"search"})),
              ReplicaSpec(name="first", kind="executor", slots=64, stages=frozenset({"first"})))
    res = Simulator(program, layout, make_policy("fcfs"), [Stream("w", RATE)],
                    SimConfig(runs=20_000, seed=3, warmup_fraction=0.1)).run()
    m = res.measured
    return float(np.quantile(res.end[m] - res.arrival[m], 0.99))


def _predicted_p99(shared_wait: bool) -> float:
    program = _program()
    wf = program.workflows[0]
    load = {"first": StageLoad(RATE, 1.0), "search": StageLoad(RATE * WIDTH, WIDTH, batch=WIDTH)}
    chosen = {}
    for stage in wf.stages:
        cands = executor_candidates(stage, load[stage.name], program.inventory).candidates
        chosen[stage.name] = next(c for c in cands if c.units == (SLOTS if stage.name == "search" else 64)) \
            if stage.name == "search" else cands[-1]
    assert chosen["search"].fanout_split is not None and chosen["first"].fanout_split is None
    paths = sample_paths(build_chain(wf), 20_000, seed=0)
    splits = {"search": chosen["search"].fanout_split} if shared_wait else None
    return float(np.quantile(paths.run_latency({s: c.table for s, c in chosen.items()}, splits), 0.99))


def test_shared_wait_predicts_the_joins_tail(simulated_p99: float) -> None:
    predicted = _predicted_p99(shared_wait=True)
    assert abs(predicted / simulated_p99 - 1.0) <= 0.12, (predicted, simulated_p99)


def test_independent_waits_over_predict_the_joins_tail(simulated_p99: float) -> None:
    """Why the split exists: the max over independent marginal draws is far too pessimistic."""
    assert _predicted_p99(shared_wait=False) > 1.2 * simulated_p99
