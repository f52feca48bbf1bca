"""Context-length refusal: a call whose prompt plus the stage's ``max_tokens`` exceeds the model's
context is refused, as vLLM refuses it (``runtime.engines.base.check_context``), and its run ends
at once as ``rejected`` (a miss), its other calls cancelled."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from cortexlang.ir import FanOut, IntKnob, Workflow
from runtime.policies.registry import make_policy
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import LLAMA8B, edge, llm
from tests.runtime.simulator.helpers import engines, prog

TOKEN_CV = 0.3  # SimConfig's default: prompts are drawn with half of it (runs.py, _stage_draw)


def _lognormal_tail(mean: float, cv: float, limit: float) -> float:
    """P(round(X) > limit) for X lognormal with this mean and CV (the simulator's prompt draw)."""
    s2 = math.log1p(cv * cv)
    z = (math.log(limit + 0.5) - (math.log(mean) - s2 / 2)) / math.sqrt(s2)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _one_stage(inp: int, max_tokens: int) -> Workflow:
    return Workflow(name="long", stages=(llm("read", inp, 40, max_tokens=max_tokens),), entry="read",
                    edges=(edge("read", "done"),))


@pytest.mark.parametrize("policy", ["fcfs", "cortex"])
def test_prompts_over_the_context_are_refused_at_the_lognormal_tail_rate(policy):
    max_tokens, runs = 400, 1500
    limit = LLAMA8B.max_context - max_tokens
    wf = _one_stage(7000, max_tokens)
    sim = Simulator(prog(wf), engines(2), make_policy(policy), [Stream(wf.name, 2.0)],
                    SimConfig(runs=runs, seed=11, record_calls=True, warmup_fraction=0.0))
    res = sim.run()
    status = Counter(res.status.tolist())
    assert set(status) == {"done", "rejected"}
    # The rate agrees with the draw's own tail probability (within 4 binomial standard deviations).
    p = _lognormal_tail(7000, TOKEN_CV / 2, limit)
    assert 0.05 < p < 0.5
    assert abs(status["rejected"] / runs - p) < 4 * math.sqrt(p * (1 - p) / runs)
    # No engine ever served an over-long prompt, and every served call's run is a done one.
    assert res.calls and max(c[8] for c in res.calls) <= limit
    done_ids = {int(i) for i, s in zip(res.run_id, res.status) if s == "done"}
    assert {c[0] for c in res.calls} == done_ids
    # A refused run is a miss at every SLO scale, never a cheap success.
    assert res.attainment(1e9) == pytest.approx(status["done"] / runs)
    assert not res.latency().size or res.latency().size == status["done"]
    for e in sim.engines:
        assert not e.running and not e.nwaiting


def test_a_refused_branch_ends_its_fanout_run_and_cancels_its_siblings():
    """One branch's prompt too long: the run is rejected once, its siblings in flight cancelled,
    the engines drained, and the simulation ends (nothing left waiting for the refused call)."""
    wf = Workflow(
        name="fan", stages=(llm("plan", 200, 20), llm("read", 6800, 400, max_tokens=600), llm("sum", 300, 50)),
        fanouts=(FanOut(name="many", branches=(("read",),), width=IntKnob.fixed(6), join="all"),),
        entry="plan", edges=(edge("plan", "many"), edge("many", "sum"), edge("sum", "done")))
    sim = Simulator(prog(wf), engines(2), make_policy("fcfs"), [Stream(wf.name, 1.0)],
                    SimConfig(runs=200, seed=4, record_calls=True, warmup_fraction=0.0))
    res = sim.run()
    status = Counter(res.status.tolist())
    assert status["rejected"] > 20 and status["done"] > 20
    assert sorted(res.run_id.tolist()) == list(range(200))  # each run recorded exactly once
    assert sim.active_runs == 0
    rejected = {int(i) for i, s in zip(res.run_id, res.status) if s == "rejected"}
    # A rejected run never reaches its join: no `sum` call of it ever ran.
    assert not [c for c in res.calls if c[2] == "sum" and c[0] in rejected]
    for e in sim.engines:
        assert not e.running and not e.nwaiting


def test_prompts_that_fit_are_untouched():
    """A prompt at the limit is served (vLLM refuses only beyond it): no refusal below the tail."""
    wf = _one_stage(2000, 400)
    res = Simulator(prog(wf), engines(1), make_policy("fcfs"), [Stream(wf.name, 1.0)],
                    SimConfig(runs=300, seed=2)).run()
    assert set(res.status.tolist()) == {"done"}
