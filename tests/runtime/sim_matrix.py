"""A spread of simulations whose results must not depend on how the simulator is built.

Used by ``tests/runtime/test_accel.py`` to compare the compiled simulator with the pure-Python
source: every policy of the registry on three workloads (retry loop, ReAct loop, fan-out), on a
shared pool and on stage-isolated pools, prefill/decode-disaggregated layouts, a malleable
workflow (lighter model options), KV sampling and per-call records. Small on purpose (a few
seconds in all): the digests cover every run's end time, status, pruning and quality, every
engine's counters and the recorded calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from runtime.policies.registry import POLICIES, make_policy
from runtime.simulator.cluster import ReplicaSpec, disaggregate, gpu_replicas, isolated_layout, shared_layout
from runtime.simulator.records import SimResult
from runtime.simulator.sim import SimConfig, Simulator, Stream
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


def digests() -> dict[str, str]:
    """Every case's :func:`digest`."""
    return {name: digest(sim.run()) for name, sim in cases()}
