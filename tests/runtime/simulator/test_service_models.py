"""SQL/tool service times: uniform ranges and retries with backoff, simulated draw by draw and
checked against the planner's closed-form moments (planner/service.py) -- two independent paths."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import Condition, Edge, Program, Retry, ToolStage, Workflow
from cortexlang.semantics import Semantics
from planner.service import call_moments, planned_stage
from runtime.policies.fcfs import FCFS
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.sim import SimConfig, Simulator, Stream


def _workflow(retry: Retry | None, p_error: float) -> Workflow:
    # Uniform on [0.1, 0.3]: mean 0.2, CV (0.3 - 0.1) / (sqrt(12) 0.2), as the compiler stores it.
    tool = ToolStage(name="t", entry="m:f", service_s=0.2, service_cv=(0.3 - 0.1) / (12 ** 0.5 * 0.2),
                     service_range_s=(0.1, 0.3), retry=retry)
    edges = (Edge(source="t", target="done", condition=Condition(kind="outcome", values=("ok",)),
                  probability=1 - p_error),
             Edge(source="t", target="fail", condition=Condition(kind="outcome", values=("error",)),
                  probability=p_error))
    return Workflow(name="w", stages=(tool,), entry="t", edges=edges)


def _durations(wf: Workflow) -> np.ndarray:
    sim = Simulator(Program(workflows=(wf,)), [ReplicaSpec(name="x", kind="executor", slots=10_000)], FCFS(),
                    [Stream("w", 20.0)], SimConfig(runs=20_000, warmup_fraction=0.0, record_calls=True, seed=3))
    sim.run()
    return np.array([c[7] - c[6] for c in sim.call_records])


def test_a_range_is_sampled_uniformly_within_its_bounds() -> None:
    d = _durations(_workflow(None, 0.1))
    assert d.min() >= 0.1 - 1e-12 and d.max() <= 0.3 + 1e-12
    assert d.mean() == pytest.approx(0.2, rel=0.01)
    assert np.quantile(d, 0.25) == pytest.approx(0.15, abs=0.005)


def test_retries_match_the_planners_moments() -> None:
    # P(error) = 1/8 over 3 attempts: each attempt fails with q = 1/2.
    wf = _workflow(Retry(max_retries=2, backoff_s=0.1), 0.125)
    pmf = Semantics(wf).attempts_pmf("t")
    assert [k for k, _ in pmf] == [1, 2, 3] and [p for _, p in pmf] == pytest.approx([0.5, 0.25, 0.25])
    d = _durations(wf)
    stage = planned_stage(Semantics(wf), wf.stage("t"))
    # E[T] = .5(.2) + .25(.4 + .1) + .25(.6 + .3) = .45
    assert stage.service_s == pytest.approx(0.45)
    assert d.mean() == pytest.approx(stage.service_s, rel=0.02)
    assert d.std() / d.mean() == pytest.approx(stage.service_cv, rel=0.05)


def test_call_moments_without_retries_are_the_attempts() -> None:
    assert call_moments(0.2, 0.5, 0.0, ((1, 1.0),)) == pytest.approx((0.2, 0.5))
