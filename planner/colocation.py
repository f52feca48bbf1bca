"""Co-located LLM pools: one pool of replicas serving several stages of one model.

Stage isolation is a means, not a dogma: a stage with little load still needs a
whole replica of its own, while several such stages on one pool share its batch
slots (statistical multiplexing) at the price of a mixed batch. The planner
therefore also offers, per model, *group candidates*: a pool serving a block of
stages, described to the solver as one member :class:`Candidate` per stage
(each with that stage's latency table in the shared pool) and the same
``group`` key. The solver picks a group all together or not at all; the
block's first stage (the *lead*) carries the pool's whole cost and resources,
the others none, so sums over chosen candidates stay right.

The maths of a shared pool
--------------------------
The block's stages send calls at rates ``lam_s`` (hedges included). A replica
serves the mix (rate ``lam_s / r``, prompt ``I_s``, mean output ``O_s``); the
batching fixed point of :func:`planner.queueing.mixed_batch_point` gives the
common batch ``B*`` and iteration time ``t_iter``; stage ``s`` is served in
``S_s(o) = P_s + o t_seq``, ``t_seq = t_iter + d1 / (1 - x)`` the iteration a sequence sees (itself
in the batch besides the others). Batch slots are shared, so one M/G/c wait covers
the pool with the mixture's service moments::

    E[S] = sum_s w_s E[S_s],  E[S^2] = sum_s w_s (Var S_s + E[S_s]^2),  w_s = lam_s / lam

whose ``cs2`` includes the spread *between* stages (short calls queue behind
long ones). The arrivals' ``ca2`` is the largest of the members' (fan-out
bursts included). Each replica's ``max_num_seqs`` is the smallest of the KV
bound for the longest stage and the latency-aware cap
(:func:`planner.candidates.latency_cap`) at the longest p99 context, so no
member's decode stretches beyond the isolated pools' bound; every resident
prefix is held by every replica. The all-shared pool (every stage preferring
the model) is also offered with the cap at the mix's *mean* context -- what a
plain shared deployment runs: the longest member's p99 context makes the cap
of a mix of short and long calls needlessly small (NL2SQL on H100: 26 instead
of 32 sequences, so 4 replicas where 3 hold the SLO in simulation); the
member tables model the batch the calls actually run in, so the SLO decides. Admission within the pool is FCFS (the
planning model does not credit priorities; a scheduler that prioritises only
helps the favoured stages).

Which blocks
------------
Per model ``m``, the LLM stages that may run ``m`` (any model option). Up to
:data:`MAX_EXHAUSTIVE` of them: every subset of two or more. Beyond: the
runs of two to :data:`MAX_RUN` neighbours among those stages ordered by
expected output then prompt length -- stages with similar calls share best,
as the mixture's variance is what sharing costs -- plus all of them, plus the
block of every stage that prefers ``m`` (the all-shared layout). (Every
contiguous run would be ``n^2 / 2`` blocks: too many candidates for the
planning-time budget on 20-stage workflows.) Members run their preferred ``max_tokens`` and
hedge; the model option's quality is the member's. Replica counts range as for
isolated pools (:func:`planner.candidates.replica_range`) -- for a block other
than the all-shared one, only below the replicas its stages' smallest dedicated
pools would use together (consolidation is its only purpose) -- and a group
candidate that some isolated candidates beat at every member (no slower, no
costlier together, no more devices, no lower quality) is dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from cortexlang.ir import Inventory, LLMStage, ModelSpec, Program, Workflow
from planner.candidates import (
    batch_stretch, copies_prefill_index,
    DECODE_STRETCH, FLAT_IMPROVEMENT, MAX_NUM_SEQS, MAX_UTILISATION, UNBOUNDED,
    Candidate, Device, OutputLength,
    StageLoad, devices_of,
    kv_seq_bound, replica_range, latency_cap, llm_service_table, output_length, output_tokens_moments, prefill_stall, table_quantile,
    profiles_of,
)
from planner.profiles import GIB, PROFILE_DIR, LatencyProfile
from planner.queueing import full_batch_service, mgc_wait, mixed_batch_point

MAX_EXHAUSTIVE = 4
"""Stages per model up to which every subset (of two or more) is a candidate block."""
MAX_RUN = 3
"""Beyond :data:`MAX_EXHAUSTIVE` stages: the longest run of neighbours (in call-size order) offered as a block,
besides every stage of the model and every stage preferring it."""

BatchCap = Literal["tail", "mean"]
"""Where a shared pool's latency-aware batch cap is computed (:func:`cap_context`)."""
BATCH_CAPS: tuple[BatchCap, ...] = ("tail", "mean")
"""The batch caps offered per shared pool (one candidate set each, when they differ)."""
Layout = Literal["search", "isolated", "shared"]
"""The pools on offer: ``search`` -- dedicated and shared pools, the solver picks; ``isolated`` -- a
dedicated pool per stage; ``shared`` -- one pool per model for the stages that prefer it (the no-isolation
layout; a model preferred by one stage only keeps a dedicated pool)."""


@dataclass(frozen=True)
class Member:
    """One stage's traffic into a shared pool."""

    stage: LLMStage
    rate_per_s: float
    """Calls per second into the pool (hedged copies included)."""
    max_tokens: int
    hedge: int
    prewarm: bool
    ca2: float = 1.0
    burst: float = 1.0
    """Index of dispersion of the stage's arrivals from upstream pools (scales its prefill variance)."""
    batch: int = 1
    """Copies of the stage one fan-out visit sends at once (:class:`planner.candidates.StageLoad`'s ``batch``)."""

    @cached_property
    def law(self) -> OutputLength:
        """The stage's output-length law (:func:`planner.candidates.output_length`), computed once per member:
        the replica search asks every count's :func:`shared_point` for it."""
        return output_length(self.stage)

    @cached_property
    def moments(self) -> tuple[float, float, float]:
        """Mean, variance and p99 of the member's output tokens at its ``max_tokens``
        (:func:`planner.candidates.output_tokens_moments`), computed once per member."""
        return output_tokens_moments(self.law, self.max_tokens)


@dataclass(frozen=True)
class SharedPoint:
    """Operating point of a shared pool of ``replicas`` replicas.

    The members' latency tables are built on demand (:meth:`table`, :attr:`tables`), each at most once:
    the replica search (:func:`_block_range`) decides from the point alone whether a count is stable,
    and from one member's table often that a count no longer improves the p99, so the tables of
    counts it never offers are not built (2.5% of the tables on ``benchmarks/plan_bench.py``'s binding
    20-stage chain: most of a block's tables are offered, or needed by :func:`_prefer_larger_caps`).
    A table is the same whenever it is built: it depends only on the point."""

    max_num_seqs: int
    kv_budget_tokens: int
    utilisation: float
    kv_in_use_tokens: float
    """Across the pool: running sequences' KV and every resident prefix in every replica."""
    table_args: Mapping[str, tuple] = field(repr=False)
    """Per member stage, in :func:`shared_point`'s order (the longest mean call first): the arguments of
    :func:`planner.candidates.llm_service_table` that give its table."""
    _built: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def table(self, stage: str) -> np.ndarray:
        """The latency table of one call of ``stage`` (quantiles on :data:`planner.candidates.U_GRID`)."""
        table = self._built.get(stage)
        if table is None:
            table = self._built[stage] = llm_service_table(*self.table_args[stage])
        return table

    @property
    def tables(self) -> dict[str, np.ndarray]:
        """Every member stage's :meth:`table`."""
        return {s: self.table(s) for s in self.table_args}

    def own_args(self, stage: str) -> tuple:
        """:attr:`Candidate.own_args <planner.candidates.Candidate.own_args>` of one member: its table's
        prefill and output at the mean iteration time (step plus one running sequence's share), alone."""
        prefill, step, _, _, law, max_tokens, hedge, per_seq, *_ = self.table_args[stage]
        return prefill, step + per_seq, 0.0, 0.0, law, max_tokens, hedge

    def batch_stretch(self, stage: str) -> float:
        """:func:`planner.candidates.batch_stretch` at one member's iteration time."""
        _, step, _, _, _, _, _, per_seq, batch, *_ = self.table_args[stage]
        return batch_stretch(step, per_seq, batch)

    def quantile_above(self, q: float, bound: float) -> bool:
        """Whether some member's ``q`` quantile exceeds ``bound``, building tables only until one does
        (members in :attr:`table_args`' order: the longest mean call, most often the slowest, first)."""
        return any(table_quantile(self.table(s), q) > bound for s in self.table_args)


def cap_context(members: Sequence[Member], cap: BatchCap) -> float:
    """The context (KV tokens per sequence) the pool's latency-aware batch cap is computed at:
    ``tail`` -- the longest member's p99 context (no member's tail decode stretches beyond the bound);
    ``mean`` -- the mix's mean context, weighted by each member's time in the batch (rate x output)."""
    moments = [m.moments for m in members]
    if cap == "tail":
        return max(m.stage.input_tokens + mo[2] for m, mo in zip(members, moments))
    weight = sum(m.rate_per_s * mo[0] for m, mo in zip(members, moments))
    if weight <= 0:
        return sum(m.stage.input_tokens + mo[0] / 2.0 for m, mo in zip(members, moments)) / len(members)
    return sum(m.rate_per_s * mo[0] * (m.stage.input_tokens + mo[0] / 2.0) for m, mo in zip(members, moments)) / weight


def batch_cap(spec: ModelSpec, profile: LatencyProfile, members: Sequence[Member], stretch: float,
              cap: BatchCap) -> int:
    """A replica's ``max_num_seqs``: what the KV space holds (:func:`planner.candidates.kv_seq_bound`:
    here *every* member's resident prefix is held -- distinct prompts cache distinctly -- which is the
    KV that sharing duplicates and a dedicated pool does not pay; the mean footprint is weighted by each
    member's time in the batch, rate x output), and the latency-aware cap
    (:func:`planner.candidates.latency_cap`) at :func:`cap_context`."""
    kv_tokens = profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    moments = [m.moments for m in members]
    prefix = [m.stage.prefix_tokens if m.prewarm else 0 for m in members]
    classes = [(m.stage.input_tokens - p, m.max_tokens, mo[0], m.rate_per_s * mo[0])
               for m, p, mo in zip(members, prefix, moments)]
    return min(MAX_NUM_SEQS, kv_seq_bound(kv_tokens, sum(prefix), classes),
               latency_cap(profile, cap_context(members, cap), stretch))


def shared_point(spec: ModelSpec, profile: LatencyProfile, members: Sequence[Member], replicas: int,
                 stretch: float = DECODE_STRETCH, max_utilisation: float = 1.0,
                 cap: BatchCap = "tail", max_num_seqs: int | None = None) -> SharedPoint | None:
    """The pool's operating point and per-member tables (module docstring; the tables are built when
    first read, :class:`SharedPoint`); None when unstable, above ``max_utilisation`` of its batch slots,
    or when a prompt does not fit its KV space. ``cap`` chooses the context of the latency-aware batch
    cap (:func:`cap_context`); ``max_num_seqs``, when given, is that cap already computed
    (:func:`batch_cap` of the same arguments: it does not depend on ``replicas``)."""
    kv_tokens = profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    moments = [m.moments for m in members]
    if max_num_seqs is None:
        max_num_seqs = batch_cap(spec, profile, members, stretch, cap)
    if max_num_seqs < 1:
        return None
    classes = []
    for m, mo in zip(members, moments):
        uncached = m.stage.input_tokens - (m.stage.prefix_tokens if m.prewarm else 0)
        classes.append((m.rate_per_s / replicas, m.stage.input_tokens, max(uncached, 1), mo[0]))
    point = mixed_batch_point(profile, classes, max_num_seqs)
    if point is None or point[0] > max_utilisation * max_num_seqs:
        return None
    batch, t_iter, prefills, per_seq = point
    # A constrained stage's decode steps carry the structured-output mask (the profile's factor).
    steps = [t_iter * profile.decode_factor(m.stage.constraint is not None) for m in members]
    # A sequence's mean step counts itself in its batch (planner.queueing, t_seq), as the tables' iteration
    # times do: the slot wait's offered load rate x E[S] is then the batch B*.
    seq_steps = [t + per_seq for t in steps]
    rate = sum(m.rate_per_s for m in members)
    means = [p + cl[3] * t for p, cl, t in zip(prefills, classes, seq_steps)]
    second = [(t ** 2) * mo[1] + mu * mu for t, mo, mu in zip(seq_steps, moments, means)]
    weights = [m.rate_per_s / rate if rate > 0 else 1.0 / len(members) for m in members]
    mean = sum(w * mu for w, mu in zip(weights, means))
    cs2 = max(sum(w * s for w, s in zip(weights, second)) / (mean * mean) - 1.0, 0.0) if mean > 0 else 0.0
    context = sum(cl[0] * cl[3] * (cl[1] + cl[3] / 2) for cl in classes) / max(sum(cl[0] * cl[3] for cl in classes),
                                                                               1e-12)
    full_step = profile.decode_step_s(max_num_seqs, int(max_num_seqs * context))
    drain = sum(w * full_batch_service(cl[3], full_step * profile.decode_factor(m.stage.constraint is not None),
                                       profile.prefill_per_token_s * cl[2], max_num_seqs)
                for w, cl, m in zip(weights, classes, members))
    wait = mgc_wait(replicas * max_num_seqs, rate, mean, cs2, max(m.ca2 for m in members), drain)
    if wait is None:
        return None
    stall = prefill_stall(profile, [(cl[0], cl[2]) for cl in classes],
                          [m.burst * copies_prefill_index(m.batch, replicas) for m in members])
    longest_first = sorted(range(len(members)), key=lambda i: -means[i])  # (a stable sort: ties keep order)
    table_args = {members[i].stage.name: (prefills[i], steps[i], wait.p_wait, wait.mean_if_waiting,
                                          members[i].law, members[i].max_tokens,
                                          min(members[i].hedge, replicas),  # candidates on distinct replicas
                                          per_seq, batch, max_num_seqs, stall) for i in longest_first}
    prefixes = sum(m.stage.prefix_tokens for m in members if m.prewarm)
    return SharedPoint(max_num_seqs=max_num_seqs, kv_budget_tokens=kv_tokens, utilisation=batch / max_num_seqs,
                       kv_in_use_tokens=replicas * (batch * context + prefixes), table_args=table_args)


def blocks(stages: Sequence[LLMStage], preferred: Sequence[str]) -> list[tuple[str, ...]]:
    """Candidate blocks (sorted stage names) among ``stages`` that may run one model (module docstring)."""
    names = sorted(s.name for s in stages)
    if len(names) < 2:
        return []
    if len(names) <= MAX_EXHAUSTIVE:
        return [c for k in range(2, len(names) + 1) for c in itertools.combinations(names, k)]
    order = [s.name for s in sorted(stages, key=lambda s: (s.output_tokens, s.input_tokens, s.name))]
    found = {tuple(sorted(order[i:i + k])) for k in range(2, MAX_RUN + 1) for i in range(len(order) - k + 1)}
    found.add(tuple(sorted(order)))
    if len(preferred) >= 2:
        found.add(tuple(sorted(preferred)))
    return sorted(found, key=lambda b: (len(b), b))


def preferred_blocks(workflow: Workflow) -> list[tuple[str, ...]]:
    """Per model, the (sorted) LLM stages that prefer it, where two or more do: the all-shared layout."""
    by_model: dict[str, list[str]] = {}
    for st in workflow.stages:
        if isinstance(st, LLMStage):
            by_model.setdefault(st.models[0].model, []).append(st.name)
    return [tuple(sorted(names)) for _, names in sorted(by_model.items()) if len(names) >= 2]


def declared_blocks(workflow: Workflow) -> list[tuple[str, ...]]:
    """The (sorted) LLM stages of each pool the file declares (``pool = NAME``) with two or more."""
    by_pool: dict[str, list[str]] = {}
    for st in workflow.stages:
        if isinstance(st, LLMStage) and st.pool is not None:
            by_pool.setdefault(st.pool, []).append(st.name)
    return [tuple(sorted(names)) for _, names in sorted(by_pool.items()) if len(names) >= 2]


def with_layout(workflow: Workflow, isolated: Mapping[str, list[Candidate]], groups: Sequence[list[Candidate]],
                layout: Layout) -> dict[str, list[Candidate]]:
    """Each stage's candidates under ``layout``: its dedicated ones and/or its memberships of ``groups``.
    A pool the file declares is not a choice: its stages get only group candidates that hold the whole
    declared block (it, or a larger pool the planner adds stages to)."""
    out = {s: list(cs) for s, cs in isolated.items()}
    declared = set(declared_blocks(workflow))
    taken = {s for block in declared for s in block}

    def keeps_declared(stages: tuple[str, ...]) -> bool:
        return all(set(b) <= set(stages) or not set(b) & set(stages) for b in declared)

    groups = [g for g in groups if keeps_declared(g[0].group_stages)]
    if layout == "isolated":
        groups = [g for g in groups if g[0].group_stages in declared]
    if layout == "shared":  # one pool per model for the stages preferring it (less declared pools it splits)
        offered = {g[0].group_stages for g in groups}
        full = {b if b in offered else tuple(s for s in b if s not in taken) for b in preferred_blocks(workflow)}
        full &= offered
        groups = [g for g in groups if g[0].group_stages in full or g[0].group_stages in declared]
        for block in full:
            for s in block:
                out[s] = []
    for s in taken:
        out[s] = []
    for g in groups:
        for member in g:
            out[member.stage].append(member)
    return out


def group_candidates(program: Program, workflow: Workflow, loads: Mapping[str, StageLoad], inventory: Inventory,
                     isolated: Mapping[str, Sequence[Candidate]], unbounded: bool = False,
                     profile_dir: Path = PROFILE_DIR, stretch: float = DECODE_STRETCH,
                     memo: dict | None = None) -> list[list[Candidate]]:
    """Every shared-pool candidate of ``workflow``: per group, its member candidates, lead first.
    ``memo`` keeps each block's candidates by everything they are computed from (its members'
    loads among them), for a request that builds the same workflow again (planner.api.build_model)."""
    memo = {} if memo is None else memo
    llm = [s for s in workflow.stages if isinstance(s, LLMStage) and loads[s.name].visits_per_run > 0]
    found: list[list[Candidate]] = []
    for model in sorted({o.model for s in llm for o in s.models}):
        try:
            spec = program.model(model)
        except KeyError:
            continue
        users = [s for s in llm if any(o.model == model for o in s.models)]
        preferred = tuple(sorted(s.name for s in users if s.models[0].model == model))
        declared = [b for b in declared_blocks(workflow) if workflow.stage(b[0]).models[0].model == model]
        for block in sorted(set(blocks(users, preferred)) | set(declared), key=lambda b: (len(b), b)):
            members = [workflow.stage(name) for name in block]
            for device in devices_of(inventory, unbounded):
                for profile in profiles_of(spec.profile, device.kind, profile_dir):
                    per_device = profile.tp  # GPUs, or CPU cores (slots), one replica spans
                    limit = device.limit // per_device
                    if block != preferred and block not in declared:  # a partial block consolidates: fewer replicas
                        limit = min(limit, _isolated_replicas(isolated, block, device.kind, profile.tp) - 1)
                    caps = BATCH_CAPS if block == preferred else BATCH_CAPS[:1]  # the all-shared pool: every cap
                    key = ("block", workflow.name, model, block, device, profile, limit, stretch,
                           tuple(caps), tuple(loads[s.name] for s in members))
                    if key not in memo:
                        memo[key] = _block_range(spec, profile, device, members, loads, stretch, limit, caps)
                    found.extend(memo[key])
    forced = set(declared_blocks(workflow))  # the file's pools are no choice: never pruned
    rivals = _Rivals(isolated)
    return [g for g in found if g[0].group_stages in forced or not _beaten_by_isolated(g, isolated, rivals)]


def _isolated_replicas(isolated: Mapping[str, Sequence[Candidate]], block: Sequence[str], device: str,
                       tp: int) -> int:
    """Replicas the block's stages need together in dedicated pools of ``device`` at ``tp`` (their smallest
    counts; a stage without such a pool counts as unbounded)."""
    total = 0
    for s in block:
        counts = [c.units for c in isolated.get(s, ()) if c.device == device and c.tp == tp]
        if not counts:
            return UNBOUNDED
        total += min(counts)
    return total


def _block_range(spec: ModelSpec, profile: LatencyProfile, device: Device, stages: Sequence[LLMStage],
                 loads: Mapping[str, StageLoad], stretch: float, limit: int,
                 caps: Sequence[BatchCap] = BATCH_CAPS) -> list[list[Candidate]]:
    """The block's group candidates on one device kind and profile, up to ``limit`` replicas, for each
    batch cap of ``caps`` (:func:`cap_context`; a cap equal to an earlier one's is offered once)."""
    quality = {s.name: next(o.quality for o in s.models if o.model == spec.name) * s.max_tokens.options[0].quality
               * s.hedge.options[0].quality for s in stages}
    members = [Member(stage=s, rate_per_s=loads[s.name].rate_per_s * s.hedge.preferred,
                      max_tokens=s.max_tokens.preferred, hedge=s.hedge.preferred,
                      prewarm=s.warms_prefix, ca2=loads[s.name].dispersion_ca2,
                      burst=loads[s.name].burst, batch=loads[s.name].batch) for s in stages]
    kv = profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    if any(m.stage.input_tokens + m.max_tokens > kv for m in members):
        return []
    per_device = profile.tp  # GPUs, or CPU cores (slots), one replica spans
    block = tuple(m.stage.name for m in members)

    found: list[_Group] = []
    seen_caps: set[int] = set()
    for cap in caps:
        value = batch_cap(spec, profile, members, stretch, cap)

        def make(n: int, cap: BatchCap = cap, value: int = value) -> _Group | None:
            point = shared_point(spec, profile, members, n, stretch, MAX_UTILISATION, cap, max_num_seqs=value)
            return None if point is None else _Group(n, point)

        if value in seen_caps:
            continue  # the same cap as a variant already offered: the same candidates
        seen_caps.add(value)
        found.extend(replica_range(make, limit)[0])  # (a point builds its tables only when they are read)
    out = []
    for g in _prefer_larger_caps(found):
        n, point = g.replicas, g.point
        key = f"{spec.name}:{'+'.join(block)}@{device.kind}/tp{profile.tp}x{n}/b{point.max_num_seqs}"
        cost = n * per_device * device.cost_per_unit
        tables = point.tables  # (once per group, not once per member)
        cands = []
        for i, m in enumerate(members):
            lead = i == 0
            cands.append(Candidate(
                stage=m.stage.name, kind="llm", device=device.kind, units=n, cost_per_hour=cost if lead else 0.0,
                resources={device.kind: n * per_device} if lead else {}, quality=quality[m.stage.name],
                table=tables[m.stage.name], utilisation=point.utilisation, arrival_rate_per_s=m.rate_per_s,
                visits_per_run=loads[m.stage.name].visits_per_run, tp=profile.tp, model=spec.name,
                profile=profile.model, max_tokens=m.max_tokens, hedge=m.hedge, prewarm=m.prewarm,
                max_num_seqs=point.max_num_seqs, kv_budget_tokens=point.kv_budget_tokens,
                kv_gib=point.kv_budget_tokens * spec.kv_bytes_per_token / GIB,
                kv_in_use_gib=point.kv_in_use_tokens * spec.kv_bytes_per_token / GIB if lead else 0.0,
                latency_profile=profile, group=key, group_stages=block, own_args=point.own_args(m.stage.name),
                batch_stretch=point.batch_stretch(m.stage.name)))
        out.append(cands)
    return out


def _prefer_larger_caps(groups: Sequence["_Group"]) -> list["_Group"]:
    """Drops a group whose replica count another group matches with a larger batch cap that is no
    slower, within :data:`planner.candidates.FLAT_IMPROVEMENT`, at every member's p99: the model then
    sees no price for the larger cap, while its spare slots absorb bursts the mean-field tables do
    not see (a full batch makes a priority scheduler preempt and recompute)."""
    def covers(big: _Group, small: _Group) -> bool:
        return (big.replicas == small.replicas and big.point.max_num_seqs > small.point.max_num_seqs
                and all(table_quantile(big.point.table(s), 0.99)
                        <= (1.0 + FLAT_IMPROVEMENT) * table_quantile(small.point.table(s), 0.99)
                        for s in small.point.table_args))

    return [g for g in groups if not any(covers(h, g) for h in groups)]


@dataclass(frozen=True)
class _Group:
    """A shared point as :func:`planner.candidates.replica_range` sees it: p99 = the worst member's."""

    replicas: int
    point: SharedPoint

    def quantile(self, q: float) -> float:
        return max(table_quantile(t, q) for t in self.point.tables.values())

    def quantile_above(self, q: float, bound: float) -> bool:
        """``quantile(q) > bound``, from as few member tables as decide it (:meth:`SharedPoint.quantile_above`)."""
        return self.point.quantile_above(q, bound)


class _Rivals:
    """Per stage, its isolated candidates' tables stacked (less the 1e-12 tolerance of
    :meth:`planner.candidates.Candidate.slower_or_equal`), their qualities and device kinds, built once per
    :func:`group_candidates` call so that :func:`_beaten_by_isolated` compares a member against all of
    them in a few array operations instead of a Python pass over them per member."""

    def __init__(self, isolated: Mapping[str, Sequence[Candidate]]) -> None:
        self.isolated = isolated
        self._low: dict[str, np.ndarray] = {}
        self._split: dict[str, bool] = {}
        self._quality: dict[str, np.ndarray] = {}
        self._within: dict[tuple[str, frozenset[str]], np.ndarray] = {}

    def no_faster(self, member: Candidate) -> list[bool]:
        """Per isolated candidate ``c`` of the member's stage: ``member.slower_or_equal(c)``."""
        return self._no_faster(member).tolist()

    def _no_faster(self, member: Candidate) -> np.ndarray:
        """:meth:`no_faster` as a boolean array."""
        stage = member.stage
        cs = self.isolated.get(stage, ())
        if not cs:
            return np.zeros(0, dtype=bool)
        split = self._split.get(stage)
        if split is None:
            split = self._split[stage] = any(c.fanout_split is not None for c in cs)
        if member.fanout_split is not None or split:  # fan-out splits compared part by part
            return np.array([member.slower_or_equal(c) for c in cs], dtype=bool)
        low = self._low.get(stage)
        if low is None:
            low = self._low[stage] = np.stack([c.table for c in cs]) - 1e-12
        return (member.table >= low).all(axis=1)

    def options(self, member: Candidate, kinds: frozenset[str]) -> list[Candidate]:
        """The isolated candidates ``c`` of the member's stage (in their order) that are
        at least as fast everywhere (``member.slower_or_equal(c)``), of at least its quality and on devices
        of ``kinds`` only: what may stand in for it."""
        stage = member.stage
        cs = self.isolated.get(stage, ())
        if not cs:
            return []
        quality = self._quality.get(stage)
        if quality is None:
            quality = self._quality[stage] = np.array([c.quality for c in cs], dtype=float)
        within = self._within.get((stage, kinds))
        if within is None:
            within = self._within[(stage, kinds)] = np.array([c.resources.keys() <= kinds for c in cs], dtype=bool)
        ok = self._no_faster(member) & within & (quality >= member.quality)
        return [cs[i] for i in np.flatnonzero(ok).tolist()]


def _beaten_by_isolated(group: Sequence[Candidate], isolated: Mapping[str, Sequence[Candidate]],
                        rivals: _Rivals | None = None) -> bool:
    """Whether isolated candidates, one per member, are together no costlier, use no more devices (of the
    same kind), and are no slower and no worse in quality at every member: then the group is never needed."""
    rivals = rivals if rivals is not None and rivals.isolated is isolated else _Rivals(isolated)
    lead = group[0]
    budget = lead.cost_per_hour
    devices = sum(lead.resources.values())
    spent, used = 0.0, 0
    kinds = frozenset(lead.resources)
    for member in group:
        options = rivals.options(member, kinds)
        if not options:
            return False
        best = min(options, key=lambda c: (c.cost_per_hour, sum(c.resources.values())))
        spent += best.cost_per_hour
        used += sum(best.resources.values())
    return spent <= budget + 1e-9 and used <= devices


__all__ = ["Member", "SharedPoint", "shared_point", "blocks", "group_candidates", "MAX_EXHAUSTIVE"]
