"""Plan, then verify in the simulator before promising: the loop behind ``cortexc plan``.

The planner predicts latencies analytically (Monte Carlo over queueing
models); the discrete-event simulator is an independent check of the same
plan on the same profiles (:mod:`runtime.simulator.verify`). A workflow
whose plan misses its SLO in simulation is planned again for a tighter
latency target -- the file's latency scaled by how far the simulated
latency at the SLO's attainment overshot it, less a 2% margin (10% tighter
when the runs at that attainment were rejected by the policy) -- until it
holds or :data:`MAX_ROUNDS` plans were tried. Every workflow's final plan
carries its :class:`~planner.plan.Verification`, and its ``slo`` stays the
file's.

This module sits in the CLI layer because it joins the planner (which
never imports the runtime) with the simulator (which never imports the
planner's solver).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from cortexlang.ir import Program
from planner.api import plan_program
from planner.plan import Infeasible, Plan
from runtime.simulator.verify import simulate_plan

MAX_ROUNDS = 4
MARGIN = 0.98
REJECTED_STEP = 0.9
"""Tightening when the runs at the SLO's attainment were rejected (no finite latency to scale by)."""


def tightening(slo_latency_s: float, latency_at_target_s: float) -> float:
    """Factor on the latency target after a miss: how far the simulated latency at the SLO's
    attainment overshot the SLO, less :data:`MARGIN`; :data:`REJECTED_STEP` when that latency is
    infinite (the policy rejected more runs than the SLO allows: only capacity helps)."""
    if not math.isfinite(latency_at_target_s):
        return REJECTED_STEP
    return min(slo_latency_s / latency_at_target_s, 1.0) * MARGIN


def plan_and_verify(program: Program, *, budget_s: float = 2.0, runs: int | None = None,
                    progress: Callable[[str], None] | None = None, policy: str = "fcfs",
                    **plan_kwargs) -> Plan | Infeasible:
    """:func:`planner.api.plan_program` with simulation verification (see module docstring).

    ``budget_s`` is the simulation budget per round, shared by the workflows
    (``runs`` fixes the simulated runs instead, for reproducible results);
    ``policy`` is the scheduling policy the plan is verified under (the
    deployment's: ``cortex`` when Cortex's runtime serves the plan).
    An infeasible first plan is returned as is; when a tightened plan is
    infeasible, the last plan is returned with a verification that says it
    misses.
    """
    say = progress or (lambda _msg: None)
    plan = plan_program(program, progress=progress, **plan_kwargs)
    if isinstance(plan, Infeasible):
        return plan
    original = {w.name: w.slo for w in program.workflows}
    target = {name: slo.latency_s for name, slo in original.items() if slo is not None}
    seed = plan_kwargs.get("seed", 0)
    for round_ in range(1, MAX_ROUNDS + 1):
        say(f"simulating the plan (round {round_})")
        verified = []
        retry = False
        for wp in plan.workflows:
            slo = original.get(wp.workflow)
            try:
                v = simulate_plan(program, plan, wp.workflow, budget_s=budget_s / len(plan.workflows), seed=seed,
                                  slo=slo, runs=runs, policy=policy)
            except ValueError as exc:  # a layout the simulator cannot run: say so, keep the plan
                say(f"{wp.workflow}: not simulated: {exc}")
                verified.append(wp)
                continue
            v = v.model_copy(update={"rounds": round_, "planned_latency_s": target.get(wp.workflow)})
            verified.append(wp.model_copy(update={"slo": slo, "verification": v}))
            if v.holds is False and v.latency_at_target_s and slo is not None:
                target[wp.workflow] = target[wp.workflow] * tightening(slo.latency_s, v.latency_at_target_s)
                retry = True
        plan = plan.model_copy(update={"workflows": tuple(verified)})
        if not retry or round_ == MAX_ROUNDS:
            return plan
        tighter = program.model_copy(update={"workflows": tuple(
            w.model_copy(update={"slo": w.slo.model_copy(update={"latency_s": target[w.name]})})
            if w.slo is not None else w for w in program.workflows)})
        say(f"the plan misses its SLO in simulation: planning for {', '.join(f'{k} <= {v:.3g}s' for k, v in target.items())}")
        again = plan_program(tighter, progress=progress, **plan_kwargs)
        if isinstance(again, Infeasible):
            return plan  # no tighter plan fits: show the last one, whose verification says it misses
        plan = again
    return plan
