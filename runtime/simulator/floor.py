"""A floor under any scheduling policy: the least mean decode stretch a set of replicas allows.

Each decode replica ``r`` runs steps of ``t_r(b) = F_r + G_r b`` seconds for a
batch of ``b`` sequences of mean context ``C`` (``G_r = S_r + K_r C`` from its
:class:`planner.profiles.LatencyProfile`: decode fixed / per-sequence /
per-KV-token costs). At a constant batch it emits ``x = b / t_r(b)`` tokens per
second, so ``t_r = F_r / (1 - x G_r)`` and the token-seconds it spends are
``f_r(x) = x F_r / (1 - x G_r)``.

**Per replica, a varying batch only costs more.** Over a period with steps of
batches ``b_i``, the mean time per emitted token is
``sum b_i t(b_i) / sum b_i = F + G sum b_i^2 / sum b_i >= F + G B``
(Cauchy-Schwarz, ``B`` = mean batch over steps), and the throughput is
``x = B / (F + G B)``, for which ``F / (1 - x G) = F + G B``. So whatever the
policy does, a replica averaging ``x`` tokens/s spends at least ``f_r(x)``.

**Across replicas.** Any policy serving ``L`` decode tokens per second splits it
as ``sum x_r = L`` with ``0 <= x_r <= X_r`` (``X_r`` = throughput at the batch
cap). The token-weighted mean stretch against the reference step ``t_ref``
(the fastest device with one sequence: how standalone latency is measured) is
``sum f_r(x_r) / (L t_ref)``. Each ``f_r`` is convex, so the minimum is the
water-filling point where every replica with ``0 < x_r < X_r`` has the same
marginal cost ``f_r'(x) = F_r / (1 - x G_r)^2 = mu`` (bisection on ``mu``).

Prefill stalls, queueing, slow-device prefill and KV transfer only add to a
call's time, so this is a lower bound on the token-weighted mean decode stretch
of every policy on those replicas (under the mean-context approximation for
``G``). It bounds the *mean*; the SLO scale at 95 / 99% attainment is a high
quantile of each run's stretch, which for these workloads lies above the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeReplica:
    """One decode replica's step model: ``t(b) = fixed_s + per_seq_s x b`` up to ``cap`` sequences."""

    fixed_s: float
    per_seq_s: float
    cap: int

    def step_s(self, batch: float) -> float:
        return self.fixed_s + self.per_seq_s * batch

    @property
    def max_rate(self) -> float:
        """Tokens per second at the batch cap."""
        return self.cap / self.step_s(self.cap)

    def rate_at(self, mu: float) -> float:
        """Throughput where the marginal cost ``F / (1 - x G)^2`` equals ``mu`` (clamped to ``[0, max_rate]``)."""
        if mu <= self.fixed_s:
            return 0.0
        x = (1.0 - (self.fixed_s / mu) ** 0.5) / self.per_seq_s
        return min(x, self.max_rate)

    def token_seconds(self, rate: float) -> float:
        """``f(x) = x F / (1 - x G)``: sequence-seconds spent per second at ``rate`` tokens/s."""
        return rate * self.fixed_s / (1.0 - rate * self.per_seq_s) if rate > 0 else 0.0


def min_mean_stretch(replicas: Sequence[DecodeReplica], tokens_per_s: float, ref_step_s: float,
                     tol: float = 1e-12) -> float:
    """The least token-weighted mean decode stretch over ``replicas`` serving ``tokens_per_s``
    (module docstring), relative to ``ref_step_s``; ``inf`` when the load exceeds their capacity."""
    if tokens_per_s <= 0:
        return 1.0 if replicas else float("inf")
    if tokens_per_s > sum(r.max_rate for r in replicas) * (1 - 1e-12):
        return float("inf")
    lo = min(r.fixed_s for r in replicas)
    hi = lo * 2.0
    while sum(r.rate_at(hi) for r in replicas) < tokens_per_s:
        hi *= 2.0
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if sum(r.rate_at(mid) for r in replicas) < tokens_per_s:
            lo = mid
        else:
            hi = mid
    rates = [r.rate_at(hi) for r in replicas]
    scale = tokens_per_s / sum(rates)  # land exactly on the load (the bisection overshoots by < tol)
    return sum(r.token_seconds(x * scale) for r, x in zip(replicas, rates)) / (tokens_per_s * ref_step_s)
