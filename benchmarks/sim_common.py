"""Shared set-up for the simulator experiments (simulated engines; every output says so).

Layouts, for a fair comparison on the same GPUs: Cortex runs on the planner's
stage-isolated pools (planner headroom mode on the cluster's devices at the
simulated rate, :func:`layout_from_plan`); every baseline runs on exactly the
same replicas pooled (:func:`pooled`: one generic pool per model, as vLLM/SGLang
deployments serve today). If the planner finds no plan, both fall back to the
proportional allocator (:func:`isolated_layout`) and the single shared pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cortexlang.ir import SLO, CpuResource, GpuResource, Inventory, Load, Program, Workflow
from planner.api import plan_program
from planner.plan import Plan
from runtime.policies.base import Policy
from runtime.policies.cortex import Cortex
from runtime.policies.registry import make_policy
from planner.candidates import DECODE_STRETCH, latency_cap
from planner.profiles import all_profiles
from runtime.simulator.capacity import capacity_runs_per_s, run_demand
from runtime.simulator.cluster import (
    ReplicaSpec, disaggregate, isolated_layout, layout_from_plan, model_profile, pooled, shared_layout,
)
from runtime.simulator.distributions import run_rng
from runtime.simulator.graph import WorkflowGraph
from runtime.simulator.records import SimResult
from runtime.simulator.runs import IRRun
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import fanout, longrag, nl2sql, program, react

REPO = Path(__file__).resolve().parents[1]
CLUSTERS: dict[str, dict[str, int]] = {
    "h100x12": {"H100": 12},
    "mixed12": {"A100": 4, "H100": 4, "H200": 4},
    "a100x16": {"A100": 16},
    "a100x8": {"A100": 8},
}
WORKLOADS: dict[str, Callable[[], Workflow]] = {"nl2sql": nl2sql, "react": react, "fanout": fanout,
                                                "longrag": longrag}
EXAMPLES = ("rag", "deep_research")
BASELINES = ("fcfs", "autellix-plas", "autellix-atlas", "hexgen-text2sql", "hexagent")
DEADLINE_AWARE = {"hexgen-text2sql", "hexagent", "cortex", "cortex-shared", "hexagent+ect"}
BASELINE_PARAMS: dict[str, dict] = {}
"""Baseline parameters beyond the policies' own defaults (the tuned HexGen alpha, 0.2 on seed 2 with
benchmarks/sim_tune.py, is now the policy's default, so `cortex simulate` runs the same baselines)."""
ABLATIONS: dict[str, tuple[str, dict]] = {
    "hexagent+ect": ("hexagent", {"marginal_weight": 1.0, "risk_threshold": 1.01}),
}
"""Not published baselines: HexAGenT's priority with Cortex's completion-time + marginal-slowdown routing."""
PLAN_TIME_LIMIT_S = 60.0
"""Cut-loop budget for the experiments' plans: large enough that the iteration cap, not the wall
clock, ends each solve, so layouts (and every figure built on them) do not depend on machine load."""
EXECUTOR_SLOTS = 512  # tools/SQL are external services: never the bottleneck here


@dataclass
class Setup:
    name: str
    program: Program
    workflow: Workflow
    devices: dict[str, int]
    capacity: float
    layouts: dict[float, tuple[tuple[ReplicaSpec, ...], tuple[ReplicaSpec, ...], bool]] = field(default_factory=dict)
    max_num_seqs: int | None = None
    """Deployment cap on every LLM replica's batch (both layouts alike); None = the plan's value."""
    decode_stretch: float = DECODE_STRETCH
    """The planner's latency-aware batch cap (``math.inf``: KV-derived caps only, vLLM's default)."""


def _inventory(devices: dict[str, int]) -> Inventory:
    return Inventory(gpus=tuple(GpuResource(kind=k, count=n, cost_per_hour=1.0) for k, n in sorted(devices.items())),
                     cpu=CpuResource(slots=EXECUTOR_SLOTS))


def workflow_graph(prog: Program, wf: Workflow, layout) -> WorkflowGraph:
    """The simulator's compiled graph of ``wf`` (standalone times, critical paths) on ``layout``."""
    return Simulator(prog, layout, make_policy("fcfs"), [Stream(wf.name, 1.0)], SimConfig(runs=1)).graphs[wf.name]


def setup(workload: str, cluster: str, max_num_seqs: int | None = None,
          decode_stretch: float = DECODE_STRETCH) -> Setup:
    if workload in WORKLOADS:
        wf = WORKLOADS[workload]()
        prog = program(wf)
        devices = dict(CLUSTERS[cluster])
    else:
        from cortexlang.compiler import compile_file

        prog = compile_file(REPO / "examples" / f"{workload}.cortex").program
        wf = prog.workflow()
        devices = {g.kind: g.count for g in prog.inventory.gpus} if cluster == "inventory" else dict(CLUSTERS[cluster])
    s = Setup(workload, prog, wf, devices, 0.0, max_num_seqs=max_num_seqs, decode_stretch=decode_stretch)
    if workload in WORKLOADS:  # one model: the whole cluster's capacity at the latency-aware batch cap
        lay = full_cluster_layout(prog, wf, devices, max_num_seqs, decode_stretch)
    else:  # several models: the capacity of the planner's layout at the declared load
        lay = plan_layouts(s, wf.load.rate_per_s if wf.load else 1.0)[1]
    s.capacity = capacity_runs_per_s(prog, workflow_graph(prog, wf, lay), lay)
    return s


def full_cluster_layout(prog: Program, wf: Workflow, devices: dict[str, int], max_num_seqs: int | None = None,
                        stretch: float = DECODE_STRETCH) -> tuple[ReplicaSpec, ...]:
    """Every device in generic replicas of the workflow's model (smallest TP with a profile), each
    capped like the planner caps its pools (:func:`planner.candidates.latency_cap` at the workload's
    mean context), for the capacity."""
    model = next(s.models[0].model for s in wf.stages if s.kind == "llm")
    family = prog.model(model).profile
    tp = min(p.tp for p in all_profiles() if p.model == family and p.device in devices)
    base = shared_layout(devices, model, tp=tp, workflow=wf, executor_slots=EXECUTOR_SLOTS)
    ctx = run_demand(workflow_graph(prog, wf, base))["ctx"]
    out = []
    for r in base:
        if r.kind == "llm":
            cap = latency_cap(model_profile(prog, r.model or "", r.device, r.tp), ctx, stretch)
            r = replace(r, slots=min(cap, max_num_seqs or cap))
        out.append(r)
    return tuple(out)


def plan_layouts(s: Setup, rate: float) -> tuple[tuple[ReplicaSpec, ...], tuple[ReplicaSpec, ...], bool]:
    """(cortex layout, baseline layout, planned?) for ``rate`` runs/s, cached per rate."""
    key = round(rate, 6)
    if key in s.layouts:
        return s.layouts[key]
    wf = s.workflow.model_copy(update={"slo": SLO(latency_s=600.0, attainment=0.99)})
    plan = plan_program(s.program.model_copy(update={"workflows": (wf,)}), _inventory(s.devices), rate=rate,
                        mode="headroom", decode_stretch=s.decode_stretch, time_limit_s=PLAN_TIME_LIMIT_S)
    if isinstance(plan, Plan):
        lay = tuple(replace(r, slots=EXECUTOR_SLOTS) if r.kind == "executor" else r for r in layout_from_plan(plan))
        out = (lay, pooled(lay), True)
    else:
        shared = full_cluster_layout(s.program, s.workflow, s.devices, None, s.decode_stretch)
        iso = isolated_layout(s.devices, s.program, s.workflow, llm_work(workflow_graph(s.program, s.workflow, shared)),
                              executor_slots=EXECUTOR_SLOTS)
        # The same latency-aware batch cap per device kind as the pooled replicas (both layouts alike).
        caps = {r.device: r.slots for r in shared if r.kind == "llm"}
        iso = tuple(replace(r, slots=caps[r.device]) if r.kind == "llm" else r for r in iso)
        out = (iso, shared, False)
    if s.max_num_seqs:
        out = (_cap(out[0], s.max_num_seqs), _cap(out[1], s.max_num_seqs), out[2])
    s.layouts[key] = out
    return out


def _cap(layout: tuple[ReplicaSpec, ...], cap: int) -> tuple[ReplicaSpec, ...]:
    return tuple(replace(r, slots=min(r.slots, cap)) if r.kind == "llm" else r for r in layout)


def llm_work(graph: WorkflowGraph, n: int = 400) -> dict[str, float]:
    """Mean tokens of work per run per LLM stage (decode tokens weighted 3x), for the fallback allocator."""
    work: dict[str, float] = {}
    for i in range(n):
        run = IRRun(graph, i, 0.0, run_rng(7919 + i))
        for key, vals in run.call_draws():  # was `len(vals) != 3`, which skipped every call once entries grew
            stage = key[-2]  # keys end (stage, visit)
            st = graph.stages[stage]
            if st.kind == "llm":
                work[stage] = work.get(stage, 0.0) + (vals[0] - st.prefix_tokens) + 3.0 * vals[1]
    return {k: v / n for k, v in work.items()}


def simulate(s: Setup, policy: str | Policy, load: float, scale: float | None, runs: int, seed: int,
             params: dict | None = None, layout: tuple[ReplicaSpec, ...] | None = None,
             clairvoyant: bool = False, **cfg) -> SimResult:
    """One simulation; ``params`` override the policy's dataclass fields (tuning); ``layout``
    overrides the planner/pooled layouts (the disaggregated cell gives every policy its split).
    ``clairvoyant`` (benchmark-only, off by default): the policy sees each run's realised remaining
    path instead of the online estimate (:mod:`benchmarks.clairvoyant`).
    ``policy`` is a registry/experiment name, or a ready policy object (an ablation variant), which
    runs on the planner's pools when it is a Cortex policy, else on the pooled replicas."""
    if layout is None:
        cortex_lay, base_lay, _ = plan_layouts(s, load * s.capacity)
        on_pools = isinstance(policy, Cortex) if isinstance(policy, Policy) else policy == "cortex"
        layout = cortex_lay if on_pools else base_lay
    if isinstance(policy, Policy):
        pol, merged = policy, dict(params or {})
    else:
        name = "cortex" if policy == "cortex-shared" else policy
        merged = dict(BASELINE_PARAMS.get(policy, {}))
        if policy in ABLATIONS:
            name, extra = ABLATIONS[policy]
            merged.update(extra)
        merged.update(params or {})
        pol = make_policy(name)
    for name, value in merged.items():
        if not hasattr(pol, name):
            raise ValueError(f"policy {policy!r} has no parameter {name!r}")
        setattr(pol, name, value)
    sim_class = Simulator
    if clairvoyant:
        from benchmarks.clairvoyant import ClairvoyantSimulator

        sim_class = ClairvoyantSimulator
    return sim_class(s.program, layout, pol, [Stream(s.workflow.name, load * s.capacity)],
                     SimConfig(runs=runs, seed=seed, slo_scale=scale, **cfg)).run()


PD_PREFILL_UTILISATION = 0.8
"""A prefill/decode split is a candidate when its prefill pool runs at most this busy ..."""
PD_DECODE_UTILISATION = 0.9
"""... and its decode pool at most this busy at the simulated rate (analytic, batch at the cap)."""


def pd_splits(s: Setup, rate: float, limit: int = 4) -> list[dict[str, int]]:
    """Candidate prefill/decode splits of the whole cluster for the published setting.

    A split says how many replicas of each device kind prefill (the rest decode).
    Analytic filter (per-run demand from :func:`run_demand`: ``P`` uncached prompt
    and ``O`` output tokens): ``rate x P <= PD_PREFILL_UTILISATION x sum 1/c_r``
    over prefill replicas, ``rate x O <= PD_DECODE_UTILISATION x sum B_r /
    t_decode_r(B_r, B_r C)`` over decode replicas at their batch cap ``B_r``.
    Returned (at most ``limit``): the feasible splits that prefill on the slowest
    kinds first (prefill is a small share of a call, decode wants fast memory) with
    the least prefill, then those with the most decode capacity; every policy picks
    its best among them on the tuning seed.
    """
    full = full_cluster_layout(s.program, s.workflow, s.devices, s.max_num_seqs, s.decode_stretch)
    d = run_demand(workflow_graph(s.program, s.workflow, full))
    llm = [r for r in full if r.kind == "llm"]
    kinds = sorted({r.device for r in llm})
    prof = {k: model_profile(s.program, llm[0].model or "", k, llm[0].tp) for k in kinds}
    cap = {r.device: r.slots for r in llm}
    pre_rate = {k: 1.0 / prof[k].prefill_per_token_s for k in kinds}
    dec_rate = {k: cap[k] / prof[k].decode_step_s(cap[k], int(cap[k] * d["ctx"])) for k in kinds}
    counts = {k: sum(1 for r in llm if r.device == k) for k in kinds}
    out: list[tuple[float, dict[str, int]]] = []

    def walk(i: int, chosen: dict[str, int]) -> None:
        if i == len(kinds):
            pre = sum(n * pre_rate[k] for k, n in chosen.items())
            dec = sum((counts[k] - n) * dec_rate[k] for k, n in chosen.items())
            if (rate * d["prefill"] <= PD_PREFILL_UTILISATION * pre
                    and rate * d["output"] <= PD_DECODE_UTILISATION * dec):
                out.append((dec, dict(chosen)))
            return
        for n in range(counts[kinds[i]] + 1):
            walk(i + 1, {**chosen, kinds[i]: n})

    walk(0, {})
    out.sort(key=lambda t: (-t[0], sorted(t[1].items())))
    by_capacity = [split for _, split in out]
    # Slowest kinds prefill first (prefill is a small share of a call; decode wants fast memory).
    slow_first = [split for split in by_capacity if _slow_first(split, counts, prof)]
    picked: list[dict[str, int]] = []
    for split in slow_first[: limit // 2] + by_capacity:
        if split not in picked and len(picked) < limit:
            picked.append(split)
    return picked


def _slow_first(split: dict[str, int], counts: dict[str, int], prof: dict) -> bool:
    """Whether ``split`` takes a faster kind for prefill only once every slower kind prefills."""
    kinds = sorted(split, key=lambda k: prof[k].decode_fixed_s, reverse=True)  # slowest decode first
    for slower, faster in zip(kinds, kinds[1:]):
        if split[faster] > 0 and split[slower] < counts[slower]:
            return False
    return True


def pd_layout(s: Setup, split: dict[str, int]) -> tuple[ReplicaSpec, ...]:
    """The whole cluster as generic replicas (:func:`full_cluster_layout`) split into prefill and
    decode roles by ``split`` (:func:`runtime.simulator.cluster.disaggregate`)."""
    full = full_cluster_layout(s.program, s.workflow, s.devices, s.max_num_seqs, s.decode_stretch)
    return disaggregate(full, split)


PD_POLICY_PARAMS: dict[str, dict] = {"cortex": {"preemptive": False}}
"""Per-policy parameters on disaggregated layouts, tuned on seed 2: evicting a running call on a
decode replica makes it recompute its whole prompt there, stalling the decode batch (Cortex at
split A100=4,H100=2, seed 2: preemptive 1.87 / 1.96 at 95 / 99%, non-preemptive 1.72 / 1.79)."""


def one_replica_calls(model: str, tp: int, input_tokens: int, output_tokens: int, rate: float, slots: int,
                      runs: int, *, max_tokens: int = 256, kv_capacity_tokens: int | None = None,
                      seed: int = 3) -> list[tuple]:
    """The call records (``SimConfig.record_calls``) of one A100 replica of ``model`` serving a
    single-stage workflow fed Poisson arrivals at ``rate`` under FCFS, warm-up (the first tenth) dropped."""
    from planner.synthetic import LLAMA_8B, LLAMA_70B, edge, gpu_inventory, llm

    spec = LLAMA_8B if model == "llama8b" else LLAMA_70B
    stage = llm("a", model, input_tokens=input_tokens, output_tokens=output_tokens, max_tokens=max_tokens)
    wf = Workflow(name="w", stages=(stage,), entry="a", edges=(edge("a", "done"),),
                  slo=SLO(latency_s=600.0, attainment=0.9), load=Load(rate_per_s=rate))
    prog = Program(models=(spec,), workflows=(wf,), inventory=gpu_inventory(a100=64))
    layout = (ReplicaSpec(name="a-0", kind="llm", device="A100", model=model, tp=tp, stages=frozenset({"a"}),
                          slots=slots, kv_capacity_tokens=kv_capacity_tokens),)
    res = Simulator(prog, layout, make_policy("fcfs"), [Stream("w", rate)],
                    SimConfig(runs=runs, seed=seed, record_calls=True)).run()
    return res.calls[len(res.calls) // 10:]
