"""How bursty each stage's arrivals are, predicted from the plan: the index of dispersion of the
calls reaching a stage, propagated from the LLM pools that feed it.

Why
---
The queueing formulas (:mod:`planner.queueing`) take the arrivals' squared CV ``ca2``; the planner
used to give every stage the workflow's own (1 for Poisson runs). But an LLM pool does not pass
Poisson arrivals on as Poisson departures. Every running sequence of a replica advances one token
per iteration, and the other calls' prefills stall those iterations: the replica's *decode
progress* over a window of ``w`` seconds is ``w`` less the prefill work done in it. That work is
compound Poisson, mean ``x w`` and variance ``m2 w`` per replica (``x`` the prefill share of the
replica's time, ``m2 = sum_j lam_j p_j^2`` over its classes, as in :class:`planner.candidates.
PrefillStall`; ``m2`` is also the long-run variance rate of an M/G/1 server's busy time). Class
``i`` leaves at ``lam_i / (1 - x)`` per second of decode progress, so its departures in a window
have variance ``lam_i w + (lam_i / (1 - x))^2 m2 w``, an index of dispersion (variance / mean of
the counts) of::

    I_out(i) = 1 + lam_i m2 / (1 - x)^2                       (departure_index)

per replica. The pool's index is the same for any number of replicas (independent replicas add
variances and means alike; a router spreading every burst evenly stalls all ``R`` replicas at once
by ``1/R`` of it, which gives the same). One class alone: ``lam m2 = x^2``, so
``I_out = 1 + x^2 / (1 - x)^2``: 1.0 for a decode-bound pool, 5.5 at ``x = 0.68``. A pool without
prefill stalls (``m2 = 0``; a disaggregated pool's decode replicas) passes Poisson on.

Cohorts
-------
That is the stall's share only: it treats each class's departures as Poisson in decode progress.
They are not: the calls that arrive while a replica prefills are admitted together at the next
iteration boundary (vLLM's scheduler prefills every waiting prompt that fits in one iteration), so
they advance together and leave in the same iteration when their outputs are as long. Counted in
decode progress (which stops while the replica prefills), the admissions are compound Poisson: the
epochs are the Poisson arrivals in decode time, each bringing the cluster of calls one such arrival
starts -- itself, the calls arriving during its prefill, those arriving during theirs, and so on (a
Galton-Watson tree with Poisson(``lam_j p``) children of class ``j`` per call of prefill ``p``: an
M/G/1 busy period of the prefill work). With ``a = pi_i / (1 - x)`` the class-``i`` calls of a
cluster and ``pi_i = lam_i / Lambda``, the second moment ``b`` of that count solves
``b (1 - x) = pi_i + 2 lam_i p_i a + Lambda m2 a^2``, so the compound-Poisson excess is::

    C_i = E[N_i (N_i - 1)] / E[N_i] = b / a - 1 = 2 x_i / (1 - x) + lam_i m2 / (1 - x)^2   (cohort_excess)

(``x_i`` the class's own prefill share; one class of fixed prompts: ``1 / (1 - x)^2 - 1``, the Borel
law's). A cohort leaves spread by its outputs' lengths: two calls ``|O_1 - O_2|`` iterations apart,
so over a window ``w`` a share ``E[(1 - |O_1 - O_2| t_iter / w)^+]`` of ``C_i`` shows
(:func:`cohort_share`, normal ``O_1 - O_2``). Over a window shorter than the decode stay the cohorts
departing were formed before it, independently of the stalls in it, so the two excesses add::

    I_out(i, w) = 1 + (lam_i m2 / (1 - x)^2) window_share(w) + C_i cohort_share(w)

and beyond the stay both fade as ``D / w`` (departures are then the admissions of the same window).
A cohort fits in the free slots (``N <= cap - B``): ``C_i <= cap - B - 1``.

Over a window ``w`` (:func:`window_share`) the stall's excess is reached only for windows longer than the prefill server's relaxation time ``m2 / (1 - x)^2`` (the reflected-Brownian
time scale ``sigma^2 / mu^2`` of its workload), a share ``w / (w + m2 / (1 - x)^2)`` before; and
only within the decode stay ``D = O t_iter`` (a stalled sequence leaves later, in a later window),
a share ``min(1, D / w)`` beyond it. A queue reads its arrivals over its own time scale: an LLM
stage over its mean stay (its prefill stall integrates the work over it), an executor pool over its
own relaxation time ``k lam E[S^2] / (c (1 - rho))^2`` (:func:`executor_window`).

Two corrections. The batch cap (:func:`cap_damping`): over a stay a replica admits at most
``cap / B`` times its mean prefill work plus one prompt per free slot; a stall beyond that is a
slot wait, which delays admissions rather than the running sequences, so the shock is clipped
there (the variance of ``min(Z, c)``). And a pool's own departures coming back to it (a retry
loop, or a shared pool serving the next stage) are not counted as burstier arrivals into it
(:func:`_foreign`): they arrive *fewer* while it is stalled, a negative feedback.

Bursty arrivals into a pool make its prefill work burstier: counts of index ``I_j`` carry prefill
work of variance ``I_j lam_j p_j^2`` per second, so ``m2`` weighs each class by its arrivals' index
(:func:`planner.candidates.prefill_stall`'s ``burst``), and a fan-out branch's class also by
``max(1, k / R)`` (:func:`planner.candidates.copies_prefill_index`: its ``k`` copies arrive together
and the router spreads them over the ``R`` replicas), as the pools' latency tables do.

Propagation over the call graph (:func:`stage_dispersion`), as excesses ``I - 1`` by origin:

* thinning a stream of index ``I`` with probability ``p`` (a branch): ``1 + p (I - 1)``;
* merging independent streams (several predecessors, a loop's return): the rate-weighted mean;
* an executor stage (SQL/tool: short service) passes its arrivals on;
* a fan-out passes its visits' index to its join; the first stage of a branch receives the
  visits as batches of ``k`` copies, whose epochs have the fan-out's index (the batch size is
  :class:`planner.candidates.StageLoad`'s ``batch``: fixed cohorts of ``k`` have index ``k``,
  :func:`batched`); the later stages of a branch the same index;
* the workflow's entry is Poisson here (its own ``ca2`` stays in ``StageLoad.ca2``).

The result per stage, ``I``, is :class:`planner.candidates.StageLoad`'s ``burst``: the executor
pools' batch ``ca2`` grows by ``I - 1``, the LLM pools' prefill variance by the factor ``I``.
Loops make the graph cyclic: :func:`stage_dispersion` iterates arrivals from departures and
departures from arrivals :data:`ROUNDS` times from Poisson. The pools upstream are the solver's
choice, so :meth:`planner.api.Planner._second_pass` sizes the pools again from the first choice.

Limits (``benchmarks/llm_pool_vs_sim.py`` sets the departures' index against the simulator's for
single pools; ``benchmarks/results/llm_pool_vs_sim.md``): with the cohorts the 1 s index is within
25% of the simulator's for ``x <= 0.65`` (the stall alone was low by up to half); it over-predicts
up to 2x at ``x >= 0.69`` (the cap regulates a nearly full replica's admissions more than the mean
free slots say), and over 5 s windows there. Bursty arrivals enter through ``m2`` only: a burst of the class's own arrivals within one
busy period would also join one cohort (``I_i (1 + 2 x_i / (1 - x)) - 1`` in place of
``2 x_i / (1 - x)``), but the index carried here is read over the stay, not the busy period, and
passing it on over-predicts fan-out stages' executors (chess_sql's ``run``), so it is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import math
from typing import TYPE_CHECKING, NamedTuple

from cortexlang.semantics import Semantics
from planner.visits import VisitChain, branch_chain, branch_multiplicity

from cortexlang.laws import raw_moment
from planner.candidates import copies_prefill_index, output_length, output_tokens_moments

if TYPE_CHECKING:
    from planner.candidates import Candidate

ROUNDS = 6
"""Rounds of the arrivals/departures iteration (loops feed a pool its own departures)."""


def departure_index(rate_per_replica: float, m2: float, share: float, replicas: int = 1) -> float:
    """Index of dispersion of one class's departures from an LLM pool (module docstring):
    ``1 + lam m2 / (1 - x)^2`` (per-replica ``lam``, ``m2``); 1 without prefill stalls. The same
    for any number of replicas: independent replicas add variances and means alike, and a router
    that spreads every burst evenly over ``R`` replicas stalls them all at once by ``1 / R`` of it."""
    if m2 <= 0.0 or rate_per_replica <= 0.0 or share <= 0.0:
        return 1.0
    if share >= 1.0:
        raise ValueError("the prefill share must be below 1")
    return 1.0 + rate_per_replica * m2 / (1.0 - share) ** 2


def cohort_excess(rate_per_replica: float, class_share: float, m2: float, share: float) -> float:
    """Excess index of one class's *admissions* counted in decode progress (module docstring,
    "Cohorts"): ``E[N_i (N_i - 1)] / E[N_i]`` for ``N_i`` the class-``i`` calls of one cluster (an
    M/G/1 busy period of the prefill work), ``2 x_i / (1 - x) + lam_i m2 / (1 - x)^2`` (per-replica
    ``lam_i``, its prefill share ``x_i``, the replica's ``x`` and ``m2``); 0 without prefill."""
    if m2 <= 0.0 or rate_per_replica <= 0.0 or share <= 0.0:
        return 0.0
    if share >= 1.0:
        raise ValueError("the prefill share must be below 1")
    return 2.0 * class_share / (1.0 - share) + rate_per_replica * m2 / (1.0 - share) ** 2


def cohort_share(window_s: float, decode_s: float, jitter_s: float) -> float:
    """The share of the cohort excess (:func:`cohort_excess`) seen over a window of ``window_s``.

    Two calls of one cohort leave ``|O_1 - O_2|`` iterations apart, ``|Z| jitter_s`` seconds with
    ``Z`` standard normal (``jitter_s = sqrt(2) sd(O) t_iter``): a pair falls in one window of ``w``
    with probability ``E[(1 - |Z| s)^+]``, ``s = jitter_s / w``, which is
    ``2 Phi(1/s) - 1 - 2 s (phi(0) - phi(1/s))``; beyond the decode stay a share ``min(1, D / w)``
    (as :func:`window_share`: over windows longer than the stay the departures are the admissions
    of the same window, whose index is the arrivals')."""
    if window_s <= 0.0:
        return 0.0
    stay = min(1.0, decode_s / window_s)
    if jitter_s <= 0.0:
        return stay
    s = jitter_s / window_s
    a = 1.0 / s
    phi0, phia = 1.0 / math.sqrt(2.0 * math.pi), math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return (math.erf(a / math.sqrt(2.0)) - 2.0 * s * (phi0 - phia)) * stay


def cap_damping(bound_over_sd: float) -> float:
    """Share of the stall's variance left when the stall over a stay cannot exceed its mean by more
    than ``c = bound_over_sd`` standard deviations (the batch cap's bound, :func:`plan_dispersion`):
    ``Var(min(Z, c))`` for ``Z`` standard normal, 1 as ``c -> inf``, ``1/2 - 1/(2 pi)`` at ``c = 0``."""
    c = max(bound_over_sd, -8.0)
    if c > 8.0:
        return 1.0
    pdf = math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + math.erf(c / math.sqrt(2.0)))
    m1 = -pdf + c * (1.0 - cdf)
    m2 = cdf - c * pdf + c * c * (1.0 - cdf)
    return max(m2 - m1 * m1, 0.0)


def thinned(index: float, p: float) -> float:
    """Index of dispersion of a stream of index ``index`` kept with probability ``p``."""
    return 1.0 + p * (index - 1.0)


def merged(streams: Sequence[tuple[float, float]]) -> float:
    """Index of dispersion of independent ``(rate, index)`` streams superposed: rate-weighted mean."""
    total = sum(r for r, _ in streams)
    if total <= 0.0:
        return 1.0
    return sum(r * i for r, i in streams) / total


def batched(index: float, k: int) -> float:
    """Index of dispersion of the calls when each arrival brings ``k`` at once (a fan-out's copies):
    ``k`` times the epochs' index (fixed cohorts of ``k`` at Poisson epochs: ``k``)."""
    return k * index


def _flows(chain: VisitChain) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """Per node its expected visits per instance, and per edge ``(a, b)`` the expected transitions
    per instance (``"<entry>"`` as the source of the first node)."""
    reach = chain.reach()
    n = len(chain.states)
    visits: dict[str, float] = {}
    flow: dict[tuple[str, str], float] = {("<entry>", chain.states[0][0]): 1.0} if n else {}
    for i, (node, _) in enumerate(chain.states):
        visits[node] = visits.get(node, 0.0) + float(reach[i])
        for j, p in chain.succ[i]:
            if j < n:
                key = (node, chain.states[j][0])
                flow[key] = flow.get(key, 0.0) + float(reach[i]) * p
    return visits, flow


class OriginScale(NamedTuple):
    """How an origin's excess shows over a window (:func:`index_at`): its decode stay ``decode_s``
    and prefill relaxation time ``busy_s`` (:func:`window_share`), and the part ``cohort`` of its
    excess that is cohorts, spread by ``jitter_s`` (:func:`cohort_share`)."""

    decode_s: float
    busy_s: float
    cohort: float = 0.0
    jitter_s: float = 0.0

    def share(self, window_s: float) -> float:
        """The share of the origin's excess seen over a window of ``window_s`` seconds."""
        stall = window_share(window_s, self.decode_s, self.busy_s)
        if self.cohort <= 0.0:
            return stall
        return (1.0 - self.cohort) * stall + self.cohort * cohort_share(window_s, self.decode_s, self.jitter_s)


Excess = dict[str, float]
"""A stream's excess dispersion by origin: LLM stage -> the ``I - 1`` its departures' stalls and
cohorts add (thinned and merged along the way); empty for a Poisson stream."""


def _thin(excess: Excess, p: float) -> Excess:
    return {k: p * v for k, v in excess.items()}


def _merge(streams: Sequence[tuple[float, Excess]]) -> Excess:
    total = sum(r for r, _ in streams)
    if total <= 0.0:
        return {}
    keys = {k for _, e in streams for k in e}
    return {k: sum(r * e.get(k, 0.0) for r, e in streams) / total for k in keys}


def stage_dispersion(chain: VisitChain, departure: Callable[[str, Mapping[str, Excess]], Excess],
                     fanout_width: Mapping[str, int] | None = None) -> dict[str, Excess]:
    """Per stage, the excess dispersion of its arrivals by origin (of the batches' epochs for a stage
    inside a fan-out), given ``departure(stage, arrivals)``: the excess of a stage's departures when
    the stages' arrivals have the excesses ``arrivals`` (an executor stage returns its own arrivals';
    an LLM stage ``{stage: I_out - 1}``). See the module docstring for the propagation rules."""
    wf = chain.workflow
    sem = Semantics(wf, chain.loop_budget, fanout_width)
    fanouts = set(wf._index["fanout"])
    graphs: list[tuple[str | None, dict[str, float], dict[tuple[str, str], float]]] = []
    todo: list[tuple[str | None, VisitChain]] = [(None, chain)]
    while todo:
        owner, ch = todo.pop()
        visits, flow = _flows(ch)
        graphs.append((owner, visits, flow))
        for node in visits:
            if node in fanouts:
                for b in range(len(sem.fanout(node).branches)):
                    todo.append((node, branch_chain(chain, node, b, fanout_width)))
    stages = {s.name for s in wf.stages}
    arrivals: dict[str, Excess] = {s: {} for s in stages} | {f: {} for f in fanouts}
    for _ in range(ROUNDS):
        out = {s: (departure(s, arrivals) if s in stages else arrivals[s]) for s in arrivals}
        new = dict(arrivals)
        for owner, visits, flow in graphs:
            into: dict[str, list[tuple[float, Excess]]] = {}
            for (a, b), f in flow.items():
                if a == "<entry>":
                    # A branch's entry gets the fan-out's visits (as batches); the workflow's, Poisson.
                    into.setdefault(b, []).append((f, arrivals[owner] if owner else {}))
                    continue
                p = f / visits[a] if visits.get(a, 0.0) > 0 else 0.0
                into.setdefault(b, []).append((f, _thin(out[a], p)))
            for b, streams in into.items():
                new[b] = _merge(streams)
        arrivals = new
    return {s: arrivals[s] for s in stages}


def window_share(window_s: float, decode_s: float, busy_s: float) -> float:
    """The share of a pool's asymptotic departure excess seen over a window of ``window_s`` seconds.

    The prefill server's busy time over a window has variance ``m2 w`` only for windows longer than
    its relaxation time: its workload is, in heavy traffic, a reflected Brownian motion of drift
    ``-(1 - x)`` and variance ``m2`` per second, which relaxes over ``busy_s = m2 / (1 - x)^2``
    (Abate and Whitt's time scale ``sigma^2 / mu^2``); shorter windows see a share
    ``w / (w + busy_s)`` of it. And a stall only moves departures within the decode stay
    ``decode_s`` (a sequence delayed leaves later, in a later window): a share ``min(1, D / w)``."""
    if window_s <= 0.0:
        return 0.0
    return window_s / (window_s + busy_s) * min(1.0, decode_s / window_s)


def index_at(excess: Excess, window_s: float | None, scales: Mapping[str, tuple[float, ...]]) -> float:
    """Index of dispersion over a window of ``window_s`` of a stream with excess ``excess``;
    ``scales``: per origin its :class:`OriginScale` (or ``(decode_s, busy_s)``: no cohorts).
    ``window_s`` None: each origin over its whole decode stay (the most it reaches)."""
    total = 1.0
    for k, v in excess.items():
        sc = OriginScale(*scales.get(k, (0.0, 0.0)))
        total += v * sc.share(sc.decode_s if window_s is None else window_s)
    return total


def plan_dispersion(chain: VisitChain, chosen: Mapping[str, "Candidate"],
                    fanout_width: Mapping[str, int] | None = None) -> dict[str, float]:
    """Per stage, the index of dispersion of its arrivals with the LLM pools ``chosen`` (stage -> the
    chosen candidate): a pool's classes are the stages it serves (its group, or the stage alone), each
    at its chosen rate over the pool's replicas and its uncached prompt; executor stages pass their
    arrivals on; a prefill/decode-disaggregated pool's decode replicas are never stalled by prefills.
    An LLM stage reads its arrivals over its own mean stay (its stall integrates the prefill work over
    it), an executor stage over the upstream decode stays (:func:`index_at`)."""
    wf = chain.workflow
    scales: dict[str, tuple[float, float]] = {}
    copies = {s: k for s, (_, k) in branch_multiplicity(wf, fanout_width).items()}

    def departure(stage: str, arrivals: Mapping[str, Excess]) -> Excess:
        c = chosen.get(stage)
        if c is None or c.kind != "llm":
            return arrivals[stage]
        return pool_departure(wf, stage, chosen, arrivals, scales, copies)

    excess = stage_dispersion(chain, departure, fanout_width)
    out = {}
    for s, e in excess.items():
        c = chosen.get(s)
        if c is not None and c.kind == "llm":
            out[s] = index_at(_foreign(e, c.group_stages or (s,)), read_window(c, wf.stage(s)), scales)
        elif c is not None and e:
            out[s] = index_at(e, read_window(c, wf.stage(s)), scales)
        else:
            out[s] = 1.0
    return out


def read_window(c: "Candidate", stage) -> float | None:
    """The window over which the queue of pool ``c`` (serving ``stage``) reads its arrivals' dispersion:
    an LLM stage its own mean stay (its prefill stall integrates the work over it), an executor stage
    its relaxation time (:func:`executor_window`; None: the upstream stays' whole extent)."""
    return c.mean if c.kind == "llm" else executor_window(c, stage)


def executor_window(c: "Candidate", stage) -> float | None:
    """The window over which an executor pool's queue reads its arrivals' dispersion: its own
    relaxation time, the same reflected-Brownian time scale as :func:`window_share`'s, with the work
    arriving at variance ``k lam E[S^2]`` per second (batches of ``k`` copies of service ``S``) and
    draining at ``c (1 - rho)`` slot-seconds per second: ``k lam E[S^2] / (c (1 - rho))^2``.
    None (the upstream stays' whole extent) for a pool without spare capacity to drain at."""
    k = len(c.fanout_split.own) if c.fanout_split is not None else 1
    drain = c.units * (1.0 - c.utilisation)
    if drain <= 0.0:
        return None
    second = raw_moment(stage.service_s, stage.service_cv, 2)
    return k * c.arrival_rate_per_s * second / drain ** 2


def pool_departure(wf, stage: str, chosen: Mapping[str, "Candidate"], arrivals: Mapping[str, Excess],
                   scales: dict[str, tuple[float, float]], copies: Mapping[str, int] | None = None) -> Excess:
    """The excess dispersion of LLM stage ``stage``'s departures from its chosen pool (module
    docstring), ``{stage: I_out - 1}``: the stall's (:func:`departure_index`) and the cohorts'
    (:func:`cohort_excess`, at most the free slots less one), with ``scales[stage]`` set to its
    :class:`OriginScale`. The pool's classes are the stages it serves, each at its chosen rate
    over the pool's replicas and its uncached prompt, their prefill variance weighted by their
    arrivals' index over their own stay (without the pool's own departures: :func:`_foreign`) and,
    for a fan-out branch's stage, by its ``copies`` (stage -> ``k``, :func:`planner.candidates.
    copies_prefill_index`); the
    batch cap damps the excess (:func:`cap_damping`); a prefill/decode-disaggregated pool's decode
    replicas are never stalled by prefills (no excess)."""
    c = chosen[stage]
    if c.prefill_replicas > 0 or c.latency_profile is None:
        return {}
    prof = c.latency_profile
    members = [t for t in (c.group_stages or (stage,)) if t in chosen]
    replicas = max(chosen[t].units for t in members)
    share, m2, m2_poisson, rate, stay, weight, context, own_share = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for t in members:
        st, ct = wf.stage(t), chosen[t]
        uncached = max(st.input_tokens - (st.prefix_tokens if ct.prewarm else 0), 1)
        lam = ct.arrival_rate_per_s / replicas
        out = output_tokens_moments(output_length(st), ct.max_tokens or st.max_tokens.preferred)[0]
        burst = index_at(_foreign(arrivals.get(t, {}), members), ct.mean, scales) * copies_prefill_index(
            (copies or {}).get(t, 1), replicas)
        share += prof.prefill_per_token_s * lam * uncached
        if t == stage:
            own_share = prof.prefill_per_token_s * lam * uncached
        m2 += burst * lam * (prof.prefill_per_token_s * uncached) ** 2
        m2_poisson += lam * (prof.prefill_per_token_s * uncached) ** 2
        rate += lam
        stay += lam * ct.mean
        weight += lam * out
        context += lam * out * (st.input_tokens + out / 2.0)
    if share >= 1.0 or rate <= 0.0 or m2 <= 0.0:
        return {}
    own_rate = c.arrival_rate_per_s / replicas
    batch, cap = c.utilisation * c.max_num_seqs, c.max_num_seqs
    stall = departure_index(own_rate, m2, share, replicas) - 1.0
    # A cohort is admitted into the free slots only: N <= cap - B, so E[N (N - 1)] / E[N] <= cap - B - 1.
    cohort = min(cohort_excess(own_rate, own_share, m2, share), max(cap - batch - 1.0, 0.0))
    excess = stall + cohort
    stay /= rate
    # The batch cap: over a stay, the replica admits at most cap / B times the mean prefill work,
    # plus one prefill per free slot (planner.candidates._batch_capped); the stall beyond is a
    # slot wait, which delays admissions, not the running sequences' departures.
    if batch > 0.0 and stay > 0.0:
        per_prefill = m2_poisson / share
        bound = share * stay * max(cap / batch - 1.0, 0.0) + max(cap - batch, 0.0) * per_prefill
        spread = (1.0 - share) + share / replicas
        excess *= cap_damping(bound / math.sqrt(m2 * spread * stay))
    own = wf.stage(stage)
    own_out, own_var, _ = output_tokens_moments(output_length(own), c.max_tokens or own.max_tokens.preferred)
    d1 = prof.decode_per_seq_s + prof.decode_per_kv_token_s * context / max(weight, 1e-12)
    # A sequence's step: the batch's mean plus its own seat (planner.queueing, t_seq).
    t_iter = (prof.decode_fixed_s + d1 * (batch + 1.0)) / (1.0 - share) * prof.decode_factor(own.constraint is not None)
    scales[stage] = OriginScale(own_out * t_iter, m2 / (1.0 - share) ** 2, cohort / max(stall + cohort, 1e-12),
                                math.sqrt(2.0 * own_var) * t_iter)
    return {stage: excess}


def _foreign(excess: Excess, pool: Sequence[str]) -> Excess:
    """``excess`` without what the pool serving ``pool`` put there itself: its own departures coming
    back (a retry loop) carry its stalls' gaps, which lower its prefill work while it is stalled
    (negative feedback), so they are not counted as burstier arrivals into it."""
    return {k: v for k, v in excess.items() if k not in pool}


__all__ = ["plan_dispersion", "pool_departure", "executor_window", "read_window", "departure_index", "thinned", "merged", "batched", "stage_dispersion",
           "window_share", "index_at", "cap_damping", "cohort_excess", "cohort_share", "OriginScale", "ROUNDS"]
