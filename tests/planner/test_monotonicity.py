"""Monotonicity: more inventory never costs more; a tighter SLO never costs less; more load never fewer replicas."""

from __future__ import annotations

import pytest

from planner.api import plan_program
from planner.plan import Plan
from planner.synthetic import gpu_inventory, nl2sql_program, research_program

SAMPLES = 4000


def _cost(program, **kw) -> float | None:
    plan = plan_program(program, samples=SAMPLES, **kw)
    return plan.cost_per_hour if isinstance(plan, Plan) else None


@pytest.mark.parametrize("slo_s", [2.2, 3.0])
def test_more_inventory_never_costs_more(slo_s: float) -> None:
    inventories = [gpu_inventory(h100=2, a100=1, h200=0, cpu_slots=4), gpu_inventory(h100=3, a100=2, h200=1, cpu_slots=6),
                   gpu_inventory(h100=6, a100=4, h200=2, cpu_slots=16), gpu_inventory(h100=12, a100=8, h200=6, cpu_slots=32)]
    costs = [_cost(nl2sql_program(rate=60.0, slo_s=slo_s, inventory=inv)) for inv in inventories]
    feasible = [c for c in costs if c is not None]
    assert feasible, costs
    assert costs.index(feasible[0]) + len(feasible) == len(costs), "feasibility must be monotone too"
    assert all(b <= a + 1e-9 for a, b in zip(feasible, feasible[1:])), costs


def test_tighter_slo_never_costs_less() -> None:
    costs = [_cost(nl2sql_program(rate=60.0, slo_s=s, inventory=gpu_inventory(h100=8, a100=8, h200=4)))
             for s in (6.0, 3.0, 2.5, 2.2, 2.0, 1.9)]
    feasible = [c for c in costs if c is not None]
    assert len(feasible) >= 3, costs
    assert all(b >= a - 1e-9 for a, b in zip(feasible, feasible[1:])), costs
    assert feasible[-1] > feasible[0], "the SLO should bind somewhere in this range"


def test_tighter_slo_never_costs_less_with_fan_out_and_knobs() -> None:
    costs = [_cost(research_program(rate=2.0, slo_s=s)) for s in (30.0, 20.0, 15.0, 12.0)]
    feasible = [c for c in costs if c is not None]
    assert len(feasible) >= 2, costs
    assert all(b >= a - 1e-9 for a, b in zip(feasible, feasible[1:])), costs


def test_higher_rate_never_needs_fewer_replicas() -> None:
    # One GPU kind, so replicas cannot be traded for a faster kind.
    inv = gpu_inventory(h100=64, a100=0, h200=0, cpu_slots=64)
    previous = None
    for rate in (5.0, 40.0, 120.0, 250.0, 400.0):
        plan = plan_program(nl2sql_program(rate=rate, slo_s=3.0, inventory=inv), samples=SAMPLES)
        assert isinstance(plan, Plan), plan
        replicas = {p.stage: p.replicas for p in plan.workflow().llm_pools}
        slots = {p.stage: p.slots for p in plan.workflow().executor_pools}
        if previous is not None:
            assert sum(replicas.values()) >= sum(previous[0].values())
            assert all(slots[s] >= previous[1][s] for s in slots)
        previous = (replicas, slots)
    assert sum(previous[0].values()) > 2, "the load should force more than one replica per stage"
