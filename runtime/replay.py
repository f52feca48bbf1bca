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

With ``pinned=True`` each recorded LLM call is put on the replica that served it
(:class:`RecordedPlacement`): the replay then tests the engine model alone, on the
same placement, where the plain replay also tests the policy's routing, whose
choices depend on simulated engine states that differ from the recorded ones.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runtime.build.spec import RuntimeSpec
from runtime.policies.base import (Adaptation, Admission, CallView, Policy, PriorityKey, ReplicaView, Route,
                                   StageLoad, route_to)
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
        split = bool(pool.prefill_replicas)  # a P/D pool: its prefill engines, then its decode engines
        for role, reps in (("prefill", pool.prefill_replicas), ("decode" if split else "mixed", pool.replicas)):
            for rep in reps:
                out.append(ReplicaSpec(name=rep.replica_id, kind="llm", device=rep.device, model=pool.model,
                                       tp=rep.tp, stages=frozenset(pool.stages), slots=rep.engine.max_num_seqs or 256,
                                       kv_capacity_tokens=rep.kv_capacity_tokens, prewarm=frozenset(pool.prewarm),
                                       role=role))
    for ex in spec.executor_pools:
        out.append(ReplicaSpec(name=ex.name, kind="executor", slots=ex.slots, stages=frozenset({ex.stage})))
    return tuple(out)


@dataclass
class Replayed:
    """Simulated latencies of a replayed trace, in the trace's order of runs."""

    run_latency: list[float]
    stage_latency: dict[str, list[float]]
    policy: str
    call_latency: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    """Per (run index, stage): its calls' simulated latencies in the order they were queued."""
    call_replica: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    """Per (run index, stage): the replicas its calls ran on, in the order they were queued."""
    pinned: tuple[int, int] | None = None
    """With ``pinned``: (LLM calls put on their recorded replica, recorded LLM calls); None otherwise."""


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


def recorded_placement(lines: list[str]) -> dict[tuple[int, str], list[str]]:
    """Per (run index, stage): the replicas the recorded LLM calls ran on, in the order they started.
    Runs are numbered in order of arrival, as :func:`replay` numbers them."""
    runs = sorted((json.loads(x) for x in lines if x.strip()), key=lambda r: float(r["arrival_s"]))
    out: dict[tuple[int, str], list[str]] = defaultdict(list)
    for i, r in enumerate(runs):
        for c in sorted(r["calls"], key=_started):
            if c.get("kind", "llm") == "llm" and isinstance(c.get("replica"), str):
                out[(i, c["stage"])].append(c["replica"])
    return dict(out)


def _started(call: dict) -> float:
    """A recorded call's start within its run (0 where the trace has none: an optional field)."""
    value = call.get("started_s")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


class RecordedPlacement(Policy):
    """``inner``'s decisions, except that each LLM call goes to the replica its recorded run used.

    Contract: :meth:`route` takes, per (run, stage), the next recorded replica and returns it when it is
    among the candidates. Other pools' replicas are offered whenever they have a free batch slot and
    no queue (``borrow_spare``), as the runtime borrows, so a recorded borrowed call can land where it
    ran. A call with no recorded replica (SQL, tools) or whose replica is not offered (its queue was
    not empty in the simulation) is routed by ``inner`` among the candidates ``inner`` would see.
    Queue order, admission, adaptation, pruning and preemption are ``inner``'s. (A hedge's duplicate is
    routed as a call of its own and takes the next recorded entry: replay hedged runs unpinned.)
    """

    def __init__(self, inner: Policy, placement: Mapping[tuple[int, str], Sequence[str]]) -> None:
        super().__init__(name=inner.name, preemptive=inner.preemptive, requeue_interval_s=inner.requeue_interval_s,
                         borrow_idle=True, borrow_spare=True, description=inner.description)
        self.inner = inner
        self.placement = {key: deque(replicas) for key, replicas in placement.items()}
        self.recorded = sum(len(v) for v in placement.values())
        self.pinned = 0
        """Calls put on their recorded replica."""

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        queue = self.placement.get((call.run_id, call.stage))
        if queue:
            wanted = queue.popleft()
            if any(v.replica_id == wanted for v in candidates):
                self.pinned += 1
                return route_to(wanted)
        if not self.inner.borrow_idle:
            candidates = [v for v in candidates if not v.borrowed] or candidates
        return self.inner.route(call, candidates)

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        return self.inner.admit(call, load)

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        return self.inner.adapt(call, load)

    def priority(self, call: CallView) -> PriorityKey:
        return self.inner.priority(call)

    def prune_retry(self, call: CallView, loop: str, iteration: int, load: StageLoad) -> bool:
        return self.inner.prune_retry(call, loop, iteration, load)

    def preempts(self, waiting: PriorityKey, running: PriorityKey) -> bool:
        return self.inner.preempts(waiting, running)


def replay(spec: RuntimeSpec, lines: list[str], *, policy: str | None = None, seed: int = 0,
           pinned: bool = False) -> Replayed:
    """Replay trace ``lines`` (docs/trace-format.md) on a simulated copy of ``spec``'s layout, shared
    prefixes as measured (:func:`measured_prefixes`); with ``pinned``, each LLM call on the replica
    the trace recorded for it (:class:`RecordedPlacement`). A malformed trace raises
    :class:`runtime.simulator.trace.TraceError` naming its line."""
    # Validate the lines as written first: the prefix and placement readers below trust the format
    # (a hostile line made them fail with a KeyError or TypeError naming no line).
    parse_trace(lines, "recorded trace")
    requests: list[TraceRequest] = parse_trace(measured_prefixes(lines), "recorded trace")
    cpu = all(rep.device.upper() == "CPU" for pool in spec.llm_pools for rep in pool.replicas)
    chosen: Policy = make_policy(policy or spec.orchestrator.policy)
    if pinned:
        chosen = RecordedPlacement(chosen, recorded_placement(lines))
    sim = Simulator(spec.program, layout_of(spec), chosen,
                    config=SimConfig(runs=len(requests), seed=seed, warmup_fraction=0.0, record_calls=True,
                                     block_tokens=CPU_BLOCK_TOKENS if cpu else 16),
                    trace=requests)
    result = sim.run()
    run_latency = [math.nan] * len(requests)
    for i, arrival, end in zip(result.run_id.tolist(), result.arrival.tolist(), result.end.tolist()):
        run_latency[i] = end - arrival
    stages: dict[str, list[float]] = defaultdict(list)
    per_call: dict[tuple[int, str], list[tuple[float, float, str]]] = defaultdict(list)
    for rec in result.calls:
        run, _, stage, _, replica, t_enqueue, _, t_end, *_ = rec
        stages[stage].append(t_end - t_enqueue)
        per_call[(run, stage)].append((t_enqueue, t_end - t_enqueue, replica))
    ordered = {key: sorted(calls) for key, calls in per_call.items()}
    return Replayed(run_latency, dict(stages), sim.policy.name,
                    {key: [lat for _, lat, _ in calls] for key, calls in ordered.items()},
                    {key: [replica for _, _, replica in calls] for key, calls in ordered.items()},
                    (chosen.pinned, chosen.recorded) if isinstance(chosen, RecordedPlacement) else None)


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


@dataclass
class CallErrors:
    """Per-call error of the replay for one stage: each recorded call against the simulated call it
    replays (same run, same stage, the same position in the run's order of queueing)."""

    stage: str
    errors: list[float]
    """simulated / measured - 1, one per paired call."""

    def quantile(self, q: float, *, absolute: bool = False) -> float:
        return _pct([abs(e) for e in self.errors] if absolute else self.errors, q)

    def within(self, bound: float) -> float:
        """Share of calls whose error is within ``bound`` (e.g. 0.25 for ±25%)."""
        return sum(abs(e) <= bound for e in self.errors) / len(self.errors) if self.errors else math.nan


def call_errors(lines: list[str], replayed: Replayed, stage_kinds: dict[str, str] | None = None) -> list[CallErrors]:
    """The distribution of per-call errors, per stage (LLM stages only when ``stage_kinds`` is given).
    A call is paired with the simulated call of the same run and stage queued at the same position;
    calls without a partner (a run the replay ended differently) are left out."""
    # the replay numbers runs in order of arrival (parse_trace's stable sort of the lines): the same here
    runs = sorted((json.loads(x) for x in lines if x.strip()), key=lambda r: float(r["arrival_s"]))
    errors: dict[str, list[float]] = defaultdict(list)
    for i, r in enumerate(runs):
        recorded: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for c in r["calls"]:
            if isinstance(c.get("latency_s"), (int, float)) and c["latency_s"] > 0:
                recorded[c["stage"]].append((float(c.get("started_s", 0.0)), float(c["latency_s"])))
        for stage, calls in recorded.items():
            if stage_kinds is not None and stage_kinds.get(stage) != "llm":
                continue
            simulated = replayed.call_latency.get((i, stage), [])
            for (_, measured), sim in zip(sorted(calls), simulated):
                errors[stage].append(sim / measured - 1.0)
    return [CallErrors(stage, errors[stage]) for stage in sorted(errors)]


def render(comparison: Comparison, title: str = "measured vs simulated replay") -> str:
    lines = [title, f"  {'':14s} {'':4s} {'measured':>9s} {'simulated':>9s} {'error':>7s} {'n':>4s}"]
    for r in comparison.rows:
        lines.append(f"  {r.name:14s} {r.quantile:4s} {r.measured:8.2f}s {r.simulated:8.2f}s "
                     f"{100 * r.error:+6.1f}% {r.n:4d}")
    return "\n".join(lines) + "\n"


def stage_kinds(spec: RuntimeSpec) -> dict[str, str]:
    return {s.name: s.kind for s in spec.program.workflow(spec.workflow).stages}


__all__ = ["CallErrors", "Comparison", "RecordedPlacement", "Replayed", "Row", "call_errors", "compare", "layout_of",
           "recorded_placement", "render", "replay", "stage_kinds"]
