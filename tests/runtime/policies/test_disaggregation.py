"""Joint prefill/decode placement (runtime/policies/disaggregation.py) and the policies using it."""

from __future__ import annotations

import itertools
import random

import pytest

from runtime.policies.cortex import Cortex
from runtime.policies.disaggregation import best_pair, decode_side, is_disaggregated, prefill_side, transfer_s
from tests.runtime.policies.test_policies import call, rep


def test_sides_split_the_call():
    c = call(input_tokens=1500, output_tokens=80, prefix_key="w/s@m", prefix_tokens=1000)
    pre, dec = prefill_side(c), decode_side(c)
    assert (pre.input_tokens, pre.output_tokens, pre.prefix_tokens) == (1500, 1, 1000)
    assert (dec.input_tokens, dec.output_tokens, dec.prefix_key) == (0, 80, None)


def test_transfer_uses_the_slower_link_and_the_decode_side_kv_size():
    c = call(input_tokens=2000)
    p = rep("p", role="prefill", link_bytes_per_s=4e9, kv_bytes_per_token=1)
    d = rep("d", role="decode", link_bytes_per_s=1e9, kv_bytes_per_token=131072)
    assert transfer_s(c, p, d) == pytest.approx(2000 * 131072 / 1e9)
    assert transfer_s(c, p, rep("unlinked", role="decode", kv_bytes_per_token=131072)) == 0.0


def test_best_pair_equals_brute_force_on_random_instances():
    rng = random.Random(11)
    for _ in range(200):
        reps = [rep(f"p{i}", role="prefill", link_bytes_per_s=rng.choice([1e9, 5e9, 5e10]),
                    kv_bytes_per_token=131072) for i in range(rng.randint(1, 4))]
        reps += [rep(f"d{i}", role="decode", link_bytes_per_s=rng.choice([1e9, 5e9, 5e10]),
                     kv_bytes_per_token=131072) for i in range(rng.randint(1, 4))]
        rng.shuffle(reps)
        side = {r.replica_id: rng.uniform(0.0, 2.0) for r in reps}
        c = call(input_tokens=rng.randint(1, 4000))
        cost, route = best_pair(c, reps, lambda _c, r: side[r.replica_id], lambda _c, r: side[r.replica_id])
        pairs = [(side[p.replica_id] + transfer_s(c, p, d) + side[d.replica_id], p.replica_id, d.replica_id)
                 for p, d in itertools.product(reps, reps) if p.role == "prefill" and d.role == "decode"]
        want = min(pairs)
        assert cost == pytest.approx(want[0], rel=1e-12)
        assert (route.replica_id, route.decode_replica_id) == want[1:]


def test_best_pair_needs_both_roles():
    assert best_pair(call(), [rep("p", role="prefill")], lambda *_: 0.0, lambda *_: 0.0) is None
    assert not is_disaggregated([rep("m"), rep("d", role="decode")])
    assert is_disaggregated([rep("m"), rep("p", role="prefill")])


def test_cortex_routes_disaggregated_calls_to_a_pair_avoiding_full_kv():
    """Backlog-only views (no profiles): the less loaded prefill replica, and the decode replica that
    has KV room for the call's context even though a faster one is nearer to idle."""
    c = call(input_tokens=2000, output_tokens=100, stage_expected_s=1.0, deadline_s=30.0)
    cands = [rep("p-busy", role="prefill", backlog_s=2.0), rep("p-free", role="prefill", backlog_s=0.1),
             rep("d-full", role="decode", backlog_s=0.0, kv_used_tokens=99_000),
             rep("d-room", role="decode", backlog_s=0.5)]
    r = Cortex().route(c, cands)
    assert (r.replica_id, r.decode_replica_id) == ("p-free", "d-room")
