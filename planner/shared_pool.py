"""The no-isolation baseline: one shared pool per model serving all its LLM stages.

The maths
---------
All LLM stages that use model ``m`` send their calls to one pool of ``r``
replicas (device kind and TP: those most used by the chosen pools of ``m``),
modelled as in :mod:`planner.colocation` (one mixed batch, one M/G/c wait with
the mixture's service moments, every prefix resident in every replica, the
latency-aware batch cap). End-to-end latency then uses the same sampled paths
as the plan (:mod:`planner.latency`), with the SQL/tool stages unchanged.

Two comparisons are reported: the shared pools with the *same devices* as the
plan (same cost: what the plan's layout buys at equal spend), and the
smallest total replica count with which shared pools meet the SLO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np

from cortexlang.ir import Inventory, Program, Workflow
from planner.candidates import Candidate, fanout_splits
from planner.colocation import Member, SharedPoint, shared_point
from planner.latency import PathSample, attainment, distribution
from planner.plan import SharedModelPool, SharedPoolComparison
from planner.profiles import GIB, LatencyProfile

MAX_SEARCH_STEPS = 256


def _shared_pool(program: Program, workflow: Workflow, stages: list[Candidate], profile: LatencyProfile,
                 replicas: int, ca2: float) -> tuple[SharedPoint, SharedModelPool] | None:
    """The operating point of ``stages`` served by one shared pool (its tables built when read), and the
    pool; None when overloaded."""
    spec = program.model(stages[0].model)
    members = [Member(stage=workflow.stage(c.stage), rate_per_s=c.arrival_rate_per_s, max_tokens=c.max_tokens,
                      hedge=c.hedge, prewarm=c.prewarm, ca2=ca2) for c in stages]
    point = shared_point(spec, profile, members, replicas)
    if point is None:
        return None
    kvb = spec.kv_bytes_per_token
    pool = SharedModelPool(
        model=spec.name, stages=tuple(sorted(c.stage for c in stages)), device=stages[0].device, tp=profile.tp,
        replicas=replicas, max_num_seqs=point.max_num_seqs, kv_budget_tokens=point.kv_budget_tokens,
        kv_gib=round(replicas * point.kv_budget_tokens * kvb / GIB, 3),
        kv_in_use_gib=round(point.kv_in_use_tokens * kvb / GIB, 4), utilisation=round(point.utilisation, 4),
    )
    return point, pool


def _group(chosen: list[Candidate]) -> dict[str, tuple[str, int, list[Candidate], int]]:
    """Model -> (device, tp, its stages' candidates, devices the plan's pools use)."""
    by_model: dict[str, list[Candidate]] = {}
    for c in chosen:
        by_model.setdefault(c.model, []).append(c)
    out = {}
    for model, cands in sorted(by_model.items()):
        weight: Counter = Counter()
        for c in cands:
            weight[(c.device, c.tp)] += sum(c.resources.values())
        (device, tp), _ = max(weight.items(), key=lambda kv: (kv[1], kv[0]))
        out[model] = (device, tp, cands, sum(sum(c.resources.values()) for c in cands))
    return out


def compare(program: Program, workflow: Workflow, inventory: Inventory, paths: PathSample,
            chosen: Mapping[str, Candidate], ca2: float) -> SharedPoolComparison | None:
    """The shared-pool baseline for the plan's choice ``chosen`` (stage -> candidate)."""
    llm = [c for c in chosen.values() if c.kind == "llm"]
    if not llm:
        return None
    groups = _group(llm)
    profiles = {}
    cost_per_device = {g.kind: g.cost_per_hour for g in inventory.gpus}
    if inventory.cpu is not None:
        cost_per_device["CPU"] = inventory.cpu.cost_per_hour
    limits = {g.kind: g.count for g in inventory.gpus}
    if inventory.cpu is not None:
        limits["CPU"] = inventory.cpu.slots
    for model, (device, tp, cands, _) in groups.items():
        profiles[model] = next(c.latency_profile for c in cands if c.device == device and c.tp == tp)
    per_device = {m: g[1] for m, g in groups.items()}  # tp: GPUs, or CPU cores (slots)
    base_tables = {s: c.table for s, c in chosen.items()}
    made: dict[tuple[str, int], tuple[SharedPoint, SharedModelPool] | None] = {}

    def pool(model: str, replicas: int) -> tuple[SharedPoint, SharedModelPool] | None:
        """:func:`_shared_pool` of ``model``'s stages, memoised (the replica search revisits counts)."""
        key = (model, replicas)
        if key not in made:
            made[key] = _shared_pool(program, workflow, groups[model][2], profiles[model], replicas, ca2)
        return made[key]

    def evaluate(replicas: Mapping[str, int]):
        tables = dict(base_tables)
        pools = []
        for model in groups:
            got = pool(model, replicas[model])
            if got is None:
                return None, None
            tables.update(got[0].tables)
            pools.append(got[1])
        return paths.run_latency(tables, fanout_splits(chosen)), pools

    # Same spend as the plan's pools of each model, on the kind they use most.
    same = {m: max(1, round(sum(c.cost_per_hour for c in g[2]) / (per_device[m] * cost_per_device.get(g[0], 0.0))))
            if cost_per_device.get(g[0], 0.0) > 0 else max(1, g[3] // per_device[m]) for m, g in groups.items()}
    same = {m: min(n, max(1, limits.get(groups[m][0], 0) // per_device[m])) for m, n in same.items()}
    latency, pools = evaluate(same)
    if pools is None:  # overloaded at equal devices: still describe the pools' size
        pools = []
        for model, (device, tp, cands, _) in groups.items():
            spec = program.model(model)
            kv = profiles[model].kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
            pools.append(SharedModelPool(model=model, stages=tuple(sorted(c.stage for c in cands)), device=device,
                                         tp=tp, replicas=same[model], max_num_seqs=1, kv_budget_tokens=kv,
                                         kv_gib=round(same[model] * kv * spec.kv_bytes_per_token / GIB, 3),
                                         kv_in_use_gib=0.0, utilisation=1.0))
    slo = workflow.slo
    def stable(model: str, n: int) -> bool:
        return pool(model, n) is not None  # (from the point alone: no table is built)

    replicas_for_slo = _replicas_for_slo(evaluate, stable, groups, per_device, limits, slo) if slo else None
    cost = sum(p.replicas * per_device[p.model] * cost_per_device.get(p.device, 0.0) for p in pools)
    return SharedPoolComparison(
        pools=tuple(pools), replicas=sum(p.replicas for p in pools),
        kv_gib=round(sum(p.kv_gib for p in pools), 3), kv_in_use_gib=round(sum(p.kv_in_use_gib for p in pools), 4),
        latency=distribution(latency) if latency is not None else None,
        slo_attainment=round(attainment(latency, slo.latency_s), 6) if (latency is not None and slo) else None,
        replicas_for_slo=replicas_for_slo, cost_per_hour=round(cost, 4),
        isolated_kv_in_use_gib=round(sum(c.kv_in_use_gib for c in llm), 4),
    )


def _replicas_for_slo(evaluate, stable, groups, per_device, limits, slo) -> int | None:
    """Smallest total replicas (greedy: add where the SLO quantile drops most) meeting the SLO."""
    replicas = {m: _smallest_stable(stable, m) for m in groups}
    for _ in range(MAX_SEARCH_STEPS):
        latency, _ = evaluate(replicas)
        if latency is not None and attainment(latency, slo.latency_s) >= slo.attainment:
            return sum(replicas.values())
        best, best_q = None, np.inf
        for m, (device, _, _, _) in groups.items():
            used = sum(replicas[k] * per_device[k] for k, g in groups.items() if g[0] == device)
            if used + per_device[m] > limits.get(device, 0):
                continue
            trial = dict(replicas)
            trial[m] += 1
            lat, _ = evaluate(trial)
            q = np.inf if lat is None else float(np.quantile(lat, slo.attainment))
            if best is None or q < best_q:
                best, best_q = m, q
        if best is None:
            return None
        replicas[best] += 1
    return None



def _smallest_stable(stable, model: str) -> int:
    """Smallest replica count with which ``model``'s shared pool has a stable operating point."""
    hi = 1
    while not stable(model, hi) and hi < 4096:
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if stable(model, mid) else (mid, hi)
    return max(hi, 1)
