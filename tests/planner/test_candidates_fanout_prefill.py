"""A fan-out's copies of an LLM stage arrive together: each replica's prefill work is burstier by
``max(1, k / R)`` (:func:`planner.candidates.copies_prefill_index`), against the simulator.

A search-then-summarise branch of width 6 on one H100 replica of Llama-3-8B (the shape of
``benchmarks/plan_vs_sim.py``'s fan-outs): the summary's simulated per-call p99 against the
planner's table with and without the copies' factor.
"""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import SLO, Condition, Edge, FanOut, IntKnob, Load, Program, SubFlow, ToolStage, Workflow
from planner.candidates import StageLoad, copies_prefill_index, llm_candidates
from planner.synthetic import LLAMA_8B, edge, gpu_inventory, llm
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.sim import SimConfig, Simulator, Stream

RATE, WIDTH = 2.0, 6  # visits/s; 12 summaries/s on one replica


def test_the_factor_is_k_over_r_above_one_copy_per_replica():
    assert copies_prefill_index(1, 1) == 1.0
    assert copies_prefill_index(4, 4) == 1.0 and copies_prefill_index(3, 5) == 1.0
    assert copies_prefill_index(6, 1) == 6.0 and copies_prefill_index(6, 4) == 1.5


def _program() -> Program:
    first = ToolStage(name="first", entry="tools.x:f", service_s=0.001, service_cv=0.0)
    search = ToolStage(name="search", entry="tools.web:search", service_s=0.2, service_cv=0.53,
                       service_range_s=(0.05, 0.35))
    summary = llm("summary", "llama8b", input_tokens=1100, output_tokens=60, max_tokens=256)
    branch = SubFlow(entry="search", edges=(
        edge("search", "summary"),
        Edge(source="summary", target="done", condition=Condition(kind="always"), probability=1.0)))
    wf = Workflow(name="w", stages=(first, search, summary), entry="first",
                  fanouts=(FanOut(name="explore", branches=(branch,), width=IntKnob.fixed(WIDTH), join="all"),),
                  edges=(edge("first", "explore"), edge("explore", "done")), loops=(),
                  slo=SLO(latency_s=60.0, attainment=0.9), load=Load(rate_per_s=RATE))
    return Program(models=(LLAMA_8B,), workflows=(wf,), inventory=gpu_inventory(h100=8, cpu_slots=256))


def _one_replica(program: Program, batch: int):
    stage = program.workflows[0].stage("summary")
    load = StageLoad(RATE * WIDTH, WIDTH, batch=batch)
    return next(c for c in llm_candidates(program, stage, load, program.inventory).candidates
                if c.units == 1 and c.max_tokens == 256)


@pytest.fixture(scope="module")
def simulated_p99() -> float:
    program = _program()
    cand = _one_replica(program, WIDTH)
    layout = (ReplicaSpec(name="s0", kind="llm", device="H100", model="llama8b", tp=1, stages=frozenset({"summary"}),
                          slots=cand.max_num_seqs, kv_capacity_tokens=cand.kv_budget_tokens),
              ReplicaSpec(name="first", kind="executor", slots=64, stages=frozenset({"first"})),
              ReplicaSpec(name="search", kind="executor", slots=256, stages=frozenset({"search"})))
    res = Simulator(program, layout, make_policy("fcfs"), [Stream("w", RATE)],
                    SimConfig(runs=6000, seed=3, warmup_fraction=0.1, record_calls=True)).run()
    calls = [c for c in res.calls[len(res.calls) // 10:] if c[2] == "summary"]
    return float(np.quantile([c[7] - c[5] for c in calls], 0.99))


def test_copies_arriving_together_lengthen_the_tail_toward_the_simulator(simulated_p99):
    program = _program()
    together = _one_replica(program, WIDTH).quantile(0.99)
    poisson = _one_replica(program, 1).quantile(0.99)
    # With the factor the table's p99 is closer to the simulated one (1.51 s and 1.19 s against
    # 2.06 s when written); it stays below it: the copies of one visit also stall each other's
    # decode (a mean effect left out, see the report in benchmarks/results/plan_vs_sim.md).
    assert poisson < together < simulated_p99
    assert abs(together - simulated_p99) < 0.8 * abs(poisson - simulated_p99)
