"""Analytical saturation capacity of a layout for a workload, to express load as a fraction.

Per run, Monte Carlo over the workflow's scripted paths (:class:`IRRun`, no
contention) gives the mean uncached prompt tokens ``P`` (a resident shared
prefix is not recomputed), output tokens ``O`` and mean context ``C`` of its
LLM calls, and the executor seconds ``X``. A replica at full batch ``B =
min(slots, kv_capacity / C)`` spends per run::

    g = prefill_per_token * P + O * t_decode(B, B C) / B

so an LLM pool serves ``sum_r 1 / g_r`` runs per second, and executor groups
``slots / X``. The capacity is the smaller of the two (LLM replicas and
executors are pooled, as a shared layout would use them). Load levels in the
experiments are fractions of this number.
"""

from __future__ import annotations

from collections.abc import Sequence

from cortexlang.ir import LLMStage, Program
from runtime.simulator.cluster import ReplicaSpec, model_profile
from runtime.simulator.distributions import run_rng
from runtime.simulator.graph import WorkflowGraph
from runtime.simulator.runs import IRRun


def run_demand(g: WorkflowGraph, samples: int = 400, seed: int = 7, model: str | None = None) -> dict[str, float]:
    """Mean per-run demand: uncached prompt, output and context tokens, executor seconds, LLM calls
    (LLM figures for calls of ``model`` only, when given)."""
    tot = {"prefill": 0.0, "output": 0.0, "ctx": 0.0, "exec_s": 0.0, "llm_calls": 0.0}
    for i in range(samples):
        run = IRRun(g, i, 0.0, run_rng(seed * 7919 + i))
        for key, vals in run.call_draws():
            stage = g.stages[key[-2]]  # keys end (stage, visit)
            if isinstance(stage, LLMStage):
                if model is not None and stage.models[0].model != model:
                    continue
                tot["prefill"] += vals[0] - stage.prefix_tokens
                tot["output"] += vals[1]
                tot["ctx"] += vals[0] + vals[1] / 2
                tot["llm_calls"] += 1
            else:
                tot["exec_s"] += vals[0]
    out = {k: v / samples for k, v in tot.items()}
    out["ctx"] = tot["ctx"] / max(tot["llm_calls"], 1.0)
    return out


def capacity_runs_per_s(program: Program, g: WorkflowGraph, layout: Sequence[ReplicaSpec]) -> float:
    """Saturation throughput (runs/s) of ``layout`` for workflow ``g`` (see module docstring).

    With several models, each model's replicas serve that model's calls: the
    capacity is the smallest over models (and executors).
    """
    models = sorted({r.model for r in layout if r.kind == "llm" and r.model})
    rates = [_model_rate(program, g, layout, m) for m in models]
    d = run_demand(g)
    exec_slots = sum(r.slots for r in layout if r.kind == "executor")
    exec_rate = exec_slots / d["exec_s"] if d["exec_s"] > 0 else float("inf")
    return min([exec_rate, *(r for r in rates if r is not None)])


def _model_rate(program: Program, g: WorkflowGraph, layout: Sequence[ReplicaSpec], model: str) -> float | None:
    d = run_demand(g, model=model)
    if d["llm_calls"] == 0:
        return None
    llm_rate = 0.0
    for spec in layout:
        if spec.kind != "llm" or spec.model != model:
            continue
        p = model_profile(program, spec.model or "", spec.device, spec.tp)
        m = program.model(spec.model or "")
        kv = spec.kv_capacity_tokens or p.kv_capacity_tokens(m.weight_bytes, m.kv_bytes_per_token)
        b = max(1, min(spec.slots, int(kv / max(d["ctx"], 1.0))))
        per_run = p.prefill_per_token_s * d["prefill"] + d["output"] * p.decode_step_s(b, int(b * d["ctx"])) / b
        llm_rate += 1.0 / per_run
    return llm_rate
