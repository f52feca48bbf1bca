"""The congestion a run's visits to one pool share (planner/congestion.py)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from planner.candidates import executor_service_table
from planner.congestion import (Congestion, congestion_share, correlate, relaxation_time, table_variance,
                                visit_correlation, window_correlation)

_N = NormalDist()


def _scores(u: np.ndarray) -> np.ndarray:
    return np.array([_N.inv_cdf(min(max(v, 1e-12), 1 - 1e-12)) for v in u])


def test_window_correlation_limits() -> None:
    # instants: the OU autocorrelation itself
    assert window_correlation(2.0, 0.0, 0.0, 1.0) == pytest.approx(math.exp(-0.5))
    assert window_correlation(2.0, 0.0, 0.0, 0.0) == pytest.approx(1.0)
    # far apart, or long windows averaging over many episodes: uncorrelated
    assert window_correlation(1.0, 1.0, 1.0, 50.0) < 1e-20
    assert window_correlation(1.0, 1e4, 1e4, 0.0) < 0.01
    # a pool whose episodes never end (saturated): fully correlated
    assert window_correlation(math.inf, 3.0, 5.0, 2.0) == 1.0
    # adjacent windows of one relaxation time each: (1 - 1/e)^2 / (2/e)
    assert window_correlation(1.0, 1.0, 1.0, 0.0) == pytest.approx((1 - math.exp(-1)) ** 2 / (2 * math.exp(-1)))


def test_window_correlation_against_an_ou_monte_carlo() -> None:
    """The closed form against window averages of a simulated OU process (exact AR(1) steps)."""
    rng = np.random.default_rng(5)
    tau, dt, t1, t2, gap = 1.0, 0.01, 0.8, 1.5, 0.3
    n1, ng, n2 = int(t1 / dt), int(gap / dt), int(t2 / dt)
    steps = n1 + ng + n2
    paths = 20_000
    a = math.exp(-dt / tau)
    x = rng.standard_normal(paths)
    first = np.zeros(paths)
    second = np.zeros(paths)
    for k in range(steps):
        if k < n1:
            first += x
        elif k >= n1 + ng:
            second += x
        x = a * x + math.sqrt(1 - a * a) * rng.standard_normal(paths)
    measured = np.corrcoef(first, second)[0, 1]
    assert measured == pytest.approx(float(window_correlation(tau, t1, t2, gap)), abs=0.02)


def test_visit_correlation_limits() -> None:
    # an idle pool has no congestion to share
    assert visit_correlation(0.0, 0.0, relaxation_time(2.0, 4, 0.0), 2.0, 2.0, 0.0) == 0.0
    # visits far apart (many relaxation times)
    assert visit_correlation(0.8, 0.8, relaxation_time(1.0, 1, 0.5), 1.0, 1.0, 1e3) < 1e-6
    # back to back on a saturated pool, its latency all congestion: near 1
    tau = relaxation_time(1.0, 1, 0.999)
    assert tau > 1e5
    assert visit_correlation(1.0, 1.0, tau, 1.0, 1.0, 0.0) > 0.99


def test_relaxation_time() -> None:
    assert relaxation_time(2.0, 256, 0.5) == 2.0  # many slots: the busy count's scale, the stay
    assert relaxation_time(2.0, 256, 0.5, stretch=1.5) == 3.0  # a fuller batch drains more slowly
    assert relaxation_time(1.0, 1, 0.81) == pytest.approx(1.0 / (1 - 0.9) ** 2)  # M/M/1: Morse's
    assert relaxation_time(1.0, 1, 1.0) == math.inf


def test_congestion_share_of_a_wait() -> None:
    idle = executor_service_table(0.1, 0.5, 0.0, 0.0)
    assert congestion_share(idle, table_variance(idle)) == 0.0
    busy = executor_service_table(0.1, 0.5, 0.6, 0.2)
    # wait: 0 w.p. 0.4, else exponential of mean 0.2: variance 0.6 * 2 * 0.04 - 0.12^2
    wait_var = 0.6 * 2 * 0.04 - 0.12 ** 2
    expected = wait_var / (wait_var + table_variance(idle))
    assert congestion_share(busy, table_variance(idle)) == pytest.approx(expected, rel=0.05)


def _one_pool(shares: tuple[float, ...], tau: float, means: tuple[float, ...]) -> Congestion:
    names = [f"s{i}" for i in range(len(shares))]
    return Congestion(tuple((s, "P", a, tau) for s, a in zip(names, shares)),
                      tuple((s, m) for s, m in zip(names, means)))


def test_two_visits_on_one_pool_against_the_model() -> None:
    """Each run visits s0 then s1 on one pool: the uniforms stay uniform, and their normal scores
    correlate ``sqrt(a0 a1) phi`` with ``phi`` the adjacent windows' correlation."""
    n = 40_000
    rng = np.random.default_rng(1)
    congestion = _one_pool((0.6, 0.4), 2.0, (1.0, 3.0))
    runs = np.arange(n)
    node_runs = {"s0": runs, "s1": runs}
    node_steps = {"s0": np.zeros(n, dtype=np.int64), "s1": np.ones(n, dtype=np.int64)}
    uniforms = {"s0": rng.random(n), "s1": rng.random(n)}
    out = correlate(congestion, uniforms, node_runs, node_steps, np.random.default_rng(2))
    for s in ("s0", "s1"):  # still uniform
        assert np.quantile(out[s], [0.1, 0.5, 0.9, 0.99]) == pytest.approx([0.1, 0.5, 0.9, 0.99], abs=0.01)
    expected = math.sqrt(0.6 * 0.4) * float(window_correlation(2.0, 1.0, 3.0, 0.0))
    measured = np.corrcoef(_scores(out["s0"]), _scores(out["s1"]))[0, 1]
    assert measured == pytest.approx(expected, abs=0.015)
    # and the sum's tail against a direct Monte Carlo of the same bivariate normal scores
    z = np.random.default_rng(3).multivariate_normal([0, 0], [[1, expected], [expected, 1]], n)
    direct = np.quantile(np.exp(z[:, 0]) + np.exp(z[:, 1]), 0.99)
    composed = np.quantile(np.exp(_scores(out["s0"])) + np.exp(_scores(out["s1"])), 0.99)
    assert composed == pytest.approx(direct, rel=0.04)
    independent = np.quantile(np.exp(_scores(uniforms["s0"])) + np.exp(_scores(uniforms["s1"])), 0.99)
    assert composed > independent * 1.03  # what the correlation adds


def test_a_chain_of_visits_is_markov_and_other_stages_are_untouched() -> None:
    """Three visits to one pool (the middle one separated by another pool's stage): the first and the
    last correlate as the product of the steps' correlations; a stage outside the pool keeps its draws."""
    n = 40_000
    rng = np.random.default_rng(4)
    congestion = Congestion((("a", "P", 1.0, 1.0),), (("a", 0.5), ("x", 0.7)))
    runs = np.repeat(np.arange(n), 3)
    node_runs = {"a": runs, "x": np.arange(n)}
    node_steps = {"a": np.tile(np.array([0, 2, 3]), n), "x": np.ones(n, dtype=np.int64)}
    uniforms = {"a": rng.random(3 * n), "x": rng.random(n)}
    out = correlate(congestion, uniforms, node_runs, node_steps, np.random.default_rng(5))
    assert out["x"] is uniforms["x"]
    z = _scores(out["a"]).reshape(n, 3)
    phi_01 = float(window_correlation(1.0, 0.5, 0.5, 0.7))  # x's 0.7 s between them
    phi_12 = float(window_correlation(1.0, 0.5, 0.5, 0.0))
    assert np.corrcoef(z[:, 0], z[:, 1])[0, 1] == pytest.approx(phi_01, abs=0.015)
    assert np.corrcoef(z[:, 1], z[:, 2])[0, 1] == pytest.approx(phi_12, abs=0.015)
    assert np.corrcoef(z[:, 0], z[:, 2])[0, 1] == pytest.approx(phi_01 * phi_12, abs=0.015)


def test_sampled_paths_keep_every_other_draw() -> None:
    """With a congestion, only its stages' uniforms move, each staying on the grid's unit range."""
    from planner.latency import sample_paths
    from planner.synthetic import nl2sql_program
    from planner.visits import build_chain

    wf = nl2sql_program().workflows[0]
    chain = build_chain(wf, {})
    plain = sample_paths(chain, 5000, 0)
    congestion = Congestion((("fix", "fix", 0.5, 1.0), ("generate", "generate", 0.5, 1.0)),
                            (("execute", 0.03), ("fix", 0.8), ("generate", 0.6)))
    shared = sample_paths(chain, 5000, 0, congestion=congestion)
    assert np.array_equal(plain.stage_visits["execute"].index, shared.stage_visits["execute"].index)
    assert np.array_equal(plain.stage_visits["execute"].weight, shared.stage_visits["execute"].weight)
    for s in ("fix", "generate"):
        assert np.array_equal(plain.stage_visits[s].runs, shared.stage_visits[s].runs)
        assert not np.array_equal(plain.stage_visits[s].index, shared.stage_visits[s].index)


def test_the_plan_meets_its_slo_on_the_paths_it_prints() -> None:
    """random26 puts four chained LLM stages on one A100 replica: its p99 with independent visits is
    below 21 s, with the replica's congestion shared above. With an SLO of p99 <= 21 s the choice
    made on independent paths fails on the correlated ones, so the planner solves again: the plan it
    prints meets its SLO by the prediction it prints, and costs more than the correlation-blind one."""
    import planner.api as api
    from cortexlang.ir import SLO
    from planner.plan import Plan
    from planner.synthetic import random_program

    program = random_program(26)
    wf = program.workflows[0].model_copy(update={"slo": SLO(latency_s=21.0, attainment=0.99)})
    program = program.model_copy(update={"workflows": (wf,)})
    plan = api.plan_program(program)
    assert isinstance(plan, Plan)
    assert plan.workflows[0].latency.p99 <= 21.0
    assert plan.workflows[0].slo_attainment >= 0.99
    rounds = api.CONGESTION_ROUNDS
    try:
        api.CONGESTION_ROUNDS = 0  # the choice made on independent visits, kept as it is
        blind = api.plan_program(program)
    finally:
        api.CONGESTION_ROUNDS = rounds
    assert isinstance(blind, Plan)
    assert blind.cost_per_hour < plan.cost_per_hour



def test_replicas_spread_the_congestion() -> None:
    """An LLM pool of ``R`` replicas: the next visit meets the same replica with probability ``1 / R``,
    so consecutive visits correlate ``phi / R``."""
    n = 40_000
    rng = np.random.default_rng(6)
    congestion = Congestion((("a", "P", 1.0, 2.0),), (("a", 1.0),), replicas=(("P", 3),))
    node_runs = {"a": np.repeat(np.arange(n), 2)}
    node_steps = {"a": np.tile(np.array([0, 1]), n)}
    out = correlate(congestion, {"a": rng.random(2 * n)}, node_runs, node_steps, np.random.default_rng(7))
    z = _scores(out["a"]).reshape(n, 2)
    expected = float(window_correlation(2.0, 1.0, 1.0, 0.0)) / 3
    assert np.corrcoef(z[:, 0], z[:, 1])[0, 1] == pytest.approx(expected, abs=0.015)


def test_the_vectorised_normal_functions() -> None:
    from planner.congestion import _cdf, _scores

    u = np.concatenate([np.linspace(1e-9, 1 - 1e-9, 20_001), [1e-12, 0.02425, 0.97575, 1 - 1e-12]])
    exact = np.array([_N.inv_cdf(v) for v in u])
    assert np.max(np.abs(_scores(u) - exact) / np.maximum(np.abs(exact), 1e-3)) < 1e-8
    x = np.linspace(-8, 8, 16_001)
    assert np.max(np.abs(_cdf(x) - np.array([_N.cdf(v) for v in x]))) < 1e-7
