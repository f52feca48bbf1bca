"""Planner check: planner-predicted per-stage and end-to-end p99 vs the simulator, per example.

For every examples/*.cortex (compiled with the front end) and the synthetic
workloads, plan with the planner's public API (cost mode, the program's own
inventory and load), build the planner's pools (:func:`plan_layout`: shared
pools serve all their stages) and simulate the same load with FCFS on those
pools. A stage's latency is one visit's queueing plus service. All simulated.

Two synthetic cases reproduce issue 10's executor findings: ``fanout8`` (an
8-way fan-out of a 300 ms search tool) and ``react_tools`` (a ReAct agent whose
tool pool runs at 50-90% utilisation: up to 12 think -> tool -> observe
iterations, 2 retries per failed tool call, 2 runs/s).

    .venv/bin/python benchmarks/sim_planner_check.py

Writes benchmarks/results/sim_planner_check.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import SLO, IntKnob, Load, Loop, Program, ToolStage, Workflow  # noqa: E402
from planner.api import plan_program  # noqa: E402
from planner.plan import Plan  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.cluster import layout_from_plan  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402
from runtime.simulator.workloads import edge, fanout, llm, nl2sql, outcome, program, react  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"


def fanout8() -> Workflow:
    """Deep-research style: 8-way fan-out whose branches start with a 300 ms search tool."""
    wf = fanout(width=8)
    stages = tuple(s.model_copy(update={"service_s": 0.3, "service_cv": 0.5}) if s.name == "search" else s
                   for s in wf.stages)
    return wf.model_copy(update={"name": "fanout8", "stages": stages, "load": Load(rate_per_s=1.0)})


def react_tools() -> Workflow:
    """ReAct agent: think -> tool (2 retries on error) -> observe, up to 12 iterations, 2 runs/s, SLO p99 20 s."""
    return Workflow(
        name="react_tools", inputs=("task",),
        stages=(llm("think", 700, 40, prefix=500), ToolStage(name="tool", entry="tools.x:call", service_s=0.25,
                                                             service_cv=1.0),
                llm("observe", 800, 30, prefix=500)),
        entry="think",
        edges=(edge("think", "tool"), edge("tool", "observe", 0.85, outcome("ok")),
               edge("tool", "tool", 0.15, outcome("error"), loop="retry"),
               edge("observe", "think", 0.75, outcome("continue"), loop="steps"),
               edge("observe", "done", 0.25, outcome("ok"))),
        loops=(Loop(name="retry", max_iterations=IntKnob.fixed(2), on_exhausted="observe"),
               Loop(name="steps", max_iterations=IntKnob.fixed(12), on_exhausted="done")),
        slo=SLO(latency_s=20.0, attainment=0.99), load=Load(rate_per_s=2.0),
    )


def programs() -> list[tuple[str, Program]]:
    out = []
    for path in sorted((REPO / "examples").glob("*.cortex")):
        res = compile_file(path)
        if res.program is not None:
            out.append((path.name, res.program))
        else:
            print(f"skip {path.name}: does not compile")
    from cortexlang.ir import CpuResource, GpuResource, Inventory
    inv = Inventory(gpus=(GpuResource(kind="H100", count=16, cost_per_hour=2.99),), cpu=CpuResource(slots=256))
    for wf in (nl2sql(), react(), fanout8(), react_tools()):
        out.append((f"synthetic:{wf.name}", program(wf).model_copy(update={"inventory": inv})))
    return out


def check(name: str, prog: Program) -> list[dict]:
    rows = []
    for wf in prog.workflows:
        plan = plan_program(prog, workflows=[wf.name], mode="cost")
        if not isinstance(plan, Plan):
            rows.append({"example": name, "workflow": wf.name, "error": str(plan)})
            continue
        wp = plan.workflow(wf.name)
        res = Simulator(prog, layout_from_plan(plan, wf.name), make_policy("fcfs"),
                        [Stream(wf.name, wp.rate_per_s)],
                        SimConfig(runs=3000, seed=1, record_calls=True, warmup_fraction=0.1),
                        knobs={wf.name: wp.knobs}).run()
        lat = res.latency()
        warm_ids = set(res.run_id[: res.warmup].tolist())
        by_stage: dict[str, list[float]] = {}
        for c in res.calls:
            if c[0] not in warm_ids:
                by_stage.setdefault(c[2], []).append(c[7] - c[5])
        stages = {}
        views = [(p.stage, p.latency, f"{p.device} x {p.replicas}") for p in wp.llm_pools]
        views += [(c.stage, c.latency, f"in {p.stage}'s pool") for p in wp.llm_pools for c in p.colocated]
        views += [(p.stage, p.latency, f"{p.slots} slots, {p.utilisation:.0%} busy") for p in wp.executor_pools]
        for stage, latency, pool in views:
            sim = by_stage.get(stage)
            stages[stage] = {"pool": pool, "planner_p99_s": latency.p99,
                             "simulated_p99_s": float(np.percentile(sim, 99)) if sim else None}
        rows.append({"example": name, "workflow": wf.name, "layout": wp.layout, "rate_runs_per_s": wp.rate_per_s,
                     "planner_e2e_p99_s": wp.latency.p99, "simulated_e2e_p99_s": float(np.percentile(lat, 99)),
                     "stages": stages})
    return rows


def main() -> None:
    rows = [r for name, prog in programs() for r in check(name, prog)]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sim_planner_check.json").write_text(json.dumps({"label": "simulated", "rows": rows}, indent=2) + "\n")
    md = ["# Planner check: predicted vs simulated p99 (simulated)", "",
          "Command: `.venv/bin/python benchmarks/sim_planner_check.py`. Planner: cost mode, the program's "
          "inventory and load; simulator: FCFS on the planner's pools, 3000 runs, seed 1.", "",
          "| example | workflow | stage | pool | planner p99 s | simulated p99 s | sim / planner |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['example']} | {r['workflow']} | (no plan: {r['error'][:80]}) | | | | |")
            continue
        ratio = r["simulated_e2e_p99_s"] / r["planner_e2e_p99_s"]
        md.append(f"| {r['example']} | {r['workflow']} | **end-to-end** | {r['layout']} | {r['planner_e2e_p99_s']:.2f} | "
                  f"{r['simulated_e2e_p99_s']:.2f} | {ratio:.2f} |")
        for st, d in r["stages"].items():
            sim, pred = d["simulated_p99_s"], d["planner_p99_s"]
            sim_txt = "-" if sim is None else f"{sim:.3f}"
            ratio_txt = "" if not sim or not pred else f"{sim / pred:.2f}"
            md.append(f"| | | {st} | {d['pool']} | {pred:.3f} | {sim_txt} | {ratio_txt} |")
    (OUT / "sim_planner_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
