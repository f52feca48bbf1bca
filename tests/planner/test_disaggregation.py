"""Prefill/decode-disaggregated pools: the planner's P/D candidates against the discrete-event
simulator (which runs prefill-only and decode-only replicas and ships the KV: an independent model),
the plan field, its views, the simulator layout, the opt-in and the runtime's engines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from rich.console import Console

from cortexlang.ir import SLO, Load, Program, Workflow
from planner.api import plan_program
from planner.candidates import Device, StageLoad
from planner.disaggregation import LINK_BYTES_PER_S, pd_candidates, pd_config, smallest_prefill_count
from planner.plan import LLMPool, Plan
from planner.profiles import get_profile
from planner.render import diff_plans, render_diff, render_plan
from planner.synthetic import LLAMA_70B, LLAMA_8B, edge, gpu_inventory, llm
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import DEFAULT_LINK_BYTES_PER_S, ReplicaSpec, layout_from_plan
from runtime.simulator.sim import SimConfig, Simulator, Stream

H100 = Device("H100", 3.5, 8)


def _program(rate: float, slo_s: float = 600.0, h100: int = 8, second_stage: bool = False) -> Program:
    """A prefill-heavy Llama-3-8B stage (1,400-token prompts, 40 out), optionally followed by a short one."""
    stages = [llm("s", "llama8b", input_tokens=1400, output_tokens=40, max_tokens=256)]
    edges = [edge("s", "t" if second_stage else "done")]
    if second_stage:
        stages.append(llm("t", "llama8b", input_tokens=100, output_tokens=12, max_tokens=64))
        edges.append(edge("t", "done"))
    wf = Workflow(name="one", stages=tuple(stages), entry="s", edges=tuple(edges),
                  slo=SLO(latency_s=slo_s, attainment=0.99), load=Load(rate_per_s=rate))
    return Program(models=(LLAMA_70B, LLAMA_8B), workflows=(wf,), inventory=gpu_inventory(h100=h100, cpu_slots=8))


def _simulated(prog: Program, layout, rate: float, policy: str = "fcfs", runs: int = 6000) -> np.ndarray:
    return Simulator(prog, layout, make_policy(policy), [Stream("one", rate)], SimConfig(runs=runs, seed=1)).run().latency()


@pytest.mark.parametrize("rate,n_p,n_d", [(40.0, 2, 1), (100.0, 4, 2)])
def test_pd_candidate_agrees_with_the_simulated_layout(rate: float, n_p: int, n_d: int) -> None:
    """At 40 calls/s a colocated pair of H100s would run at x = 0.64 (prefill share of each replica);
    the P/D candidate's p50 and p99 vs the same replicas simulated (measured: within 3% and 8%)."""
    prog = _program(rate)
    stage = prog.workflows[0].stage("s")
    cand = pd_config(stage, LLAMA_8B, get_profile("llama-3-8b", "H100", 1), H100, StageLoad(rate, 1.0),
                     256, 1.0, n_p, n_d)
    assert cand is not None and cand.units == n_p + n_d and cand.prefill_replicas == n_p
    layout = tuple(ReplicaSpec(name=f"s-{i}", kind="llm", device="H100", model="llama8b", stages=frozenset({"s"}),
                               role="prefill" if i < n_p else "decode", slots=cand.max_num_seqs,
                               kv_capacity_tokens=cand.kv_budget_tokens) for i in range(n_p + n_d))
    lat = _simulated(prog, layout, rate)
    assert cand.quantile(0.5) == pytest.approx(float(np.quantile(lat, 0.5)), rel=0.10)
    assert cand.quantile(0.99) == pytest.approx(float(np.quantile(lat, 0.99)), rel=0.12)


def test_planner_picks_pd_when_cheaper_at_the_slo_and_the_simulator_agrees() -> None:
    """60 calls/s, p99 <= 0.8 s: colocated pools need 7 H100s (prefill stalls), P/D 4 (3P+1D)."""
    prog = _program(60.0, slo_s=0.8)
    colocated = plan_program(prog)
    split = plan_program(prog, disaggregate=True)
    assert isinstance(colocated, Plan) and isinstance(split, Plan)
    assert not any(p.disaggregated for w in colocated.workflows for p in w.llm_pools)
    pool = split.workflows[0].llm_pools[0]
    assert pool.disaggregated and 1 <= pool.prefill_replicas < pool.replicas
    assert split.cost_per_hour < colocated.cost_per_hour
    lat = _simulated(prog, layout_from_plan(split, "one"), 60.0)
    assert pool.latency.p99 == pytest.approx(float(np.quantile(lat, 0.99)), rel=0.10)
    assert float(np.quantile(lat, 0.99)) <= 0.8


def test_candidates_are_bounded_and_gpu_only() -> None:
    prog = _program(60.0)
    stage, prof, load = prog.workflows[0].stage("s"), get_profile("llama-3-8b", "H100", 1), StageLoad(60.0, 1.0)
    cands = pd_candidates(stage, LLAMA_8B, prof, H100, load, 256, 1.0)
    first = smallest_prefill_count(prof, 60.0, 1400)
    assert cands and {c.prefill_replicas for c in cands} <= {first, first + 1}
    assert all(c.units <= H100.limit and c.cost_per_hour == c.units * 3.5 for c in cands)
    assert pd_candidates(stage, LLAMA_8B, prof, Device("CPU", 0.1, 64), load, 256, 1.0) == []
    more = pd_config(stage, LLAMA_8B, prof, H100, load, 256, 1.0, first, 3)
    fewer = pd_config(stage, LLAMA_8B, prof, H100, load, 256, 1.0, first, 2)
    assert more is not None and fewer is not None and fewer.slower_or_equal(more)  # monotone in n_d
    assert DEFAULT_LINK_BYTES_PER_S == LINK_BYTES_PER_S  # one documented input, shared with the simulator


def test_opt_in_plan_field_views_and_layout(tmp_path: Path) -> None:
    prog = _program(60.0, slo_s=0.8)
    split = plan_program(prog, disaggregate=True)
    colocated = plan_program(prog)
    assert isinstance(split, Plan) and isinstance(colocated, Plan)
    # Old plans (no field) read as colocated, and colocated plans keep their JSON byte-identical.
    assert "prefill_replicas" not in colocated.canonical_json()
    data = json.loads(split.canonical_json())
    pool = data["workflows"][0]["llm_pools"][0]
    assert pool["prefill_replicas"] == split.workflows[0].llm_pools[0].prefill_replicas
    del pool["prefill_replicas"]
    assert not Plan.model_validate(data).workflows[0].llm_pools[0].disaggregated
    assert Plan.from_json(split.canonical_json()) == split
    with pytest.raises(ValueError):
        LLMPool.model_validate({**pool, "prefill_replicas": pool["replicas"]})
    p = split.workflows[0].llm_pools[0]
    label = f"{p.prefill_replicas}P+{p.decode_replicas}D"
    assert f"H100 x {label}" in render_plan(split) and "prefill/decode disaggregated: s" in render_plan(split)
    changes = diff_plans(split, colocated)
    assert any(f"prefill_replicas: {p.prefill_replicas} -> 0" in d for c in changes for d in c.details)
    assert "to resize" in render_diff(split, colocated)
    roles = [(r.role, r.stages) for r in layout_from_plan(split, "one") if r.kind == "llm"]
    assert roles == [("prefill", frozenset({"s"}))] * p.prefill_replicas + [("decode", frozenset({"s"}))] * p.decode_replicas


def test_the_runtime_builds_a_pd_plan_as_prefill_and_decode_engines_linked_by_a_kv_connector(tmp_path: Path) -> None:
    from cortexlang.cli.run_cmds import prepare_spec
    from runtime.build import share_engines, spec_from_plan

    prog = _program(60.0, slo_s=0.8)
    split = plan_program(prog, disaggregate=True)
    assert isinstance(split, Plan)
    pool = split.workflows[0].pool("s")
    (lp,) = spec_from_plan(prog, split, "one", base_dir=tmp_path).llm_pools
    assert [r.replica_id for r in lp.replicas] == [f"s-{i}" for i in range(pool.decode_replicas)]
    assert [r.replica_id for r in lp.prefill_replicas] == [f"s-prefill-{i}" for i in range(pool.prefill_replicas)]
    assert {r.engine.kv_transfer["kv_role"] for r in lp.replicas} == {"kv_consumer"}  # type: ignore[index]
    assert {r.engine.kv_transfer["kv_role"] for r in lp.prefill_replicas} == {"kv_producer"}  # type: ignore[index]
    assert lp.max_queue >= pool.max_num_seqs * pool.decode_replicas
    # a colocated plan's pools have no prefill side, and their JSON is as before the field existed
    (colocated,) = spec_from_plan(prog, plan_program(prog), "one", base_dir=tmp_path).llm_pools
    assert not colocated.prefill_replicas and "prefill_replicas" not in colocated.model_dump_json()
    assert all(r.engine.kv_transfer is None for r in colocated.replicas)
    # the shared baseline of a P/D spec: one colocated engine with every replica's resources
    shared = share_engines(spec_from_plan(prog, split, "one", base_dir=tmp_path))
    (engine,) = [r.engine for p in shared.llm_pools for r in p.replicas]
    assert engine.kv_transfer is None and engine.max_num_seqs == pool.max_num_seqs * pool.replicas
    # `cortex run` takes the saved plan (vLLM engines serve it; the simulated engine refuses at start)
    source = tmp_path / "one.cortex"
    source.write_text(_CORTEX)
    saved = tmp_path / "plan.json"
    split.model_copy(update={"workflows": tuple(w.model_copy(update={"workflow": "summarise"})
                                                for w in split.workflows)}).save(saved)
    spec = prepare_spec(source, plan_path=saved, workflow=None, no_plan=False, console=Console(file=io.StringIO()))
    assert len(spec.llm_pools[0].prefill_replicas) == pool.prefill_replicas


def _random_pd_problem(seed: int):
    """A seeded two-stage workflow with a prefill-heavy first stage, its candidates (at most three
    colocated and three P/D per stage, dedicated pools), an SLO target and device limits."""
    from planner.api import build_model, scenarios
    from planner.profiles import PROFILE_DIR
    from planner.solver import WorkflowProblem

    rng = np.random.default_rng(seed + 2000)
    stages = (llm("s", "llama8b", input_tokens=int(rng.integers(800, 2000)), output_tokens=int(rng.integers(20, 60)),
                  max_tokens=256),
              llm("t", "llama8b", input_tokens=int(rng.integers(100, 1500)), output_tokens=int(rng.integers(10, 120)),
                  max_tokens=256))
    wf = Workflow(name="one", stages=stages, entry="s", edges=(edge("s", "t"), edge("t", "done")),
                  slo=SLO(latency_s=600.0, attainment=0.9), load=Load(rate_per_s=float(rng.uniform(5.0, 60.0))))
    program = Program(models=(LLAMA_70B, LLAMA_8B), workflows=(wf,),
                      inventory=gpu_inventory(h100=16, a100=16, h200=8, cpu_slots=8))
    model = build_model(program, wf, scenarios(wf)[0], wf.load.rate_per_s, program.inventory, 2000, seed,
                        PROFILE_DIR, layout="isolated", disaggregate=True)
    cands = {}
    for name, sc in model.stages.items():
        pick = []
        for split in (False, True):
            own = [c for c in sc.candidates if (c.prefill_replicas > 0) == split]
            pick += [own[i] for i in sorted(rng.choice(len(own), size=min(3, len(own)), replace=False))]
        cands[name] = pick
    probe = WorkflowProblem("w", cands, model.paths, None, None)
    fastest = {st: int(np.argmin([c.quantile(0.9) for c in cands[st]])) for st in probe.stages}
    target = float(np.quantile(probe.run_latency(fastest), 0.9)) * rng.uniform(1.0, 2.5)
    limits = {"H100": int(rng.integers(4, 17)), "A100": int(rng.integers(0, 17)), "H200": int(rng.integers(0, 9))}
    return WorkflowProblem("w", cands, model.paths, target, 0.9), limits


@pytest.mark.parametrize("seed", range(16))
def test_solver_matches_brute_force_with_pd_candidates(seed: int) -> None:
    """CP-SAT's optimum equals brute force's with colocated and P/D candidates on offer."""
    from tests.planner.brute_force_check import assert_matches_brute_force

    assert_matches_brute_force(*_random_pd_problem(seed))


def test_pd_wins_some_random_instances() -> None:
    """The brute-force property is not vacuous: the optimum takes a P/D pool in some instances and a
    colocated one in others."""
    from planner.solver import brute_force

    chosen = []
    for seed in range(16):
        problem, limits = _random_pd_problem(seed)
        ref = brute_force([problem], limits)
        if ref is not None:
            chosen.append(any(problem.candidates[s][i].prefill_replicas for s, i in ref[1][0].items()))
    assert 0 < sum(chosen) < len(chosen)


def test_cli_flag_is_opt_in(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cortexlang.cli.plan_cmd import register

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    register(app)
    source = tmp_path / "one.cortex"
    source.write_text(_CORTEX)
    default = CliRunner().invoke(app, ["plan", str(source), "--no-verify"])
    split = CliRunner().invoke(app, ["plan", str(source), "--no-verify", "--disaggregate", "-o", str(tmp_path / "p.json")])
    assert default.exit_code == 0 and split.exit_code == 0, default.output + split.output
    assert "P+" not in default.output and "prefill/decode disaggregated: s" in split.output
    assert Plan.load(tmp_path / "p.json").workflows[0].llm_pools[0].disaggregated


_CORTEX = '''
model llama8b {
  weights     = "meta-llama/Meta-Llama-3-8B-Instruct"
  params      = 8.0B
  layers      = 32
  kv_heads    = 8
  head_dim    = 128
  dtype       = bfloat16
  max_context = 8192
  profile     = "llama-3-8b"
}

resources {
  gpu H100 { count = 8  cost = $3.50/h }
}

workflow summarise {
  inputs = [document]
  slo { latency = 800ms  attainment = 99% }
  load { rate = 60/s  pattern = poisson }

  llm s {
    model         = llama8b
    prompt        = """Summarise in one sentence: {{ document }}"""
    max_tokens    = 256
    input_tokens  = 1400
    output_tokens = 40
  }
  flow {
    s -> done
  }
}
'''


def test_borrowing_never_takes_a_prefill_or_decode_replica() -> None:
    """Under a borrowing policy (cortex) the other stage's calls must not land on an idle prefill
    replica of the P/D pool (it has no decode replica of theirs to ship the KV to): this raised
    LayoutError before the simulator's lenders excluded prefill/decode replicas."""
    prog = _program(60.0, slo_s=1.2, second_stage=True)
    plan = plan_program(prog, disaggregate=True)
    assert isinstance(plan, Plan) and plan.workflows[0].pool("s").disaggregated
    assert not plan.workflows[0].pool("t").disaggregated
    lat = _simulated(prog, layout_from_plan(plan, "one"), 60.0, policy="cortex", runs=1500)
    assert len(lat) > 0 and np.all(np.isfinite(lat))
