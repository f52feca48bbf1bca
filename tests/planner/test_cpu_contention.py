"""CPU engines that slow each other (planner.api.plan_under_contention, LatencyProfile contention).

The planner's view is mean-field: every CPU profile is slowed by ``1 + contention x`` with ``x`` how
busy the other engines' cores are while one computes, a fixed point of the plan. It is checked here
against the discrete-event simulator, whose engines slow each other only while both compute (fluid,
``runtime/simulator/engine.py``): an independent model of the same physics, not the same formula.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cortexlang.compiler import compile_file
from planner.api import busy_replicas, cpu_busy_others, plan_program
from planner.plan import Plan
from planner.profiles import PROFILE_DIR, clear_cache, cpu_engines_busy, get_profile, use_calibrated
from runtime.simulator.verify import simulate_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCALED = ("prefill_us_per_token", "decode_fixed_ms", "decode_ms_per_seq", "decode_ns_per_kv_token")


@pytest.fixture()
def contended(tmp_path: Path):
    """Lookups return a SmolLM2 CPU profile 3x slower than shipped (a slow machine) whose engines,
    when the other is busy, prefill at half speed and decode 1.6x slower; ``None`` yields the same
    profile without contention."""
    def use(contention: dict | None) -> None:
        data = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
        data.update({k: 3 * data[k] for k in SCALED})
        if contention is not None:
            data["cpu_contention"] = contention
        folder = tmp_path / ("on" if contention else "off")
        folder.mkdir(exist_ok=True)
        (folder / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(data))
        use_calibrated(folder)
        clear_cache()

    yield use
    use_calibrated()
    clear_cache()


def test_busy_replicas_matches_the_poisson_sums() -> None:
    class Pool:
        replicas, utilisation, max_num_seqs = 3, 0.2, 5

    mean = 3 * 0.2 * 5
    pmf = [math.exp(-mean) * mean ** n / math.factorial(n) for n in range(60)]
    b = [min(n, 3) for n in range(60)]
    e1, e2 = busy_replicas(Pool())
    assert e1 == pytest.approx(sum(p * x for p, x in zip(pmf, b)), rel=1e-9)
    assert e2 == pytest.approx(sum(p * x * (x - 1) for p, x in zip(pmf, b)), rel=1e-9)


def test_profiles_are_slowed_only_inside_the_planner_block(contended) -> None:
    contended({"prefill": 1.0, "decode": 0.6, "engines_at_once": 2})
    base = get_profile("smollm2-135m", "CPU", 1)
    with cpu_engines_busy(0.5):
        slow = get_profile("smollm2-135m", "CPU", 1)
        gpu = get_profile("llama-3-8b", "H100", 1)
    assert slow.prefill_per_token_s == pytest.approx(base.prefill_per_token_s * 1.5)
    assert slow.decode_fixed_s == pytest.approx(base.decode_fixed_s * 1.3)
    assert gpu == get_profile("llama-3-8b", "H100", 1)  # GPUs own their devices
    assert get_profile("smollm2-135m", "CPU", 1) == base


def _plan(rate: float) -> tuple[object, Plan]:
    program = compile_file(EXAMPLES / "nl2sql.cortex").program
    plan = plan_program(program, rate=rate, mode="headroom")
    assert isinstance(plan, Plan), plan
    return program, plan


def test_a_plan_on_contending_engines_assumes_the_contention_it_causes(contended) -> None:
    contended(None)
    _, alone = _plan(0.3)
    assert alone.cpu_contention is None and "cpu_contention" not in alone.canonical_json()
    contended({"prefill": 1.0, "decode": 0.6, "engines_at_once": 2})
    _, plan = _plan(0.3)
    assert plan.cpu_contention is not None and cpu_busy_others(plan) <= plan.cpu_contention + 0.02
    assert plan.workflow().latency.p99 > 1.2 * alone.workflow().latency.p99
    assert "CPU engines slow each other" in __import__("planner.render", fromlist=["render_plan"]).render_plan(plan)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_the_plans_latency_under_contention_holds_in_the_simulator(contended, rate: float) -> None:
    """Planned p50 and p99 against a simulation of the same plan on the same profile, in which the
    engines slow each other only while both compute: within 10%. Without the contention term the
    plan would predict far less than the simulator measures."""
    contended(None)
    _, blind = _plan(rate)
    contended({"prefill": 1.0, "decode": 0.6, "engines_at_once": 2})
    program, plan = _plan(rate)
    wp = plan.workflow()
    sim = simulate_plan(program, plan, wp.workflow, runs=3000, seed=1)
    assert wp.latency.p50 == pytest.approx(sim.latency.p50, rel=0.10)
    assert wp.latency.p99 == pytest.approx(sim.latency.p99, rel=0.10)
    assert sim.holds
    if (plan.cpu_contention or 0.0) > 0.5:
        assert blind.workflow().latency.p99 < 0.8 * sim.latency.p99
