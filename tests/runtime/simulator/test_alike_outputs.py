"""Alike output lengths in the simulator: an LLM stage's ``output_correlation`` draws its calls' output
lengths from the run's shared normal (runtime/simulator/runs.py ``_alike_tokens``), in both builds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cortexlang.ir import Workflow
from runtime.policies.registry import make_policy
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import edge, llm
from tests.runtime.simulator.helpers import engines, prog


def _two_calls(ra: float, rb: float) -> Workflow:
    return Workflow(name="two", stages=(llm("a", 300, 80, max_tokens=4000).model_copy(update={"output_correlation": ra}),
                                        llm("b", 300, 80, max_tokens=4000).model_copy(update={"output_correlation": rb})),
                    entry="a", edges=(edge("a", "b"), edge("b", "done")))


def _log_outputs(ra: float, rb: float, runs: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    wf = _two_calls(ra, rb)
    res = Simulator(prog(wf), engines(2), make_policy("fcfs"), [Stream(wf.name, 4.0)],
                    SimConfig(runs=runs, seed=4, record_calls=True, warmup_fraction=0.0)).run()
    by_run: dict[int, dict[str, int]] = {}
    for c in res.calls:
        by_run.setdefault(c[0], {})[c[2]] = c[9]
    pairs = np.array([(math.log(v["a"]), math.log(v["b"])) for v in by_run.values() if len(v) == 2])
    return pairs[:, 0], pairs[:, 1]


@pytest.mark.parametrize("ra, rb, expect", [(0.7, 0.7, 0.7), (0.8, 0.2, math.sqrt(0.16)), (0.7, 0.0, 0.0),
                                            (0.0, 0.0, 0.0)])
def test_two_calls_of_a_run_correlate_by_the_product_of_their_loadings(ra: float, rb: float, expect: float) -> None:
    a, b = _log_outputs(ra, rb)
    assert len(a) > 2500
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(expect, abs=0.05)


def test_alike_lengths_keep_each_calls_distribution() -> None:
    a0, b0 = _log_outputs(0.0, 0.0)
    a1, b1 = _log_outputs(0.9, 0.9)
    for x0, x1 in ((a0, a1), (b0, b1)):  # the lognormal's log-mean and spread are the declared ones
        assert x1.mean() == pytest.approx(x0.mean(), abs=0.03)
        assert x1.std() == pytest.approx(x0.std(), rel=0.08)
