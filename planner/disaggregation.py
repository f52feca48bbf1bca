"""Prefill/decode-disaggregated pools (P/D): candidates and their latency tables.

A P/D pool serves one LLM stage with ``n_p`` *prefill* replicas, which only
prefill prompts, and ``n_d`` *decode* replicas, which only decode; a call's KV
cache moves from the first to the second over a link. Both kinds run the same
model on the same device kind at the same TP (a limit of this first version:
no mixed device kinds, no shared P/D pools). Only GPU devices: on CPUs the only KV
path is vLLM's file-based connector, whose cost the link model does not describe.

Why: in a colocated replica every prefill stalls the running decodes (the
``1 / (1 - x)`` factor and the stall shock of :func:`planner.candidates.llm_service_table`);
a prefill-heavy busy pool pays it on every token. A P/D pool removes the
stalls at the price of a KV transfer and of replicas that do only one phase.

Per-visit latency of a call with uncached prompt ``I_new`` (``I`` tokens in all)
and output ``o = min(X, max_tokens)`` (``X`` as in :mod:`planner.candidates`)::

    L = W_p + P + E + T + W_d + h + (o - 1) t_d(N)

* ``W_p``: the prompt's wait for a prefill replica: M/G/c (Allen–Cunneen,
  :func:`planner.queueing.mgc_wait`) over ``c = n_p`` servers, service
  ``P = prefill(I_new)`` (deterministic for one stage: ``cs2 = 0``).
* ``E``: batching on the prefill side. A prefill replica runs every prompt
  that arrived during its running iteration in the next one, up to the token
  budget (:data:`PREFILL_TOKEN_BUDGET`), and all of them finish together; so a
  prompt that waits also waits for the prompts that reach its replica (rate
  ``lam_r = lam / n_p``: routing spreads them) during the rest ``R`` of the running
  iteration. Its FCFS wait is ``W = R + `` the work of the prompts ahead of it, which
  arrived during the iteration's elapsed part; with arrivals uniform over the
  iteration, the elapsed and the remaining parts have the same mean, so
  ``E[W] = E[R] (1 + rho)`` (``rho = lam_r P``), and per draw we take
  ``R = W / (1 + rho)``: ``E = pp min(lam_r R I_new, budget - I_new)``, ``pp`` the
  prefill cost per token. (The fixed part of a prefill is paid once per
  iteration; ``P`` keeps it per prompt: a slight over-estimate near saturation.)
* ``T = (I + 1) kv_bytes_per_token / link``: the transfer of the prompt's and the first
  token's KV (the prefill iteration produces the first token); the link bandwidth
  is an input, by default :data:`LINK_BYTES_PER_S`.
* Decode replicas: the continuous-batching fixed point of
  :func:`planner.queueing.llm_batch_point` with nothing to prefill (``x = 0``: no
  stall) and ``o - 1`` decode steps per call, at ``lam / n_d`` calls per replica;
  ``W_d`` the M/G/c slot wait over ``n_d x max_num_seqs`` slots, ``h`` half an
  iteration (a transferred call joins the batch at the next iteration boundary),
  and ``t_d(N) = t_iter + d1 (N + 1 - B)`` with ``N`` the running sequences, Poisson
  around ``B`` as in the colocated model.

The parts are sampled with the planner's fixed stratified design, so tables are
deterministic, and every part is non-increasing in ``n_p`` and in ``n_d``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from cortexlang.ir import LLMStage, ModelSpec
from planner.candidates import (
    DECODE_STRETCH, MAX_UTILISATION, TABLE_SAMPLES, Candidate, Device, StageLoad, _design, _table,
    OutputLength, _unit_normal, _wait_samples, output_length, output_tokens_moments, output_tokens_samples, replica_range, seq_cap,
)
from planner.profiles import GIB, LINK_BYTES_PER_S, LatencyProfile
from planner.queueing import BatchPoint, Wait, llm_batch_point, mgc_wait
PREFILL_TOKEN_BUDGET = 8192
"""Prompt tokens one prefill iteration takes at most (vLLM V1's default ``max_num_batched_tokens``)."""
EXTRA_PREFILL = 1
"""Prefill replica counts offered beyond the smallest stable one (keeps the candidate count bounded)."""


def prefill_wait(profile: LatencyProfile, rate: float, prefill_replicas: int, uncached: int,
                 ca2: float) -> Wait | None:
    """``W_p``: a prompt's wait for one of ``prefill_replicas`` (None above :data:`MAX_UTILISATION`)."""
    service = profile.prefill_s(uncached)
    if rate * service > MAX_UTILISATION * prefill_replicas:
        return None
    return mgc_wait(prefill_replicas, rate, service, 0.0, ca2)


def transfer_s(prompt_tokens: int, kv_bytes_per_token: int, link_bytes_per_s: float = LINK_BYTES_PER_S) -> float:
    """``T``: seconds to move the KV of the prompt and the first token to the decode replica."""
    return (prompt_tokens + 1) * kv_bytes_per_token / link_bytes_per_s


def decode_point(profile: LatencyProfile, rate_per_replica: float, input_tokens: int, mean_output: float,
                 max_num_seqs: int) -> BatchPoint | None:
    """The decode replica's operating point: ``mean_output - 1`` decode steps per call, nothing to prefill."""
    return llm_batch_point(profile, rate_per_replica, input_tokens, 0, max(mean_output - 1.0, 0.0), max_num_seqs)


@lru_cache(maxsize=None)
def _decode_wait_order() -> np.ndarray:
    """A pairing of the decode-slot wait with the other draws, independent of them (fixed seed)."""
    return np.random.default_rng(23).permutation(TABLE_SAMPLES)


def pd_samples(prefill_s: float, per_token_s: float, uncached: int, rate_per_prefill: float, w_p: Wait,
               transfer: float, w_d: Wait, point: BatchPoint, t_iter: float, mean_tokens: int | OutputLength, max_tokens: int,
               max_num_seqs: int) -> np.ndarray:
    """Samples of ``L`` (module docstring) on the planner's design: ``W_p`` stratified in index
    order, the output lengths and ``W_d`` paired independently of it, ``N`` from its own stream."""
    _, pairing = _design()
    wait_p = _wait_samples(w_p.p_wait, w_p.mean_if_waiting)
    rest = wait_p / (1.0 + rate_per_prefill * prefill_s)  # R: the running iteration's remaining part
    mates = per_token_s * np.minimum(rate_per_prefill * rest * uncached, max(PREFILL_TOKEN_BUDGET - uncached, 0))
    wait_d = _wait_samples(w_d.p_wait, w_d.mean_if_waiting)[_decode_wait_order()]
    steps = np.maximum(output_tokens_samples(mean_tokens, max_tokens)[pairing] - 1.0, 0.0)
    running = np.clip(point.batch + np.sqrt(point.batch) * _unit_normal(), 0.0, max(max_num_seqs - 1, 0))
    per_step = np.maximum(t_iter + point.per_seq_s * (running + 1.0 - point.batch), t_iter - point.per_seq_s * point.batch)
    return wait_p + prefill_s + mates + transfer + wait_d + 0.5 * t_iter + steps * per_step


def pd_config(stage: LLMStage, spec: ModelSpec, profile: LatencyProfile, device: Device, load: StageLoad,
              max_tokens: int, quality: float, prefill_replicas: int, decode_replicas: int,
              stretch: float = DECODE_STRETCH, link_bytes_per_s: float = LINK_BYTES_PER_S) -> Candidate | None:
    """One P/D candidate (``prefill_replicas`` + ``decode_replicas``), or None when a side is unstable."""
    max_num_seqs = seq_cap(stage, spec, profile, max_tokens, stretch)
    if max_num_seqs < 1 or prefill_replicas < 1 or decode_replicas < 1:
        return None
    prewarm = stage.warms_prefix
    uncached = max(stage.input_tokens - (stage.prefix_tokens if prewarm else 0), 1)
    rate = load.rate_per_s
    w_p = prefill_wait(profile, rate, prefill_replicas, uncached, load.dispersion_ca2)
    if w_p is None:
        return None
    mean_out, out_var, _ = output_tokens_moments(output_length(stage), max_tokens)
    point = decode_point(profile, rate / decode_replicas, stage.input_tokens, mean_out, max_num_seqs)
    if point is None or point.batch > MAX_UTILISATION * max_num_seqs:
        return None
    t_iter = point.t_iter * profile.decode_factor(stage.constraint is not None)
    seq_step = t_iter + point.per_seq_s  # a sequence counts itself in its batch (planner.queueing, t_seq)
    decode_mean = max(mean_out - 1.0, 0.0) * seq_step
    cs2 = seq_step ** 2 * out_var / decode_mean ** 2 if decode_mean > 0 else 0.0
    w_d = mgc_wait(decode_replicas * max_num_seqs, rate, decode_mean, cs2, load.dispersion_ca2)
    if w_d is None:
        return None
    samples = pd_samples(profile.prefill_s(uncached), profile.prefill_per_token_s, uncached,
                         rate / prefill_replicas, w_p, transfer_s(stage.input_tokens, spec.kv_bytes_per_token,
                                                                  link_bytes_per_s),
                         w_d, point, t_iter, output_length(stage), max_tokens, max_num_seqs)
    table = _table(samples)
    table.flags.writeable = False
    replicas = prefill_replicas + decode_replicas
    kv_tokens = profile.kv_capacity_tokens(spec.weight_bytes, spec.kv_bytes_per_token)
    in_use = point.batch * (stage.input_tokens + mean_out / 2.0) + (stage.prefix_tokens if prewarm else 0)
    return Candidate(
        stage=stage.name, kind="llm", device=device.kind, units=replicas,
        cost_per_hour=replicas * profile.tp * device.cost_per_unit, resources={device.kind: replicas * profile.tp},
        quality=quality, table=table, utilisation=point.batch / max_num_seqs, arrival_rate_per_s=rate,
        visits_per_run=load.visits_per_run, tp=profile.tp, model=spec.name, profile=profile.model,
        max_tokens=max_tokens, hedge=1, prewarm=prewarm, max_num_seqs=max_num_seqs, kv_budget_tokens=kv_tokens,
        kv_gib=kv_tokens * spec.kv_bytes_per_token / GIB,
        kv_in_use_gib=decode_replicas * in_use * spec.kv_bytes_per_token / GIB, latency_profile=profile,
        prefill_replicas=prefill_replicas,
    )


def smallest_prefill_count(profile: LatencyProfile, rate: float, uncached: int) -> int:
    """The fewest prefill replicas that keep up at :data:`MAX_UTILISATION`."""
    return max(1, math.ceil(rate * profile.prefill_s(uncached) / MAX_UTILISATION - 1e-12))


def pd_candidates(stage: LLMStage, spec: ModelSpec, profile: LatencyProfile, device: Device, load: StageLoad,
                  max_tokens: int, quality: float, stretch: float = DECODE_STRETCH) -> list[Candidate]:
    """The P/D candidates of a stage on one device kind and profile, within ``device.limit`` devices:
    ``n_p`` from the smallest stable count to :data:`EXTRA_PREFILL` more, and for each the decode
    counts of :func:`planner.candidates.replica_range` (from the smallest stable one while p99 improves).
    None on CPU devices: their only KV path, vLLM's file-based connector (the runtime serves P/D with it),
    costs far more than the link this model assumes (benchmarks/pd_vllm.py)."""
    if device.kind == "CPU":
        return []
    uncached = max(stage.input_tokens - (stage.prefix_tokens if stage.warms_prefix else 0), 1)
    first = smallest_prefill_count(profile, load.rate_per_s, uncached)
    found: list[Candidate] = []
    for n_p in range(first, first + EXTRA_PREFILL + 1):
        limit = device.limit // profile.tp - n_p
        if limit < 1:
            break

        def make(n_d: int, n_p: int = n_p) -> Candidate | None:
            return pd_config(stage, spec, profile, device, load, max_tokens, quality, n_p, n_d, stretch)

        found.extend(replica_range(make, limit)[0])
    return found


__all__ = ["LINK_BYTES_PER_S", "PREFILL_TOKEN_BUDGET", "pd_candidates", "pd_config", "prefill_wait", "transfer_s",
           "decode_point", "smallest_prefill_count"]
