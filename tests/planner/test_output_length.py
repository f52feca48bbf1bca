"""The output-length law (an LLM stage's ``output_tokens``, ``output_cv``, ``runaway``): the planner's
stratified quantiles (planner.candidates.output_tokens_samples) against their definition, and against
the simulator's own draws (runtime/simulator/runs.py), an independent implementation of the same law."""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest

from cortexlang.ir import Workflow
from cortexlang import laws
from planner.candidates import (OUTPUT_CV, TABLE_SAMPLES, OutputLength, _draws_stall_deviation, _output_draws,
                                output_length, output_tokens_moments, output_tokens_samples)
from runtime.policies.registry import make_policy
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import edge, llm
from tests.runtime.simulator.helpers import engines, prog


_STRATA = (np.arange(TABLE_SAMPLES) + 0.5) / TABLE_SAMPLES


def _cdf(mean: float, cv: float, x: float) -> float:
    """P(X <= x) for the declared law (lognormal of this mean and CV), from its parameters."""
    mu, sigma = laws.log_params(mean, cv)
    return NormalDist().cdf((math.log(x) - mu) / sigma)


def test_a_bare_mean_is_the_default_law_at_the_lognormals_exact_quantiles() -> None:
    bare = output_tokens_samples(40, 96)
    assert np.array_equal(bare, output_tokens_samples(OutputLength(40, OUTPUT_CV, 0.0), 96))
    mu, sigma = laws.log_params(40.0, OUTPUT_CV)
    expect = np.clip([math.exp(mu + sigma * NormalDist().inv_cdf(u)) for u in _STRATA], 1, 96)
    assert np.allclose(bare, expect, rtol=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.42, 0.9])
def test_runaways_take_the_cap_and_the_rest_keep_the_laws_shape(p: float) -> None:
    law = OutputLength(27, 0.65, p)
    out = output_tokens_samples(law, 96)
    at_cap = np.mean(out >= 96)
    assert at_cap == pytest.approx(p + (1 - p) * (1 - _cdf(27, 0.65, 96)), abs=1.0 / TABLE_SAMPLES)
    assert np.all(np.diff(out) >= 0)  # still a quantile function
    # below the cap: the lognormal's quantile at the stretched level u / (1 - p), exactly
    stopped = _STRATA < (1 - p) * 0.5
    mu, sigma = laws.log_params(27.0, 0.65)
    expect = [max(math.exp(mu + sigma * NormalDist().inv_cdf(u / (1 - p))), 1.0) for u in _STRATA[stopped]]
    assert np.allclose(out[stopped], expect, rtol=1e-12)


@pytest.mark.parametrize("cv", [3.0, 10.0])
def test_a_wide_law_makes_at_least_one_token_per_call(cv: float) -> None:
    """A wide law (CV 10: median 6 tokens for a mean of 60) has mass below one token: the planner floors a
    call at one token as the simulator does -- the law's own share below one token sits at the floor --
    and the stall shock's reciprocals of the lengths stay finite."""
    law = OutputLength(60, cv, 0.0)
    out = output_tokens_samples(law, 96)
    assert out.min() == 1.0
    assert np.mean(out == 1.0) == pytest.approx(_cdf(60, cv, 1.0), abs=1.0 / TABLE_SAMPLES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draws = _output_draws(law, 96)
        deviation = _draws_stall_deviation(draws, 1e-3, 0.2, 1e-4, 1e-6)
    assert draws.positive and np.all(np.isfinite(draws.inv4)) and np.all(np.isfinite(deviation))


def test_everything_running_away_is_the_cap() -> None:
    assert np.all(output_tokens_samples(OutputLength(27, 0.65, 1.0), 96) == 96)


def test_the_stage_law_reads_the_ir() -> None:
    stage = llm("g", 300, 27, max_tokens=96)
    assert output_length(stage) == OutputLength(27, OUTPUT_CV, 0.0, same_for_candidates=True)  # temperature 0
    sampled = stage.model_copy(update={"output_cv": 0.65, "runaway": 0.42, "temperature": 0.7})
    assert output_length(sampled) == OutputLength(27, 0.65, 0.42, same_for_candidates=False)


def _simulated_outputs(update: dict, runs: int = 4000) -> np.ndarray:
    wf = Workflow(name="one", stages=(llm("g", 300, 27, max_tokens=96).model_copy(update=update),),
                  entry="g", edges=(edge("g", "done"),))
    res = Simulator(prog(wf), engines(2), make_policy("fcfs"), [Stream(wf.name, 2.0)],
                    SimConfig(runs=runs, seed=11, record_calls=True, warmup_fraction=0.0)).run()
    return np.array([c[9] for c in res.calls], dtype=float)


@pytest.mark.parametrize("update", [{"output_cv": 0.65, "runaway": 0.42}, {"output_cv": 0.3, "runaway": 0.1},
                                    {"output_cv": 0.8, "runaway": 0.42, "output_correlation": 0.6},
                                    {"runaway": 0.999}, {"runaway": 0.999, "output_correlation": 0.99},
                                    {"output_cv": 2.0}, {"output_cv": 3.0}, {"output_cv": 3.0, "runaway": 0.42}])
def test_the_planner_and_the_simulator_draw_the_same_law(update: dict) -> None:
    """Share at the cap, mean and median output: the planner's exact quantiles vs the simulator's draws, one
    family (cortexlang.laws) read by both -- up to CV 3, where a Gamma and a lognormal of the same mean and CV
    part (the planner's Gamma had 8.1% at the cap and a mean of 16.0 where the simulator drew 5.7% and 19.3)."""
    sim = _simulated_outputs(update)
    law = output_length(llm("g", 300, 27, max_tokens=96).model_copy(update=update))
    planned = output_tokens_samples(law, 96)
    assert len(sim) == 4000
    assert np.mean(sim >= 96) == pytest.approx(np.mean(planned >= 96), abs=0.025)
    assert sim.mean() == pytest.approx(output_tokens_moments(law, 96)[0], rel=0.05)
    # the simulator rounds to whole tokens: the medians within a token, or 10% of a long one
    assert abs(np.median(sim) - np.median(planned)) <= max(1.0, 0.1 * np.median(planned))


@pytest.mark.parametrize("cv", [0.6, 0.0])
def test_the_simulators_runaways_are_alike_within_a_run(cv: float) -> None:
    """Two calls of a run with output_correlation 0.8: a run's second call runs away far more often when
    its first did (independent draws: the same share either way), a constant length (CV 0) included."""
    stages = tuple(llm(n, 300, 27, max_tokens=96).model_copy(update={"output_cv": cv, "runaway": 0.4,
                                                                      "output_correlation": 0.8})
                   for n in ("a", "b"))
    wf = Workflow(name="two", stages=stages, entry="a", edges=(edge("a", "b"), edge("b", "done")))
    res = Simulator(prog(wf), engines(2), make_policy("fcfs"), [Stream(wf.name, 2.0)],
                    SimConfig(runs=3000, seed=5, record_calls=True, warmup_fraction=0.0)).run()
    by_run: dict[int, dict[str, int]] = {}
    for c in res.calls:
        by_run.setdefault(c[0], {})[c[2]] = c[9]
    pairs = np.array([(v["a"] >= 96, v["b"] >= 96) for v in by_run.values() if len(v) == 2])
    a, b = pairs[:, 0], pairs[:, 1]
    assert a.mean() == pytest.approx(0.4, abs=0.04) and b.mean() == pytest.approx(0.4, abs=0.04)
    assert b[a].mean() > 0.6 and b[~a].mean() < 0.25


def test_hedging_never_cures_a_runaway_in_the_planner_or_the_simulator() -> None:
    """A hedged call's candidates decode the same prompt: they run away together (the simulator gives each twin
    the call's length). Planned with hedge 2 and 20% runaways, the p99 stays a runaway's and agrees with the
    simulated p99 on the plan; the stopped calls' part still gains from the hedge."""
    from cortexlang.ir import GpuResource, IntKnob, Inventory, Program
    from planner.api import plan_program
    from planner.plan import Plan
    from runtime.simulator.verify import simulate_plan
    from runtime.simulator.workloads import LLAMA8B

    from planner.candidates import U_GRID, llm_service_table

    unhedged = llm_service_table(0.05, 0.02, 0.0, 0.0, OutputLength(40, 0.3, 0.2), 512, 1)
    hedged = llm_service_table(0.05, 0.02, 0.0, 0.0, OutputLength(40, 0.3, 0.2), 512, 2)
    p99, p50 = np.searchsorted(U_GRID, 0.99), np.searchsorted(U_GRID, 0.5)
    assert hedged[p99] == pytest.approx(unhedged[p99]) and hedged[p50] < unhedged[p50]
    stage = llm("g", 400, 40, max_tokens=512).model_copy(update={"runaway": 0.2, "hedge": IntKnob.fixed(2)})
    wf = Workflow(name="one", stages=(stage,), entry="g", edges=(edge("g", "done"),))
    program = Program(models=(LLAMA8B,), workflows=(wf,))
    plan = plan_program(program, rate=2.0, inventory=Inventory(gpus=(GpuResource(kind="H100", count=4,
                                                                                  cost_per_hour=2.99),)))
    assert isinstance(plan, Plan) and plan.workflows[0].knobs.hedge.get("g") == 2
    simulated = simulate_plan(program, plan, "one", runs=3000, seed=1).latency.p99
    assert simulated == pytest.approx(plan.workflows[0].latency.p99, rel=0.15)
