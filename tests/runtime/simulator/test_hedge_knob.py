"""The simulator applies the plan's hedge width as the runtime's executor does: candidates on other replicas,
the first to finish wins; a sampling stage's candidates draw their own output lengths, greedy ones share the
call's (runtime/simulator/sim.py ``_hedge``, runs.py ``IRRun.twin_output_tokens``)."""

from __future__ import annotations

import pytest

from benchmarks.hedge_vs_sim import INVENTORY
from cortexlang.ir import IntKnob, Program, Workflow
from planner.api import plan_program
from planner.plan import Plan
from runtime.simulator.verify import simulate_plan
from runtime.simulator.workloads import LLAMA8B, edge, llm


def _p50s(temperature: float) -> tuple[float, float, float]:
    """(planned hedge-2 p50, simulated hedge-2 p50, simulated hedge-1 p50 on the same plan's layout)."""
    out = []
    for hedge in (2, 1):
        stage = llm("g", 400, 40, max_tokens=512).model_copy(
            update={"output_cv": 0.65, "hedge": IntKnob.fixed(hedge), "temperature": temperature})
        program = Program(models=(LLAMA8B,), workflows=(Workflow(name="one", stages=(stage,), entry="g",
                                                                 edges=(edge("g", "done"),)),))
        plan = plan_program(program, rate=2.0, inventory=INVENTORY)
        assert isinstance(plan, Plan)
        out.append((plan, simulate_plan(program, plan, "one", runs=1500, seed=1).latency.p50))
    (hedged_plan, hedged), (_, single) = out
    assert hedged_plan.workflows[0].knobs.hedge.get("g") == 2
    return hedged_plan.workflows[0].latency.p50, hedged, single


def test_sampled_candidates_each_draw_their_length_and_the_shortest_wins() -> None:
    planned, hedged, single = _p50s(0.2)
    assert hedged < 0.8 * single  # the fastest of two independent lengths
    assert hedged == pytest.approx(planned, rel=0.1)


def test_greedy_candidates_share_the_length_so_an_idle_pool_gains_nothing() -> None:
    planned, hedged, single = _p50s(0.0)
    assert hedged == pytest.approx(single, rel=0.02) and planned == pytest.approx(hedged, rel=0.1)


def test_a_runaway_calls_sampled_candidates_all_run_away() -> None:
    """20% runaways at temperature 0.2, hedge 2: the simulated p99 is a runaway's, hedged or not, as the planner
    has it (the shortest of two lengths helps only the calls that stop)."""
    p99 = {}
    for hedge in (2, 1):
        stage = llm("g", 400, 40, max_tokens=512).model_copy(
            update={"runaway": 0.2, "hedge": IntKnob.fixed(hedge), "temperature": 0.2})
        program = Program(models=(LLAMA8B,), workflows=(Workflow(name="one", stages=(stage,), entry="g",
                                                                 edges=(edge("g", "done"),)),))
        plan = plan_program(program, rate=2.0, inventory=INVENTORY)
        assert isinstance(plan, Plan)
        p99[hedge] = (plan.workflows[0].latency.p99, simulate_plan(program, plan, "one", runs=1500, seed=1).latency.p99)
    assert p99[2][1] == pytest.approx(p99[1][1], rel=0.05)  # not cured in the simulator
    assert p99[2][1] == pytest.approx(p99[2][0], rel=0.1)  # nor in the plan
