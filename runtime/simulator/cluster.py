"""Cluster layouts: which replicas exist, what they serve, and on which devices.

A layout is a flat tuple of :class:`ReplicaSpec`. An LLM replica runs one model
(a declared :class:`cortexlang.ir.ModelSpec` name) on ``tp`` devices of one
kind; an executor replica is a group of CPU slots for SQL/tool calls. ``stages``
names the stages a replica is dedicated to; ``None`` puts it in the generic
shared pool, eligible for every stage that uses its model (or, for executors,
every SQL/tool stage).

Allocators here build the layouts the experiments compare on *the same
devices*: :func:`shared_layout` (one generic pool per model, today's vLLM /
SGLang deployment) and :func:`isolated_layout` (one dedicated pool per LLM
stage, sized in proportion to the stage's expected work), plus
:func:`layout_from_plan` for planner-sized pools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from cortexlang.ir import LLMStage, Program, Workflow
from planner.plan import Plan
from planner.profiles import LINK_BYTES_PER_S, LatencyProfile, get_profile, profiles_for
from runtime.policies.base import Role

DEFAULT_MAX_BATCH = 256
DEFAULT_LINK_BYTES_PER_S = LINK_BYTES_PER_S
"""Default KV-transfer bandwidth between disaggregated replicas (400 Gb/s RDMA): one documented input,
:data:`planner.profiles.LINK_BYTES_PER_S` (the planner's P/D model reads the same)."""


@dataclass(frozen=True)
class ReplicaSpec:
    """One engine replica or executor group."""

    name: str
    kind: Literal["llm", "executor"]
    device: str = "CPU"
    model: str | None = None
    tp: int = 1
    stages: frozenset[str] | None = None
    role: Role = "mixed"
    slots: int = DEFAULT_MAX_BATCH
    """Max concurrent sequences (LLM) or executor slots."""
    kv_capacity_tokens: int | None = None
    """Override of the profile's KV capacity (e.g. a planner's KV budget)."""
    link_bytes_per_s: float = DEFAULT_LINK_BYTES_PER_S
    prewarm: frozenset[str] = frozenset()
    """Stages whose shared prompt prefix is resident when the simulation starts (the plan's prewarm
    decisions, which the runtime applies before a replica's first call: runtime/orchestrator/prewarm.py)."""


class LayoutError(ValueError):
    """A layout cannot serve a workflow (a stage has no eligible replica, ...)."""


def model_profile(program: Program, model: str, device: str, tp: int) -> LatencyProfile:
    """The performance profile of a declared model on a device kind at ``tp``."""
    spec = program.model(model)
    if spec.profile is None:
        raise LayoutError(f"model {model!r} declares no performance profile")
    return get_profile(spec.profile, device, tp)


def stage_llm_work(program: Program, workflow: Workflow, visits: Mapping[str, float]) -> dict[str, float]:
    """Relative GPU work per LLM stage: visits x standalone time on an H100-class reference."""
    work: dict[str, float] = {}
    for stage in workflow.stages:
        if isinstance(stage, LLMStage):
            spec = program.model(stage.models[0].model)
            # H100-class reference: the lowest TP with an H100 profile (a 70B model needs TP >= 4).
            prof = (profiles_for(spec.profile, "H100") or (None,))[0] if spec.profile else None
            per_call = prof.request_s(stage.input_tokens, min(stage.output_tokens, 64)) if prof else 1.0
            work[stage.name] = visits.get(stage.name, 0.0) * per_call
    return work


def _split(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer split of ``total`` in proportion to ``weights``, at least 1 each (largest remainder)."""
    names = sorted(weights)
    if total < len(names):
        raise LayoutError(f"{total} replicas cannot give each of {len(names)} stages its own pool")
    wsum = sum(weights.values()) or 1.0
    spare = total - len(names)
    raw = {n: spare * weights[n] / wsum for n in names}
    out = {n: 1 + int(raw[n]) for n in names}
    left = total - sum(out.values())
    for n in sorted(names, key=lambda n: (-(raw[n] - int(raw[n])), n))[:left]:
        out[n] += 1
    return out


def gpu_replicas(devices: Mapping[str, int], model: str, tp: int, prefix: str = "") -> list[ReplicaSpec]:
    """One generic LLM replica per ``tp`` devices, for each device kind (sorted, fastest kinds last)."""
    reps: list[ReplicaSpec] = []
    for kind in sorted(devices):
        for i in range(devices[kind] // tp):
            reps.append(ReplicaSpec(name=f"{prefix}{model}-{kind}-{i}", kind="llm", device=kind, model=model, tp=tp))
    return reps


def executor_replicas(workflow: Workflow, slots: int, dedicated: bool) -> list[ReplicaSpec]:
    """SQL/tool executor groups: one generic group, or one per stage splitting ``slots`` evenly."""
    exec_stages = sorted(s.name for s in workflow.stages if s.kind != "llm")
    if not exec_stages:
        return []
    if not dedicated:
        return [ReplicaSpec(name="executors", kind="executor", slots=slots)]
    per = _split(slots, {s: 1.0 for s in exec_stages})
    return [ReplicaSpec(name=f"exec-{s}", kind="executor", slots=per[s], stages=frozenset({s})) for s in exec_stages]


def shared_layout(devices: Mapping[str, int], model: str, *, tp: int = 1, executor_slots: int = 16,
                  workflow: Workflow | None = None) -> tuple[ReplicaSpec, ...]:
    """Every device in one generic pool of ``model`` replicas, plus one generic executor group."""
    reps = gpu_replicas(devices, model, tp)
    if workflow is not None:
        reps += executor_replicas(workflow, executor_slots, dedicated=False)
    else:
        reps.append(ReplicaSpec(name="executors", kind="executor", slots=executor_slots))
    return tuple(reps)


def isolated_layout(devices: Mapping[str, int], program: Program, workflow: Workflow,
                    visits: Mapping[str, float], *, tp: int = 1, executor_slots: int = 16) -> tuple[ReplicaSpec, ...]:
    """Stage-isolated pools on the same devices as :func:`shared_layout`.

    Replicas are split across LLM stages in proportion to their expected work
    (``visits`` x standalone time). Device kinds are dealt round-robin within
    each stage's share, fastest kinds first to the heaviest stage, so every
    pool gets a comparable mix of a heterogeneous cluster. Executor slots stay
    one shared group (they are cheap and interchangeable).
    """
    work = stage_llm_work(program, workflow, visits)
    model = {s.name: s.models[0].model for s in workflow.stages if isinstance(s, LLMStage)}
    pool = gpu_replicas(devices, model[next(iter(sorted(model)))], tp)
    counts = _split(len(pool), work)
    # Interleave device kinds so each stage gets a fair mix (heterogeneous clusters).
    by_kind: dict[str, list[ReplicaSpec]] = {}
    for r in pool:
        by_kind.setdefault(r.device, []).append(r)
    order: list[ReplicaSpec] = []
    while any(by_kind.values()):
        for kind in sorted(by_kind, reverse=True):
            if by_kind[kind]:
                order.append(by_kind[kind].pop())
    reps: list[ReplicaSpec] = []
    for stage in sorted(counts, key=lambda s: (-work[s], s)):
        for _ in range(counts[stage]):
            base = order.pop(0)
            reps.append(replace(base, name=f"{stage}-{base.device}-{len(reps)}", model=model[stage],
                                stages=frozenset({stage})))
    reps += executor_replicas(workflow, executor_slots, dedicated=False)
    return tuple(reps)


def layout_from_plan(plan: Plan, workflow: str | None = None) -> tuple[ReplicaSpec, ...]:
    """The replicas a planner :class:`~planner.plan.Plan` sizes, one pool per plan pool.

    LLM pools keep the plan's device, tp, ``max_num_seqs`` and KV budget, and
    serve every stage the plan gives them (one, or several for a shared pool);
    each executor pool becomes one dedicated executor group with the plan's
    slots. The plan's knobs are applied separately (``Simulator(knobs=...)``).
    A disaggregated pool (``LLMPool.prefill_replicas``) becomes that many
    ``role="prefill"`` replicas and the rest ``role="decode"``, all dedicated to
    the pool's stage (so the router pairs a prefill and a decode replica of it).
    """
    wp = plan.workflow(workflow)
    reps: list[ReplicaSpec] = []
    for pool in wp.llm_pools:
        for i in range(pool.replicas):
            role: Role = "mixed" if not pool.disaggregated else "prefill" if i < pool.prefill_replicas else "decode"
            reps.append(ReplicaSpec(
                name=f"{pool.stage}-{pool.device}-{i}" + ("" if role == "mixed" else f"-{role}"), kind="llm",
                device=pool.device, model=pool.model, role=role,
                tp=pool.tp, stages=frozenset(pool.stages), slots=pool.max_num_seqs,
                kv_capacity_tokens=pool.kv_budget_tokens or None,
                prewarm=frozenset(pool.prewarm_stages),
            ))
    for ex in wp.executor_pools:
        reps.append(ReplicaSpec(name=f"exec-{ex.stage}", kind="executor", slots=ex.slots,
                                stages=frozenset({ex.stage})))
    return tuple(reps)


def pooled(layout: Sequence[ReplicaSpec]) -> tuple[ReplicaSpec, ...]:
    """The same replicas with every dedication dropped: one generic pool per model, same devices.

    This is the fair shared-pool baseline for any isolated layout (planner-sized
    or not): identical GPUs, models, TP degrees and executor slots.
    """
    return tuple(replace(r, stages=None) for r in layout)


def disaggregate(layout: Sequence[ReplicaSpec], prefill: Mapping[str, int], *, model: str | None = None,
                 prefill_slots: int = 64) -> tuple[ReplicaSpec, ...]:
    """The same replicas split into prefill and decode roles (prefill/decode disaggregation).

    For each device kind, the first ``prefill[kind]`` LLM replicas of that kind
    (layout order; of ``model`` only, when given) become ``role="prefill"``
    replicas of one shared prefill pool (stage dedication dropped,
    ``prefill_slots`` concurrent prompts); every other replica of a split model
    becomes ``role="decode"`` and keeps its stages and batch cap. Replicas of
    other models and executors are unchanged. Each split model must keep at
    least one replica of each role, else :class:`LayoutError`.
    """
    left = dict(prefill)
    out: list[ReplicaSpec] = []
    for r in layout:
        if r.kind != "llm" or (model is not None and r.model != model):
            out.append(r)
        elif left.get(r.device, 0) > 0:
            left[r.device] -= 1
            out.append(replace(r, role="prefill", stages=None, slots=prefill_slots))
        else:
            out.append(replace(r, role="decode"))
    short = {k: n for k, n in left.items() if n > 0}
    if short:
        raise LayoutError(f"not enough {model + ' ' if model else ''}replicas to turn into prefill replicas: "
                          f"{short} missing")
    split = {r.model for r in out if r.kind == "llm" and r.role != "mixed"}
    for m in sorted(split, key=str):
        roles = {r.role for r in out if r.kind == "llm" and r.model == m}
        if roles != {"prefill", "decode"}:
            raise LayoutError(f"model {m!r} needs both prefill and decode replicas, has {sorted(roles)}")
        decoders = [r for r in out if r.kind == "llm" and r.model == m and r.role == "decode"]
        if all(r.stages is not None for r in decoders):  # dedicated pools: each needs a decoder left
            served = {st for r in layout if r.kind == "llm" and r.model == m and r.stages for st in r.stages}
            orphans = served - {st for r in decoders for st in r.stages or ()}
            if orphans:
                raise LayoutError(f"stage(s) {', '.join(sorted(orphans))} would keep no {m} decode replica")
    return tuple(out)


def devices_of(layout: tuple[ReplicaSpec, ...]) -> dict[str, int]:
    """GPU devices a layout occupies, by kind (executors excluded)."""
    out: dict[str, int] = {}
    for r in layout:
        if r.kind == "llm":
            out[r.device] = out.get(r.device, 0) + r.tp
    return out
