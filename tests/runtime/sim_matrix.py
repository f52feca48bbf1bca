"""A spread of simulations whose results must not depend on how the simulator is built.

Used by ``tests/runtime/test_accel.py`` to compare the compiled simulator with the pure-Python
source: every policy of the registry on three workloads (retry loop, ReAct loop, fan-out), on a
shared pool and on stage-isolated pools, prefill/decode-disaggregated layouts, chunked prefill (a
512-token step budget on the shared and disaggregated NL2SQL layouts), a malleable
workflow (lighter model options), context-length refusal, alike output lengths, engines that slow each other (contention), trace replay, KV sampling and per-call records. Small on purpose (a few
seconds in all): the digests cover every run's end time, status, pruning and quality, every
engine's counters and the recorded calls.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator

from cortexlang.ir import Program
from runtime.policies.registry import POLICIES, make_policy
from runtime.simulator.cluster import ReplicaSpec, disaggregate, gpu_replicas, isolated_layout, shared_layout
from runtime.simulator.records import SimResult
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.trace import TraceRequest, parse_trace, trace_models
from runtime.simulator.workloads import fanout, nl2sql, program, react

DEVICES = {"A100": 2, "H100": 2, "H200": 1}


def digest(res: SimResult) -> str:
    """SHA-256 prefix of everything a simulation reports (equal digests: identical simulations)."""
    engines = [(e.name, e.kv_peak_tokens, e.preemptions, e.iterations, e.busy_s) for e in res.engines]
    data = (res.end.tolist(), res.status.tolist(), res.pruned.tolist(), res.quality.tolist(), res.llm_calls,
            res.sim_end_s, engines, res.kv_samples, res.calls)
    return hashlib.sha256(repr(data).encode()).hexdigest()[:16]


def cases() -> Iterator[tuple[str, Simulator]]:
    """``(name, simulator)`` for every case (built, not run)."""
    workflows = {"nl2sql": nl2sql(), "react": react(), "fanout": fanout(),
                 "nl2sql-malleable": nl2sql(sql_models=("llama70b", "llama8b"))}
    for wname, wf in workflows.items():
        prog = program(wf)
        if wname == "nl2sql-malleable":  # one 70B TP4 replica and its lighter 8B option
            shared = (*gpu_replicas({"H100": 4}, "llama70b", 4, prefix="big-"),
                      *gpu_replicas({"H100": 2}, "llama8b", 1), ReplicaSpec(name="x", kind="executor", slots=32))
            layouts = {"shared": shared}
        else:
            shared = shared_layout(DEVICES, "llama8b", workflow=wf, executor_slots=32)
            visits = {s.name: 1 for s in wf.stages if hasattr(s, "models")}
            layouts = {"shared": shared, "isolated": isolated_layout(DEVICES, prog, wf, visits, executor_slots=32)}
        if wname == "nl2sql":
            layouts["pd"] = disaggregate(shared, {"A100": 1})
        for pname in POLICIES:
            for lname, layout in layouts.items():
                if wname != "nl2sql" and lname == "isolated" and pname not in ("fcfs", "cortex"):
                    continue
                cfg = SimConfig(runs=250, seed=5, slo_scale=2.5, kv_sample_s=0.5 if pname == "fcfs" else None,
                                record_calls=pname == "cortex")
                yield f"{wname}/{pname}/{lname}", Simulator(prog, layout, make_policy(pname),
                                                            [Stream(wf.name, 6.0)], cfg)
                if wname == "nl2sql" and lname in ("shared", "pd"):  # chunked prefill: a 512-token step budget
                    cfg = SimConfig(runs=250, seed=5, slo_scale=2.5, max_batched_tokens=512)
                    yield f"{wname}/{pname}/{lname}-chunked", Simulator(prog, layout, make_policy(pname),
                                                                        [Stream(wf.name, 6.0)], cfg)


def refusal_cases() -> Iterator[tuple[str, Simulator]]:
    """Context-length refusal: fan-out branches whose drawn prompts often exceed the context."""
    from cortexlang.ir import FanOut, IntKnob, Workflow
    from runtime.simulator.workloads import edge, llm

    wf = Workflow(name="fan", stages=(llm("plan", 200, 20), llm("read", 6800, 400, max_tokens=600),
                                      llm("sum", 300, 50)),
                  fanouts=(FanOut(name="many", branches=(("read",),), width=IntKnob.fixed(4), join="all"),),
                  entry="plan", edges=(edge("plan", "many"), edge("many", "sum"), edge("sum", "done")))
    layout = shared_layout(DEVICES, "llama8b", workflow=wf, executor_slots=8)
    for pname in ("fcfs", "cortex"):
        yield f"refusal/{pname}/shared", Simulator(program(wf), layout, make_policy(pname), [Stream(wf.name, 3.0)],
                                                   SimConfig(runs=150, seed=5, slo_scale=2.5))


def alike_cases() -> Iterator[tuple[str, Simulator]]:
    """Alike output lengths (``output_correlation``): the retry loop's calls drawn from the run's normal."""
    from cortexlang.ir import LLMStage

    wf = nl2sql()
    wf = wf.model_copy(update={"stages": tuple(s.model_copy(update={"output_correlation": 0.8})
                                               if isinstance(s, LLMStage) else s for s in wf.stages)})
    layout = shared_layout(DEVICES, "llama8b", workflow=wf, executor_slots=32)
    for pname in ("fcfs", "cortex"):
        yield f"alike/{pname}/shared", Simulator(program(wf), layout, make_policy(pname), [Stream(wf.name, 6.0)],
                                                 SimConfig(runs=250, seed=5, slo_scale=2.5, record_calls=True))


def contention_cases() -> Iterator[tuple[str, Simulator]]:
    """Engines that slow each other while both compute (``LatencyProfile`` contention, fluid sharing):
    the shared NL2SQL layout's engines put on one machine with a contention forced into their profiles
    (the simulator does so itself only for CPU engines whose profile measured one)."""
    from dataclasses import replace

    from runtime.engines.shared_cores import SharedCores

    wf = nl2sql()
    layout = shared_layout(DEVICES, "llama8b", workflow=wf, executor_slots=32)
    for pname in ("fcfs", "cortex"):
        sim = Simulator(program(wf), layout, make_policy(pname), [Stream(wf.name, 6.0)],
                        SimConfig(runs=250, seed=5, slo_scale=2.5))
        cores = SharedCores()
        for eng in sim.engines:
            eng.p = replace(eng.p, contention_prefill=1.0, contention_decode=0.6)
            eng.share_cores(cores)
        yield f"contention/{pname}/shared", sim


def trace(n: int = 200, seed: int = 3) -> list[TraceRequest]:
    """``n`` recorded NL2SQL-like requests (generate, SQL, a fix on error, a parallel tool call)."""
    rng = random.Random(seed)
    lines = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(8.0)
        calls = [{"id": "g", "stage": "generate", "kind": "llm", "model": "llama8b",
                  "input_tokens": rng.randint(300, 2000), "output_tokens": rng.randint(10, 200), "prefix_tokens": 256},
                 {"id": "x", "stage": "execute", "kind": "sql", "duration_s": rng.uniform(0.05, 0.5), "parents": ["g"]},
                 {"id": "t", "stage": "lookup", "kind": "tool", "duration_s": rng.uniform(0.01, 0.2), "parents": ["g"]}]
        if rng.random() < 0.4:
            calls.append({"id": "f", "stage": "fix", "kind": "llm", "model": "llama8b",
                          "input_tokens": rng.randint(500, 2500), "output_tokens": rng.randint(10, 150),
                          "parents": ["x", "t"]})
        lines.append(json.dumps({"run_id": f"r{i}", "workflow": "nl2sql", "arrival_s": t, "calls": calls}))
    return parse_trace(lines)


def trace_cases() -> Iterator[tuple[str, Simulator]]:
    """Trace replay (:class:`runtime.simulator.trace.TraceRun`) under three policies."""
    reqs = trace()
    layout = shared_layout({"A100": 1, "H100": 1}, "llama8b", executor_slots=8)
    for pname in ("fcfs", "hexagent", "cortex"):
        yield f"trace/{pname}/shared", Simulator(Program(models=trace_models(reqs)), layout, make_policy(pname),
                                                 trace=reqs, config=SimConfig(seed=5, slo_scale=2.5))


def digests() -> dict[str, str]:
    """Every case's :func:`digest`."""
    return {name: digest(sim.run()) for gen in (cases, refusal_cases, alike_cases, contention_cases, trace_cases)
            for name, sim in gen()}
