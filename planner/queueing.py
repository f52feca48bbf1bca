"""Queueing model of a pool: G/G/c waiting time and the LLM batching operating point.

Waiting time (M/G/c, Allen–Cunneen)
-----------------------------------
A pool of ``c`` identical servers, arrivals at rate ``lam`` with inter-arrival
squared coefficient of variation ``ca2``, service time with mean ``S`` and
squared CV ``cs2``. With offered load ``a = lam * S`` and utilisation
``rho = a / c < 1``, the Erlang-C probability that an arrival waits is::

    C(c, a) = B(c, a) / (1 - rho * (1 - B(c, a)))

where the Erlang-B blocking probability follows the stable recursion
``B(0) = 1``, ``B(k) = a B(k-1) / (k + a B(k-1))``. Allen–Cunneen corrects the
M/M/c mean wait for general arrivals and service::

    Wq = C(c, a) / (c / S - lam) * (ca2 + cs2) / 2

and the wait distribution is approximated as a point mass at 0 with
probability ``1 - C`` and otherwise exponential with mean ``Wq / C``.

Bursty arrivals (``ca2 > 1``) change the probability of waiting too, not only the wait of
those who wait: the number of busy servers is about normal with mean ``a`` and variance
``z a``, where ``z`` is the arrivals' *peakedness* on the pool (the G/GI/inf heavy-traffic
variance ``lam S + lam (ca2 - 1) E[min(S1, S2)]``, :func:`peakedness`: ``z = ca2`` for a
deterministic service, ``1 + 0.56 (ca2 - 1)`` for a lognormal one of CV 1, the declared laws'
family: :mod:`cortexlang.laws`). Erlang C of ``c / z`` servers
at the same utilisation has that spread in units of ``z`` servers (the Halfin–Whitt parameter
``(c - a) / sqrt(z a)``), so ``C_z = C(c / z, a / z)`` (:func:`scaled_erlang_c`), and
``Wq = C_z / (c / S - lam) * (ca2 + cs2) / 2``. Against a G/G/c simulation (gamma arrivals,
lognormal service, ``tests/planner/test_queueing.py``): at ``c = 60``, ``rho = 0.75``, ``ca2 = 3`` it
waits with probability 0.130, ``C_z`` says 0.129 and Erlang C 0.021; the mean wait is within 15% of the
simulated one in every case tried (``c`` 8-60, ``ca2`` 0.3-5), Erlang C's 2-6x low for ``ca2 >= 3``.
It matters for LLM pools (``c = replicas x max_num_seqs`` slots: Erlang C is tiny there at any
``ca2``) fed by the bursty departures of the pools upstream (:mod:`planner.dispersion`).

LLM pools: continuous batching
------------------------------
An engine replica runs every admitted sequence in each iteration. With ``B``
sequences running (mean over time), prompt length ``I`` (``I_new`` of it not in
the prefix cache), mean output ``O`` tokens, and the profile's coefficients
(:mod:`planner.profiles`), one iteration takes the decode step of the batch
plus the chunked prefill of the prompts that arrived during it::

    t_iter(B) = d0 + d1 * B + pp * lam_r * I_new * t_iter(B)
             => t_iter(B) = (d0 + d1 * B) / (1 - pp * lam_r * I_new)

with ``d0 = decode_fixed``, ``d1 = decode_per_seq + decode_per_kv_token * (I + O/2)``
(a sequence holds on average ``I + O/2`` KV tokens), ``pp`` the prefill cost
per token and ``lam_r`` the arrival rate per replica. ``t_iter(B)`` is the
engine's iteration averaged over time; a running sequence sees more: its own
iterations are those where it is in the batch, so the batch it runs in counts
itself besides the others. The running sequences are the busy servers of an
M/G/inf-like system: the others present during a sequence's stay are Poisson
with mean ``B`` (the size-biased count ``E[N^2] / E[N] = B + 1``), so the
iteration a sequence sees averages::

    t_seq(B) = t_iter(B) + d1 / (1 - x)

and a request's service time is ``S(o) = prefill(I_new) + o * t_seq(B)``
(:attr:`BatchPoint.seq_step_s`; the latency tables draw the others around
``B``: :func:`planner.candidates.llm_service_table`). Little's law closes the
loop: ``B = lam_r * E[S]``, which is linear in ``B`` and solves to::

    B* = lam_r * (P + O * (d0 + d1) / (1 - x)) / (1 - lam_r * O * d1 / (1 - x)),
    x  = pp * lam_r * I_new,  P = prefill(I_new)

(until 2026-12-08 the numerator read ``d0`` alone: the tables added the call's
own ``d1`` but the batch, the utilisation and the slot wait did not, so where
``d1`` is a large part of a step at a small batch -- SmolLM2 on one CPU core,
``d1 = 11.4`` ms on ``d0 = 50.4`` ms, ``B ~ 1.5`` -- the planned batch was 17%
short and the slot wait far too rare; on GPUs, where ``B`` is tens, one ``d1``
is a few percent of a step.)

The replica is stable when ``x < 1``, the denominator is positive and
``B* < max_num_seqs``; the predicted utilisation is ``B* / max_num_seqs``. The
batching effect is explicit: more load means a larger batch and slower
iterations for every sequence. Queueing for a batch slot (when the batch is
full) uses the M/G/c wait above with ``c = replicas * max_num_seqs`` slots
and service time ``S``; its queue drains at the full batch's pace (:func:`full_batch_service`,
since 2026-12-08: a call waits only while every slot is busy).

Executor pools under fan-out bursts (M^X/G/c, batch arrivals)
-------------------------------------------------------------
A stage inside a fan-out of width ``k`` receives its calls in *batches*: each
fan-out visit sends ``k`` calls at once. Erlang-C assumes single Poisson
arrivals, so it under-predicts the wait badly here (one slot and an 8-way
fan-out: 7 of 8 calls wait whatever the load, while Erlang-C says ``rho``).
:func:`batch_wait` treats the ``c`` slots as one pooled server of rate ``c``
(service seconds per second) and a batch as one job of work
``B = S_1 + ... + S_k`` (mean ``k S``, squared CV ``cs2 / k``), arriving at
rate ``lam / k`` with the runs' ``ca2``. The M^X/G/1 decomposition then splits
a call's wait into two independent parts::

    W = W_B + W_J

* ``W_B``, the other batches: the wait of the batch for the pool. Kingman's
  G/G/1 (Pollaczek–Khinchine for Poisson batches)::

      P(W_B > 0) = rho,   E[W_B] = rho / (1 - rho) * (ca2 + cs2 / k) / 2 * k S / c

  with the conditional wait exponential, as above.
* ``W_J``, its own batch: a call at position ``j`` (uniform on ``0..k-1``)
  starts once the work of the ``j`` calls ahead of it is done::

      W_J(j) = j * S / c

Both means are exact for ``c = 1`` and Poisson batches. For ``c > 1`` the pooled server is
conservative: it makes a batch wait whenever the pool is busy (``P = rho``,
while Erlang-C is below ``rho``), never starts two batches at once, and
delays the calls of a batch that idle slots could start together; so the
predicted wait is an upper estimate and a plan sized on it holds (checked
against a FCFS simulation in ``tests/planner/test_queueing.py``: e.g. 4 slots,
8-way bursts, 72% busy: mean 3.8 s vs 3.2 s simulated, p99 17.9 vs 16.4 in
units of ``S``; Allen–Cunneen with the batch's dispersion gave a mean of 1.8).
``k = 1`` (no fan-out) keeps the Allen–Cunneen M/G/c wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cortexlang.laws import min_pair_share
from planner.profiles import LatencyProfile


def erlang_b(c: int, a: float) -> float:
    """Erlang-B blocking probability of ``c`` servers at offered load ``a`` (stable recursion)."""
    if c < 0 or a < 0:
        raise ValueError("c and a must be non-negative")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


@lru_cache(maxsize=65536)
def erlang_c(c: int, a: float) -> float:
    """Erlang-C probability that an arrival waits, for ``c`` servers at offered load ``a < c``
    (memoised: the planner's rebuilds ask for the same pools again).

    Small pools use the Erlang-B recursion; large ones (LLM pools have
    ``replicas x max_num_seqs`` slots) the same closed form evaluated in log
    space with numpy: ``C = T / (sum_{k<c} a^k/k! + T)``, ``T = a^c/c! * c/(c-a)``.
    """
    if c <= 0:
        raise ValueError("c must be positive")
    if a >= c:
        return 1.0
    if a <= 0:
        return 0.0
    if c <= 64:
        b = erlang_b(c, a)
        rho = a / c
        return b / (1.0 - rho * (1.0 - b))
    k, log_fact = _log_factorials(c)
    log_terms = k * math.log(a) - log_fact
    log_tail = log_terms[c] + math.log(c / (c - a))
    head = log_terms[:c]
    top = max(head.max(), log_tail)
    total = np.exp(head - top).sum() + math.exp(log_tail - top)
    return float(math.exp(log_tail - top) / total)


@lru_cache(maxsize=1024)
def _log_factorials(c: int) -> tuple[np.ndarray, np.ndarray]:
    """``k = 0..c`` and ``log k!`` (cumulative sums of ``log k``), read-only: :func:`erlang_c` reuses them."""
    k = np.arange(c + 1)
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, c + 1)))))
    k.flags.writeable = False
    log_fact.flags.writeable = False
    return k, log_fact


@dataclass(frozen=True)
class Wait:
    """Waiting time: 0 with probability ``1 - p_wait``, else exponential with ``mean_if_waiting``."""

    p_wait: float
    mean_if_waiting: float

    @property
    def mean(self) -> float:
        return self.p_wait * self.mean_if_waiting


def peakedness(ca2: float, cs2: float) -> float:
    """Variance / mean of the number of busy servers of a G/GI/inf queue with arrivals of squared CV
    (index of dispersion) ``ca2``: ``1 + (ca2 - 1) E[min(S1, S2)] / E[S]`` (service times of the
    declared laws' family, :func:`cortexlang.laws.min_pair_share`; the infinite-server
    heavy-traffic variance ``lam E[S] + lam (ca2 - 1) int G^c(u)^2 du``, and ``int G^c(u)^2 du =
    E[min(S1, S2)]``); 1 for Poisson arrivals. At least a small positive floor."""
    return max(1.0 + (ca2 - 1.0) * min_pair_share(cs2), 0.05)


def scaled_erlang_c(c: int, a: float, z: float) -> float:
    """Probability of waiting of a c-server pool at offered load ``a`` whose busy-server count has
    peakedness ``z`` (:func:`peakedness`): the Erlang-C probability of ``c / z`` servers at the same
    utilisation ``a / c``. The busy count is about normal, mean ``a`` and variance ``z a``; scaling
    servers and load by ``1 / z`` keeps the utilisation and gives the scaled pool's count, in units
    of ``z`` servers, that same spread (the Halfin–Whitt parameter ``(c - a) / sqrt(z a)``). A
    non-integer ``c / z`` interpolates between its neighbours; ``z = 1`` is :func:`erlang_c`."""
    if abs(z - 1.0) < 1e-12:
        return erlang_c(c, a)
    rho = a / c
    scaled = c / z
    lo = max(int(math.floor(scaled)), 1)
    hi = max(int(math.ceil(scaled)), 1)
    p_lo = erlang_c(lo, rho * lo)
    if hi == lo:
        return p_lo
    f = min(max(scaled - lo, 0.0), 1.0)
    return (1.0 - f) * p_lo + f * erlang_c(hi, rho * hi)


def mgc_wait(servers: int, rate: float, service_mean: float, cs2: float, ca2: float = 1.0,
             drain_service: float | None = None) -> Wait | None:
    """G/G/c waiting time; None when the pool is unstable (``rate * S >= c``): Allen–Cunneen's mean
    wait of those who wait, ``(ca2 + cs2) / 2 / (c / S_q - rate)``, with the probability of waiting
    of a pool whose busy count has the arrivals' peakedness (:func:`scaled_erlang_c`): bursty
    arrivals fill every server far more often than Erlang C says for many servers.

    ``S_q`` is the mean service while a queue stands (``drain_service``; ``S`` when None or shorter):
    a call waits only while every server is busy, so the queue drains at ``c / S_q`` however fast the
    servers are at the time-average load (an LLM pool's full batch: :func:`full_batch_service`). The
    probability of waiting keeps the time-average load ``a = rate S``. A queue that cannot drain
    (``c / S_q <= rate``) is unstable: None."""
    a = rate * service_mean
    if a >= servers:
        return None
    if rate <= 0:
        return Wait(0.0, 0.0)
    drain = servers / max(service_mean, drain_service or 0.0) - rate
    if drain <= 0.0:
        return None
    p = scaled_erlang_c(servers, a, peakedness(ca2, cs2))
    mean_if_waiting = (ca2 + cs2) / 2.0 / drain
    return Wait(p, mean_if_waiting)


def full_batch_service(mean_out: float, full_step_s: float, prefill_s: float, slots: int) -> float:
    """An LLM call's mean stay while its replica's ``slots`` are all taken and calls wait: the drain
    service of :func:`mgc_wait`'s queue, ``S_q = O t(m) + m P``.

    Why: a call waits only while every slot of every replica is busy, so the wait's service is the
    full batch's, not the time-average one (``t_seq(B*)``, :attr:`BatchPoint.seq_step_s`). Each
    decode step then runs ``m = slots`` sequences, ``t(m) = d0 + d1 m + kv`` (``full_step_s``), and
    every departure admits the head of the queue, whose prompt is prefilled in a mixed iteration that
    stalls the whole batch by ``P = pp I_new`` (``prefill_s``: the per-token part only, a mixed
    iteration pays no fixed prefill cost, :meth:`planner.profiles.LatencyProfile.iteration_s`). ``m``
    calls leave per stay, so a stay of ``O`` tokens takes ``O t(m)`` of decode plus ``m P`` of prefills
    (its own and the ``m - 1`` admitted around it), and the replica's slots free at ``m / S_q`` per
    second. At ``B* ~ m`` it is about the time-average stay; below, longer: SmolLM2 on one CPU core
    (``d1`` a fifth of ``d0``, 3 slots, ``B* ~ 1.5``, NL2SQL as observed) raises the mean wait of those
    who wait from 2.21 to 2.46 s (the Poisson-fed simulation: 2.95 s;
    ``benchmarks/results/nl2sql_observed_miss.md``)."""
    return mean_out * full_step_s + slots * prefill_s


@dataclass(frozen=True)
class BatchWait:
    """Wait of a call arriving in a batch (see "Executor pools under fan-out bursts")."""

    batch: Wait
    """``W_B``: the batch's wait for the pool (other batches ahead of it)."""
    own: tuple[float, ...]
    """``W_J`` per position in the batch (equally likely): the wait behind the calls of its own batch."""

    @property
    def mean(self) -> float:
        return self.batch.mean + sum(self.own) / len(self.own)


def batch_wait(servers: int, rate: float, service_mean: float, cs2: float, ca2: float = 1.0,
               batch: int = 1) -> BatchWait | None:
    """M^X/G/c wait of calls arriving in batches of ``batch``; None when unstable (``rate * S >= c``).

    ``rate`` counts calls (not batches); ``ca2`` is the squared CV of the batches'
    inter-arrival times. ``batch == 1`` is :func:`mgc_wait` with ``W_J = 0``.
    """
    if batch <= 1:
        wait = mgc_wait(servers, rate, service_mean, cs2, ca2)
        return None if wait is None else BatchWait(wait, (0.0,))
    rho = rate * service_mean / servers
    if rho >= 1.0:
        return None
    own = tuple(j * service_mean / servers for j in range(batch))
    if rate <= 0:
        return BatchWait(Wait(0.0, 0.0), own)
    mean_b = rho / (1.0 - rho) * (ca2 + cs2 / batch) / 2.0 * batch * service_mean / servers
    return BatchWait(Wait(rho, mean_b / rho), own)


@dataclass(frozen=True)
class BatchPoint:
    """Operating point of one LLM replica under continuous batching."""

    batch: float
    """Mean running sequences ``B*``."""
    t_iter: float
    """Seconds per engine iteration at ``B*``."""
    prefill_s: float
    """Prefill time of one request's uncached prompt."""
    per_seq_s: float = 0.0
    """Iteration time one more running sequence adds: ``d1 / (1 - x)``."""

    @property
    def seq_step_s(self) -> float:
        """``t_seq``: the mean iteration a running sequence sees, the others (mean ``B*``) plus itself:
        ``t_iter + per_seq_s`` (module docstring)."""
        return self.t_iter + self.per_seq_s

    def service_s(self, output_tokens: float) -> float:
        """Mean service of a request of ``output_tokens``: its prefill and its decode at ``t_seq``."""
        return self.prefill_s + output_tokens * self.seq_step_s


def llm_batch_point(
    profile: LatencyProfile,
    rate_per_replica: float,
    input_tokens: int,
    uncached_tokens: int,
    mean_output_tokens: float,
    max_num_seqs: int,
) -> BatchPoint | None:
    """Solve the continuous-batching fixed point; None when the replica cannot keep up."""
    lam = rate_per_replica
    x = profile.prefill_per_token_s * lam * uncached_tokens
    if x >= 1.0:
        return None
    d0 = profile.decode_fixed_s
    d1 = profile.decode_per_seq_s + profile.decode_per_kv_token_s * (input_tokens + mean_output_tokens / 2.0)
    prefill = profile.prefill_s(uncached_tokens)
    denominator = 1.0 - lam * mean_output_tokens * d1 / (1.0 - x)
    if denominator <= 0.0:
        return None
    # Little's law with each sequence's own seat in its batch: E[S] = P + O (d0 + d1 (B + 1)) / (1 - x).
    batch = lam * (prefill + mean_output_tokens * (d0 + d1) / (1.0 - x)) / denominator
    if batch >= max_num_seqs:
        return None
    t_iter = (d0 + d1 * batch) / (1.0 - x)
    return BatchPoint(batch=batch, t_iter=t_iter, prefill_s=prefill, per_seq_s=d1 / (1.0 - x))


def mixed_batch_point(
    profile: LatencyProfile,
    classes: list[tuple[float, int, int, float]],
    max_num_seqs: int,
) -> tuple[float, float, list[float]] | None:
    """Fixed point of a replica serving several request classes (a shared pool).

    ``classes`` holds ``(rate_per_replica, input_tokens, uncached_tokens,
    mean_output_tokens)``. The per-sequence decode cost uses the rate-weighted
    mean context. Returns ``(B*, t_iter, [prefill_s per class], per_seq_s)`` or None when
    unstable (``per_seq_s``: the iteration time one more running sequence adds; a sequence's mean
    iteration is ``t_iter + per_seq_s``). Same maths as :func:`llm_batch_point` with sums over classes.
    """
    total_rate = sum(c[0] for c in classes)
    if total_rate <= 0:
        return 0.0, profile.decode_fixed_s, [profile.prefill_s(c[2]) for c in classes], 0.0
    x = sum(profile.prefill_per_token_s * lam * unc for lam, _, unc, _ in classes)
    if x >= 1.0:
        return None
    # Weight each class's context by the time its sequences spend in the batch (~ rate * output).
    weight = sum(lam * out for lam, _, _, out in classes)
    context = sum(lam * out * (inp + out / 2.0) for lam, inp, _, out in classes) / max(weight, 1e-12)
    d0 = profile.decode_fixed_s
    d1 = profile.decode_per_seq_s + profile.decode_per_kv_token_s * context
    prefills = [profile.prefill_s(unc) for _, _, unc, _ in classes]
    numerator = sum(lam * (p + out * (d0 + d1) / (1.0 - x)) for (lam, _, _, out), p in zip(classes, prefills))
    denominator = 1.0 - sum(lam * out for lam, _, _, out in classes) * d1 / (1.0 - x)
    if denominator <= 0.0:
        return None
    batch = numerator / denominator
    if batch >= max_num_seqs or not math.isfinite(batch):
        return None
    return batch, (d0 + d1 * batch) / (1.0 - x), prefills, d1 / (1.0 - x)
