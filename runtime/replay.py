"""Replaying a recorded run in the simulator, on the layout that served it, and scoring the simulator.

:func:`replay` turns a :class:`RuntimeSpec` into the simulator's layout (one
simulated replica per engine replica, dedicated to the stages of its pool,
with its ``max_num_seqs`` and KV capacity; one executor group per SQL/tool
pool with its slots), replays the recorded requests (same arrival times,
same calls and token counts, same parents) under the spec's policy, and
returns the simulated per-call and per-run latencies. The latency profiles
are whatever the lookups return: this machine's calibration when
:func:`runtime.profiles.activate` found one.

:func:`compare` sets the measured figures (from the trace's extra fields)
beside the simulated ones: per stage p50/p95 of call latency (Cortex queue
included, as both sides measure it), end to end p50/p99, and the relative
error of each (simulated / measured - 1).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

from runtime.build.spec import RuntimeSpec
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.sim import SimConfig, Simulator
from runtime.simulator.trace import TraceRequest, parse_trace

CPU_BLOCK_TOKENS = 128
"""vLLM's KV block on CPUs (prefix-cache reuse is per whole block); GPUs use 16."""


def layout_of(spec: RuntimeSpec) -> tuple[ReplicaSpec, ...]:
    """The simulator's replicas for the engines and executors ``spec`` starts."""
    out: list[ReplicaSpec] = []
    for pool in spec.llm_pools:
        for rep in pool.replicas:
            out.append(ReplicaSpec(name=rep.replica_id, kind="llm", device=rep.device, model=pool.model, tp=rep.tp,
                                   stages=frozenset(pool.stages), slots=rep.engine.max_num_seqs or 256,
                                   kv_capacity_tokens=rep.kv_capacity_tokens, prewarm=frozenset(pool.prewarm)))
    for ex in spec.executor_pools:
        out.append(ReplicaSpec(name=ex.name, kind="executor", slots=ex.slots, stages=frozenset({ex.stage})))
    return tuple(out)


@dataclass
class Replayed:
    """Simulated latencies of a replayed trace, in the trace's order of runs."""

    run_latency: list[float]
    stage_latency: dict[str, list[float]]
    policy: str


def measured_prefixes(lines: list[str]) -> list[str]:
    """Trace lines whose LLM calls' ``prefix_tokens`` is what the engine really reused: per stage, the
    median of the non-zero ``cached_tokens`` recorded (whole KV blocks; the declared prefix can be off
    by a tokenizer or a template), where any were recorded; other lines and stages unchanged."""
    runs = [json.loads(x) for x in lines if x.strip()]
    hits: dict[str, list[int]] = defaultdict(list)
    for r in runs:
        for c in r["calls"]:
            if c.get("kind", "llm") == "llm" and isinstance(c.get("cached_tokens"), int) and c["cached_tokens"] > 0:
                hits[c["stage"]].append(c["cached_tokens"])
    prefix = {stage: sorted(v)[len(v) // 2] for stage, v in hits.items()}
    for r in runs:
        for c in r["calls"]:
            if c["stage"] in prefix and c.get("kind", "llm") == "llm":
                c["prefix_tokens"] = min(prefix[c["stage"]], int(c.get("input_tokens", 0)))
    return [json.dumps(r) for r in runs]


def replay(spec: RuntimeSpec, lines: list[str], *, policy: str | None = None, seed: int = 0) -> Replayed:
    """Replay trace ``lines`` (docs/trace-format.md) on a simulated copy of ``spec``'s layout, shared
    prefixes as measured (:func:`measured_prefixes`)."""
    requests: list[TraceRequest] = parse_trace(measured_prefixes(lines), "recorded trace")
    cpu = all(rep.device.upper() == "CPU" for pool in spec.llm_pools for rep in pool.replicas)
    sim = Simulator(spec.program, layout_of(spec), make_policy(policy or spec.orchestrator.policy),
                    config=SimConfig(runs=len(requests), seed=seed, warmup_fraction=0.0, record_calls=True,
                                     block_tokens=CPU_BLOCK_TOKENS if cpu else 16),
                    trace=requests)
    result = sim.run()
    run_latency = [math.nan] * len(requests)
    for i, arrival, end in zip(result.run_id.tolist(), result.arrival.tolist(), result.end.tolist()):
        run_latency[i] = end - arrival
    stages: dict[str, list[float]] = defaultdict(list)
    for rec in result.calls:
        _, _, stage, _, _, t_enqueue, _, t_end, *_ = rec
        stages[stage].append(t_end - t_enqueue)
    return Replayed(run_latency, dict(stages), sim.policy.name)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(x for x in xs if not math.isnan(x))
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)


@dataclass
class Row:
    """Measured beside simulated for one quantity."""

    name: str
    quantile: str
    measured: float
    simulated: float
    n: int

    @property
    def error(self) -> float:
        return self.simulated / self.measured - 1.0 if self.measured > 0 else math.nan


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)

    def get(self, name: str, quantile: str) -> Row | None:
        return next((r for r in self.rows if r.name == name and r.quantile == quantile), None)


def compare(lines: list[str], replayed: Replayed, stage_kinds: dict[str, str] | None = None) -> Comparison:
    """Measured (trace) vs simulated (replay): per-stage p50/p95 call latency (LLM stages only when
    ``stage_kinds`` is given), end-to-end p50/p99."""

    runs = [json.loads(x) for x in lines if x.strip()]
    measured_stage: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        for c in r["calls"]:
            if isinstance(c.get("latency_s"), (int, float)):
                measured_stage[c["stage"]].append(float(c["latency_s"]))
    out = Comparison()
    for stage in sorted(measured_stage):
        if stage_kinds is not None and stage_kinds.get(stage) != "llm":
            continue
        sim = replayed.stage_latency.get(stage, [])
        for q in (50, 95):
            out.rows.append(Row(stage, f"p{q}", _pct(measured_stage[stage], q), _pct(sim, q),
                                len(measured_stage[stage])))
    e2e = [float(r["latency_s"]) for r in runs if isinstance(r.get("latency_s"), (int, float))]
    for q in (50, 99):
        out.rows.append(Row("end to end", f"p{q}", _pct(e2e, q), _pct(replayed.run_latency, q), len(e2e)))
    return out


def render(comparison: Comparison, title: str = "measured vs simulated replay") -> str:
    lines = [title, f"  {'':14s} {'':4s} {'measured':>9s} {'simulated':>9s} {'error':>7s} {'n':>4s}"]
    for r in comparison.rows:
        lines.append(f"  {r.name:14s} {r.quantile:4s} {r.measured:8.2f}s {r.simulated:8.2f}s "
                     f"{100 * r.error:+6.1f}% {r.n:4d}")
    return "\n".join(lines) + "\n"


def stage_kinds(spec: RuntimeSpec) -> dict[str, str]:
    return {s.name: s.kind for s in spec.program.workflow(spec.workflow).stages}


__all__ = ["Comparison", "Replayed", "Row", "compare", "layout_of", "render", "replay", "stage_kinds"]
