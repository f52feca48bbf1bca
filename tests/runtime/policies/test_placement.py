"""Completion-time routing on small hand-checkable scenarios: who goes where, and why.

Profiles are the shipped Llama-3-8B ones: prefill 75 / 23 / 23 us per token and
decode fixed cost 10.8 / 6.0 / 4.5 ms per step on A100 / H100 / H200.
"""

from __future__ import annotations

import pytest

from planner.profiles import get_profile
from runtime.policies.base import CallView, ReplicaView
from runtime.policies.cortex import Cortex
from runtime.policies.hexagent import HexAGenT
from runtime.policies.hexgen import HexGenText2SQL
from runtime.policies.placement import estimate, has_kv_room, kv_need
from runtime.simulator.graph import llm_standalone_s

PROF = {d: get_profile("llama-3-8b", d, 1) for d in ("A100", "H100", "H200")}


def call(**kw) -> CallView:
    base = dict(run_id=1, workflow="w", stage="s", kind="llm", model="m", run_arrival_s=0.0, now_s=10.0,
                deadline_s=None, stage_expected_s=0.5, remaining_critical_path_s=0.5, remaining_std_s=0.0,
                attained_service_s=0.0, critical_path_service_s=0.0, prefix_key=None, input_tokens=1000,
                output_tokens=100, enqueued_s=10.0)
    base.update(kw)
    return CallView(**base)


def rep(name: str, device: str = "H100", **kw) -> ReplicaView:
    speed = PROF["H200"].request_s(512, 128) / PROF[device].request_s(512, 128)
    base = dict(replica_id=name, device=device, model="m", stages=None, kv_capacity_tokens=400_000, slots=64,
                profile=PROF[device], speed=speed)
    base.update(kw)
    return ReplicaView(**base)


def test_idle_estimate_is_the_standalone_time_on_that_device():
    c = call()
    for dev, p in PROF.items():
        finish, marginal = estimate(c, rep("r", dev))
        assert finish == pytest.approx(llm_standalone_s(p, 1000, 100), rel=0.01)
        assert marginal == 0.0


def test_resident_prefix_is_not_prefilled_again():
    c = call(prefix_key="w/s@m", prefix_tokens=800)
    cold, warm = rep("cold"), rep("warm", resident_prefixes=frozenset({"w/s@m"}))
    saved = estimate(c, cold)[0] - estimate(c, warm)[0]
    assert saved == pytest.approx(800 * PROF["H100"].prefill_per_token_s, rel=1e-9)


def test_a_resident_prefix_counts_once_in_the_kv_a_call_needs():
    # Two stages' 3,000-token prefixes resident in a 12,000-token replica, 5,000 tokens running:
    # a 3,500-token prompt (its prefix included) with 100 output tokens needs 600 new tokens there.
    c = call(prefix_key="w/a@m", prefix_tokens=3000, input_tokens=3500, output_tokens=100)
    holds = rep("holds", kv_capacity_tokens=12_000, kv_used_tokens=11_000,
                resident_prefixes=frozenset({"w/a@m", "w/b@m"}))
    lacks = rep("lacks", kv_capacity_tokens=12_000, kv_used_tokens=11_000, resident_prefixes=frozenset({"w/b@m"}))
    assert kv_need(holds, 3500, 100, "w/a@m", 3000) == 600
    assert kv_need(lacks, 3500, 100, "w/a@m", 3000) == 3600
    assert has_kv_room(c, holds) and not has_kv_room(c, lacks)


def test_cortex_routes_to_the_replica_with_room_once_its_prefix_is_shared():
    # Both replicas idle in slots; only "holds" has KV for the call once its resident prefix is
    # credited. Counting the prefix twice found no replica with room, so routing went KV-blind and
    # took the lower replica id, which then had to preempt.
    c = call(prefix_key="w/a@m", prefix_tokens=3000, input_tokens=3500, output_tokens=100)
    full = rep("a-full", kv_capacity_tokens=12_000, kv_used_tokens=11_900, running=1, pending_decode_tokens=50,
               resident_prefixes=frozenset({"w/a@m"}))
    holds = rep("b-holds", kv_capacity_tokens=12_000, kv_used_tokens=11_000, running=4, pending_decode_tokens=400,
                resident_prefixes=frozenset({"w/a@m"}))
    assert Cortex(marginal_weight=0.0).route(c, [full, holds]).replica_id == "b-holds"


def test_a_call_joins_only_after_the_prefill_iteration_in_progress():
    c = call()  # now 10 s
    idle = estimate(c, rep("a"))[0]
    assert estimate(c, rep("b", busy_until_s=10.4))[0] == pytest.approx(idle + 0.4, rel=1e-12)
    assert estimate(c, rep("c", busy_until_s=9.0))[0] == idle  # ended already


def test_full_batch_makes_the_call_wait_for_a_slot():
    """An H200 with all 64 slots busy (100 tokens to go per sequence): the call waits for the first
    finish, about 2 x 100 / 64 steps (~0.03 s), then decodes in a batch of 64 (~0.9 s) -- still ahead
    of an idle A100 (~1.2 s). With 40 calls queued ahead it waits ~41/64 of a sequence's lifetime
    longer, and the idle A100 wins."""
    c = call()
    full = dict(running=64, pending_decode_tokens=6400, kv_used_tokens=64 * 1100)
    h200 = rep("h200", "H200", **full)
    a100 = rep("a100", "A100")
    wait_free = estimate(c, rep("h200-idle", "H200"))[0]
    assert estimate(c, h200)[0] > wait_free
    assert estimate(c, h200)[0] < estimate(c, a100)[0]
    queued = rep("h200q", "H200", queue_len=40, **full)
    assert estimate(c, queued)[0] > estimate(c, a100)[0]


def test_marginal_slowdown_grows_with_the_running_batch():
    c = call()
    small = rep("small", running=4, pending_decode_tokens=400, kv_used_tokens=4 * 1100)
    big = rep("big", running=40, pending_decode_tokens=4000, kv_used_tokens=40 * 1100)
    assert estimate(c, big)[1] > 5 * estimate(c, small)[1] > 0.0


def test_cortex_urgent_call_takes_earliest_finish_slack_call_spares_neighbours():
    """'busy' (H200, 20 running) finishes the call first (about 0.61 s vs 0.71 s on 'light', an H100
    with 2 running and 3000 prompt tokens queued), but the call would slow busy's 20 sequences by
    about 0.6 s in all (its prefill stalls each of them, and every shared step gets longer). An urgent
    call takes the earliest finish; a call with slack also counts what it costs its neighbours."""
    busy = rep("busy", "H200", running=20, pending_decode_tokens=2000, kv_used_tokens=20 * 1100)
    light = rep("light", "H100", running=2, pending_decode_tokens=200, kv_used_tokens=2 * 1100,
                queued_prefill_tokens=3000)
    p = Cortex()
    slack_call = call(deadline_s=30.0)
    urgent = call(deadline_s=10.6)  # slack 0.1 s < 3 x 0.5 s
    (f_busy, m_busy), (f_light, m_light) = estimate(urgent, busy), estimate(urgent, light)
    assert f_busy < f_light and f_busy + m_busy > f_light + m_light
    assert p.route(urgent, [busy, light]).replica_id == "busy"
    assert p.route(slack_call, [busy, light]).replica_id == "light"


def test_cortex_borrows_another_pool_only_when_clearly_better():
    own = rep("own", "A100", stages=frozenset({"s"}), running=30, pending_decode_tokens=3000,
              kv_used_tokens=30 * 1100)
    lender = rep("lend", "H200", stages=frozenset({"t"}), borrowed=True)
    c = call(deadline_s=30.0)
    assert Cortex().route(c, [own, lender]).replica_id == "lend"
    idle_own = rep("own", "H200", stages=frozenset({"s"}))
    assert Cortex().route(c, [idle_own, lender]).replica_id == "own"


def test_hexagent_sends_at_risk_calls_fast_and_slack_calls_to_slow_devices():
    """Idle A100 (about 1.1 s for this call) and idle H200 (about 0.5 s). A call at risk goes to the
    H200. A call with 9 s of its run's 10 s left for a 0.5 s stage (share 1/2 of the time left: 5 s,
    over slack_safety 2 = 2.5 s, capped at 3 x 0.5 = 1.5 s) may take the A100, keeping the H200 free."""
    a100, h200 = rep("a100", "A100"), rep("h200", "H200")
    p = HexAGenT()
    at_risk = call(deadline_s=10.4, remaining_critical_path_s=0.5, remaining_std_s=0.1)
    relaxed = call(deadline_s=20.0, remaining_critical_path_s=1.0, remaining_std_s=0.1)
    assert p.risk(at_risk) > 0.5 > p.risk(relaxed)
    assert p.route(at_risk, [a100, h200]).replica_id == "h200"
    assert estimate(relaxed, a100)[0] < 1.5
    assert p.route(relaxed, [a100, h200]).replica_id == "a100"
    tight = call(deadline_s=11.2, remaining_critical_path_s=1.0, remaining_std_s=0.5)  # budget 0.3 s
    assert p.risk(tight) < 0.5
    assert p.route(tight, [a100, h200]).replica_id == "h200"


def test_hexgen_and_hexagent_no_longer_route_alike():
    """Before: HexGen at alpha = 0.5 ranks by (expected/speed + backlog)/2 and HexAGenT by
    backlog + expected/speed -- the same order, hence identical results. Now HexAGenT estimates
    completion from the profiles (slot waits, batch slowdown) while HexGen keeps its published score."""
    c = call(deadline_s=10.5, remaining_critical_path_s=0.5)
    fast_full = rep("fast", "H200", running=64, queue_len=30, pending_decode_tokens=6400,
                    kv_used_tokens=64 * 1100, backlog_s=0.3)
    slow_idle = rep("slow", "A100", backlog_s=0.0)
    assert HexGenText2SQL(alpha=0.5).route(c, [fast_full, slow_idle]).replica_id == "fast"
    assert HexAGenT().route(c, [fast_full, slow_idle]).replica_id == "slow"
