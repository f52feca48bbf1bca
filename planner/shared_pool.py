"""The no-isolation baseline: one shared pool per model serving all its LLM stages.

The maths
---------
All LLM stages that use model ``m`` send their calls to one pool of ``r``
replicas (device kind and TP: those most used by the isolated pools of ``m``).
A replica now serves a *mix* of request classes (one per stage ``s``, rate
``lam_s / r``, prompt ``I_s``, mean output ``O_s``). The batching fixed point
(:func:`planner.queueing.mixed_batch_point`) gives the common batch ``B*`` and
iteration time ``t_iter``; class ``s`` is served in ``S_s(o) = P_s + o t_iter``.
Batch slots are shared, so there is one M/G/c wait for the pool with the
mixture's service moments::

    E[S] = sum_s w_s E[S_s],  E[S^2] = sum_s w_s (Var S_s + E[S_s]^2),  w_s = lam_s / lam

whose ``cs2 = E[S^2] / E[S]^2 - 1`` includes the spread *between* stages'
service times: short calls queue behind long ones. Every resident prefix is
held by every replica, and each replica's ``max_num_seqs`` is sized for the
longest stage. End-to-end latency then uses the same sampled paths as the
isolated plan (:mod:`planner.latency`), with the SQL/tool stages unchanged.

Two comparisons are reported: the shared pools with the *same devices* as the
isolated plan (same cost: what isolation buys at equal spend), and the
smallest total replica count with which shared pools meet the SLO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np

from cortexlang.ir import Inventory, LLMStage, Program, Workflow
from planner.candidates import (
    CPU_SLOTS_PER_LLM_REPLICA, MAX_NUM_SEQS, Candidate, llm_service_table, output_tokens_samples,
)
from planner.latency import PathSample, attainment, distribution
from planner.plan import SharedModelPool, SharedPoolComparison
from planner.profiles import GIB, LatencyProfile
from planner.queueing import mgc_wait, mixed_batch_point

MAX_SEARCH_STEPS = 256


def _shared_tables(program: Program, workflow: Workflow, stages: list[Candidate], profile: LatencyProfile,
                   replicas: int, ca2: float) -> tuple[dict[str, np.ndarray], SharedModelPool] | None:
    """Latency tables of ``stages`` served by one shared pool, and the pool; None when overloaded."""
    spec = program.model(stages[0].model)
    kv_tokens = profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    ir = {c.stage: workflow.stage(c.stage) for c in stages}
    longest = max(ir[c.stage].input_tokens + c.max_tokens for c in stages)
    max_num_seqs = min(MAX_NUM_SEQS, kv_tokens // longest)
    if max_num_seqs < 1:
        return None
    classes, outs = [], []
    for c in stages:
        st: LLMStage = ir[c.stage]
        out = output_tokens_samples(st.output_tokens, c.max_tokens)
        uncached = st.input_tokens - (st.prefix_tokens if c.prewarm else 0)
        classes.append((c.arrival_rate_per_s / replicas, st.input_tokens, max(uncached, 1), float(out.mean())))
        outs.append(out)
    point = mixed_batch_point(profile, classes, max_num_seqs)
    if point is None:
        return None
    batch, t_iter, prefills = point
    rate = sum(c.arrival_rate_per_s for c in stages)
    means = [p + cl[3] * t_iter for p, cl in zip(prefills, classes)]
    second = [(t_iter ** 2) * o.var() + m * m for o, m in zip(outs, means)]
    weights = [c.arrival_rate_per_s / rate if rate > 0 else 1.0 / len(stages) for c in stages]
    mean = sum(w * m for w, m in zip(weights, means))
    cs2 = max(sum(w * s for w, s in zip(weights, second)) / (mean * mean) - 1.0, 0.0) if mean > 0 else 0.0
    wait = mgc_wait(replicas * max_num_seqs, rate, mean, cs2, ca2)
    if wait is None:
        return None
    tables = {
        c.stage: llm_service_table(p, t_iter, wait.p_wait, wait.mean_if_waiting, ir[c.stage].output_tokens,
                                   c.max_tokens, c.hedge)
        for c, p in zip(stages, prefills)
    }
    context = sum(cl[0] * cl[3] * (cl[1] + cl[3] / 2) for cl in classes) / max(sum(cl[0] * cl[3] for cl in classes), 1e-12)
    prefixes = sum(ir[c.stage].prefix_tokens for c in stages if c.prewarm)
    kvb = spec.kv_bytes_per_token
    pool = SharedModelPool(
        model=spec.name, stages=tuple(sorted(c.stage for c in stages)), device=stages[0].device, tp=profile.tp,
        replicas=replicas, max_num_seqs=max_num_seqs, kv_budget_tokens=kv_tokens,
        kv_gib=round(replicas * kv_tokens * kvb / GIB, 3),
        kv_in_use_gib=round(replicas * (batch * context + prefixes) * kvb / GIB, 4),
        utilisation=round(batch / max_num_seqs, 4),
    )
    return tables, pool


def _group(chosen: list[Candidate]) -> dict[str, tuple[str, int, list[Candidate], int]]:
    """Model -> (device, tp, its stages' candidates, devices the isolated pools use)."""
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
    """The shared-pool baseline for the isolated choice ``chosen`` (stage -> candidate)."""
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
    per_device = {m: (CPU_SLOTS_PER_LLM_REPLICA if g[0] == "CPU" else g[1]) for m, g in groups.items()}
    base_tables = {s: c.table for s, c in chosen.items()}

    def evaluate(replicas: Mapping[str, int]):
        tables = dict(base_tables)
        pools = []
        for model, (_, _, cands, _) in groups.items():
            got = _shared_tables(program, workflow, cands, profiles[model], replicas[model], ca2)
            if got is None:
                return None, None
            tables.update(got[0])
            pools.append(got[1])
        return paths.run_latency(tables), pools

    # Same spend as the isolated pools of each model, on the kind they use most.
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
        return _shared_tables(program, workflow, groups[model][2], profiles[model], n, ca2) is not None

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
