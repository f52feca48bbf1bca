"""Prefill/decode-disaggregated pools: the planner's P/D candidates against the simulator (SIMULATED).

    .venv/bin/python benchmarks/plan_pd.py [--runs 8000] [--out benchmarks/results/plan_pd.md]

1. *Candidate vs layout*: one prefill-heavy stage (Poisson arrivals, FCFS). For each case the P/D
   candidate of :func:`planner.disaggregation.pd_config` (``n_p`` prefill + ``n_d`` decode replicas)
   predicts the call latency; the discrete-event simulator runs exactly those replicas (prefill-only
   and decode-only engines, the KV shipped over the default link) with the candidate's batch cap and
   KV budget. For contrast, the same number of devices as colocated replicas: the prefill share
   ``x`` each would carry (the stall regime P/D avoids), ``x`` at the fewest colocated replicas that
   keep up (where a cost-minimal colocated plan sits), and the colocated candidate's planned p99 with
   the simulated p99 of those replicas.
2. *Planner's choice*: ``plan_program`` with and without ``disaggregate=True`` on the same inputs
   (cost mode, p99 SLO); each plan's layout simulated (``layout_from_plan``, FCFS); cost, the plan's
   and the simulated p99 and the simulated attainment.
3. *A workflow*: the prefill-heavy stage followed by a short one on the same model, planned with
   ``disaggregate``; end-to-end p50/p99 planned vs simulated under FCFS and under the cortex policy
   (which borrows idle replicas of other stages' pools, never a prefill or decode one).
4. *Cost of the option*: the examples planned with and without ``disaggregate`` (no verification):
   the cost, the pools split, the candidate pools the solver considered and the planning CPU time
   (best of ``--repeat``, interleaved; repeats after the first reuse memoised tables, so this is the
   warm planning time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import SLO, Load, ModelSpec, Program, Workflow  # noqa: E402
from planner.api import plan_program  # noqa: E402
from planner.candidates import Device, StageLoad, _llm_config  # noqa: E402
from planner.disaggregation import pd_config  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.profiles import get_profile  # noqa: E402
from planner.synthetic import LLAMA_8B, LLAMA_70B, edge, gpu_inventory, llm  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.cluster import ReplicaSpec, layout_from_plan  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402

CANDIDATE_CASES = (  # model, family, tp, prompt tokens, shared prefix (kept warm), output tokens, calls/s, n_p, n_d
    ("llama8b", "llama-3-8b", 1, 1400, 0, 40, 20.0, 1, 1),
    ("llama8b", "llama-3-8b", 1, 1400, 0, 40, 40.0, 2, 1),
    ("llama8b", "llama-3-8b", 1, 1400, 0, 40, 40.0, 2, 2),
    ("llama8b", "llama-3-8b", 1, 1400, 0, 40, 60.0, 3, 1),
    ("llama8b", "llama-3-8b", 1, 1400, 0, 40, 80.0, 4, 1),
    ("llama8b", "llama-3-8b", 1, 1400, 0, 40, 100.0, 4, 2),
    ("llama8b", "llama-3-8b", 1, 1400, 0, 40, 100.0, 5, 2),
    ("llama8b", "llama-3-8b", 1, 1025, 0, 55, 60.0, 2, 1),
    ("llama8b", "llama-3-8b", 1, 2000, 1000, 40, 60.0, 2, 1),
    ("llama8b", "llama-3-8b", 1, 3000, 500, 30, 30.0, 3, 1),
    ("llama8b", "llama-3-8b", 1, 600, 0, 150, 40.0, 1, 2),
    ("llama70b", "llama-3-70b", 4, 1283, 0, 74, 8.0, 1, 1),
)
PLAN_CASES = (  # calls/s, SLO p99 seconds, H100s in the inventory
    (20.0, 0.8, 8), (60.0, 0.8, 8), (100.0, 0.8, 12), (60.0, 3.0, 8), (100.0, 3.0, 12),
)
EXAMPLES = ("rag", "nl2sql", "nl2sql_constrained", "chess_sql", "deep_research", "react_agent")
H100_PRICE = 3.5
"""planner.synthetic.gpu_inventory's H100 list price, per GPU-hour."""


def _program(spec: ModelSpec, inp: int, out: int, rate: float, slo_s: float = 600.0, h100: int = 64,
             prefix: int = 0) -> Program:
    wf = Workflow(name="one", stages=(llm("s", spec.name, input_tokens=inp, output_tokens=out, max_tokens=256,
                                          prefix_tokens=prefix),),
                  entry="s", edges=(edge("s", "done"),), slo=SLO(latency_s=slo_s, attainment=0.99),
                  load=Load(rate_per_s=rate))
    inventory = gpu_inventory(h100=h100, cpu_slots=8)
    assert inventory.gpus[0].cost_per_hour == H100_PRICE
    return Program(models=(LLAMA_70B, LLAMA_8B), workflows=(wf,), inventory=inventory)


def _latency(prog: Program, layout, rate: float, runs: int, policy: str = "fcfs", knobs=None) -> np.ndarray:
    return Simulator(prog, layout, make_policy(policy), [Stream("one", rate)], SimConfig(runs=runs, seed=1),
                     knobs=knobs).run().latency()


def candidate_row(model: str, family: str, tp: int, inp: int, prefix: int, out: int, rate: float, n_p: int, n_d: int,
                  runs: int) -> str:
    spec = LLAMA_8B if model == "llama8b" else LLAMA_70B
    prog = _program(spec, inp, out, rate, prefix=prefix)
    profile = get_profile(family, "H100", tp)
    cand = pd_config(prog.workflows[0].stage("s"), spec, profile, Device("H100", H100_PRICE, 64),
                     StageLoad(rate, 1.0), 256, 1.0, n_p, n_d)
    x = profile.prefill_per_token_s * (inp - prefix) * rate / (n_p + n_d)
    head = f"| {model} | {inp} ({prefix}) / {out} | {rate:g} | {n_p}P+{n_d}D | {x:.2f} |"
    if cand is None:
        return head + " unstable |||||||||"
    layout = tuple(ReplicaSpec(name=f"s-{i}", kind="llm", device="H100", model=model, tp=tp, stages=frozenset({"s"}),
                               role="prefill" if i < n_p else "decode", slots=cand.max_num_seqs,
                               kv_capacity_tokens=cand.kv_budget_tokens, prewarm=_warm(prog))
                   for i in range(n_p + n_d))
    lat = _latency(prog, layout, rate, runs)
    p50, p99 = float(np.quantile(lat, 0.5)), float(np.quantile(lat, 0.99))
    prefill_util = rate * profile.prefill_s(inp - prefix) / n_p
    return (head + f" {_fewest_colocated_x(prog, spec, profile, rate)} | {_colocated(prog, spec, profile, rate, n_p + n_d, runs)} | "
            f"{prefill_util:.2f} | {cand.utilisation:.2f} | {cand.quantile(0.5):.3f} | {p50:.3f} | "
            f"{p50 / cand.quantile(0.5):.3f} | {cand.quantile(0.99):.3f} | {p99:.3f} | {p99 / cand.quantile(0.99):.3f} |")


def _warm(prog: Program) -> frozenset[str]:
    """The stage when its prefix is kept warm (the plan's prewarm decision; layout_from_plan does the same)."""
    return frozenset({"s"}) if prog.workflows[0].stage("s").warms_prefix else frozenset()


def _colocated_candidate(prog: Program, spec: ModelSpec, profile, rate: float, replicas: int):
    return _llm_config(prog.workflows[0].stage("s"), spec, profile, Device("H100", H100_PRICE, 64),
                       StageLoad(rate, 1.0), 256, 1, 1.0, replicas)


def _fewest_colocated_x(prog: Program, spec: ModelSpec, profile, rate: float) -> str:
    """``x`` at the fewest colocated replicas the planner deems stable (and how many)."""
    n = next(k for k in range(1, 65) if _colocated_candidate(prog, spec, profile, rate, k) is not None)
    st = prog.workflows[0].stage("s")
    return f"{profile.prefill_per_token_s * (st.input_tokens - st.prefix_tokens) * rate / n:.2f} ({n})"


def _colocated(prog: Program, spec: ModelSpec, profile, rate: float, replicas: int, runs: int) -> str:
    """The colocated candidate on ``replicas`` replicas: planned p99 / simulated p99."""
    cand = _colocated_candidate(prog, spec, profile, rate, replicas)
    if cand is None:
        return "unstable"
    layout = tuple(ReplicaSpec(name=f"s-{i}", kind="llm", device="H100", model=spec.name, tp=profile.tp,
                               stages=frozenset({"s"}), slots=cand.max_num_seqs,
                               kv_capacity_tokens=cand.kv_budget_tokens, prewarm=_warm(prog)) for i in range(replicas))
    return f"{cand.quantile(0.99):.3f} / {float(np.quantile(_latency(prog, layout, rate, runs), 0.99)):.3f}"


def plan_rows(rate: float, slo_s: float, h100: int, runs: int) -> list[str]:
    prog = _program(LLAMA_8B, 1400, 40, rate, slo_s, h100)
    rows = []
    for dis in (False, True):
        plan = plan_program(prog, disaggregate=dis, time_limit_s=60.0)
        head = f"| {rate:g} | {slo_s:g} | {h100} | {'on' if dis else 'off'} |"
        if not isinstance(plan, Plan):
            rows.append(head + f" infeasible: {plan.message} ||||| |")
            continue
        pool = plan.workflows[0].llm_pools[0]
        lat = _latency(prog, layout_from_plan(plan, "one"), rate, runs)
        p99 = float(np.quantile(lat, 0.99))
        split = f"{pool.prefill_replicas}P+{pool.decode_replicas}D" if pool.disaggregated else f"{pool.replicas} colocated"
        rows.append(head + f" {split} | ${plan.cost_per_hour:.2f} | {pool.latency.p99:.3f} | {p99:.3f} | "
                    f"{p99 / pool.latency.p99:.3f} | {float(np.mean(lat <= slo_s)):.2%} |")
    return rows


def workflow_rows(rate: float, slo_s: float, runs: int) -> list[str]:
    base = _program(LLAMA_8B, 1400, 40, rate, slo_s, 8)
    wf = base.workflows[0]
    wf = wf.model_copy(update={
        "stages": (*wf.stages, llm("t", "llama8b", input_tokens=100, output_tokens=12, max_tokens=64)),
        "edges": (edge("s", "t"), edge("t", "done"))})
    prog = base.model_copy(update={"workflows": (wf,)})
    plan = plan_program(prog, disaggregate=True, time_limit_s=60.0)
    if not isinstance(plan, Plan):
        return [f"| {rate:g} | {slo_s:g} | infeasible: {plan.message} ||||||"]
    wp = plan.workflows[0]
    pools = ", ".join(f"{p.stage} " + (f"{p.prefill_replicas}P+{p.decode_replicas}D" if p.disaggregated
                                        else f"x {p.replicas}") for p in wp.llm_pools)
    rows = []
    for policy in ("fcfs", "cortex"):
        lat = _latency(prog, layout_from_plan(plan, "one"), rate, runs, policy, {"one": wp.knobs})
        rows.append(f"| {rate:g} | {slo_s:g} | {pools} | ${plan.cost_per_hour:.2f} | {policy} | "
                    f"{wp.latency.p50:.3f} / {float(np.quantile(lat, 0.5)):.3f} | "
                    f"{wp.latency.p99:.3f} / {float(np.quantile(lat, 0.99)):.3f} |")
    return rows


def example_rows(name: str, repeat: int) -> list[str]:
    program = compile_file(REPO / "examples" / f"{name}.cortex").program
    best = {False: float("inf"), True: float("inf")}
    plans = {}
    for _ in range(repeat):
        for dis in (False, True):  # interleaved: load drifts hit both alike
            t0 = time.process_time()
            plans[dis] = plan_program(program, disaggregate=dis, time_limit_s=60.0)
            best[dis] = min(best[dis], time.process_time() - t0)
    rows = []
    for dis, plan in plans.items():
        head = f"| {name} | {'on' if dis else 'off'} |"
        if not isinstance(plan, Plan):
            rows.append(head + f" infeasible ||| {best[dis]:.2f} |")
            continue
        split = [f"{p.stage} {p.prefill_replicas}P+{p.decode_replicas}D" for w in plan.workflows for p in w.llm_pools
                 if p.disaggregated]
        rows.append(head + f" ${plan.cost_per_hour:.2f} | {', '.join(split) or '-'} | {plan.solver.candidates} | "
                    f"{best[dis]:.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=8000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "plan_pd.md")
    args = ap.parse_args()
    load0 = os.getloadavg()
    lines = ["# Prefill/decode-disaggregated pools: planner vs simulator (SIMULATED)", "",
             f"`.venv/bin/python benchmarks/plan_pd.py --runs {args.runs} --repeat {args.repeat}`. H100 profiles at ${H100_PRICE}/h per GPU, "
             f"Poisson arrivals, FCFS, seed 1. Load averages before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}.", "",
             "## 1. The P/D candidate vs its layout simulated", "",
             "| model | prompt (warm prefix) / output tokens | calls/s | P/D split | x colocated, same devices | x colocated, fewest "
             "(replicas) | colocated same devices: p99 planned / simulated | prefill util | decode occupancy "
             "| p50 planned | p50 simulated | ratio | p99 planned | p99 simulated | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in CANDIDATE_CASES:
        lines.append(candidate_row(*case, runs=args.runs))
        print(lines[-1], flush=True)
    lines += ["", "## 2. The planner's choice with and without `disaggregate` (Llama-3-8B, 1400 / 40 tokens)", "",
              "| calls/s | SLO p99 s | H100s | disaggregate | pool | cost | p99 planned | p99 simulated | ratio "
              "| simulated within SLO |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for case in PLAN_CASES:
        for r in plan_rows(*case, runs=args.runs):
            lines.append(r)
            print(r, flush=True)
    lines += ["", "## 3. A two-stage workflow (1400/40 then 100/12 tokens, Llama-3-8B, 8 H100s), `disaggregate` on", "",
              "| runs/s | SLO p99 s | pools | cost | policy | end-to-end p50 planned / simulated "
              "| p99 planned / simulated |", "|---|---|---|---|---|---|---|"]
    for rate, slo_s in ((60.0, 1.2), (40.0, 1.0)):
        for r in workflow_rows(rate, slo_s, args.runs):
            lines.append(r)
            print(r, flush=True)
    lines += ["", "## 4. The examples with and without `disaggregate` (no verification)", "",
              "| example | disaggregate | cost | P/D pools | candidate pools | planning CPU s (best, warm) |",
              "|---|---|---|---|---|---|"]
    for name in EXAMPLES:
        for r in example_rows(name, args.repeat):
            lines.append(r)
            print(r, flush=True)
    load1 = os.getloadavg()
    lines += ["", f"Load averages after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}."]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
