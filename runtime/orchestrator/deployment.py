"""A running deployment as data, and applying a new plan to it step by step (``cortex apply``).

:func:`describe` reports what serves now: per LLM pool its model, device, replicas
in rotation (as resized), per executor pool its slots, the knobs, and the plan it
was built from with the live replica counts (``plan``: comparable with a new plan
by :func:`planner.render.diff_plans`).

:meth:`Deployment.steps` turns a new plan into ordered steps against the live state:

1. ``scale_out``: a pool that keeps its shape (model, device, TP, engine arguments,
   stages) and needs more replicas gets them in place (:class:`PoolScaler`), one
   step per engine, each warmed before it takes traffic;
2. ``deploy``: everything else (knobs: model variant, max_tokens, retry depth,
   fan-out width, hedging; changed, new or removed pools; executor slots) becomes a
   new :class:`WorkflowVersion` through the orchestrator's hot reload: runs in
   flight finish on the version they started with; a pool whose shape changed gets
   new engines and the old ones stop once their runs are done;
3. ``scale_in``: pools that keep their shape and need fewer replicas drain them last
   (one step per replica), so capacity never drops before what replaces it serves.

:meth:`Deployment.apply` runs them in that order and stops at the first failure;
every step is atomic (a replica is in rotation fully warmed or not at all; a
deploy swaps versions or changes nothing), so a failed apply leaves a consistent
deployment and the report says which steps were done, which failed and which
were not attempted. One apply at a time; ``revision`` changes with every change,
so a client can refuse to apply a diff computed against an older state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planner.plan import Plan
from runtime.build.layout import BuildError, spec_from_plan
from runtime.build.spec import ExecutorPoolSpec, LLMPoolSpec, RuntimeSpec
from runtime.orchestrator.pools import Pool
from runtime.orchestrator.scaling import PoolScaler
from runtime.orchestrator.versions import WorkflowVersion

if TYPE_CHECKING:
    from runtime.orchestrator.orchestrator import Orchestrator

StepStatus = Literal["pending", "running", "done", "failed", "skipped"]


class ApplyError(ValueError):
    """The plan cannot be applied to this deployment (wrong workflow, unknown model...); nothing changed."""


@dataclass
class Step:
    """One step of an apply (see module docstring)."""

    action: Literal["scale_out", "deploy", "scale_in"]
    pool: str | None
    details: tuple[str, ...]
    replicas: int | None = None
    """Target replicas (scale steps)."""
    status: StepStatus = "pending"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shape(lp: LLMPoolSpec) -> str:
    """What must be equal for a pool to be resized in place: all but replica ids, count and CPU binding."""
    rep = lp.replicas[0]
    rep = rep.model_copy(update={"replica_id": "", "engine": rep.engine.model_copy(update={"cpu_threads_bind": None})})
    return json.dumps([sorted(lp.stages), lp.model, rep.model_dump(mode="json")], sort_keys=True)


def _pool_line(lp: LLMPoolSpec) -> str:
    rep = lp.replicas[0]
    return (f"{lp.model} on {rep.device} x {len(lp.replicas)}" + (f" tp{rep.tp}" if rep.tp > 1 else "")
            + f", max_num_seqs {rep.engine.max_num_seqs}")


def _knob_changes(old: RuntimeSpec, new: RuntimeSpec) -> list[str]:
    out = []
    for field in ("models", "max_tokens", "hedge", "retry_depth", "fanout_width"):
        before, after = getattr(old.knobs, field), getattr(new.knobs, field)
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                out.append(f"knob {field}[{key}]: {before.get(key)} -> {after.get(key)}")
    return out


def _executor_changes(old: tuple[ExecutorPoolSpec, ...], new: tuple[ExecutorPoolSpec, ...]) -> list[str]:
    before, after = {e.stage: e for e in old}, {e.stage: e for e in new}
    out = []
    for stage in sorted(before.keys() | after.keys()):
        a, b = before.get(stage), after.get(stage)
        if a != b:
            out.append(f"executor {stage}: {a.slots if a else 'none'} -> {b.slots if b else 'none'} slots")
    return out


class Deployment:
    """Describes a running orchestrator and applies plans to it (see module docstring)."""

    def __init__(self, orchestrator: "Orchestrator", scaler: PoolScaler) -> None:
        self.orchestrator = orchestrator
        self.scaler = scaler
        self._lock = asyncio.Lock()
        self._applies = 0

    # ------------------------------------------------------------------ state
    def version(self, workflow: str | None = None) -> WorkflowVersion:
        try:
            return self.orchestrator.version(workflow)
        except Exception as exc:  # BadRequest: no such workflow / several deployed
            raise ApplyError(str(exc)) from None

    def revision(self, workflow: str | None = None) -> str:
        """Changes whenever the deployment does (a new version, a replica added or removed)."""
        return f"{self.version(workflow).number}.{sum(self.scaler.counts.values())}.{self._applies}"

    def _llm_pools(self, version: WorkflowVersion) -> list[tuple[Pool, LLMPoolSpec]]:
        seen: dict[str, tuple[Pool, LLMPoolSpec]] = {}
        for pool in version.pools.values():
            if pool.kind == "llm" and pool.name not in seen:
                seen[pool.name] = (pool, self.scaler.owner_spec(pool)[1])
        return list(seen.values())

    def live_plan(self, version: WorkflowVersion) -> Plan | None:
        """The plan the version was built from, with each LLM pool's replicas as they are now."""
        plan = version.spec.plan
        if plan is None:
            return None
        workflows = []
        for w in plan.workflows:
            if w.workflow == version.name:
                w = w.model_copy(update={"llm_pools": tuple(
                    p.model_copy(update={"replicas": len(version.pools[p.stage].replicas)})
                    if p.stage in version.pools else p for p in w.llm_pools)})
            workflows.append(w)
        return plan.model_copy(update={"workflows": tuple(workflows)})

    def describe(self, workflow: str | None = None) -> dict[str, Any]:
        """The running deployment as JSON (see module docstring)."""
        version = self.version(workflow)
        pools = []
        for pool, lp in self._llm_pools(version):
            rep = lp.replicas[0]
            pools.append({
                "name": pool.name, "spec": lp.name, "stages": list(lp.stages), "model": lp.model,
                "device": rep.device, "tp": rep.tp, "max_num_seqs": rep.engine.max_num_seqs,
                "replicas": len(pool.replicas), "replica_ids": [r.replica_id for r in pool.replicas],
                "healthy": sum(1 for r in pool.replicas if r.healthy), "queued": pool.queued, "running": pool.running,
            })
        plan = self.live_plan(version)
        return {
            "workflow": version.name, "version": version.number, "revision": self.revision(version.name),
            "layout": version.spec.layout, "backend": version.spec.backend,
            "knobs": version.knobs.model_dump(mode="json"), "llm_pools": pools,
            "executor_pools": [{"stage": e.stage, "kind": e.kind, "slots": e.slots}
                               for e in version.spec.executor_pools],
            "plan": plan.model_dump(mode="json") if plan is not None else None,
        }

    # ------------------------------------------------------------------ planning an apply
    def target(self, plan: Plan, workflow: str | None = None) -> RuntimeSpec:
        """The runtime spec ``plan`` describes for the deployed program (:class:`ApplyError` if none)."""
        current = self.version(workflow).spec
        try:
            return spec_from_plan(current.program, plan, current.workflow, base_dir=Path(current.base_dir),
                                  source=current.source, orchestrator=current.orchestrator, backend=current.backend)
        except (BuildError, KeyError) as exc:
            raise ApplyError(str(exc).strip("'\"")) from None

    def steps(self, target: RuntimeSpec) -> list[Step]:
        """The ordered steps from the live state to ``target`` (empty: nothing to change)."""
        version = self.version(target.workflow)
        live = self._llm_pools(version)
        by_stage = {s: (pool, lp) for pool, lp in live for s in lp.stages}
        outs, ins, changes = [], [], []
        kept: set[str] = set()
        for lp in target.llm_pools:
            pool, cur = by_stage.get(lp.stages[0], (None, None))
            if pool is None or cur is None or _shape(cur) != _shape(lp):
                what = f"pool {lp.name}: " + (f"{_pool_line(cur)} -> " if cur else "new, ") + _pool_line(lp)
                changes.append(what + (" (new engines; the old ones stop once their runs end)" if cur else ""))
                continue
            kept.add(pool.name)
            have, want = len(pool.replicas), len(lp.replicas)
            where = f"({lp.model} on {lp.replicas[0].device})"
            for n in range(have + 1, want + 1):  # one replica per step: each step is atomic
                outs.append(Step("scale_out", pool.name, (f"replicas {n - 1} -> {n} {where}",), n))
            for n in range(have - 1, want - 1, -1):
                ins.append(Step("scale_in", pool.name, (f"replicas {n + 1} -> {n} {where}",), n))
        for pool, lp in live:
            if pool.name not in kept and not any(s in {x for p in target.llm_pools for x in p.stages}
                                                 for s in lp.stages):
                changes.append(f"pool {pool.name}: removed (stops once its runs end)")
        changes += _knob_changes(version.spec, target)
        changes += _executor_changes(version.spec.executor_pools, target.executor_pools)
        deploy = [Step("deploy", None, tuple(changes))] if changes else []
        return [*outs, *deploy, *ins]

    # ------------------------------------------------------------------ applying
    async def apply(self, target: RuntimeSpec, *, expect_revision: str | None = None,
                    on_step: Callable[[Step], None] | None = None) -> list[Step]:
        """Apply ``target`` step by step (see module docstring); the steps with their final status.

        ``expect_revision``: refuse (:class:`ApplyError`, nothing changed) when the deployment is no
        longer at that revision. ``on_step`` is told of every status change (progress)."""
        async with self._lock:
            if expect_revision is not None and expect_revision != self.revision(target.workflow):
                raise ApplyError(f"the deployment changed since the diff was made (revision "
                                 f"{self.revision(target.workflow)}, expected {expect_revision}); look again")
            steps = self.steps(target)
            targets = {lp.stages[0]: lp for lp in target.llm_pools}
            failed = False
            for step in steps:
                if failed:
                    step.status = "skipped"
                    continue
                step.status = "running"
                if on_step is not None:
                    on_step(step)
                try:
                    await self._run(step, target, targets)
                    step.status = "done"
                except Exception as exc:  # reported in the step, never raised past the apply
                    step.status, step.error, failed = "failed", str(exc) or type(exc).__name__, True
                if on_step is not None:
                    on_step(step)
            for step in steps:
                if failed and step.status == "skipped" and on_step is not None:
                    on_step(step)
            self._applies += 1
            return steps

    async def _run(self, step: Step, target: RuntimeSpec, targets: dict[str, LLMPoolSpec]) -> None:
        version = self.version(target.workflow)
        if step.action != "deploy":
            assert step.pool is not None and step.replicas is not None
            pool = self.scaler.pool(step.pool)
            lp = next(t for s, t in targets.items() if s in self.scaler.owner_spec(pool)[1].stages)
            await self.scaler.resize(step.pool, step.replicas, target=lp, reason="cortex apply")
            return
        # Pools resized in place are the target's pools now: a deploy keeps their engines.
        adopted = []
        for pool, lp in self._llm_pools(version):
            new = targets.get(lp.stages[0])
            if new is not None and _shape(new) == _shape(lp):
                adopted.append((pool, self.orchestrator.adopt_pool_spec(pool, new), lp, new))
        try:
            await self.orchestrator.deploy(target)
        except BaseException:
            for pool, key, _, _ in adopted:
                self.orchestrator.restore_pool_key(pool, key)
            raise
        for pool, _, _, new in adopted:
            named = {r.replica_id: r for r in new.replicas}
            live = tuple(named.get(r.replica_id) or new.replicas[0].model_copy(update={"replica_id": r.replica_id})
                         for r in pool.replicas)
            self.scaler.adopt(pool, new.model_copy(update={"replicas": live}))
            pool.max_queue = new.max_queue


__all__ = ["ApplyError", "Deployment", "Step"]
