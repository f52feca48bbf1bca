"""The arrivals' dispersion the planner predicts from its pools (planner/dispersion.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cortexlang.ir import Condition, Edge, Workflow
from planner.dispersion import (
    batched, cap_damping, departure_index, index_at, merged, stage_dispersion, thinned, window_share,
)
from planner.synthetic import llm
from planner.visits import build_chain


def test_no_prefill_stall_passes_poisson_on():
    assert departure_index(5.0, 0.0, 0.0) == 1.0
    assert departure_index(5.0, 0.0, 0.3) == 1.0


def test_one_class_depends_only_on_the_prefill_share():
    # One prompt size p at rate lam: m2 = lam p^2, x = lam p, so I = 1 + x^2 / (1 - x)^2 on one replica.
    for lam, p in ((2.0, 0.1), (10.0, 0.068), (0.5, 1.2)):
        x = lam * p
        assert departure_index(lam, lam * p * p, x) == pytest.approx(1.0 + x * x / (1.0 - x) ** 2)
    assert departure_index(3.23, 3.23 * (0.68 / 3.23) ** 2, 0.68) == pytest.approx(5.516, abs=1e-3)
    with pytest.raises(ValueError):
        departure_index(1.0, 1.0, 1.0)


def test_replicas_do_not_change_the_index():
    # Independent replicas, or one burst spread evenly over all: the pool's index is one replica's.
    assert departure_index(4.0, 0.05, 0.5, 1) == departure_index(4.0, 0.05, 0.5, 3) == pytest.approx(1.8)


def test_fixed_cohorts_of_k_have_index_k():
    assert batched(1.0, 1) == 1.0
    assert batched(1.0, 5) == 5.0
    assert batched(2.0, 3) == 6.0


def test_batched_index_matches_counts():
    # Cohorts of k at Poisson epochs: counts over windows have variance / mean = k.
    rng = np.random.default_rng(3)
    epochs = rng.poisson(2.0, 200_000)
    counts = 4 * epochs
    assert counts.var() / counts.mean() == pytest.approx(batched(1.0, 4), rel=0.03)


def test_thinning_and_merging():
    assert thinned(1.0, 0.3) == 1.0
    assert thinned(5.0, 1.0) == 5.0
    assert thinned(5.0, 0.25) == 2.0
    assert merged([(1.0, 1.0), (3.0, 5.0)]) == 4.0
    assert merged([]) == 1.0


def test_thinning_matches_counts():
    rng = np.random.default_rng(5)
    counts = 6 * rng.poisson(1.5, 200_000)  # index 6
    kept = rng.binomial(counts, 0.4)
    assert kept.var() / kept.mean() == pytest.approx(thinned(6.0, 0.4), rel=0.03)


def test_cap_damping_limits():
    assert cap_damping(50.0) == 1.0
    assert cap_damping(0.0) == pytest.approx(0.5 - 1.0 / (2.0 * math.pi))
    assert cap_damping(-8.0) == pytest.approx(0.0, abs=1e-9)
    values = [cap_damping(c) for c in np.linspace(-3, 3, 13)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    # Against samples of min(Z, c).
    z = np.random.default_rng(1).standard_normal(400_000)
    for c in (-0.5, 0.7, 1.5):
        assert cap_damping(c) == pytest.approx(np.minimum(z, c).var(), rel=0.02)


def _chain(loop_p: float | None = None):
    stages = (llm("a", "llama8b", 2000, 20), llm("b", "llama8b", 300, 50), llm("c", "llama8b", 300, 50))
    edges = [Edge(source="a", target="b", condition=Condition(kind="always"), probability=1.0),
             Edge(source="b", target="c", condition=Condition(kind="always"), probability=1.0),
             Edge(source="c", target="done", condition=Condition(kind="always"), probability=1.0)]
    wf = Workflow(name="w", entry="a", stages=stages, edges=tuple(edges))
    return build_chain(wf)


def test_propagation_along_a_chain():
    # Only 'a' stalls (excess 2 on its departures); b passes its arrivals on (a stand-in executor).
    chain = _chain()

    def departure(stage, arrivals):
        return {"a": 2.0} if stage == "a" else arrivals[stage]

    got = stage_dispersion(chain, departure)
    assert got == {"a": {}, "b": {"a": 2.0}, "c": {"a": 2.0}}


def test_propagation_without_stalls_is_poisson():
    got = stage_dispersion(_chain(), lambda s, arr: {})
    assert all(not e for e in got.values())


def test_a_branch_thins_the_excess():
    stages = (llm("a", "llama8b", 2000, 20), llm("b", "llama8b", 300, 50), llm("c", "llama8b", 300, 50))
    edges = (Edge(source="a", target="b", condition=Condition(kind="outcome", values=("x",)), probability=0.25),
             Edge(source="a", target="c", condition=Condition(kind="outcome", values=("y",)), probability=0.75),
             Edge(source="b", target="done", condition=Condition(kind="always"), probability=1.0),
             Edge(source="c", target="done", condition=Condition(kind="always"), probability=1.0))
    chain = build_chain(Workflow(name="w", entry="a", stages=stages, edges=edges))
    got = stage_dispersion(chain, lambda s, arr: {"a": 4.0} if s == "a" else arr[s])
    assert got["b"]["a"] == pytest.approx(1.0) and got["c"]["a"] == pytest.approx(3.0)


def test_window_share_limits():
    # Long windows within the decode stay see the whole excess; beyond it, a share D / w.
    assert window_share(1e6, 1e9, 1.0) == pytest.approx(1.0, rel=1e-5)
    assert window_share(10.0, 5.0, 0.0) == pytest.approx(0.5)
    assert window_share(1.0, 100.0, 1.0) == pytest.approx(0.5)
    assert window_share(0.0, 5.0, 1.0) == 0.0
    assert index_at({}, 3.0, {}) == 1.0
    assert index_at({"a": 4.0}, 1.0, {"a": (100.0, 1.0)}) == pytest.approx(3.0)


# --------------------------------------------------------------------------- with the planner's pools

from cortexlang.ir import SLO, Load, Program, ToolStage  # noqa: E402
from planner.candidates import Device, StageLoad, _llm_config, executor_candidates, profiles_of  # noqa: E402
from planner.dispersion import plan_dispersion, pool_departure  # noqa: E402
from planner.synthetic import LLAMA_8B, edge, gpu_inventory  # noqa: E402


def _prefill_heavy(rate: float, replicas: int = 1):
    stage = llm("a", "llama8b", input_tokens=1025, output_tokens=55, max_tokens=256)
    profile = next(p for p in profiles_of("llama-3-8b", "A100") if p.tp == 1)
    cand = _llm_config(stage, LLAMA_8B, profile, Device("A100", 1.0, 64), StageLoad(rate, 1.0), 256, 1, 1.0, replicas)
    return stage, profile, cand


def test_pool_departure_is_the_one_class_index_damped_by_the_cap():
    stage, profile, cand = _prefill_heavy(7.0)
    wf = Workflow(name="w", stages=(stage,), entry="a", edges=(edge("a", "done"),))
    scales: dict = {}
    excess = pool_departure(wf, "a", {"a": cand}, {"a": {}}, scales)["a"]
    x = profile.prefill_per_token_s * 7.0 * 1025
    # The stall's excess plus the cohorts' (one class of fixed prompts: the Borel law's).
    assert 0.0 < excess <= x * x / (1 - x) ** 2 + 1 / (1 - x) ** 2 - 1 + 1e-9
    decode_s, busy_s = scales["a"].decode_s, scales["a"].busy_s
    assert decode_s > 0 and busy_s == pytest.approx(7.0 * (profile.prefill_per_token_s * 1025) ** 2 / (1 - x) ** 2)
    # Burstier arrivals into the pool make its departures burstier.
    more = pool_departure(wf, "a", {"a": cand}, {"a": {"up": 2.0}}, {"up": (100.0, 0.0)})["a"]
    assert more > excess


def test_a_tool_after_a_prefill_heavy_pool_gets_bursty_arrivals_and_a_longer_wait():
    stage, _, cand = _prefill_heavy(7.0)
    tool = ToolStage(name="t", entry="tools:x", service_s=0.2, service_cv=0.5)
    wf = Workflow(name="w", stages=(stage, tool), entry="a", edges=(edge("a", "t"), edge("t", "done")),
                  slo=SLO(latency_s=60.0, attainment=0.9), load=Load(rate_per_s=7.0))
    chain = build_chain(wf)
    inv = gpu_inventory(a100=4)
    chosen = {"a": cand, "t": executor_candidates(tool, StageLoad(7.0, 1.0), inv).candidates[0]}
    got = plan_dispersion(chain, chosen)
    assert got["a"] == 1.0 and got["t"] > 1.2
    calm = executor_candidates(tool, StageLoad(7.0, 1.0), inv).candidates[0]
    bursty = executor_candidates(tool, StageLoad(7.0, 1.0, burst=got["t"]), inv).candidates
    same = next(c for c in bursty if c.units == calm.units)
    assert same.slower_or_equal(calm) and same.quantile(0.99) > calm.quantile(0.99)


def test_the_planner_sizes_again_with_the_bursts_it_predicts(monkeypatch):
    from planner.api import Planner, plan_program

    stage = llm("a", "llama8b", input_tokens=1025, output_tokens=55, max_tokens=256)
    tool = ToolStage(name="t", entry="tools:x", service_s=0.2, service_cv=0.5)
    wf = Workflow(name="w", stages=(stage, tool), entry="a", edges=(edge("a", "t"), edge("t", "done")),
                  slo=SLO(latency_s=60.0, attainment=0.9), load=Load(rate_per_s=7.0))
    prog = Program(models=(LLAMA_8B,), workflows=(wf,), inventory=gpu_inventory(h100=0, a100=1, cpu_slots=64))
    seen = {}
    original = Planner._second_pass

    def spy(self, models, result, choice):
        out = original(self, models, result, choice)
        seen.update(self.burst)
        return out

    monkeypatch.setattr(Planner, "_second_pass", spy)
    plan = plan_program(prog)
    assert plan.workflows[0].pool("t").slots >= 1
    assert seen and all(v > 1.05 for b in seen.values() for v in b.values())
    assert "t" in next(iter(seen.values()))
