"""Small IR workflows and layouts for simulator tests."""

from __future__ import annotations

from cortexlang.ir import SLO, Condition, Edge, Program, ToolStage, Workflow
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.workloads import LLAMA8B, edge, llm


def tool_only(service_s: float = 0.1, cv: float = 1.0) -> Workflow:
    """One tool call per run: the executor group is an M/G/c queue."""
    return Workflow(name="tool", stages=(ToolStage(name="t", entry="m:f", service_s=service_s, service_cv=cv),),
                    entry="t", edges=(edge("t", "done"),))


def one_llm(inp: int = 500, out: int = 50, prefix: int = 0) -> Workflow:
    return Workflow(name="one", stages=(llm("gen", inp, out, prefix=prefix),), entry="gen",
                    edges=(edge("gen", "done"),), slo=SLO(latency_s=5.0, attainment=0.99))


def prog(*wfs: Workflow) -> Program:
    return Program(models=(LLAMA8B,), workflows=wfs)


def engines(n: int, device: str = "H100", slots: int = 256, kv: int | None = None,
            stages: frozenset[str] | None = None, prefix: str = "e") -> list[ReplicaSpec]:
    return [ReplicaSpec(name=f"{prefix}{i}", kind="llm", device=device, model="llama8b", slots=slots,
                        kv_capacity_tokens=kv, stages=stages) for i in range(n)]


def executors(slots: int) -> list[ReplicaSpec]:
    return [ReplicaSpec(name="x", kind="executor", slots=slots)]


__all__ = ["tool_only", "one_llm", "prog", "engines", "executors", "Condition", "Edge"]
