"""The isolation cases of benchmarks/cost_at_equal_slo.py: the CHESS-style program moved to Llama-3-70B,
and the map's cells whose KV per replica is fixed -- for the planner and the simulator alike, and only
inside the case."""

from __future__ import annotations

from benchmarks.cost_at_equal_slo import chess_70b, isolation_cases, kv_fixed, map_cases
from planner.candidates import seq_cap
from planner.profiles import get_profile
from runtime.simulator.cluster import model_profile


def test_chess_70b_runs_every_llm_stage_on_llama_3_70b() -> None:
    prog = chess_70b()
    llm = [s for s in prog.workflow().stages if s.kind == "llm"]
    assert {s.models[0].model for s in llm} == {"llama70b"}
    spec = prog.model("llama70b")
    assert spec.profile == "llama-3-70b" and spec.kv_bytes_per_token == 327680
    # The shapes stay the example's: three stages with a 2,100-token prefix of their own.
    assert sorted(s.name for s in llm if s.prefix_tokens == 2100) == ["draft", "link", "revise"]


def test_isolation_cases_use_whole_tp4_replicas_of_a100_40gb() -> None:
    realistic = [c for c in isolation_cases() if c.kv_tokens is None]
    assert realistic and all(c.device == "A100-40GB" and c.tp == 4 for c in realistic)


def test_kv_fixed_overrides_the_kv_for_planner_and_simulator_only_inside() -> None:
    case = map_cases()[0]
    spec = case.program.model("llama8b")
    stage = case.workflow.stage("a")
    before = get_profile(spec.profile, "H100", 1).kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    with kv_fixed(case):
        sim = model_profile(case.program, "llama8b", "H100", 1)
        assert sim.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token) == 12_000
        # The planner reads the same overlay: a dedicated replica keeps 9,000 tokens beside the prefix.
        assert seq_cap(stage, spec, get_profile(spec.profile, "H100", 1), stage.max_tokens.preferred) <= 9_000 // 500
    after = get_profile(spec.profile, "H100", 1).kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    assert after == before > 400_000
