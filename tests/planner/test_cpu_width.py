"""A CPU engine's width (cores) is part of the planner's search: with a profile for one-core engines
and one for two-core engines, an SLO only the wider engine can hold gets the wider engine, which
takes two ``cpu`` slots (its cost and its share of the inventory); with only the one-core profile the
same SLO is infeasible, and a loose SLO keeps the cheaper one-core engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortexlang.compiler import compile_file
from planner.api import plan_program
from planner.plan import Infeasible, Plan
from planner.profiles import PROFILE_DIR, clear_cache, use_calibrated

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPEEDUP = 1.8
"""How much faster the two-core engine is in this test's made-up profile."""


def _with_slo(program, latency_s: float):
    wf = program.workflow()
    slo = wf.slo.model_copy(update={"latency_s": latency_s})
    return program.model_copy(update={"workflows": (wf.model_copy(update={"slo": slo}),)})


@pytest.fixture()
def profiles(tmp_path: Path):
    """A calibrated directory with the shipped one-core profile and a two-core one ``SPEEDUP`` times
    faster in every coefficient; yields a function that turns the two-core one on or off."""
    one = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
    two = {**one, "tp": 2, **{k: one[k] / SPEEDUP for k in (
        "prefill_us_per_token", "prefill_fixed_ms", "decode_fixed_ms", "decode_ms_per_seq", "decode_ns_per_kv_token")}}
    narrow, wide = tmp_path / "narrow", tmp_path / "wide"
    for folder, files in ((narrow, (one,)), (wide, (one, two))):
        folder.mkdir()
        for data in files:
            (folder / f"smollm2-135m__cpu__tp{data['tp']}.json").write_text(json.dumps(data))

    def use(with_two_cores: bool) -> None:
        use_calibrated(wide if with_two_cores else narrow)
        clear_cache()

    yield use
    use_calibrated()
    clear_cache()


def test_an_slo_only_a_wider_engine_holds_gets_one(profiles) -> None:
    program = compile_file(EXAMPLES / "nl2sql.cortex").program
    profiles(False)
    floor = plan_program(_with_slo(program, 0.5))  # far below anything feasible: says the tightest
    assert isinstance(floor, Infeasible) and floor.tightest_latency_s
    tight = _with_slo(program, 0.85 * floor.tightest_latency_s)
    assert isinstance(plan_program(tight), Infeasible)  # one-core engines cannot hold it
    profiles(True)
    plan = plan_program(tight)
    assert isinstance(plan, Plan), plan
    wp = plan.workflow("nl2sql")
    assert {p.tp for p in wp.llm_pools} == {2}
    engines = sum(p.replicas * p.tp for p in wp.llm_pools)  # cores: slots the engines take
    slots = engines + sum(p.slots for p in wp.executor_pools)
    assert slots <= program.inventory.cpu.slots
    assert wp.cost_per_hour == pytest.approx(slots * program.inventory.cpu.cost_per_hour)


def test_a_loose_slo_keeps_the_cheaper_narrow_engine(profiles) -> None:
    profiles(True)
    plan = plan_program(compile_file(EXAMPLES / "nl2sql.cortex").program)
    assert isinstance(plan, Plan)
    assert {p.tp for p in plan.workflow("nl2sql").llm_pools} == {1}
