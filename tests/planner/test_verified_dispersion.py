"""The arrivals' dispersion measured in verification, fed back into the planner
(planner.verified_dispersion; the loop in cortexlang/cli/plan_verify.py)."""

from __future__ import annotations

import math

import pytest

from planner.api import PlanningCache, plan_program
from planner.plan import MeasuredArrivals, Plan
from planner.synthetic import nl2sql_program, random_program
from planner.verified_dispersion import (
    FEED_TOLERANCE, MIN_BINS, StageArrivals, fed_index, measured_index, merged, raised,
)

WINDOWS = tuple(2.0 ** k for k in range(-6, 7))


def flat(index: float, bins: int = 1000) -> MeasuredArrivals:
    """A measurement with the same index over every window."""
    return MeasuredArrivals(windows_s=WINDOWS, index=(index,) * len(WINDOWS), bins=(bins,) * len(WINDOWS))


def test_the_index_is_read_log_linearly_between_windows_and_clamped_outside() -> None:
    curve = MeasuredArrivals(windows_s=(0.5, 1.0, 2.0), index=(2.0, 4.0, 6.0), bins=(900, 500, 200))
    assert measured_index(curve, math.sqrt(0.5)) == pytest.approx((3.0, 500))  # halfway in log window
    assert measured_index(curve, 0.1) == (2.0, 900)
    assert measured_index(curve, 10.0) == (6.0, 200)
    few = curve.model_copy(update={"bins": (900, 500, MIN_BINS - 1)})  # the 2 s window has too few counts
    assert measured_index(few, 2.0) == (4.0, 500)
    assert measured_index(flat(3.0, bins=MIN_BINS - 1), 1.0) is None


def test_only_a_clearly_burstier_measurement_is_fed() -> None:
    at = StageArrivals(window_s=1.0, analytic=2.0)
    assert fed_index(at, flat(4.0)) == pytest.approx(4.0)
    assert fed_index(at, flat(2.0 * (1 + FEED_TOLERANCE) - 0.01)) is None  # within the tolerance
    assert fed_index(at, flat(1.5)) is None  # measured less bursty: the analytic index stays
    assert fed_index(at, flat(2.5, bins=MIN_BINS)) is None  # 25% above, but within 3 sampling errors
    assert fed_index(at, None) is None
    assert fed_index(StageArrivals(None, 2.0), flat(9.0)) is None  # no single window to read it over
    # A fan-out's k copies arrive at once: the measured calls' index is k times the epochs'.
    assert fed_index(StageArrivals(1.0, 2.0, copies=4), flat(12.0)) == pytest.approx(3.0)
    assert fed_index(StageArrivals(1.0, 2.0, copies=4), flat(8.0)) is None


def test_rounds_only_raise_and_report_what_would_change() -> None:
    a = MeasuredArrivals(windows_s=(1.0, 2.0), index=(3.0, 2.0), bins=(800, 400))
    b = MeasuredArrivals(windows_s=(1.0, 2.0), index=(2.0, 5.0), bins=(900, 450))
    both = merged({"x": a}, {"x": b, "y": b})
    assert both["x"].index == (3.0, 5.0) and both["x"].bins == (800, 450) and both["y"] == b
    stages = {"x": StageArrivals(2.0, 1.5), "y": StageArrivals(1.0, 1.2)}
    assert raised(stages, {}, {"x": a}) == ["x"]  # 2.0 at 2 s against 1.5 predicted
    assert raised(stages, {"x": a}, both) == ["x", "y"]  # x now 5.0; y newly measured
    assert raised(stages, both, both) == []  # nothing new: the fixed point


def _program():
    return nl2sql_program(rate=20.0, slo_s=30.0)


def test_a_burstier_measurement_raises_the_prediction_and_the_plan_says_so() -> None:
    program = _program()
    cache = PlanningCache()
    base = plan_program(program, cache=cache)
    assert isinstance(base, Plan) and not base.workflows[0].verified_dispersion
    analytic = cache.arrivals["nl2sql"]["fix"].analytic
    fed = plan_program(program, measured={"nl2sql": {"fix": flat(4.0 * analytic)}})
    assert isinstance(fed, Plan)
    (before,), (after,) = base.workflows, fed.workflows
    d = after.verified_dispersion["fix"]
    assert set(after.verified_dispersion) == {"fix"} and d.simulated == pytest.approx(4.0 * analytic, rel=1e-3)
    assert d.analytic == pytest.approx(analytic, rel=1e-3)
    fix = lambda wp: next(p for p in wp.llm_pools if "fix" in p.stages)  # noqa: E731
    # The fix stage's pool is modelled with burstier arrivals: its own table, or a larger pool.
    assert (fix(after).latency.p99 > fix(before).latency.p99 or fix(after).replicas > fix(before).replicas
            or after.cost_per_hour > before.cost_per_hour)
    assert "arrivals' dispersion taken from the verification simulation" in __import__(
        "planner.render", fromlist=["render_plan"]).render_plan(fed)
    assert Plan.from_json(fed.canonical_json()) == fed  # the field round-trips


def test_a_measurement_no_burstier_than_predicted_changes_nothing() -> None:
    program = _program()
    base = plan_program(program)
    poisson = {"nl2sql": {s: flat(1.0) for s in ("generate", "execute", "fix")}}
    same = plan_program(program, measured=poisson)
    assert isinstance(same, Plan) and same.canonical_json() == base.canonical_json()
    assert "verified_dispersion" not in base.canonical_json()  # unverified plans' JSON is unchanged


def test_verification_feeds_a_resource_loop_its_simulated_burstiness() -> None:
    """random44 (plan_vs_sim_seed30.md): a shared pool's departures reach the 70B pool, which feeds the
    shared pool again; the analytic p99 was 1.45x low. The verification measures the loop's bursts and
    the re-plan predicts with them: a higher prediction, and the plan names the stages."""
    from cortexlang.cli.plan_verify import plan_and_verify

    program = random_program(44)
    without = plan_and_verify(program, runs=1500, feedback_rounds=0)
    with_fb = plan_and_verify(program, runs=1500, feedback_rounds=1)  # cortexc plan --verify-feedback 1
    assert isinstance(without, Plan) and isinstance(with_fb, Plan)
    (a,), (b,) = without.workflows, with_fb.workflows
    assert not a.verified_dispersion and b.verified_dispersion
    assert b.latency.p99 > 1.15 * a.latency.p99
    assert b.verification.rounds > a.verification.rounds
