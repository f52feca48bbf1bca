"""`cortexc plan` verifies its plans in the simulator and tightens those that miss there."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cortexlang.cli import compiler_app
from cortexlang.cli.plan_verify import MAX_ROUNDS, plan_and_verify
from cortexlang.compiler import compile_file
from planner.plan import Plan
from runtime.simulator.verify import simulate_plan, wilson_interval

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_wilson_interval_brackets_the_proportion() -> None:
    lo, hi = wilson_interval(95, 100)
    assert lo < 0.95 < hi and 0.88 < lo and hi < 0.98
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(100, 100)[1] == pytest.approx(1.0)


def test_every_plan_carries_its_simulated_check_against_the_files_slo() -> None:
    program = compile_file(EXAMPLES / "rag.cortex").program
    plan = plan_and_verify(program, runs=3000)
    assert isinstance(plan, Plan)
    (wp,) = plan.workflows
    v = wp.verification
    assert v is not None and v.label == "simulated" and v.runs == 2700  # 10% warm-up
    assert wp.slo == program.workflow().slo  # the file's SLO, even after tightening
    lo, hi = v.attainment_interval
    assert lo <= v.slo_attainment <= hi
    # Either it holds in simulation, or every allowed round was tried.
    assert v.holds or v.rounds >= MAX_ROUNDS
    if v.rounds > 1:  # tightened: sized for a shorter latency than the file asks
        assert v.planned_latency_s < wp.slo.latency_s
    # The verdict is the simulator's own: re-simulating the final plan gives the same figures.
    again = simulate_plan(program, plan, wp.workflow, runs=3000, slo=wp.slo)
    assert again.slo_attainment == v.slo_attainment and again.latency == v.latency


def test_cli_prints_analytic_and_simulated_predictions() -> None:
    out = CliRunner().invoke(compiler_app, ["plan", str(EXAMPLES / "nl2sql.cortex"), "--verify-budget", "0.3"])
    assert out.exit_code == 0, out.output
    assert "end-to-end: p50" in out.output and "simulated (fcfs," in out.output
    assert "simulated SLO:" in out.output and "holds" in out.output
    quiet = CliRunner().invoke(compiler_app, ["plan", str(EXAMPLES / "nl2sql.cortex"), "--no-verify"])
    assert quiet.exit_code == 0 and "simulated" not in quiet.output


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.cortex")))
def test_every_example_is_planned_and_its_plan_simulated(name: str) -> None:
    program = compile_file(EXAMPLES / f"{name}.cortex").program
    plan = plan_and_verify(program, runs=1000)
    assert isinstance(plan, Plan), plan
    for wp in plan.workflows:
        v = wp.verification
        assert v is not None and v.runs == 900 and v.latency.p99 > 0
        # The simulated median is within a factor of 1.5 of the analytic one on every example
        # (the tails are compared, with their tolerance, in benchmarks/sim_planner_check.py).
        assert 1 / 1.5 < v.latency.p50 / wp.latency.p50 < 1.5, (v.latency, wp.latency)


def test_a_miss_tightens_by_the_overshoot_or_a_fixed_step_when_runs_were_rejected() -> None:
    from cortexlang.cli.plan_verify import MARGIN, MIN_FACTOR, REJECTED_STEP, tightening

    assert tightening(10.0, 12.5) == pytest.approx(0.8 * MARGIN)
    assert tightening(10.0, 9.0) == pytest.approx(MARGIN)  # missed on the body, not the tail: the margin
    assert tightening(10.0, float("inf")) == REJECTED_STEP  # was 0: a zero target, no plan at all
    # An unstable plan (p99 1,000 s against 10 s) asks for half the latency, not a hundredth.
    assert tightening(10.0, 1000.0) == MIN_FACTOR


def test_when_the_tighter_target_has_no_plan_the_step_is_halved_before_giving_up(monkeypatch) -> None:
    """A plan that misses by far is tightened to half its latency target; when nothing fits that,
    the search backs off to 0.71x, 0.84x... instead of keeping the plan that misses."""
    import cortexlang.cli.plan_verify as pv
    from planner.plan import Infeasible

    program = compile_file(EXAMPLES / "nl2sql.cortex").program
    slo = program.workflow().slo
    floor_s = 0.8 * slo.latency_s  # pretend nothing can be planned below 80% of the file's latency
    asked: list[float] = []
    real_plan = pv.plan_program

    def plan_program(prog, **kwargs):
        target = prog.workflow().slo.latency_s
        asked.append(target)
        if target < floor_s:
            return Infeasible(workflow=prog.workflow().name, binding="slo", message="too tight (test)")
        return real_plan(prog, **kwargs)

    real_measure = pv.measure_plan
    calls = {"n": 0}

    def measure_plan(*args, **kwargs):
        got = real_measure(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:  # the first plan is unstable: every run ends 100x late
            return pv.Measured(got.verification.model_copy(update={
                "holds": False, "slo_attainment": 0.0, "attainment_interval": (0.0, 0.01),
                "latency_at_target_s": 100 * slo.latency_s}), got.arrivals)
        return got

    monkeypatch.setattr(pv, "plan_program", plan_program)
    monkeypatch.setattr(pv, "measure_plan", measure_plan)
    plan = pv.plan_and_verify(program, runs=500, feedback_rounds=0)  # tightening alone (no dispersion re-plan)
    assert isinstance(plan, Plan)
    # The file's latency, then 0.5x (no plan), then the backed-off 0.71x (no plan) and 0.84x (a plan).
    assert asked[0] == slo.latency_s
    assert asked[1:4] == pytest.approx([slo.latency_s * f for f in (0.5, 0.5 ** 0.5, 0.5 ** 0.25)])
    (wp,) = plan.workflows
    assert wp.verification.rounds == 2 and wp.verification.planned_latency_s == pytest.approx(asked[3])


def test_a_miss_within_the_sampling_error_is_inconclusive_a_clear_one_is_not() -> None:
    from cortexlang.cli.plan_verify import inconclusive
    from cortexlang.ir import SLO
    from planner.plan import LatencyDistribution, Verification

    slo = SLO(latency_s=10.0, attainment=0.99)
    dist = LatencyDistribution(mean=1.0, p50=1.0, p90=2.0, p95=3.0, p99=9.0)

    def verdict(met: int, n: int) -> Verification:
        return Verification(policy="fcfs", runs=n, seed=0, latency=dist, slo_attainment=met / n,
                            attainment_interval=wilson_interval(met, n), holds=met / n >= 0.99,
                            planned_latency_s=10.0, latency_at_target_s=10.5)

    assert inconclusive(verdict(8905, 9000), slo)  # 98.94%: 99% is inside its interval
    assert not inconclusive(verdict(8800, 9000), slo)  # 97.8%: a clear miss
    assert not inconclusive(verdict(8950, 9000), slo)  # holds: nothing to confirm


def test_the_dispersion_feedback_is_an_option_with_a_bounded_round_count() -> None:
    plain = CliRunner().invoke(compiler_app, ["plan", str(EXAMPLES / "nl2sql.cortex"), "--verify-budget", "0.3"])
    fed = CliRunner().invoke(compiler_app, ["plan", str(EXAMPLES / "nl2sql.cortex"), "--verify-budget", "0.3",
                                            "--verify-feedback", "1"])
    assert plain.exit_code == 0 and fed.exit_code == 0, fed.output
    assert "simulated SLO" in fed.output  # verified either way; nl2sql's arrivals are no burstier than planned
    refused = CliRunner().invoke(compiler_app, ["plan", str(EXAMPLES / "nl2sql.cortex"), "--verify-feedback", "9"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
