"""Infeasible inputs get an explanation: what binds and the closest feasible alternative."""

from __future__ import annotations

import re

from cortexlang.ir import CpuResource, GpuResource, Inventory
from planner.api import plan_program
from planner.explain import percentile_label
from planner.plan import Infeasible
from planner.synthetic import gpu_inventory, nl2sql_program, research_program

SAMPLES = 4000


def _infeasible(program, **kw) -> Infeasible:
    result = plan_program(program, samples=SAMPLES, **kw)
    assert isinstance(result, Infeasible), "expected no plan"
    return result


def test_slo_below_the_critical_path_names_the_floor_and_the_tightest_feasible_slo() -> None:
    r = _infeasible(nl2sql_program(rate=10.0, slo_s=0.5))
    assert r.binding == "slo"
    assert r.message.startswith("p99 <= 0.5s is infeasible for nl2sql: the critical path alone takes ")
    floor = float(re.search(r"takes ([0-9.]+)s", r.message).group(1))
    assert floor > 0.5
    assert r.tightest_latency_s is not None and r.tightest_latency_s >= floor * 0.99
    assert "The tightest feasible SLO on this inventory is p99" in r.closest and "xH100" in r.closest
    # The stated alternative is really feasible.
    plan = plan_program(nl2sql_program(rate=10.0, slo_s=r.tightest_latency_s * 1.001), samples=SAMPLES)
    assert not isinstance(plan, Infeasible)


def test_slo_reachable_only_with_more_devices_names_the_inventory() -> None:
    # 4 H100s are the fewest that keep up with 120 runs/s under the latency-aware batch cap.
    for h100 in (4, 5):
        r = _infeasible(nl2sql_program(rate=120.0, slo_s=2.2, inventory=gpu_inventory(h100=h100, cpu_slots=64)))
        assert r.binding == "inventory"
        assert f"p99 <= 2.2s for nl2sql needs more devices than the inventory has ({h100}xH100 + 64 CPU slots)" in r.message
        assert r.required_devices.get("H100", 0) > h100
        assert r.closest.startswith("The tightest feasible SLO on this inventory is p99 ")
        assert 2.2 < r.tightest_latency_s


def test_rate_that_no_slo_rescues_says_what_stable_pools_need() -> None:
    r = _infeasible(nl2sql_program(rate=250.0, slo_s=2.5, inventory=gpu_inventory(h100=3, cpu_slots=64)))
    assert r.binding == "inventory"
    assert r.closest.startswith("Even ignoring the SLO, pools that keep up with this rate need ")


def test_rate_beyond_the_inventory_names_the_stage_and_sustainable_rate() -> None:
    r = _infeasible(nl2sql_program(rate=500.0, inventory=gpu_inventory(h100=8, cpu_slots=8)))
    assert r.binding == "rate"
    assert r.message.startswith("Stage execute of nl2sql cannot keep up with 500 runs/s")
    assert "the inventory has 8 CPU slots" in r.message
    sustainable = float(re.search(r"at most ([0-9.]+) runs/s", r.closest).group(1))
    assert 0 < sustainable < 500
    assert not isinstance(plan_program(nl2sql_program(rate=sustainable * 0.99, slo_s=60,
                                                      inventory=gpu_inventory(h100=8, cpu_slots=8)),
                                       samples=SAMPLES), Infeasible)


def test_missing_profile_is_explained() -> None:
    inv = Inventory(gpus=(GpuResource(kind="L40S", count=8, cost_per_hour=1.0),), cpu=CpuResource(slots=8))
    r = _infeasible(nl2sql_program(inventory=inv))
    assert r.binding == "profile"
    assert "no profile for llama-3-8b on CPU" in r.message and "no profile for llama-3-8b on L40S" in r.message


def test_bad_input_is_explained_not_raised() -> None:
    assert _infeasible(nl2sql_program(), inventory=Inventory()).binding == "input"
    assert "no workflow named" in _infeasible(nl2sql_program(), workflows=["nope"]).message.lower()
    assert _infeasible(nl2sql_program(), mode="fastest").binding == "input"


def test_percentile_labels() -> None:
    assert percentile_label(0.99) == "p99" and percentile_label(0.999) == "p99.9" and percentile_label(0.9) == "p90"


def test_preferred_fan_out_width_that_cannot_fit_falls_back_or_explains() -> None:
    """Regression: the preferred width (3) has no executor pool within one CPU slot; width 2 has.

    Planning falls back to the narrower width when its SLO holds, and otherwise explains
    the failure with the scenario it last tried (it used to crash in the explanation).
    """
    inv = gpu_inventory(h100=16, a100=8, h200=8, cpu_slots=1)
    plan = plan_program(research_program(rate=1.0, slo_s=20.0), inventory=inv, samples=SAMPLES)
    assert not isinstance(plan, Infeasible)
    assert plan.workflow().knobs.fanout_width == {"gather": 2}
    r = _infeasible(research_program(rate=1.0, slo_s=8.0), inventory=inv)
    assert r.binding == "inventory" and r.workflow == "research"
    assert r.message.startswith("p95 <= 8s for research needs more devices than the inventory has")
