"""Plan, then verify in the simulator before promising: the loop behind ``cortexc plan``.

The planner predicts latencies analytically (Monte Carlo over queueing
models); the discrete-event simulator is an independent check of the same
plan on the same profiles (:mod:`runtime.simulator.verify`). A workflow
whose plan misses its SLO in simulation is planned again for a tighter
latency target -- the file's latency scaled by how far the simulated
latency at the SLO's attainment overshot it, less a 2% margin (10% tighter
when the runs at that attainment were rejected by the policy), but never by
less than :data:`MIN_FACTOR` in one round -- until it holds or
:data:`MAX_ROUNDS` plans were tried. A plan that overshoots by 100x is
unstable (its queues grow), not 100x too slow: scaling the target by the
overshoot would ask for the impossible and end the search with the failing
plan. When no plan meets a tighter target, the step is halved (on a log
scale: the factor's square root) up to :data:`BACKOFFS` times before the
last plan is kept. A miss within the sampling
error (the target inside the attainment's 95% interval) is not yet a miss:
the plan is simulated again on a fresh seed with twice the runs, and that
larger sample decides. Every workflow's final plan
carries its :class:`~planner.plan.Verification`, and its ``slo`` stays the
file's.

The verification is also a measurement (:mod:`planner.verified_dispersion`):
each stage's arrivals' index of dispersion in that simulation. Where it is
burstier than the planner predicted for the same pools, the plan is made
again with the measured indices (the planner's queueing tables, its own) and
verified again -- before any tightening, since a plan sized for the traffic it
causes may hold where a tightened one was needed -- at most
:data:`FEEDBACK_ROUNDS` times, each round's measurements merged with the
earlier ones (window by window, the burstier). A re-plan that deploys the same
pools and knobs keeps its simulation (the same seed gives the same runs). Not
for plans that assumed CPU contention (their re-plans do not share the cache
that holds the predictions measured against).

This module sits in the CLI layer because it joins the planner (which
never imports the runtime) with the simulator (which never imports the
planner's solver).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from cortexlang.ir import SLO, Program
from planner.api import PlanningCache, plan_program
from planner.plan import Infeasible, MeasuredArrivals, Plan, Verification
from planner.verified_dispersion import merged, raised
from runtime.simulator.cluster import layout_from_plan
from runtime.simulator.verify import Measured, measure_plan

MAX_ROUNDS = 4
MARGIN = 0.98
REJECTED_STEP = 0.9
"""Tightening when the runs at the SLO's attainment were rejected (no finite latency to scale by)."""
MIN_FACTOR = 0.5
"""The most one round tightens the latency target (a factor on it)."""
BACKOFFS = 3
"""Times a step is halved (log scale) when the tighter target has no plan: 0.5 -> 0.71 -> 0.84 -> 0.92."""


CONFIRM_FACTOR = 2
"""A miss inside the attainment's confidence interval is re-simulated on a new seed with this many times
the runs; that larger sample decides."""
FEEDBACK_ROUNDS = 0
"""Default re-plans with the arrivals' dispersion measured in verification (``cortexc plan --verify-feedback N``
asks for N). Off by default: on ``benchmarks/plan_vs_sim.py`` one round brought 34 of 37 cases within +-10%
against 33 (26 of 29 either way on the second set), made react_agent 34% costlier (its SLO,
missed by 3% at p99 on the check seed, then held), and took 1.9-2.4x the CPU
time of none on ``benchmarks/plan_bench.py``'s binding 20-stage verified case (two rounds 3.0-3.5x, the same
rows): not worth its time as a default."""


def inconclusive(v: Verification, slo: SLO | None) -> bool:
    """Whether ``v`` misses ``slo`` by less than its sampling error (the target inside its 95% interval)."""
    return (slo is not None and v.holds is False and v.attainment_interval is not None
            and v.attainment_interval[1] >= slo.attainment and math.isfinite(v.latency_at_target_s or 0.0))


def tightening(slo_latency_s: float, latency_at_target_s: float) -> float:
    """Factor on the latency target after a miss: how far the simulated latency at the SLO's
    attainment overshot the SLO, less :data:`MARGIN`, at most a step of :data:`MIN_FACTOR`;
    :data:`REJECTED_STEP` when that latency is infinite (the policy rejected more runs than the
    SLO allows: only capacity helps)."""
    if not math.isfinite(latency_at_target_s):
        return REJECTED_STEP
    return max(min(slo_latency_s / latency_at_target_s, 1.0) * MARGIN, MIN_FACTOR)


def plan_and_verify(program: Program, *, budget_s: float = 2.0, runs: int | None = None,
                    progress: Callable[[str], None] | None = None, policy: str = "fcfs",
                    policy_params: Mapping[str, object] | None = None, feedback_rounds: int = FEEDBACK_ROUNDS,
                    **plan_kwargs) -> Plan | Infeasible:
    """:func:`planner.api.plan_program` with simulation verification (see module docstring).

    ``budget_s`` is the simulation budget per round, shared by the workflows
    (``runs`` fixes the simulated runs instead, for reproducible results);
    ``policy`` is the scheduling policy the plan is verified under (the
    deployment's: ``cortex`` when Cortex's runtime serves the plan; ``policy_params``
    override its parameters); ``feedback_rounds`` bounds the re-plans with the measured dispersion
    (0: none, the analytic dispersion only).
    An infeasible first plan is returned as is; when a tightened plan is
    infeasible, the last plan is returned with a verification that says it
    misses; when a plan with the measured dispersion is infeasible, the plan
    before it is kept (and tightened if it misses).
    """
    say = progress or (lambda _msg: None)
    cache = PlanningCache()  # the tightened plans differ only in their latency targets: same candidates
    plan = plan_program(program, progress=progress, cache=cache, **plan_kwargs)
    if isinstance(plan, Infeasible):
        return plan
    original = {w.name: w.slo for w in program.workflows}
    target = {name: slo.latency_s for name, slo in original.items() if slo is not None}
    seed = plan_kwargs.get("seed", 0)
    factor: dict[str, float] = {}  # per workflow that missed this round: the step on its target
    measured: dict[str, dict[str, MeasuredArrivals]] = {}  # what the current plan was built with
    simulated: dict[str, tuple[tuple, Measured]] = {}  # per workflow: the last deployment simulated, its result
    rounds = feedbacks = tightenings = 0
    while True:
        rounds += 1
        say(f"simulating the plan (round {rounds})")
        verified = []
        retry = False
        seen: dict[str, dict[str, MeasuredArrivals]] = {}
        for wp in plan.workflows:
            slo = original.get(wp.workflow)
            share = budget_s / len(plan.workflows)
            try:
                key = _deployment(plan, wp.workflow)
                got = simulated[wp.workflow][1] if simulated.get(wp.workflow, (None,))[0] == key else None
                if got is None:
                    got = measure_plan(program, plan, wp.workflow, budget_s=share, seed=seed, slo=slo, runs=runs,
                                       policy=policy, policy_params=policy_params, arrivals=feedback_rounds > 0)
                    if inconclusive(got.verification, slo):  # a miss within the sampling error: a larger sample
                        say(f"{wp.workflow}: inconclusive at {got.verification.runs} runs: simulating "
                            f"{CONFIRM_FACTOR}x as many")
                        got = measure_plan(program, plan, wp.workflow, budget_s=CONFIRM_FACTOR * share,
                                           seed=seed + 1, slo=slo, runs=None if runs is None else CONFIRM_FACTOR * runs,
                                           policy=policy, policy_params=policy_params, arrivals=feedback_rounds > 0)
                    simulated[wp.workflow] = key, got
            except ValueError as exc:  # a layout the simulator cannot run: say so, keep the plan
                say(f"{wp.workflow}: not simulated: {exc}")
                verified.append(wp)
                continue
            seen[wp.workflow] = got.arrivals
            v = got.verification.model_copy(update={"rounds": rounds, "planned_latency_s": target.get(wp.workflow)})
            verified.append(wp.model_copy(update={"slo": slo, "verification": v}))
            if v.holds is False and v.latency_at_target_s and slo is not None:
                factor[wp.workflow] = tightening(slo.latency_s, v.latency_at_target_s)
                retry = True
        plan = plan.model_copy(update={"workflows": tuple(verified)})
        if feedbacks < feedback_rounds and plan.cpu_contention is None:
            now = {w: merged(measured.get(w, {}), a) for w, a in seen.items()}
            burstier = {w: raised(cache.arrivals.get(w, {}), measured.get(w, {}), now[w]) for w in now}
            if any(burstier.values()):
                feedbacks += 1
                say("arrivals burstier in simulation than predicted ("
                    + "; ".join(f"{w}: {', '.join(s)}" for w, s in burstier.items() if s)
                    + "): planning with the simulated dispersion")
                again = plan_program(_with_latency_targets(program, target), progress=progress, cache=cache,
                                     measured=now, **plan_kwargs)
                if not isinstance(again, Infeasible):
                    measured, plan, factor = now, again, {}
                    continue
                feedbacks = feedback_rounds  # the burstier model fits no plan: keep this one
        tightenings += 1
        if not retry or tightenings == MAX_ROUNDS:
            return plan
        for _ in range(BACKOFFS + 1):
            tried = {name: target[name] * f for name, f in factor.items()}
            say(f"the plan misses its SLO in simulation: planning for "
                f"{', '.join(f'{k} <= {v:.3g}s' for k, v in tried.items())}")
            again = plan_program(_with_latency_targets(program, {**target, **tried}), progress=progress,
                                 cache=cache, measured=measured or None, **plan_kwargs)
            if not isinstance(again, Infeasible):
                break
            factor = {name: math.sqrt(f) for name, f in factor.items()}  # a smaller step
        if isinstance(again, Infeasible):
            return plan  # no tighter plan fits: show the last one, whose verification says it misses
        target.update(tried)
        factor = {}
        plan = again


def _deployment(plan: Plan, workflow: str) -> tuple:
    """What the simulation of ``workflow``'s part of ``plan`` depends on: its replicas, knobs and rate."""
    wp = plan.workflow(workflow)
    return layout_from_plan(plan, workflow), wp.knobs, wp.rate_per_s


def _with_latency_targets(program: Program, targets: Mapping[str, float]) -> Program:
    """``program`` with each named workflow's SLO latency replaced by its target."""
    return program.model_copy(update={"workflows": tuple(
        w.model_copy(update={"slo": w.slo.model_copy(update={"latency_s": targets[w.name]})})
        if w.slo is not None and w.name in targets else w for w in program.workflows)})
