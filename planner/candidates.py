"""Per-stage candidate configurations and their latency tables.

The solver never evaluates the queueing model itself: for every stage it gets
a finite list of :class:`Candidate` configurations (device kind, TP, replica
or slot count, model variant, max_tokens, hedge width), each with its cost,
the resources it occupies and its *latency table*: the quantile function of
the latency of one visit, ``Q(u)`` sampled on the fixed grid :data:`U_GRID`.
This is the "precomputed table" that makes the nonlinear latency model usable
by CP-SAT: the end-to-end model (:mod:`planner.latency`) only indexes tables.

Per-visit latency of a candidate (all planning assumptions are here):

* LLM stage: ``L = W + prefill(I_new) + o * t_seq(B*)`` (see
  :mod:`planner.queueing`), with ``W`` the M/G/c batch-slot wait over
  ``replicas * max_num_seqs`` slots and ``o = min(max(X, 1), max_tokens)`` (a call makes at least
  one token, as in the simulator) where the
  output length ``X`` is lognormal (:mod:`cortexlang.laws`, the simulator's family too) with
  the stage's declared mean ``output_tokens`` and coefficient of variation ``output_cv`` (unset:
  :data:`OUTPUT_CV`), except that a share ``runaway`` of the calls never stop
  and take ``o = max_tokens`` (:class:`OutputLength`). With a
  hedge of ``h`` candidates the call takes the fastest:
  ``Q_h(u) = Q_1(1 - (1 - u)^(1/h))``, and the pool sees ``h`` times the calls.
  ``prewarm`` keeps the shared prefix resident, so ``I_new = I - prefix``.
* SQL/tool stage: ``L = W + S`` with ``S`` lognormal (:mod:`cortexlang.laws`) of mean
  ``service_s`` and CV ``service_cv`` and ``W`` the M/G/c wait over the executor slots; inside a
  fan-out of width ``k`` the calls arrive ``k`` at a time and ``W`` is the
  batch-arrival wait of :func:`planner.queueing.batch_wait` (the batch's wait
  plus the wait behind its own batch), and the slot range reaches ``k``.

``W`` and the service part are sampled with a fixed stratified design
(:data:`TABLE_SAMPLES` points, fixed seed), so tables are deterministic; output lengths and
service times are their law's exact quantiles at the design's strata.

Replica ranges: from the smallest stable count (utilisation at most
:data:`MAX_UTILISATION`) upward while the stage p99 still improves by more
than :data:`FLAT_IMPROVEMENT` per step (at most :data:`MAX_EXTRA` steps), and
never past what the inventory holds. More inventory therefore only ever adds
candidates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import NamedTuple

import numpy as np

from cortexlang import laws
from cortexlang.ir import Inventory, LLMStage, ModelSpec, Program, SQLStage, ToolStage
from pathlib import Path

from planner.profiles import GIB, PROFILE_DIR, LatencyProfile, profiles_for
from planner.queueing import BatchWait, batch_wait, full_batch_service, llm_batch_point, mgc_wait

OUTPUT_CV = 0.3
"""Coefficient of variation assumed for LLM output lengths where a stage sets no ``output_cv``; the simulator's
default too (``SimConfig.token_cv``)."""
MAX_NUM_SEQS = 256
"""Default per-replica cap on running sequences (vLLM's default), lowered to what the KV space holds
and to the latency-aware cap (:func:`latency_cap`)."""
DECODE_STRETCH = 1.5
"""Largest allowed ratio of a decode step at the capped batch to the same sequence's step alone
(per-token latency stretch; :func:`latency_cap`)."""
MAX_UTILISATION = 0.9
"""Highest planned utilisation of a pool (batch-slot occupancy or executor load)."""
MAX_BATCH_UTILISATION = 0.8
"""Highest planned load of an executor pool fed by a fan-out's batches. Above it the M^X/G/c wait
(:func:`planner.queueing.batch_wait`) falls well short of the simulated one: at 0.83 a 5-way fan-out's
p99 is 19% beyond the prediction, at 0.9 inside a retry loop (burstier batches) the mean wait is 3x.
Executor slots are cheap next to GPUs, so the margin costs little."""
FLAT_IMPROVEMENT = 0.02
"""Stop adding replicas/slots once the stage p99 improves by less than this fraction."""
MAX_EXTRA = 6
"""At most this many replicas/slots beyond the smallest stable count."""
UNBOUNDED = 4096
"""Replica/slot limit used when a resource kind is not constrained (no CPU block, or explanations)."""
TABLE_SAMPLES = 4096

U_GRID = np.unique(np.concatenate([
    np.linspace(0.0, 0.9, 37),
    np.linspace(0.9, 0.99, 19),
    np.linspace(0.99, 0.999, 10),
    np.array([0.9995, 0.9999, 1.0]),
]))
"""Quantile levels at which latency tables are stored."""
_GRID_INDEX = {float(u): i for i, u in enumerate(U_GRID)}


def table_quantile(table: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a latency table (linear between :data:`U_GRID`'s levels). At a level of the
    grid (the p99 the replica searches compare, the plan's p50/p95/p99) it is that entry, read without
    ``np.interp``'s wrapper: interpolating a finite table exactly at a grid level returns the entry."""
    i = _GRID_INDEX.get(q)
    return float(table[i]) if i is not None else float(np.interp(q, U_GRID, table))


_GRID_STEPS = np.diff(U_GRID)


def table_mean(table: np.ndarray) -> float:
    """``np.trapezoid(table, U_GRID)`` -- the mean latency a table stands for -- by numpy's own expression
    (``(dx * (y[1:] + y[:-1]) / 2).sum()``, so the same float) without its wrapper's diff and slicing
    per call (the planner takes the mean of every candidate it builds)."""
    return float((_GRID_STEPS * (table[1:] + table[:-1]) / 2.0).sum())


@dataclass(frozen=True)
class StageLoad:
    """What a stage must absorb: calls per second into it, the arrivals' squared CV, and
    ``batch``: calls that arrive together (the copies of a fan-out; 1 outside fan-outs)."""

    rate_per_s: float
    visits_per_run: float
    ca2: float = 1.0
    batch: int = 1
    burst: float = 1.0
    """Index of dispersion the pools upstream give the arrivals (:mod:`planner.dispersion`; of the
    batches' epochs inside a fan-out): 1 for arrivals as bursty as the workflow's own."""

    @property
    def arrival_ca2(self) -> float:
        """The arrivals' (or batches') squared CV: the workflow's ``ca2`` plus the excess dispersion
        ``burst - 1`` that the upstream LLM pools add."""
        return self.ca2 + (self.burst - 1.0)

    @property
    def dispersion_ca2(self) -> float:
        """Squared CV for a single-arrival M/G/c: batches of ``k`` raise the counts' index of
        dispersion by ``k - 1`` (what the LLM pools' Allen–Cunneen wait uses)."""
        return self.arrival_ca2 + (self.batch - 1)


@dataclass(frozen=True)
class FanoutSplit:
    """How the ``k`` copies of a call that one fan-out visit sends at once share its latency
    (:func:`planner.queueing.batch_wait`): ``W_B``, the batch's wait for the pool, is one draw for
    all copies; the copy in branch slot ``j`` adds ``own[j]`` (the work of the copies ahead of it)
    and its own service time. ``Candidate.table`` is the marginal of one copy (a random position);
    this split is what the Monte Carlo uses for the copies of one visit, so a fan-out's join sees
    the max over copies of a *shared* wait plus independent service -- sampling the marginal
    independently per copy takes the max over ``k`` independent waits, which over-predicts a busy
    pool's fan-out tail by 20-40% against the simulator (``tests/planner/test_fanout_split.py``).

    Tables are on :data:`U_GRID` and elementwise non-increasing as the pool grows, so the solver's
    monotonicity argument holds for each part."""

    wait: np.ndarray = field(repr=False)
    own: tuple[float, ...]
    service: np.ndarray = field(repr=False)

    def slower_or_equal(self, other: "FanoutSplit") -> bool:
        """True when every part is at least ``other``'s (positions beyond ``other``'s count as 0)."""
        own = np.asarray(self.own)
        theirs = np.zeros(len(own))
        theirs[: min(len(own), len(other.own))] = other.own[: len(own)]
        return bool(np.all(self.wait >= other.wait - 1e-12) and np.all(self.service >= other.service - 1e-12)
                    and np.all(own >= theirs - 1e-12) and len(own) >= len(other.own))

    @staticmethod
    def envelope(splits: Sequence["FanoutSplit"]) -> "FanoutSplit":
        """The elementwise fastest parts: a lower bound for every split in ``splits``."""
        width = max(len(x.own) for x in splits)
        own = np.min(np.stack([np.pad(np.asarray(x.own, dtype=float), (0, width - len(x.own)),
                                      constant_values=np.inf) for x in splits]), axis=0)
        return FanoutSplit(np.min(np.stack([x.wait for x in splits]), axis=0), tuple(float(v) for v in own),
                           np.min(np.stack([x.service for x in splits]), axis=0))


@dataclass
class Candidate:
    """One configuration of one stage's pool, with its latency table."""

    stage: str
    kind: str  # "llm" | "sql" | "tool"
    device: str  # GPU kind or "CPU"
    units: int  # replicas (LLM) or slots (SQL/tool)
    cost_per_hour: float
    resources: dict[str, int]  # resource kind -> units occupied ("CPU" = CPU slots)
    quality: float
    table: np.ndarray = field(repr=False)
    utilisation: float
    arrival_rate_per_s: float
    visits_per_run: float
    tp: int = 1
    model: str | None = None
    profile: str | None = None
    max_tokens: int | None = None
    hedge: int = 1
    prewarm: bool = False
    max_num_seqs: int = 1
    kv_budget_tokens: int = 0
    kv_gib: float = 0.0
    kv_in_use_gib: float = 0.0
    latency_profile: LatencyProfile | None = field(default=None, repr=False)
    group: str | None = None
    """Key of the shared pool this candidate is one member of (:mod:`planner.colocation`); None: a
    dedicated pool. Members of a group are chosen together; the first (the lead) carries the pool's cost,
    resources and KV in use, the others none."""
    group_stages: tuple[str, ...] = ()
    """The stages the group's pool serves, lead first (empty for a dedicated pool)."""
    fanout_split: FanoutSplit | None = field(default=None, repr=False)
    """For an executor pool fed by a fan-out's batches: how one visit's copies share the latency."""
    prefill_replicas: int = 0
    """Of ``units``, the replicas that only prefill (a prefill/decode-disaggregated pool,
    :mod:`planner.disaggregation`); 0: every replica runs both phases."""
    own_args: tuple = field(default=(), repr=False)
    """An LLM candidate's :func:`llm_service_table` arguments for the call's own work alone -- its
    prefill and output at the mean iteration time, no wait, no batch spread, no stall -- the part of
    its latency that is not the pool's state (:mod:`planner.congestion`); empty where not known."""
    batch_stretch: float = 1.0
    """An LLM pool's ``t / (t - N t'(N))`` at its operating point: the iteration time ``t`` over its part
    that does not grow with the running count ``N`` (:func:`batch_stretch`); how much longer than a
    stay the pool's batch takes to relax (:mod:`planner.congestion`). 1 for executor pools."""

    def quantile(self, q: float) -> float:
        return table_quantile(self.table, q)

    def quantile_above(self, q: float, bound: float) -> bool:
        """``quantile(q) > bound`` (what :func:`replica_range` asks of what it ranges over)."""
        return self.quantile(q) > bound

    @cached_property
    def mean(self) -> float:
        """The table's integral over :data:`U_GRID` by the trapezoid rule (:func:`table_mean`)."""
        return table_mean(self.table)

    @cached_property
    def _table_less_tol(self) -> np.ndarray:
        """``table - 1e-12``: the bound :meth:`slower_or_equal` compares against (computed once)."""
        return self.table - 1e-12

    def slower_or_equal(self, other: "Candidate") -> bool:
        """True when this candidate's latency is at least ``other``'s at every quantile (and so is
        every part of its fan-out split, when both have one)."""
        if not (self.table >= other._table_less_tol).all():
            return False
        if self.fanout_split is None or other.fanout_split is None:
            return self.fanout_split is None and other.fanout_split is None
        return self.fanout_split.slower_or_equal(other.fanout_split)


def fanout_splits(chosen: Mapping[str, Candidate]) -> dict[str, FanoutSplit]:
    """Stage -> the chosen candidate's :class:`FanoutSplit`, for the stages that have one."""
    return {s: c.fanout_split for s, c in chosen.items() if c.fanout_split is not None}


@dataclass
class StageCandidates:
    """The candidates of one stage, or why it has none."""

    stage: str
    candidates: list[Candidate]
    problem: str | None = None  # why no candidate fits, in words
    needs: dict[str, int] = field(default_factory=dict)  # devices a stable config would need


# --------------------------------------------------------------------------- sampling design


@lru_cache(maxsize=None)
def _design() -> tuple[np.ndarray, np.ndarray]:
    """Stratified uniforms for the wait and a random pairing with the service samples."""
    rng = np.random.default_rng(20240601)
    strata = (np.arange(TABLE_SAMPLES) + 0.5) / TABLE_SAMPLES
    return strata, rng.permutation(TABLE_SAMPLES)


@lru_cache(maxsize=None)
def _unit_law(cv: float) -> np.ndarray:
    """The unit-mean law of coefficient of variation ``cv`` (:mod:`cortexlang.laws`: lognormal) at the
    design's strata: its exact quantiles, ascending (read-only; all ones for ``cv <= 0``)."""
    strata, _ = _design()
    x = laws.quantiles(1.0, cv, strata)
    x.flags.writeable = False
    return x


def _wait_samples(p_wait: float, mean_if_waiting: float) -> np.ndarray:
    """Stratified waits (a fresh array): 0 below level ``1 - p_wait``, the exponential's quantile above,
    ``-mean log((1 - u) / p_wait) = mean (log p_wait - log(1 - u))`` with ``log(1 - u)`` cached."""
    w = np.zeros(TABLE_SAMPLES)
    if p_wait > 0 and mean_if_waiting > 0:
        strata, log_above = _strata_above()
        start = int(strata.searchsorted(1.0 - p_wait, side="right"))  # strata ascend: the tail is a suffix
        np.subtract(math.log(p_wait), log_above[start:], out=w[start:])
        w[start:] *= mean_if_waiting
    return w


@lru_cache(maxsize=None)
def _strata_above() -> tuple[np.ndarray, np.ndarray]:
    """The design's strata and ``log(1 - strata)`` (read-only)."""
    strata, _ = _design()
    log_above = np.log(1.0 - strata)
    log_above.flags.writeable = False
    return strata, log_above


@lru_cache(maxsize=16)
def _table_positions(hedge: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where :func:`_table` reads the order statistics: per grid level, the fraction between the
    neighbouring ranks ``lo`` and ``hi`` (sample ``i`` sits at level ``(i + 0.5) / n``, clamped at
    the ends)."""
    u = U_GRID if hedge == 1 else 1.0 - (1.0 - U_GRID) ** (1.0 / hedge)
    pos = np.clip(u * TABLE_SAMPLES - 0.5, 0.0, TABLE_SAMPLES - 1.0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, TABLE_SAMPLES - 1)
    return pos - lo, lo, hi


def _table(samples: np.ndarray, hedge: int = 1) -> np.ndarray:
    """Quantile function on :data:`U_GRID` of ``samples`` (linear between order statistics); the
    fastest of ``hedge`` iid draws. A full sort: numpy's vectorised sort of 4,096 doubles takes
    32 us here, a partial sort placing the ~130 ranks the grid reads 235 us (tables are the
    planner's hottest loop; the planner's samples have many ties -- zero waits, clipped outputs --
    on which a partition is slower still); both give the same order statistics."""
    return _table_inplace(samples.copy(), hedge)


def _table_inplace(samples: np.ndarray, hedge: int = 1) -> np.ndarray:
    """:func:`_table` of a scratch array it may reorder (sorted in place: no copy)."""
    frac, lo, hi = _table_positions(hedge)
    samples.sort()
    return samples[lo] + frac * (samples[hi] - samples[lo])


class OutputLength(NamedTuple):
    """An LLM stage's output-length law (``cortexlang.ir.LLMStage``): with probability ``runaway`` a call
    runs to ``max_tokens``; else its length is ``min(max(X, 1), max_tokens)``, ``X`` lognormal
    (:mod:`cortexlang.laws`) with mean ``mean`` and coefficient of variation ``cv``. Hashable: the tables'
    caches are keyed by it."""

    mean: int
    cv: float = OUTPUT_CV
    runaway: float = 0.0
    same_for_candidates: bool = False
    """Whether a hedged call's candidates all give the same output (greedy decoding: temperature 0), so that
    hedging picks the candidate that waits least, not a shorter output (:func:`llm_service_table`)."""


def output_length(stage: LLMStage) -> OutputLength:
    """``stage``'s output-length law (its ``output_cv`` unset: :data:`OUTPUT_CV`)."""
    cv = OUTPUT_CV if stage.output_cv is None else stage.output_cv
    return OutputLength(stage.output_tokens, cv, stage.runaway, stage.temperature == 0.0)


def _law(mean_tokens: int | OutputLength) -> OutputLength:
    """An :class:`OutputLength`; a bare mean is the default law with that mean."""
    return mean_tokens if isinstance(mean_tokens, OutputLength) else OutputLength(mean_tokens)


@lru_cache(maxsize=4096)
def output_tokens_samples(mean_tokens: int | OutputLength, max_tokens: int) -> np.ndarray:
    """Planning output lengths (sorted; shared, read-only): the quantile function of the
    :class:`OutputLength` law (a bare mean: that mean with :data:`OUTPUT_CV`), exactly, at the design's
    strata; the stopped calls' family is :mod:`cortexlang.laws`' lognormal, the simulator's. With
    ``runaway = p`` the law is a mixture whose quantile at level ``u`` is the stopped calls' at
    ``u / (1 - p)`` below ``1 - p`` and ``max_tokens`` from there on. Clipped to ``[1, max_tokens]``."""
    law = _law(mean_tokens)
    if law.runaway <= 0.0:
        base = _unit_law(law.cv) * law.mean
    else:
        strata, _ = _design()
        level = strata / (1.0 - law.runaway) if law.runaway < 1.0 else np.full(TABLE_SAMPLES, 2.0)
        stopped = level < 1.0  # the strata ascend: the stopped calls are a prefix
        base = np.full(TABLE_SAMPLES, float(max_tokens))
        base[stopped] = laws.quantiles(float(law.mean), law.cv, level[stopped])
    # At least one token, as the simulator draws (it rounds to whole tokens, at least one): a wide law
    # puts mass at sub-token lengths, whose reciprocals would blow up in the stall shock's arrays.
    out = np.clip(base, 1.0, max_tokens)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=4096)
def output_tokens_moments(mean_tokens: int | OutputLength, max_tokens: int) -> tuple[float, float, float]:
    """Mean, variance and 99th percentile of :func:`output_tokens_samples`."""
    out = output_tokens_samples(mean_tokens, max_tokens)
    return float(out.mean()), float(out.var()), float(np.quantile(out, 0.99))


@lru_cache(maxsize=None)
def _unit_normal() -> np.ndarray:
    """Standard normal draws in an order independent of the other draws (fixed seed)."""
    return np.random.default_rng(13).standard_normal(TABLE_SAMPLES)


@dataclass(frozen=True)
class PrefillStall:
    """Other calls' prefills stalling a replica's decode: the share of its time they take (``x``) and
    ``m2 = sum_i lam_i (prefill_i)^2`` (per-replica rates, per-token prefill cost of each class's
    uncached prompt), the variance per second of the compound-Poisson prefill work arriving."""

    share: float = 0.0
    m2: float = 0.0
    replicas: int = 1
    """Replicas behind the pool's least-backlog router: the stall shock is the pool's, shared by them
    (see :func:`llm_service_table`); 1 keeps a replica's own shock."""
    m3: float = 0.0
    """``sum_i lam_i (prefill_i)^3``: the third cumulant per second of the prefill work arriving
    (Poisson arrivals), which skews the stall over short stays (:func:`stall_deviation`)."""
    m2_poisson: float = 0.0
    """``m2`` for Poisson arrivals (no ``burst``): with ``m3``, the skewed stall of the arrivals
    themselves; bursts' excess ``m2 - m2_poisson`` adds a normal term (:func:`llm_service_table`)."""


NO_STALL = PrefillStall()


def prefill_stall(profile: LatencyProfile, classes: Sequence[tuple[float, int]],
                  burst: Sequence[float] | None = None, replicas: int = 1) -> PrefillStall:
    """:class:`PrefillStall` of a replica receiving ``(rate_per_replica, uncached_tokens)`` classes, one of
    ``replicas`` behind the pool's router. ``burst``: per class, the index of dispersion of its arrivals
    (:mod:`planner.dispersion`; 1 each by default): counts of index ``I`` carry prefill work of variance
    ``I lam p^2`` per second."""
    c = profile.prefill_per_token_s
    burst = burst if burst is not None else [1.0] * len(classes)
    return PrefillStall(share=sum(c * lam * unc for lam, unc in classes),
                        m2=sum(b * lam * (c * unc) ** 2 for (lam, unc), b in zip(classes, burst)),
                        replicas=replicas, m3=sum(lam * (c * unc) ** 3 for lam, unc in classes),
                        m2_poisson=sum(lam * (c * unc) ** 2 for lam, unc in classes))


def copies_prefill_index(batch: int, replicas: int) -> float:
    """How much a fan-out's copies arriving together raise each replica's prefill-work variance
    (the factor on a class's ``burst`` in :func:`prefill_stall`): ``max(1, k / R)``.

    A fan-out visit sends its ``k`` copies of a branch stage at once (:class:`StageLoad`'s
    ``batch``); the least-backlog router sees each copy's prompt queued before it places the next,
    so it spreads them over the ``R`` replicas, ``k / R`` prompts each. Epochs at ``lam / k`` per
    second (``lam`` the pool's calls/s) that bring ``k p / R`` of prefill work to every replica give
    it a variance rate ``(lam / k)(k p / R)^2 = (lam / R) p^2 (k / R)``: ``k / R`` times the
    per-replica Poisson ``m2``. With ``k <= R`` each replica gets at most one copy per visit, as from
    Poisson arrivals: factor 1. (The copies' own slot wait is :attr:`StageLoad.dispersion_ca2`'s.)"""
    return max(1.0, batch / max(replicas, 1))


@lru_cache(maxsize=None)
def _unit_normal_2() -> np.ndarray:
    """A second standard normal stream, independent of :func:`_unit_normal` (the common prefill shock)."""
    return np.random.default_rng(17).standard_normal(TABLE_SAMPLES)


@lru_cache(maxsize=8192)
def llm_service_table(prefill_s: float, t_iter: float, p_wait: float, mean_wait: float,
                      mean_tokens: int | OutputLength, max_tokens: int, hedge: int, per_seq_s: float = 0.0,
                      batch: float = 0.0, max_num_seqs: int = 0, stall: PrefillStall = NO_STALL) -> np.ndarray:
    """Latency table of one LLM call: wait + prefill + output tokens x iteration time (read-only and
    memoised: a third of the planner's tables repeat, e.g. a stage's dedicated point inside shared pools).

    With ``per_seq_s`` (the iteration time one more running sequence adds) the
    iteration time follows the batch the call runs in rather than its mean:
    the running sequences of a replica are the busy servers of an M/G/inf-like
    system, Poisson with mean ``batch`` (approximated as normal, clipped to
    ``0..max_num_seqs-1``), and the call adds itself:
    ``t = t_iter + per_seq_s (N + 1 - batch)``. A busy moment slows every call
    in it; the mean-batch model alone under-predicts the tail of busy pools.

    Prefill stalls (``stall``): ``t_iter`` spreads the other calls' prefills evenly
    (the ``1 / (1 - x)`` factor), but they arrive as a compound Poisson stream:
    over a stay of ``T`` seconds their work has mean ``x T`` and variance
    ``m2 T``. A stall of ``d`` beyond its mean lengthens the stay by ``d / (1 - x)``
    (the extra time invites more prefills: the stay is an M/G/1 busy period
    started by the call's own decode work ``D0``, variance ``D0 m2 / (1 - x)^3``),
    so the decode time of a call with ``o`` tokens gains a deviation of standard
    deviation ``sqrt(m2 o t_iter) / (1 - x)``, skewed as :func:`stall_deviation` says
    (a short stay sees a few prefills, not a normal amount of them).
    The shock is common to every call on the replica: it stretches all their stays
    at once, so the batch moves with it: ``N = batch + sqrt(batch - c^2) Z1 + c Z`` with
    ``c = min(batch r, sqrt(batch))``, ``r`` the shock's relative size over a mean stay and
    ``Z`` the shock's rank as a normal draw. The running count of an M/G/inf fed Poisson
    arrivals has variance ``batch`` whatever the stays' law, so the common shock takes its part
    of that variance rather than adding to it (adding ``batch r Z`` on top over-predicted
    x >= 0.6 pools by 10-15% once the stall was skewed: 70B, 718 / 53 tokens, x = 0.68, p99
    14.2 s against 12.7 simulated). Prefill-heavy pools (long prompts, short outputs) are where
    this matters.

    The call's first iteration prefills, besides its own prompt, those admitted with it
    (:func:`_coadmitted_prefill`).

    Several replicas (``stall.replicas = R``): the simulator's (and runtime's) router sends each
    call to the least-backlogged replica, so a burst of prompts is spread over the pool instead of
    landing on one replica. Perfectly spread, each replica carries ``1 / R`` of the pool's prefill
    work, whose variance per second is ``R m2``: ``m2 / R`` per replica. But the router only sees a
    burst once it is queued prefill work, which a replica has a share ``x`` of the time; the rest of
    the time it routes on decode backlog, blind to the prompts' sizes. So the shock's variance per
    second is ``m2 ((1 - x) + x / R)``. ``benchmarks/llm_pool_vs_sim.py`` (3-replica pools, x =
    0.54-0.84): p99 closer to the simulator than each replica's own shock in 8 of 9 shapes (largest
    error 22% against 28%); perfect spreading (``m2 / R``) was closer at x >= 0.8 but 14-18% low at
    x ~ 0.55 (``tests/planner/test_prefill_stall.py``).

    The batch cap bounds the stall (:func:`_batch_capped`).
    """
    out, _ = _paired_output_tokens(mean_tokens, max_tokens)
    # The planner's hottest loop, done in place on scratch arrays; the waits, which the members of one
    # shared pool share, and the iteration times are memoised on their arguments, and the stall shock
    # scales arrays cached per output-length array (:class:`_OutputDraws`).
    shock, rel = _stall_shock(mean_tokens, max_tokens, t_iter, stall, batch, max_num_seqs)
    t: np.ndarray | float = t_iter
    if per_seq_s > 0.0 and batch > 0.0:
        coupled = min(batch * rel, math.sqrt(batch))  # the shock's share of the batch's spread
        t = _iteration_times(t_iter, per_seq_s, batch, max_num_seqs, coupled, shock is not None)
    decode = out * t  # decode time at the batch's iteration time, before the stall shock
    if shock is not None:  # never below the call's own decode work: max(busy + shock, busy (1 - x))
        lower = decode * (1.0 - stall.share)
        decode += shock
        np.maximum(decode, lower, out=decode)
    elif stall.share != 0.0:  # (busy >= 0 here unless t_iter = 0, where the floor can bind)
        np.maximum(decode, decode * (1.0 - stall.share), out=decode)
    # wait + prefill wait + prefill + co-admitted prefills + decode, summed in this order (as the
    # model always has: floating-point sums depend on it), then sorted in place
    law = _law(mean_tokens)
    waits = _pool_waits(p_wait, mean_wait, stall)
    if hedge > 1 and law.same_for_candidates:  # same output from every candidate: only the wait is hedged
        waits, hedge = _hedged_waits(waits, hedge), 1
    samples = np.add(waits, prefill_s)  # (a fresh array: the waits are shared)
    samples += _coadmitted_prefill(stall, t_iter)
    samples += decode
    if hedge > 1 and law.runaway > 0.0:
        table = _hedged_with_runaways(samples, _runaway_mask(law, max_tokens), hedge, law.runaway)
    else:
        table = _table_inplace(samples, hedge)
    table.flags.writeable = False
    return table


def _hedged_waits(waits: np.ndarray, hedge: int) -> np.ndarray:
    """The shortest of ``hedge`` independent waits, on the design's strata: stratum ``u`` takes the waits'
    quantile at ``1 - (1 - u)^(1/hedge)``. For candidates that decode the same output (greedy decoding:
    the simulator's hedge twins carry the call's length), the fastest candidate is the one that waited least."""
    strata, _ = _design()
    return _quantiles(waits, 1.0 - (1.0 - strata) ** (1.0 / hedge))


@lru_cache(maxsize=256)
def _runaway_mask(law: OutputLength, max_tokens: int) -> np.ndarray:
    """Which of the design's samples (in pairing order) are the law's runaways: the strata at levels
    ``>= 1 - runaway`` of :func:`output_tokens_samples` (read-only)."""
    strata, pairing = _design()
    mask = (strata >= 1.0 - law.runaway)[pairing]
    mask.flags.writeable = False
    return mask


def _quantiles(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantile function of the samples ``x`` at ``levels`` (linear between order statistics, sample ``i``
    at level ``(i + 0.5) / n``, clamped at the ends: as :func:`_table`)."""
    x = np.sort(x)
    pos = np.clip(levels * len(x) - 0.5, 0.0, len(x) - 1.0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, len(x) - 1)
    return x[lo] + (pos - lo) * (x[hi] - x[lo])


def _hedged_with_runaways(samples: np.ndarray, runaway: np.ndarray, hedge: int, p: float) -> np.ndarray:
    """The table of a hedged call whose law has runaways: its ``hedge`` candidates decode the same prompt,
    so they stop or run away together (a runaway is the prompt's; the simulator's twins of a runaway call
    run away too) -- the fastest of ``hedge`` helps the calls that stop, never a runaway. The quantile
    function is the mixture's: below level ``1 - p`` the stopped samples' hedged quantile at
    ``u / (1 - p)``, above it the runaways' own at ``(u - (1 - p)) / p``."""
    stopped = samples[~runaway]
    below = U_GRID < 1.0 - p
    table = np.empty(len(U_GRID))
    if stopped.size:
        v = U_GRID[below] / (1.0 - p)
        table[below] = _quantiles(stopped, 1.0 - (1.0 - v) ** (1.0 / hedge))
    table[~below] = _quantiles(samples[runaway], (U_GRID[~below] - (1.0 - p)) / p)
    return table


@lru_cache(maxsize=64)
def _pool_waits(p_wait: float, mean_wait: float, stall: PrefillStall) -> np.ndarray:
    """The batch-slot wait plus the prefill's wait (:func:`_wait_samples` + :func:`_add_prefill_wait`),
    one pool's, the same for each stage it serves (read-only; memoised for a pool's members)."""
    samples = _wait_samples(p_wait, mean_wait)
    _add_prefill_wait(samples, stall)
    samples.flags.writeable = False
    return samples


def _stall_shock(mean_tokens: int | OutputLength, max_tokens: int, t_iter: float, stall: PrefillStall, batch: float,
                 max_num_seqs: int) -> tuple[np.ndarray | None, float]:
    """The prefill stall's shock to a call's decode time (:func:`llm_service_table`), its relative
    size ``rel`` over a mean stay; ``(None, 0)`` without prefill stalls (the shock is ranked by the
    normal draws :func:`_unit_normal_2`). A fresh array."""
    if not (stall.m2 > 0.0 and t_iter > 0.0 and stall.share < 1.0):
        return None, 0.0
    draws = _output_draws(mean_tokens, max_tokens)
    x = stall.share
    spread = (1.0 - x) + x / stall.replicas
    spread3 = (1.0 - x) + x / stall.replicas ** 2
    scale = math.sqrt(stall.m2 * spread) / (1.0 - x)
    # Poisson arrivals' stall (skewed) over the decode work d0 = out t_iter (1 - x), plus the bursts'
    # excess variance as an independent normal term: the bursts come from the pools upstream, over
    # many of their departures.
    shock = _draws_stall_deviation(draws, t_iter * (1.0 - x), x, stall.m2_poisson * spread, stall.m3 * spread3)
    excess = max(stall.m2 - stall.m2_poisson, 0.0) * spread
    if excess > 0.0:  # (sqrt(excess) / (1 - x)) sqrt(out t_iter) Z3, with sqrt(out) Z3 cached
        shock += draws.root_z3 * (math.sqrt(excess) / (1.0 - x) * math.sqrt(t_iter))
    if max_num_seqs > 0 and batch > 0.0:
        shock = _batch_capped(shock, draws.out, t_iter, batch, max_num_seqs, stall)
    mean_stay = max(draws.mean * t_iter, 1e-12)
    return shock, scale * math.sqrt(mean_stay) / mean_stay


@lru_cache(maxsize=128)
def _iteration_times(t_iter: float, per_seq_s: float, batch: float, max_num_seqs: int, coupled: float,
                     shocked: bool) -> np.ndarray:
    """Per sample, the iteration time of the batch a call runs in (:func:`llm_service_table`):
    ``t = t_iter + per_seq_s (N + 1 - batch)``, ``N = batch + sqrt(batch - c^2) Z1 + c Z`` the other
    running sequences clipped to ``0..max_num_seqs-1``, ``c = coupled`` the stall shock's share of
    their spread (``Z``: the shock's rank as a normal draw, :func:`_unit_normal_2`, when ``shocked``).
    Read-only, memoised.

    Evaluated in deviations from the mean batch, ``t = per_seq_s clip(N - batch, -batch, max_num_seqs - 1
    - batch) + (t_iter + per_seq_s)``. The model once floored ``t`` at ``t_iter - per_seq_s batch``;
    with ``N >= 0`` it is at least ``t_iter + per_seq_s (1 - batch)``, ``per_seq_s`` above that floor,
    so the floor never binds and is not computed."""
    running = _unit_normal() * math.sqrt(max(batch - coupled * coupled, 0.0))  # N - batch
    if shocked:
        running += coupled * _unit_normal_2()
    np.maximum(running, -batch, out=running)  # N clipped to 0..max_num_seqs-1, without np.clip's wrapper
    np.minimum(running, max(max_num_seqs - 1, 0) - batch, out=running)
    running *= per_seq_s
    running += t_iter + per_seq_s
    running.flags.writeable = False
    return running


def stall_deviation(z: np.ndarray, d0: np.ndarray, x: float, m2: float, m3: float) -> np.ndarray:
    """The deviation of a decode stay from its mean ``d0 / (1 - x)``, as a non-decreasing function
    of the standard normal draws ``z`` (one per sample; ``d0`` the stay's own decode work per sample).

    The stay is the first passage ``T = d0 + A(T)`` of the prefill work ``A`` arriving meanwhile, a
    compound Poisson process with cumulant rates ``x = lam E[p]``, ``m2 = lam E[p^2]``,
    ``m3 = lam E[p^3]``. Started from ``d0 + d0'`` it is the stay from ``d0`` followed by an
    independent one from ``d0'``, so ``T`` is infinitely divisible in ``d0``: its cumulants are
    ``d0`` times those of the Laplace exponent ``phi`` of Kendall's equation
    ``phi(s) = s + lam (1 - E[exp(-p phi(s))])``. Differentiating three times at 0::

        k1 = d0 / (1 - x),   k2 = d0 m2 / (1 - x)^3,
        k3 = d0 (m3 / (1 - x)^4 + 3 m2^2 / (1 - x)^5).

    A normal with ``k1, k2`` (what the model used before) has no skew, but a 40-token stay at
    x = 0.42 sees ~2 prefills on average, so the stall is a few whole prefills: against a Monte
    Carlo first passage the normal's p99 is 20-30% low, this law's within 4% from p90 to p99.9
    (``tests/planner/test_prefill_stall.py``). Here ``T``
    is a shifted Gamma matching all three cumulants: shape ``k = 4 k2^3 / k3^2`` and scale
    ``theta = k3 / (2 k2)`` (skewness ``2 / sqrt(k)`` = ``k3 / k2^1.5``), its quantile at ``z`` by
    the Wilson-Hilferty cube ``k (1 - a + z sqrt(a))^3``, ``a = 1 / (9 k)``, clipped at 0 and divided
    by its mean ``(1 - a)^3 + 3 a (1 - a) = 1 - a^3`` so that the deviation keeps mean ~0. As ``d0`` grows,
    ``k`` grows with it and the deviation tends to the normal one (a long stay sees many prefills)."""
    return _stall_deviation_into(z, np.array(d0, dtype=float), x, m2, m3)


def _stall_deviation_into(z: np.ndarray, d0: np.ndarray, x: float, m2: float, m3: float) -> np.ndarray:
    """:func:`stall_deviation` overwriting ``d0`` (a scratch float array the caller gives up)."""
    one = 1.0 - x
    c2 = m2 / one ** 3
    c3 = m3 / one ** 4 + 3.0 * m2 * m2 / one ** 5
    if c2 <= 0.0 or c3 <= 0.0:
        return np.zeros_like(d0 * z)
    shape = np.maximum(d0, 1e-300, out=d0)
    shape *= 4.0 * c2 ** 3 / (c3 * c3)
    a = 9.0 * shape  # in place below: a = 1 / (9 k), w = 1 - a + z sqrt(a)
    np.reciprocal(a, out=a)
    w = np.sqrt(a)
    w *= z
    w -= a
    w += 1.0
    np.maximum(w, 0.0, out=w)
    cube = w * w
    cube *= w
    np.multiply(a, a, out=w)  # w is spent: scratch for a^3, the cube's mean being 1 - a^3
    a *= w
    np.subtract(1.0, a, out=a)
    cube /= a
    cube -= 1.0
    cube *= shape
    cube *= c3 / (2.0 * c2)  # theta
    return cube


@lru_cache(maxsize=4096)
def _paired_output_tokens(mean_tokens: int | OutputLength, max_tokens: int) -> tuple[np.ndarray, float]:
    """:func:`output_tokens_samples` in the design's pairing order (read-only) and its mean."""
    _, pairing = _design()
    out = output_tokens_samples(mean_tokens, max_tokens)[pairing]
    out.flags.writeable = False
    return out, _mean(out)


@dataclass(frozen=True)
class _OutputDraws:
    """One output-length array of the tables' design and what the stall shock derives from it alone,
    computed once per ``(mean_tokens, max_tokens)`` (:func:`_output_draws`; arrays read-only): the
    tables' hot loop then scales cached arrays by per-table scalars instead of taking reciprocals and
    square roots of ``out`` per table (:func:`_draws_stall_deviation`)."""

    out: np.ndarray
    """:func:`output_tokens_samples` in the design's pairing order."""
    mean: float
    inv: np.ndarray
    """``1 / out``."""
    inv4: np.ndarray
    """``1 / out^4``."""
    z_over_root: np.ndarray
    """``Z2 / sqrt(out)``, ``Z2`` the stall shock's normal draws (:func:`_unit_normal_2`)."""
    root_z3: np.ndarray
    """``sqrt(out) Z3``, ``Z3`` the bursts' normal draws (:func:`_unit_normal_3`)."""
    positive: bool
    """Whether every ``out`` is positive (else the reciprocals are not used)."""


@lru_cache(maxsize=4096)
def _output_draws(mean_tokens: int | OutputLength, max_tokens: int) -> _OutputDraws:
    """:class:`_OutputDraws` of ``(mean_tokens, max_tokens)`` (memoised)."""
    out, mean = _paired_output_tokens(mean_tokens, max_tokens)
    positive = bool(out.min() > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / out
        inv4 = inv ** 4
        z_over_root = _unit_normal_2() / np.sqrt(out)
    root_z3 = np.sqrt(out) * _unit_normal_3()
    for a in (inv, inv4, z_over_root, root_z3):
        a.flags.writeable = False
    return _OutputDraws(out, mean, inv, inv4, z_over_root, root_z3, positive)


def _draws_stall_deviation(draws: _OutputDraws, work_per_token: float, x: float, m2: float,
                           m3: float) -> np.ndarray:
    """:func:`stall_deviation` at the draws ``Z2`` (:func:`_unit_normal_2`) for the decode work
    ``d0 = g out`` (``g = work_per_token``; a fresh array), from ``draws``' cached arrays.

    The Gamma shape is ``k = K g out`` (``K = 4 c2^3 / c3^2``), so with ``c = 1 / (9 K g)`` the
    Wilson-Hilferty terms are ``a = 1 / (9 k) = c / out`` and ``z sqrt(a) = sqrt(c) Z2 / sqrt(out)``,
    and the deviation ``(w^3 / (1 - a^3) - 1) k theta`` is ``(w^3 / (1/out - c^3 / out^4) - out) K g
    theta``: two scalings of cached arrays where the general form takes a reciprocal and a square
    root of ``d0`` per table. The same values up to rounding (~1e-15 relative)."""
    if not draws.positive or work_per_token <= 0.0:
        return _stall_deviation_into(_unit_normal_2(), draws.out * work_per_token, x, m2, m3)
    one = 1.0 - x
    c2 = m2 / one ** 3
    c3 = m3 / one ** 4 + 3.0 * m2 * m2 / one ** 5
    if c2 <= 0.0 or c3 <= 0.0:
        return np.zeros(TABLE_SAMPLES)
    per_out = work_per_token * (4.0 * c2 ** 3 / (c3 * c3))  # k = per_out * out
    c = 1.0 / (9.0 * per_out)
    w = draws.z_over_root * math.sqrt(c)  # w = 1 - a + z sqrt(a), clipped at 0
    a = draws.inv * c
    w -= a
    w += 1.0
    np.maximum(w, 0.0, out=w)
    cube = w * w
    cube *= w
    np.multiply(draws.inv4, c * c * c, out=a)  # out / (1 - a^3) = 1 / (1/out - c^3 / out^4)
    np.subtract(draws.inv, a, out=a)
    cube /= a
    cube -= draws.out
    cube *= per_out * (c3 / (2.0 * c2))  # times k theta / out
    return cube


def _mean(x: np.ndarray) -> float:
    """``float(x.mean())`` of a 1-d float array without ndarray.mean's wrapper (the same sum and division)."""
    return float(np.add.reduce(x) / x.size)


def _batch_capped(shock: np.ndarray, out: np.ndarray, t_iter: float, batch: float, max_num_seqs: int,
                  stall: PrefillStall) -> np.ndarray:
    """The stall shock bounded by the batch cap (see :func:`llm_service_table`).

    The shock lets a burst's prefills grow without limit, but a replica admits a prompt only while
    its batch is below ``max_num_seqs``. Counted in iterations, the running sequences leave at
    ``N / O`` per iteration (Little's law; ``O`` the mean output), whatever the iterations last;
    once the batch is full, a prompt is admitted only when one leaves, so an iteration carries at
    most ``cap / O`` prefills against ``B / O`` on average: ``x t_iter (cap / B - 1)`` more prefill
    time (``x t_iter = B p / O`` is an average iteration's prefill, ``p`` the prefill per admission).
    Before the batch fills, the ``cap - B`` free slots admit extra prompts once. So a call of ``o``
    tokens gains at most ``o x t_iter (cap / B - 1) + (cap - B) p`` from prefill bursts; the
    calls beyond wait for a batch slot instead (the slot wait already in the table). The batch-size
    term (the running count's own spread) is left as it is. The bound only reshapes the stall: the
    mean stay is fixed by the batch fixed point (within 4% of the simulator,
    ``benchmarks/llm_pool_vs_sim.py``), so the mass clipped from the tail is given back as a shift.
    ``benchmarks/llm_pool_vs_sim.py``, one replica at x = 0.80-0.84: simulated / planned p99 0.97,
    0.89 and 0.85 with the bound, 0.66, 0.81 and 0.83 without; pools the cap does not reach unchanged."""
    x = stall.share
    if x <= 0.0:
        return shock
    free = max(max_num_seqs - batch, 0.0)
    bound = out * (x * t_iter * max(max_num_seqs / batch - 1.0, 0.0))
    bound += free * stall.m2 / x  # m2 / x: p
    capped = np.minimum(shock, bound, out=bound)
    capped += _mean(shock) - _mean(capped)
    return capped


@lru_cache(maxsize=None)
def _unit_normal_3() -> np.ndarray:
    """A third standard normal stream, independent of the others (the bursts' share of the stall)."""
    return np.random.default_rng(31).standard_normal(TABLE_SAMPLES)


@lru_cache(maxsize=None)
def _unit_uniform() -> np.ndarray:
    """Uniforms on (0, 1) in an order independent of the other draws (fixed seed)."""
    return np.random.default_rng(19).uniform(1e-12, 1.0, TABLE_SAMPLES)


def _add_prefill_wait(samples: np.ndarray, stall: PrefillStall) -> None:
    """Add to ``samples`` the wait of a new call's prefill behind the prefills in progress or queued:
    the prefills are one FCFS server busy ``x`` of the time (Pollaczek-Khinchine, M/G/1): mean wait
    ``m2 / (2 (1 - x))``, waiting with probability ``x``, exponential when it does. Only the draws
    that wait (``u < x``) are touched."""
    x = stall.share
    if stall.m2 <= 0.0 or x <= 0.0 or x >= 1.0:
        return
    mean_if_waiting = stall.m2 / (2.0 * (1.0 - x)) / x
    order, u, log_u = _unit_uniform_sorted()
    n = int(u.searchsorted(x, side="left"))  # the draws u < x (distinct indices)
    # -mean log(u / x) = mean (log x - log u), from the cached logarithms
    samples[order[:n]] += mean_if_waiting * (math.log(x) - log_u[:n])


@lru_cache(maxsize=None)
def _unit_uniform_3() -> np.ndarray:
    """Uniforms on (0, 1), a stream independent of the other draws (fixed seed): co-admissions."""
    return np.random.default_rng(29).uniform(0.0, 1.0, TABLE_SAMPLES)


@lru_cache(maxsize=256)
def _coadmitted_prefill(stall: PrefillStall, t_iter: float) -> np.ndarray | float:
    """The prefills of the calls admitted in the same iteration as a new call, after it: its first
    token waits for them too (vLLM admits every waiting call an iteration's token budget holds, and
    the iteration ends when all of their prompts are prefilled).

    Gated service: iteration ``n + 1`` prefills what arrived during iteration ``n``, so its length is
    ``L' = d + P(L)``, ``P`` the compound-Poisson prefill work arriving over ``L`` (rate ``x``,
    variance rate ``m2``) and ``d`` the decode step. In steady state ``E[L] = d / (1 - x)`` (the
    planner's ``t_iter``) and ``Var L = m2 E[L] + x^2 Var L``, so ``Var L = m2 t_iter / (1 - x^2)``.
    A call arrives in an iteration picked by length (length-biased), and the others that arrived in
    that iteration -- Poisson given ``L`` -- are admitted with it: on average
    ``lam E[L^2] / E[L] = lam (t_iter + m2 / (1 - x^2))`` of them, ``lam = x / p`` calls per
    second of mean prefill ``p = m2_poisson / x`` (exact for one class of prompt; bursty arrivals
    widen ``Var L`` through ``m2``). The call's own wait is
    the residual of the iteration it arrived in (the Pollaczek-Khinchine wait of
    :func:`_add_prefill_wait` stands for it); its first iteration then prefills ``p`` times a Poisson
    count with that mean besides its own prompt. Against the simulator's per-call records (one
    A100 replica, 1,400-token prompts): 0.29 and 0.85 others at x = 0.42 and 0.63, measured 0.28
    and 0.75. The count is drawn independently of the rest of the call (a fixed uniform stream).
    Read-only and memoised: the members of one shared pool share the stall and the iteration time."""
    x = stall.share
    if stall.m2_poisson <= 0.0 or x <= 0.0 or x >= 1.0 or t_iter <= 0.0:
        return 0.0
    p = stall.m2_poisson / x
    prefills = p * _poisson_quantile((x / p) * (t_iter + stall.m2 / (1.0 - x * x)))
    prefills.flags.writeable = False
    return prefills


@lru_cache(maxsize=256)
def _poisson_quantile(mean: float) -> np.ndarray:
    """Poisson(``mean``) counts at :func:`_unit_uniform_3`'s draws (inversion; read-only)."""
    n = np.arange(int(mean + 12.0 * math.sqrt(mean) + 12.0))
    cdf = np.cumsum(np.exp(n * math.log(mean) - mean - _log_factorials(n.size)))
    rank, ordered = _unit_uniform_3_ranked()
    # The count is the number of CDF levels a draw passes: counted on the sorted draws, read back by rank.
    edges = np.searchsorted(ordered, cdf, side="left")
    steps = np.empty(n.size + 1, dtype=np.intp)
    steps[0] = edges[0]
    np.subtract(edges[1:], edges[:-1], out=steps[1:-1])
    steps[-1] = TABLE_SAMPLES - edges[-1]
    counts = np.repeat(np.arange(n.size + 1.0), steps)[rank]
    counts.flags.writeable = False
    return counts


@lru_cache(maxsize=None)
def _log_factorials(n: int) -> np.ndarray:
    """``log(k!)`` for ``k = 0..n-1`` (read-only)."""
    out = np.array([math.lgamma(k + 1.0) for k in range(n)])
    out.flags.writeable = False
    return out


@lru_cache(maxsize=None)
def _unit_uniform_3_ranked() -> tuple[np.ndarray, np.ndarray]:
    """Each of :func:`_unit_uniform_3`'s draws' rank among them, and the draws sorted (read-only)."""
    u = _unit_uniform_3()
    order = np.argsort(u, kind="stable")
    rank = np.empty(TABLE_SAMPLES, dtype=np.intp)
    rank[order] = np.arange(TABLE_SAMPLES)
    ordered = u[order]
    rank.flags.writeable = False
    ordered.flags.writeable = False
    return rank, ordered


@lru_cache(maxsize=None)
def _unit_uniform_sorted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_unit_uniform`'s sort order, its draws in that order and their logarithms (read-only;
    the draws are at least 1e-12: no clamp)."""
    u = _unit_uniform()
    order = np.argsort(u, kind="stable")
    ordered = u[order]
    log_ordered = np.log(ordered)
    for a in (order, ordered, log_ordered):
        a.flags.writeable = False
    return order, ordered, log_ordered


@lru_cache(maxsize=None)
def _positions(batch: int) -> np.ndarray:
    """Each sample's position in its batch: uniform on ``0..batch-1``, independent of the other draws."""
    return np.random.default_rng(11).permutation(TABLE_SAMPLES) % batch


def executor_service_table(service_s: float, cv: float, p_wait: float, mean_wait: float,
                           own_wait: tuple[float, ...] = (0.0,)) -> np.ndarray:
    """Latency table of one executor call: the pool wait, the wait behind its own batch (by position), service."""
    _, pairing = _design()
    own = np.asarray(own_wait)[_positions(len(own_wait))]
    return _table(_wait_samples(p_wait, mean_wait) + own + service_s * _unit_law(cv)[pairing])


def executor_fanout_split(service_s: float, cv: float, p_wait: float, mean_wait: float,
                          own_wait: tuple[float, ...]) -> FanoutSplit:
    """The parts of :func:`executor_service_table` that :class:`FanoutSplit` keeps apart."""
    return FanoutSplit(_table(_wait_samples(p_wait, mean_wait)), own_wait, _table(service_s * _unit_law(cv)))


# --------------------------------------------------------------------------- LLM stages


def profiles_of(family: str | None, device: str, profile_dir: Path = PROFILE_DIR) -> tuple[LatencyProfile, ...]:
    """Profiles of a model family on a device kind (case-insensitive), lowest TP first."""
    return () if family is None else profiles_for(family, device, profile_dir)


@dataclass(frozen=True)
class Device:
    """A device kind of the inventory as candidates see it."""

    kind: str
    cost_per_unit: float  # per GPU, or per CPU slot
    limit: int  # devices (GPUs, or CPU slots) available


def devices_of(inventory: Inventory, unbounded: bool) -> list[Device]:
    """The inventory's GPU kinds and CPU slots (each limited to its count, or :data:`UNBOUNDED`)."""
    devices = [
        Device(g.kind, g.cost_per_hour, UNBOUNDED if unbounded else g.count)
        for g in inventory.gpus if g.count > 0 or unbounded
    ]
    if inventory.cpu is not None and (inventory.cpu.slots > 0 or unbounded):
        devices.append(Device("CPU", inventory.cpu.cost_per_hour, UNBOUNDED if unbounded else inventory.cpu.slots))
    return devices


def latency_cap(profile: LatencyProfile, context_tokens: float, stretch: float = DECODE_STRETCH) -> int:
    """Largest batch whose decode step stays within ``stretch`` x the step of one sequence alone.

    With the profile's step ``t(b, k) = F + S b + K k`` and every sequence holding
    ``c`` KV tokens (``k = b c``), the per-token latency of a sequence in a batch of
    ``b`` is ``t(b, b c)``; requiring ``t(b, b c) <= stretch x t(1, c)`` gives::

        b_max = floor((stretch (F + S + K c) - F) / (S + K c))

    Callers pass the p99 context (prompt + the p99 output length), so the
    tail sequences' per-token latency -- and with it the stage's p99 -- is
    bounded, not only the mean. At least 1; ``MAX_NUM_SEQS`` when a sequence adds
    nothing to the step or ``stretch`` is infinite (KV-derived caps only, vLLM's default).
    """
    per_seq = profile.decode_per_seq_s + profile.decode_per_kv_token_s * context_tokens
    if per_seq <= 0.0 or math.isinf(stretch):
        return MAX_NUM_SEQS
    alone = profile.decode_fixed_s + per_seq
    return max(1, int(math.floor((stretch * alone - profile.decode_fixed_s) / per_seq + 1e-9)))


def standalone_table(program: Program, stage, inventory: Inventory, profile_dir: Path = PROFILE_DIR) -> np.ndarray:
    """Quantile table of one visit's *standalone* latency: idle pool, no wait, fastest device.

    Same sampling design as the candidates' tables (common random numbers), so a
    path's standalone latency is the same function of its draws as its latency.
    LLM stages: ``prefill(I_new) + o x t(1, I + O/2)`` on the fastest profile of
    the inventory (preferred model and ``max_tokens``); SQL/tool stages: the service time.
    """
    if not isinstance(stage, LLMStage):
        return executor_service_table(stage.service_s, stage.service_cv, 0.0, 0.0)
    spec = program.model(stage.models[0].model)
    max_tokens = stage.max_tokens.options[0].value
    mean_out = output_tokens_moments(output_length(stage), max_tokens)[0]
    prewarm = stage.warms_prefix
    uncached = max(stage.input_tokens - (stage.prefix_tokens if prewarm else 0), 1)
    best = None
    for device in devices_of(inventory, unbounded=True):
        for prof in profiles_of(spec.profile, device.kind, profile_dir):
            t1 = prof.decode_step_s(1, int(stage.input_tokens + mean_out / 2.0)) * prof.decode_factor(
                stage.constraint is not None)
            table = llm_service_table(prof.prefill_s(uncached), t1, 0.0, 0.0, output_length(stage), max_tokens, 1)
            best = table if best is None else np.minimum(best, table)
    if best is None:
        return np.zeros(len(U_GRID))
    return best


def seq_cap(stage: LLMStage, spec: ModelSpec, profile: LatencyProfile, max_tokens: int,
            stretch: float = DECODE_STRETCH) -> int:
    """A replica's ``max_num_seqs`` for the stage: vLLM's default, lowered to what the KV space holds
    (:func:`kv_seq_bound`) and to :func:`latency_cap` at the p99 output (0: not one sequence fits)."""
    prefix = stage.prefix_tokens if stage.warms_prefix else 0
    kv_tokens = profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    mean_out = output_tokens_moments(output_length(stage), max_tokens)[0]
    bound = kv_seq_bound(kv_tokens, prefix, [(stage.input_tokens - prefix, max_tokens, mean_out, 1.0)])
    out99 = output_tokens_moments(output_length(stage), max_tokens)[2]
    return min(MAX_NUM_SEQS, bound, latency_cap(profile, stage.input_tokens + out99, stretch))


def kv_seq_bound(kv_tokens: int, resident: int, classes: Sequence[tuple[int, int, float, float]]) -> int:
    """Running sequences a replica's KV space holds on average: ``kv_tokens`` less the ``resident``
    shared prefixes (held once per replica, not per sequence: prefix caching shares their blocks),
    over the mean footprint of a sequence -- its uncached prompt plus half its mean output, as its KV
    grows one token per step and vLLM allocates blocks as it goes -- weighted over ``classes`` of
    ``(uncached_prompt, max_tokens, mean_output, weight)`` by ``weight`` (a shared pool's time in the
    batch). 0 when one sequence at ``max_tokens`` does not fit beside the prefixes.

    Why the mean rather than every sequence at ``max_tokens``: the worst case made a small-KV replica
    look several times smaller than the simulator (and vLLM) run it -- Llama-3.1-70B on 4 x A100-40GB
    writing 4,000-token reports: 5 sequences where the KV holds 13 on average, so the planner bought
    twice the GPUs of a shared pool that held the SLO in simulation (benchmarks/results/cost_at_equal_slo.md). The fluctuation
    above the mean is vLLM's preemption, which the planner's :data:`MAX_UTILISATION` margin and the
    simulation check (``cortexc plan`` verifies every plan) cover."""
    free = kv_tokens - resident
    if not classes or any(free < max(u, 0) + m for u, m, _, _ in classes):
        return 0
    weight = sum(w for *_, w in classes)
    footprint = (sum(w * (max(u, 0) + o / 2.0) for u, _, o, w in classes) / weight if weight > 0
                 else max(max(u, 0) + o / 2.0 for u, _, o, _ in classes))
    return int(free // max(footprint, 1.0))


class _ConfigFixed(NamedTuple):
    """What :func:`_llm_config` derives from the stage, model, profile and ``max_tokens`` alone -- the same
    for every replica count :func:`replica_range` tries (:func:`_config_fixed`)."""

    kv_tokens: int
    max_num_seqs: int
    prewarm: bool
    uncached: int
    law: OutputLength
    mean_out: float
    out_var: float
    decode_factor: float


def _config_fixed(stage: LLMStage, spec: ModelSpec, profile: LatencyProfile, max_tokens: int,
                  stretch: float = DECODE_STRETCH) -> _ConfigFixed:
    """:class:`_ConfigFixed` of one stage on one profile at ``max_tokens``."""
    prewarm = stage.warms_prefix
    law = output_length(stage)
    mean_out, out_var, _ = output_tokens_moments(law, max_tokens)
    return _ConfigFixed(kv_tokens=profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token),
                        max_num_seqs=seq_cap(stage, spec, profile, max_tokens, stretch), prewarm=prewarm,
                        uncached=stage.input_tokens - (stage.prefix_tokens if prewarm else 0), law=law,
                        mean_out=mean_out, out_var=out_var,
                        decode_factor=profile.decode_factor(stage.constraint is not None))


def _llm_config(stage: LLMStage, spec: ModelSpec, profile: LatencyProfile, device: Device, load: StageLoad,
                max_tokens: int, hedge: int, quality: float, replicas: int,
                stretch: float = DECODE_STRETCH, fixed: _ConfigFixed | None = None) -> Candidate | None:
    """One LLM candidate, or None when it is unstable or the KV space is too small. ``fixed``: the
    arguments' :func:`_config_fixed`, when the caller tries several replica counts (computed if None)."""
    fixed = _config_fixed(stage, spec, profile, max_tokens, stretch) if fixed is None else fixed
    kv_tokens, max_num_seqs = fixed.kv_tokens, fixed.max_num_seqs
    if max_num_seqs < 1:
        return None
    if hedge > replicas:  # a hedge's candidates go to distinct replicas (the runtime's executor, the simulator)
        return None
    prewarm, uncached, mean_out = fixed.prewarm, fixed.uncached, fixed.mean_out
    rate = load.rate_per_s * hedge
    point = llm_batch_point(profile, rate / replicas, stage.input_tokens, max(uncached, 1), mean_out, max_num_seqs)
    if point is None or point.batch > MAX_UTILISATION * max_num_seqs:
        return None
    t_iter = point.t_iter * fixed.decode_factor  # structured output's mask per step
    # The slot wait's service: a sequence's mean step counts itself in its batch (planner.queueing, t_seq),
    # as the table's iteration times do, so the wait's offered load rate x E[S] is the batch B*.
    seq_step = t_iter + point.per_seq_s
    service_mean = point.prefill_s + mean_out * seq_step
    cs2 = float((seq_step ** 2) * fixed.out_var / service_mean ** 2) if service_mean > 0 else 0.0
    full_step = profile.decode_step_s(max_num_seqs, int(max_num_seqs * (stage.input_tokens + mean_out / 2.0)))
    drain = full_batch_service(mean_out, full_step * fixed.decode_factor,
                               profile.prefill_per_token_s * max(uncached, 1), max_num_seqs)
    wait = mgc_wait(replicas * max_num_seqs, rate, service_mean, cs2, load.dispersion_ca2, drain)
    if wait is None:
        return None
    table = llm_service_table(point.prefill_s, t_iter, wait.p_wait, wait.mean_if_waiting,
                              fixed.law, max_tokens, hedge, point.per_seq_s, point.batch, max_num_seqs,
                              prefill_stall(profile, [(rate / replicas, max(uncached, 1))],
                                            [load.burst * copies_prefill_index(load.batch, replicas)], replicas))
    per_device = profile.tp  # GPUs, or CPU cores (slots), one replica spans
    in_use_tokens = point.batch * (stage.input_tokens + mean_out / 2.0) + (stage.prefix_tokens if prewarm else 0)
    return Candidate(
        stage=stage.name, kind="llm", device=device.kind, units=replicas,
        cost_per_hour=replicas * per_device * device.cost_per_unit,
        resources={device.kind: replicas * per_device}, quality=quality, table=table,
        utilisation=point.batch / max_num_seqs, arrival_rate_per_s=rate, visits_per_run=load.visits_per_run,
        tp=profile.tp, model=spec.name, profile=profile.model, max_tokens=max_tokens, hedge=hedge,
        prewarm=prewarm, max_num_seqs=max_num_seqs, kv_budget_tokens=kv_tokens,
        kv_gib=kv_tokens * spec.kv_bytes_per_token / GIB,
        kv_in_use_gib=replicas * in_use_tokens * spec.kv_bytes_per_token / GIB, latency_profile=profile,
        own_args=(point.prefill_s, seq_step, 0.0, 0.0, fixed.law, max_tokens, hedge),
        batch_stretch=batch_stretch(t_iter, point.per_seq_s, point.batch),
    )


def batch_stretch(t_iter: float, per_seq_s: float, batch: float) -> float:
    """``t / (t - N t'(N))`` at ``N = batch + 1`` running sequences (the call and the mean batch of
    others), with the iteration time ``t(N) = t_iter + per_seq_s (N - batch)`` of
    :func:`llm_service_table`: ``(t_iter + per_seq_s) / (t_iter - per_seq_s batch)``; ``inf`` when the
    iteration time has no part that stays fixed as the batch grows."""
    fixed = t_iter - per_seq_s * batch
    return (t_iter + per_seq_s) / fixed if fixed > 0.0 else math.inf


def replica_range(make, limit: int, at_least: int = 0) -> tuple[list[Candidate], int | None]:
    """Candidates from the smallest stable count while p99 still improves (and up to ``at_least``
    whatever the improvement, within ``limit``); also that smallest count. ``make`` is called at most
    once per count (the searches revisit counts: the smallest stable one is then the first candidate);
    what it returns is asked ``quantile_above(0.99, bound)`` and ``quantile(0.99)`` (a shared pool's
    point, :class:`planner.colocation.SharedPoint`, builds its member tables only as far as these need,
    so the counts the search only probes for stability cost no table)."""
    made: dict = {}

    def at(n: int):
        """``make(n)``, memoised per count."""
        if n not in made:
            made[n] = make(n)
        return made[n]

    def ok(n: int) -> bool:
        return at(n) is not None

    first = None
    n = 1
    # Exponential then linear search for the smallest stable count (stability is monotone in n).
    while n <= UNBOUNDED and not ok(n):
        n *= 2
    if n > UNBOUNDED:
        return [], None
    lo = n // 2 + 1 if n > 1 else 1
    for k in range(lo, n + 1):
        if ok(k):
            first = k
            break
    assert first is not None
    if first > limit:
        return [], first
    result = [at(first)]
    for k in range(first + 1, min(limit, max(first + MAX_EXTRA, at_least)) + 1):
        cand = at(k)
        if cand is None:
            break
        if k > at_least and cand.quantile_above(0.99, (1.0 - FLAT_IMPROVEMENT) * result[-1].quantile(0.99)):
            break
        result.append(cand)
    return result, first


def llm_candidates(program: Program, stage: LLMStage, load: StageLoad, inventory: Inventory,
                   unbounded: bool = False, profile_dir: Path = PROFILE_DIR,
                   stretch: float = DECODE_STRETCH, disaggregate: bool = False) -> StageCandidates:
    """Every candidate pool for an LLM stage over the inventory's device kinds and the stage's knobs
    (with ``disaggregate``, prefill/decode-disaggregated pools too: :mod:`planner.disaggregation`)."""
    from planner.disaggregation import pd_candidates  # it builds on this module's tables

    found: list[Candidate] = []
    needs: dict[str, int] = {}
    reasons: list[str] = []
    options = itertools.product(stage.models, stage.max_tokens.options, stage.hedge.options)
    for model_opt, tok_opt, hedge_opt in options:
        try:
            spec = program.model(model_opt.model)
        except KeyError:
            return StageCandidates(stage.name, [], problem=f"model {model_opt.model!r} is not declared")
        quality = model_opt.quality * tok_opt.quality * hedge_opt.quality
        for device in devices_of(inventory, unbounded):
            profiles = profiles_of(spec.profile, device.kind, profile_dir)
            if not profiles:
                reasons.append(f"no profile for {spec.profile or spec.name} on {device.kind}")
                continue
            for profile in profiles:
                if profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token) < stage.input_tokens + tok_opt.value:
                    reasons.append(f"{spec.name} does not fit on {device.kind} at tp={profile.tp}")
                    continue
                per_device = profile.tp  # GPUs, or CPU cores (slots), one replica spans

                fixed = _config_fixed(stage, spec, profile, tok_opt.value, stretch)

                def make(n, profile=profile, device=device, spec=spec, fixed=fixed):
                    return _llm_config(stage, spec, profile, device, load, tok_opt.value, hedge_opt.value, quality, n,
                                       stretch, fixed)

                cands, first = replica_range(make, device.limit // per_device)
                found.extend(cands)
                if disaggregate and hedge_opt.value == 1:  # v1: P/D pools without hedging
                    found.extend(pd_candidates(stage, spec, profile, device, load, tok_opt.value, quality, stretch))
                if not cands and first is not None:
                    key = device.kind
                    needs[key] = min(needs.get(key, math.inf), first * per_device)
    if found:
        return StageCandidates(stage.name, found)
    if needs:
        need = ", ".join(f"{n}x{k}" for k, n in sorted(needs.items()))
        return StageCandidates(stage.name, [], problem=f"keeping up with {load.rate_per_s:.3g} calls/s needs {need}",
                               needs=needs)
    problem = "; ".join(sorted(set(reasons))) or "the inventory has no device it can run on"
    return StageCandidates(stage.name, [], problem=problem)


# --------------------------------------------------------------------------- SQL / tool stages


def executor_candidates(stage: SQLStage | ToolStage, load: StageLoad, inventory: Inventory,
                        unbounded: bool = False) -> StageCandidates:
    """Executor-slot candidates for a SQL or tool stage (CPU slots; free and unbounded without a CPU block)."""
    cpu = inventory.cpu
    limit = UNBOUNDED if (cpu is None or unbounded) else cpu.slots
    unit_cost = cpu.cost_per_hour if cpu is not None else 0.0
    cs2 = stage.service_cv ** 2

    highest = MAX_BATCH_UTILISATION if load.batch > 1 else MAX_UTILISATION

    def make(n: int) -> Candidate | None:
        if load.rate_per_s * stage.service_s > highest * n:
            return None
        wait: BatchWait | None = batch_wait(n, load.rate_per_s, stage.service_s, cs2, load.arrival_ca2, load.batch)
        if wait is None:
            return None
        table = executor_service_table(stage.service_s, stage.service_cv, wait.batch.p_wait,
                                       wait.batch.mean_if_waiting, wait.own)
        split = executor_fanout_split(stage.service_s, stage.service_cv, wait.batch.p_wait,
                                      wait.batch.mean_if_waiting, wait.own) if load.batch > 1 else None
        return Candidate(
            stage=stage.name, kind=stage.kind, device="CPU", units=n, cost_per_hour=n * unit_cost,
            resources={"CPU": n} if cpu is not None else {}, quality=1.0, table=table,
            utilisation=load.rate_per_s * stage.service_s / n, arrival_rate_per_s=load.rate_per_s,
            visits_per_run=load.visits_per_run, fanout_split=split,
        )

    cands, first = replica_range(make, limit, at_least=load.batch)  # slots for a whole burst are on offer
    if cands:
        return StageCandidates(stage.name, cands)
    # first is None: not even UNBOUNDED slots keep up
    slots = f"{first}" if first is not None else f"more than {UNBOUNDED}"
    return StageCandidates(stage.name, [], problem=f"keeping up with {load.rate_per_s:.3g} calls/s needs {slots} CPU slots",
                           needs={"CPU": first or UNBOUNDED})


def stage_candidates(program: Program, stage, load: StageLoad, inventory: Inventory,
                     unbounded: bool = False, profile_dir: Path = PROFILE_DIR,
                     stretch: float = DECODE_STRETCH, disaggregate: bool = False) -> StageCandidates:
    if isinstance(stage, LLMStage):
        return llm_candidates(program, stage, load, inventory, unbounded, profile_dir, stretch, disaggregate)
    return executor_candidates(stage, load, inventory, unbounded)


def prune_dominated(cands: list[Candidate]) -> list[Candidate]:
    """Drop candidates another beats on every count: no costlier, no slower, no worse quality, same resources kind and no more of it."""
    keep = []
    for c in cands:
        dominated = False
        for d in cands:
            if d is c:
                continue
            if (d.resources.keys() == c.resources.keys()
                    and all(d.resources[k] <= c.resources[k] for k in d.resources)
                    and d.cost_per_hour <= c.cost_per_hour and d.quality >= c.quality
                    and c.slower_or_equal(d)
                    and (d.cost_per_hour < c.cost_per_hour or d.quality > c.quality
                         or any(d.resources[k] < c.resources[k] for k in d.resources)
                         or not d.slower_or_equal(c))):
                dominated = True
                break
        if not dominated:
            keep.append(c)
    return keep


def stage_loads(visits: Mapping[str, float], rate_per_s: float, ca2: float,
                batches: Mapping[str, int] | None = None,
                burst: Mapping[str, float] | None = None) -> dict[str, StageLoad]:
    """Per stage: ``rate x visits`` calls/s; ``batches`` gives the fan-out copies of branch stages,
    ``burst`` the arrivals' index of dispersion from upstream pools (:mod:`planner.dispersion`)."""
    batches, burst = batches or {}, burst or {}
    return {s: StageLoad(rate_per_s * v, v, ca2, max(1, batches.get(s, 1)), max(1.0, burst.get(s, 1.0)))
            for s, v in visits.items()}


__all__ = [
    "Candidate", "FanoutSplit", "StageCandidates", "fanout_splits", "StageLoad", "U_GRID", "OUTPUT_CV", "OutputLength", "output_length", "table_quantile",
    "llm_candidates", "executor_candidates", "latency_cap", "standalone_table", "stage_candidates", "prune_dominated", "stage_loads",
]
