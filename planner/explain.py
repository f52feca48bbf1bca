"""Infeasibility explanations: what binds, in the user's terms, and the closest feasible alternative.

A solver status is never shown. Each failure is classified by re-solving
relaxed versions of the same problem:

* **profile** - a stage has no device kind in the inventory with a profile
  for its model, or the weights plus one request's KV do not fit;
* **rate** - no pool within the inventory keeps up with a stage's arrival
  rate (utilisation would exceed the cap); the alternative is the highest
  sustainable run rate (bisection on the rate);
* **slo** - even with unlimited devices the fastest configuration misses the
  SLO: the latency floor is the critical path through the graph (retries
  included) on the fastest devices, unloaded;
* **inventory** - the SLO is reachable with more devices: report the devices
  the cheapest such plan needs (a solve over an unbounded inventory).

For **slo** and **inventory** the closest feasible alternative is the tightest
SLO latency (at the same attainment) that the given inventory can meet: the
smallest feasible common scale of the SLOs, by bisection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from planner.candidates import StageCandidates, StageLoad, stage_candidates
from planner.plan import Infeasible
from planner.solver import SolveResult

if TYPE_CHECKING:  # pragma: no cover
    from planner.api import Planner, WorkflowModel


def percentile_label(attainment: float) -> str:
    """0.99 -> 'p99', 0.999 -> 'p99.9'."""
    return "p" + f"{attainment * 100:.4f}".rstrip("0").rstrip(".")


def devices_text(devices: dict[str, int]) -> str:
    parts = [f"{n}x{k}" for k, n in sorted(devices.items()) if k != "CPU" and n > 0]
    if devices.get("CPU"):
        parts.append(f"{devices['CPU']} CPU slots")
    return " + ".join(parts) if parts else "no devices"


def _inventory_devices(planner: "Planner") -> dict[str, int]:
    out = {g.kind: g.count for g in planner.inventory.gpus}
    if planner.inventory.cpu is not None:
        out["CPU"] = planner.inventory.cpu.slots
    return out


def _used(models, result: SolveResult) -> dict[str, int]:
    used: dict[str, int] = {}
    for m, a in zip(models, result.assignments):
        for s, i in a.items():
            for k, n in m.stages[s].candidates[i].resources.items():
                used[k] = used.get(k, 0) + n
    return used


def _sustainable_rate(planner: "Planner", m: "WorkflowModel", sc: StageCandidates) -> float | None:
    """Highest run rate at which the stage still has a pool within the inventory (bisection)."""
    stage = m.workflow.stage(sc.stage)
    visits = m.visits[sc.stage]
    if visits <= 0:
        return None

    def fits(rate: float) -> bool:
        load = m.loads[sc.stage]
        got = stage_candidates(planner.program, stage, StageLoad(rate * visits, visits, load.ca2, load.batch, load.burst),
                               planner.inventory, False, planner.profile_dir)
        return bool(got.candidates)

    lo, hi = 0.0, m.rate
    if not fits(hi * 1e-3):
        return None
    lo = hi * 1e-3
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def no_candidates(planner: "Planner", m: "WorkflowModel") -> Infeasible:
    sc = m.problem_stage
    wf = m.workflow.name
    if sc.needs:
        have = _inventory_devices(planner)
        have_text = devices_text({k: have.get(k, 0) for k in sc.needs})
        rate = _sustainable_rate(planner, m, sc)
        closest = (f"The inventory sustains at most {rate:.3g} runs/s of {wf}." if rate else
                   "Add devices or lower the rate.")
        return Infeasible(
            workflow=wf, binding="rate", required_devices=dict(sc.needs), closest=closest,
            message=(f"Stage {sc.stage} of {wf} cannot keep up with {m.rate:.3g} runs/s "
                     f"({m.visits[sc.stage]:.3g} visits per run): {sc.problem}, the inventory has {have_text}."))
    return Infeasible(workflow=wf, binding="profile",
                      message=f"Stage {sc.stage} of {wf} cannot be placed: {sc.problem}.",
                      closest="Add a device kind that has a profile for the model, or a profile for a kind you have.")


def _fastest_devices(m: "WorkflowModel") -> str:
    kinds = set()
    for sc in m.stages.values():
        llm = [c for c in sc.candidates if c.kind == "llm"]
        if llm:
            best = min(llm, key=lambda c: c.quantile(0.99))
            kinds.add(best.device if best.tp == 1 else f"{best.device} tp{best.tp}")
    return ", ".join(sorted(kinds)) or "CPU executors"


def _tightest_text(planner: "Planner", models) -> tuple[str | None, float | None]:
    found = planner.tightest(models)
    if found is None:
        return None, None
    scale, result = found
    parts, tightest = [], None
    for m, a in zip(models, result.assignments):
        slo = m.workflow.slo
        if slo is None:
            continue
        p = m.problem()
        lat = float(np.quantile(p.run_latency(a), slo.attainment))
        tightest = lat if tightest is None else max(tightest, lat)
        parts.append(f"{percentile_label(slo.attainment)} {lat:.3g}s for {m.workflow.name}")
    return (f"The tightest feasible SLO on this inventory is {'; '.join(parts)}, "
            f"using {devices_text(_used(models, result))}."), tightest


def _stable_text(planner: "Planner", unbounded) -> str:
    """When no SLO scale helps: the devices that stable pools alone need (SLO ignored)."""
    stable = planner.solve_at(unbounded, 1e9, unbounded=True)
    if stable.assignments is None:
        return "Lower the rate or add devices."
    return (f"Even ignoring the SLO, pools that keep up with this rate need {devices_text(_used(unbounded, stable))}; "
            "lower the rate or add devices.")


def no_plan(planner: "Planner", models, result: SolveResult) -> Infeasible:
    """The joint solve found nothing, after trying every scenario; ``models`` are the last ones tried."""
    unbounded = [planner.model(m.workflow, planner.scenario_index(m), unbounded=True) for m in models]
    if result.status == "slo_unreachable" or (len(models) == 1 and models[0].workflow.slo is not None):
        name = result.unreachable[0] if result.unreachable else models[0].workflow.name
        k = next(i for i, m in enumerate(models) if m.workflow.name == name)
        m, u = models[k], unbounded[k]
        slo = m.workflow.slo
        label = percentile_label(slo.attainment)
        p = u.problem()
        floor = float(np.quantile(p.run_latency({s: None for s in p.stages}), slo.attainment)) \
            if all(sc.candidates for sc in u.stages.values()) else float("inf")
        closest, tightest = _tightest_text(planner, models)
        if floor > slo.latency_s:
            return Infeasible(
                workflow=name, binding="slo", closest=closest, tightest_latency_s=_round(tightest),
                message=(f"{label} <= {slo.latency_s:g}s is infeasible for {name}: the critical path alone "
                         f"takes {floor:.3g}s at {label} on the fastest devices ({_fastest_devices(u)}), "
                         f"unloaded, retries included."))
        need = planner.solve_at([u], 1.0, unbounded=True)
        need_text = devices_text(_used([u], need)) if need.assignments else "more devices"
        if closest is None:
            closest = _stable_text(planner, unbounded)
        return Infeasible(
            workflow=name, binding="inventory", closest=closest, tightest_latency_s=_round(tightest),
            required_devices=_used([u], need) if need.assignments else {},
            message=(f"{label} <= {slo.latency_s:g}s for {name} needs more devices than the inventory has "
                     f"({devices_text(_inventory_devices(planner))}): the cheapest plan meeting it uses {need_text}."))
    need = planner.solve_at(unbounded, 1.0, unbounded=True)
    closest, tightest = _tightest_text(planner, models)
    if closest is None:
        closest = _stable_text(planner, unbounded)
    required = _used(unbounded, need) if need.assignments else {}
    message = (f"The workflows together need {devices_text(required) if required else 'more devices'} to meet "
               f"their SLOs; the inventory has {devices_text(_inventory_devices(planner))}.")
    if result.status == "unknown":
        message = ("No plan meeting every SLO was found within the solver's budget (not proven impossible). "
                   + message)
    return Infeasible(binding="inventory", closest=closest, tightest_latency_s=_round(tightest),
                      required_devices=required, message=message)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
