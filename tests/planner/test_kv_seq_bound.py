"""The KV bound on a replica's batch (planner.candidates.kv_seq_bound): a resident shared prefix is held
once per replica, a shared pool holds every member's prefix (the KV duplication isolation avoids), and a
sequence counts at its mean footprint -- not at ``max_tokens`` -- as vLLM allocates KV as it decodes."""

from __future__ import annotations

import dataclasses

from planner.candidates import kv_seq_bound, latency_cap, output_tokens_moments, seq_cap
from planner.colocation import Member, batch_cap
from planner.profiles import get_profile
from runtime.simulator.workloads import LLAMA8B, LLAMA70B_LONG, llm, longrag

KV70 = 327680
"""Llama-3-70B KV bytes per token."""


def _a100_40gb():
    return get_profile("llama-3-70b", "A100-40GB", 4)


def test_a100_40gb_profile_leaves_little_kv_for_70b() -> None:
    kv = _a100_40gb().kv_capacity_tokens(LLAMA70B_LONG.weight_bytes, KV70)
    assert 40_000 < kv < 42_000  # 4 x 40 GiB x 0.9 - 141 GB of weights, 320 KiB a token


def test_prefix_is_held_once_per_replica() -> None:
    # 100k tokens, a 2,000-token prefix, sequences of 500 uncached + 100 out (mean 60): 98,000 / 530.
    assert kv_seq_bound(100_000, 2_000, [(500, 100, 60.0, 1.0)]) == 98_000 // 530
    # The same prompt without a resident prefix holds 2,500 + 30 per sequence.
    assert kv_seq_bound(100_000, 0, [(2_500, 100, 60.0, 1.0)]) == 100_000 // 2_530


def test_no_sequence_fits() -> None:
    assert kv_seq_bound(10_000, 9_000, [(500, 600, 300.0, 1.0)]) == 0
    assert kv_seq_bound(10_000, 9_000, [(500, 500, 300.0, 1.0)]) == 1_000 // 650


def test_long_outputs_count_at_their_mean_footprint() -> None:
    """longrag's 4,000-token writes on 70B / 4 x A100-40GB: the KV holds ~13 on average (1,000 uncached
    + 2,000 mean half-output each beside the 200-token prefix); the worst case at max_tokens said 5."""
    write = next(s for s in longrag().stages if s.name == "write")
    prof = _a100_40gb()
    kv = prof.kv_capacity_tokens(LLAMA70B_LONG.weight_bytes, KV70)
    mean_out = output_tokens_moments(write.output_tokens, write.max_tokens.preferred)[0]
    expected = int((kv - write.prefix_tokens) // (write.input_tokens - write.prefix_tokens + mean_out / 2))
    got = seq_cap(write, LLAMA70B_LONG, prof, write.max_tokens.preferred)
    assert got == min(expected, latency_cap(prof, write.input_tokens + output_tokens_moments(
        write.output_tokens, write.max_tokens.preferred)[2]))
    assert got >= 12 > kv // (write.input_tokens + write.max_tokens.preferred)


def test_shared_pool_pays_every_members_prefix() -> None:
    """Two stages with distinct 3,000-token prefixes on a replica whose KV is fixed at 12,000 tokens:
    each dedicated replica keeps 9,000 tokens for sequences, the shared one 6,000 -- the shared batch
    cap is two thirds of either dedicated one's."""
    prof = dataclasses.replace(get_profile("llama-3-8b", "H100", 1), kv_cache_bytes=12_000 * LLAMA8B.kv_bytes_per_token,
                               decode_per_kv_token_s=0.0)  # no latency cap in the way: KV alone decides
    a, b = llm("a", 3_500, 100, prefix=3_000), llm("b", 3_500, 100, prefix=3_000)
    own = [seq_cap(s, LLAMA8B, prof, s.max_tokens.preferred) for s in (a, b)]
    members = [Member(stage=s, rate_per_s=1.0, max_tokens=s.max_tokens.preferred, hedge=1, prewarm=True)
               for s in (a, b)]
    shared = batch_cap(LLAMA8B, prof, members, 1.5, "mean")
    mean_out = output_tokens_moments(100, a.max_tokens.preferred)[0]
    assert own == [int(9_000 // (500 + mean_out / 2))] * 2
    assert shared == int(6_000 // (500 + mean_out / 2))
