"""Policy decisions on small hand-checkable scenarios: who runs first, where, and why."""

from __future__ import annotations

import dataclasses

import pytest

from runtime.policies.autellix import ATLAS, PLAS
from runtime.policies.base import CallView, Decisions, Policy, ReplicaView, StageLoad, least_backlog_route
from runtime.policies.cortex import Cortex
from runtime.policies.fcfs import FCFS
from runtime.policies.hexagent import HexAGenT
from runtime.policies.hexgen import HexGenText2SQL
from runtime.policies.registry import make_policy


def call(**kw) -> CallView:
    base = dict(run_id=1, workflow="w", stage="s", kind="llm", model="m", run_arrival_s=0.0, now_s=10.0,
                deadline_s=None, stage_expected_s=1.0, remaining_critical_path_s=3.0, remaining_std_s=0.5,
                attained_service_s=0.0, critical_path_service_s=0.0, prefix_key=None, input_tokens=500,
                output_tokens=50, enqueued_s=10.0)
    base.update(kw)
    return CallView(**base)


def rep(name: str, **kw) -> ReplicaView:
    base = dict(replica_id=name, device="H100", model="m", stages=None, kv_capacity_tokens=100_000)
    base.update(kw)
    return ReplicaView(**base)


def first(policy: Policy, *calls: CallView) -> CallView:
    return min(calls, key=policy.priority)


def test_fcfs_runs_earliest_enqueued_call_first():
    a, b = call(run_id=1, enqueued_s=5.0), call(run_id=2, enqueued_s=3.0, run_arrival_s=4.0)
    assert first(FCFS(), a, b) is b


def test_plas_prefers_the_program_with_less_attained_service():
    old = call(run_id=1, attained_service_s=4.0, enqueued_s=9.0)
    new = call(run_id=2, attained_service_s=0.1, enqueued_s=9.9)
    assert first(PLAS(), old, new) is new
    # Within one level, FCFS.
    p = PLAS(quantum_s=1.0)
    assert p.level(0.5) == p.level(0.9) == 0 and p.level(1.0) == 1 and p.level(3.9) == 2


def test_plas_promotes_starving_calls():
    p = PLAS(quantum_s=0.5, starvation_ratio=2.0)
    starving = call(run_id=1, attained_service_s=2.0, enqueued_s=0.0, now_s=10.0)  # waited 10s > 2 x 2s
    fresh = call(run_id=2, attained_service_s=0.0, enqueued_s=0.5, now_s=10.0)
    assert p.priority(starving)[0] == 0.0
    assert first(p, starving, fresh) is starving


def test_atlas_ranks_by_critical_path_not_total_service():
    """A wide fan-out program has much total service but a short critical path."""
    wide = call(run_id=1, attained_service_s=8.0, critical_path_service_s=0.2, enqueued_s=9.5)
    deep = call(run_id=2, attained_service_s=3.0, critical_path_service_s=3.0, enqueued_s=9.0)
    assert first(ATLAS(), wide, deep) is wide
    assert first(PLAS(), wide, deep) is deep


def test_autellix_locality_routes_long_context_back_to_its_engine():
    cands = [rep("a", queue_len=0), rep("b", queue_len=5)]
    assert PLAS().route(call(input_tokens=4000, last_replica_id="b"), cands).replica_id == "b"
    assert PLAS().route(call(input_tokens=300, last_replica_id="b"), cands).replica_id == "a"


def test_hexgen_stage_deadline_split_and_least_slack_first():
    p = HexGenText2SQL()
    # 10 s left, stage is 1/3 of the remaining 3 s: stage deadline = 10 + 10/3, latest start = that - 1.
    c = call(deadline_s=20.0, now_s=10.0, stage_expected_s=1.0, remaining_critical_path_s=3.0)
    assert p.priority(c)[0] == pytest.approx(10.0 + 10.0 / 3.0 - 1.0)
    tight = call(run_id=2, deadline_s=14.0)
    assert first(p, c, tight) is tight


def test_hexgen_dispatch_weighs_speed_against_load():
    fast_busy = rep("fast", speed=2.0, backlog_s=3.0)
    slow_idle = rep("slow", speed=1.0, backlog_s=0.0)
    c = call(stage_expected_s=2.0)
    assert HexGenText2SQL(alpha=0.5).route(c, [fast_busy, slow_idle]).replica_id == "slow"
    assert HexGenText2SQL(alpha=0.95).route(c, [fast_busy, slow_idle]).replica_id == "fast"


def test_hexagent_riskiest_first_and_missed_last():
    p = HexAGenT()
    risky = call(run_id=1, deadline_s=13.0, remaining_critical_path_s=3.0)      # slack 0: risk 0.5
    safe = call(run_id=2, deadline_s=30.0, remaining_critical_path_s=3.0)       # risk ~0
    missed = call(run_id=3, deadline_s=9.0, remaining_critical_path_s=1.0)     # horizon passed
    order = sorted([safe, missed, risky], key=p.priority)
    assert [c.run_id for c in order] == [1, 2, 3]
    assert p.risk(risky) == pytest.approx(0.5)


def test_hexagent_joint_pd_placement_accounts_for_transfer_and_kv():
    p = HexAGenT()
    c = call(input_tokens=2000, output_tokens=100, stage_expected_s=1.0)
    pre = rep("p", role="prefill", speed=1.0, link_bytes_per_s=1e9, kv_bytes_per_token=131072)
    near = rep("d-slow-link", role="decode", speed=1.0, link_bytes_per_s=1e8, kv_bytes_per_token=131072)
    far = rep("d-fast-link", role="decode", speed=1.0, link_bytes_per_s=1e10, kv_bytes_per_token=131072)
    full = rep("d-full", role="decode", speed=4.0, link_bytes_per_s=1e10, kv_bytes_per_token=131072,
               kv_used_tokens=99_000)
    r = p.route(c, [pre, near, far, full])
    assert (r.replica_id, r.decode_replica_id) == ("p", "d-fast-link")


def test_cortex_least_slack_on_remaining_critical_path_and_hopeless_last():
    p = Cortex()
    long_left = call(run_id=1, deadline_s=20.0, remaining_critical_path_s=8.0)   # latest start 12
    short_left = call(run_id=2, deadline_s=15.0, remaining_critical_path_s=1.0)  # latest start 14
    hopeless = call(run_id=3, deadline_s=11.0, remaining_critical_path_s=5.0)    # latest start 6 < now
    assert [c.run_id for c in sorted([short_left, hopeless, long_left], key=p.priority)] == [1, 2, 3]


def test_cortex_prefix_affinity_and_borrowing():
    p = Cortex()
    c = call(prefix_key="w/s@m", input_tokens=1500, stage_expected_s=0.2)
    warm = rep("warm", resident_prefixes=frozenset({"w/s@m"}), backlog_s=0.01)
    cold = rep("cold", backlog_s=0.0)
    assert p.route(c, [cold, warm]).replica_id == "warm"
    borrowed = rep("other-pool", borrowed=True, backlog_s=0.0)
    assert p.route(c, [cold, warm, borrowed]).replica_id == "warm"      # own pool is fine
    swamped = rep("own", backlog_s=5.0)
    assert p.route(c, [swamped, borrowed]).replica_id == "other-pool"  # borrow when it clearly wins


def test_cortex_admission_rejects_only_runs_that_cannot_make_it():
    p = Cortex()
    load = {"gen": StageLoad("gen", queued=40, running=8, replicas=2, expected_wait_s=6.0),
            "sql": StageLoad("sql", queued=0, running=1, replicas=1, expected_wait_s=0.0)}
    tight = call(deadline_s=15.0, remaining_critical_path_s=3.0)   # slack 2 < 6
    loose = call(deadline_s=30.0, remaining_critical_path_s=3.0)   # slack 17 > 6
    verdict = p.admit(tight, load)
    assert not verdict.admit and "gen" in verdict.reason and verdict.retry_after_s == 6.0
    assert p.admit(loose, load).admit
    assert p.admit(call(deadline_s=None), load).admit
    # A transient queue (fewer waiting calls than replicas) is no bottleneck: admit.
    transient = {"gen": StageLoad("gen", queued=1, running=8, replicas=2, expected_wait_s=6.0)}
    assert p.admit(tight, transient).admit


def test_cortex_admit_without_queue_is_its_admit_wherever_no_stage_has_a_standing_queue():
    """The simulator skips measuring stage loads when no stage has a standing queue (waiting calls
    >= max(replicas, 1)) and a policy's ``Decisions.admit_without_queue`` answers: Cortex's answer
    must be what its ``admit`` gives under every such load, however long the waits."""
    p = Cortex()
    dec = p.decisions()
    assert Decisions(p).admit_without_queue(call(deadline_s=15.0)) is None  # the base never answers
    tight = call(deadline_s=15.0, remaining_critical_path_s=3.0)   # slack 2
    for queued, replicas in [(0, 0), (0, 1), (1, 2), (3, 4)]:
        load = {"gen": StageLoad("gen", queued=queued, running=8, replicas=replicas, expected_wait_s=60.0),
                "sql": StageLoad("sql", queued=0, running=1, replicas=1, expected_wait_s=0.0)}
        assert dec.admit_without_queue(tight).admit == p.admit(tight, load).admit is True
    standing = {"gen": StageLoad("gen", queued=2, running=8, replicas=2, expected_wait_s=60.0)}
    assert not p.admit(tight, standing).admit  # at a standing queue the loads decide (the simulator asks admit)


def test_cortex_prunes_only_retries_of_runs_past_their_deadline_under_pressure():
    """A pruned run counts as a miss: prune only when the run has already missed its deadline (now 10,
    deadline 9.5) and the retry's stage has a queue. A retry whose *expected* time overruns the
    deadline (deadline 10.5, expected 1 s) may still come in shorter: it is not pruned."""
    p = Cortex()
    doomed = call(deadline_s=9.5, remaining_critical_path_s=5.0, stage_expected_s=1.0)
    tight = call(deadline_s=10.5, remaining_critical_path_s=5.0, stage_expected_s=1.0)
    busy = StageLoad("fix", queued=3, running=8, replicas=1, expected_wait_s=1.0)
    idle = StageLoad("fix", queued=0, running=0, replicas=1, expected_wait_s=0.0)
    assert p.prune_retry(doomed, "repair", 2, busy)
    assert not p.prune_retry(doomed, "repair", 2, idle)
    assert not p.prune_retry(tight, "repair", 2, busy)
    assert not p.prune_retry(call(deadline_s=40.0), "repair", 2, busy)


def test_cortex_prune_without_load_is_its_prune_retry_under_every_load():
    """The simulator measures the retry's stage load only where ``Decisions.prune_without_load`` gives
    None: Cortex's answer must be what ``prune_retry`` gives under every load (a run within its
    deadline is never pruned), and None only for a run past it (the load then decides)."""
    p = Cortex()
    dec = p.decisions()
    assert Decisions(p).prune_without_load(call(deadline_s=9.5)) is None  # the base never answers
    loads = [StageLoad("fix", queued=q, running=8, replicas=1, expected_wait_s=1.0) for q in (0, 3)]
    for c in (call(deadline_s=10.5), call(deadline_s=10.0), call(deadline_s=None)):
        assert dec.prune_without_load(c) is False
        assert not any(p.prune_retry(c, "repair", 2, load) for load in loads)
    doomed = call(deadline_s=9.5)
    assert dec.prune_without_load(doomed) is None
    assert [dec.prune_retry(doomed, "repair", 2, load) for load in loads] == [False, True]
    assert Cortex(prune_hopeless=False).decisions().prune_without_load(doomed) is False


def test_cortex_pick_is_its_route_as_an_index():
    """``Decisions.pick`` answers ``route`` over ``own + lenders`` (lenders unflagged there, flagged
    ``borrowed`` for route) by index; the base class never answers (PICK_ASK), nor Cortex for a
    disaggregated pool."""
    from runtime.policies.base import PICK_ASK
    p = Cortex()
    dec = p.decisions()
    c = call(prefix_key="w/s@m", input_tokens=1500, stage_expected_s=0.2, deadline_s=30.0)
    warm = rep("warm", resident_prefixes=frozenset({"w/s@m"}), backlog_s=0.01, running=3, slots=8)
    cold = rep("cold", backlog_s=0.0)
    swamped = rep("own", backlog_s=5.0, running=8, slots=8, queue_len=6, pending_decode_tokens=4000)
    full = rep("full", kv_used_tokens=99_900)
    cases = [([cold, warm], []), ([cold, warm], [rep("lender")]), ([swamped], [rep("lender")]),
             ([swamped, full], [rep("l1", running=2, slots=8), rep("l2")]), ([full], [])]
    for own, lenders in cases:
        i = dec.pick(c, own, lenders)
        flagged = [dataclasses.replace(r, borrowed=True) for r in lenders]
        assert (own + lenders)[i].replica_id == p.route(c, own + flagged).replica_id
        assert Decisions(p).pick(c, own, lenders) == PICK_ASK
    assert any(dec.pick(c, own, lenders) >= len(own) for own, lenders in cases)  # a lender won somewhere
    assert dec.pick(c, [rep("p", role="prefill"), rep("d", role="decode")], []) == PICK_ASK


def test_cortex_swaps_to_lighter_model_under_pressure():
    p = Cortex()
    c = call(model="big", deadline_s=14.0, remaining_critical_path_s=3.0)  # slack 1
    load = StageLoad("s", queued=10, running=4, replicas=1, expected_wait_s=2.0, models=("big", "small"))
    assert p.adapt(c, load).model == "small"
    assert p.adapt(c, StageLoad("s", 0, 1, 1, 0.0, ("big", "small"))).model is None


def test_default_route_pairs_prefill_with_roomiest_decode():
    cands = [rep("p1", role="prefill", backlog_s=1.0), rep("p2", role="prefill", backlog_s=0.5),
             rep("d1", role="decode", kv_used_tokens=90_000), rep("d2", role="decode", kv_used_tokens=10_000)]
    r = least_backlog_route(cands)
    assert (r.replica_id, r.decode_replica_id) == ("p2", "d2")


def test_registry_knows_every_policy_and_rejects_unknown_names():
    for name in ("fcfs", "autellix-plas", "autellix-atlas", "hexgen-text2sql", "cortex", "hexagent"):
        assert make_policy(name).name == name
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope")


def test_cortex_preempts_only_slack_rich_or_hopeless_running_calls():
    from runtime.policies.cortex import Cortex

    pol = Cortex(preempt_margin_s=1.0)
    assert pol.preempts((0.0, 10.0, 0.0), (0.0, 12.0, 0.0))  # 2 s more slack: evicted
    assert not pol.preempts((0.0, 10.0, 0.0), (0.0, 10.5, 0.0))  # within the margin
    assert pol.preempts((0.0, 10.0, 0.0), (1.0, 5.0, 0.0))  # the running run is hopeless
    assert not pol.preempts((1.0, 1.0, 0.0), (0.0, 50.0, 0.0))  # a hopeless waiter never evicts
    assert not Cortex().preempts((0.0, 10.0, 0.0), (0.0, 500.0, 0.0))  # tuned default: hopeless only
