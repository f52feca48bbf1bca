"""Cortex's soft reservation of fast devices (``reserve_weight``) and stretch-based urgency (``urgent_stretch``)."""

from __future__ import annotations

from runtime.policies.base import CallView, ReplicaView
from runtime.policies.cortex import Cortex


def _call(deadline_s: float | None, remaining_s: float = 3.0, now_s: float = 10.0) -> CallView:
    return CallView(run_id=1, workflow="w", stage="s", kind="llm", model="m", run_arrival_s=0.0, now_s=now_s,
                    deadline_s=deadline_s, stage_expected_s=1.0, remaining_critical_path_s=remaining_s,
                    remaining_std_s=0.5, attained_service_s=0.0, critical_path_service_s=0.0, prefix_key=None,
                    input_tokens=500, output_tokens=50, enqueued_s=now_s)


def _pair() -> list[ReplicaView]:
    """Without profiles a replica's finish is ``backlog + expected / speed``: the fast one (speed 2)
    finishes a 1 s call in 0.5 s, the slow one in 1.0 s; neither has a marginal term."""
    return [ReplicaView(replica_id="fast", device="H200", model="m", stages=None, speed=2.0,
                        kv_capacity_tokens=100_000),
            ReplicaView(replica_id="slow", device="A100", model="m", stages=None, speed=1.0,
                        kv_capacity_tokens=100_000)]


def test_off_by_default_the_earliest_finish_wins() -> None:
    assert Cortex().route(_call(deadline_s=100.0), _pair()).replica_id == "fast"


def test_a_call_with_slack_leaves_the_fast_device_when_the_reservation_outweighs_its_gain() -> None:
    # Costs with weight rho: fast 0.5 + rho x 2/2, slow 1.0 + rho x 1/2: slow wins once rho > 1.
    assert Cortex(reserve_weight=0.9).route(_call(deadline_s=100.0), _pair()).replica_id == "fast"
    assert Cortex(reserve_weight=1.1).route(_call(deadline_s=100.0), _pair()).replica_id == "slow"
    # No deadline: no urgency either, so the reservation applies.
    assert Cortex(reserve_weight=1.1).route(_call(deadline_s=None), _pair()).replica_id == "slow"


def test_an_urgent_call_ignores_the_reservation() -> None:
    # Slack = 13 - 10 - 3 = 0 < urgent_slack_factor x 1 s: urgent, so the earliest finish.
    assert Cortex(reserve_weight=5.0).route(_call(deadline_s=13.0), _pair()).replica_id == "fast"


def test_stretch_urgency_compares_the_time_left_with_the_remaining_path() -> None:
    pol = Cortex(reserve_weight=5.0, urgent_stretch=2.0)
    # 10 s left for 3 s of remaining path: stretch 3.3 >= 2, not urgent (slack 7 s would be urgent
    # under urgent_slack_factor = 8, and is not here: the rule is the stretch one).
    pol.urgent_slack_factor = 8.0
    assert pol.route(_call(deadline_s=20.0), _pair()).replica_id == "slow"
    # 5 s left for 3 s: stretch 1.7 < 2, urgent.
    assert pol.route(_call(deadline_s=15.0), _pair()).replica_id == "fast"
    # A long remaining path makes the same time left urgent.
    assert pol.route(_call(deadline_s=20.0, remaining_s=6.0), _pair()).replica_id == "fast"
