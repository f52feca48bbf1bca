"""Pools: policy-keyed waiting, bounded queues, withdrawal on cancel, failover, borrowing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from runtime.orchestrator import NoHealthyReplica, Overloaded
from runtime.orchestrator.pools import Pool, Replica
from runtime.policies.base import CallView, Policy, PriorityKey

from .conftest import run_async


def call(stage: str = "s", run_id: int = 0, deadline: float | None = None, model: str | None = "m") -> CallView:
    return CallView(run_id=run_id, workflow="w", stage=stage, kind="llm", model=model, run_arrival_s=0.0, now_s=0.0,
                    deadline_s=deadline, stage_expected_s=1.0, remaining_critical_path_s=1.0, remaining_std_s=0.0,
                    attained_service_s=0.0, critical_path_service_s=0.0, prefix_key=None, input_tokens=10,
                    output_tokens=5)


@dataclass
class EarliestDeadline(Policy):
    name: str = "edf"

    def priority(self, c: CallView) -> PriorityKey:
        return (c.deadline_s if c.deadline_s is not None else float("inf"),)


def pool(slots: int = 1, max_queue: int = 10, policy: Policy | None = None, replicas: int = 1,
         name: str = "s") -> Pool:
    reps = [Replica(f"{name}-{i}", name, slots, model="m") for i in range(replicas)]
    return Pool(name, "llm", reps, policy=policy or EarliestDeadline(), max_queue=max_queue, model="m")


def test_waiters_are_served_in_policy_order() -> None:
    async def body() -> list[int]:
        p = pool()
        first, _ = await p.acquire(call(run_id=0))
        order: list[int] = []

        async def waiter(run_id: int, deadline: float) -> None:
            replica, _ = await p.acquire(call(run_id=run_id, deadline=deadline))
            order.append(run_id)
            p.release(replica)

        tasks = [asyncio.create_task(waiter(i, d)) for i, d in ((1, 30.0), (2, 10.0), (3, 20.0))]
        await asyncio.sleep(0)
        assert p.queued == 3 and first.inflight == 1
        p.release(first)
        await asyncio.gather(*tasks)
        return order

    assert run_async(body()) == [2, 3, 1]


def test_full_queue_rejects_admission_checked_calls_only() -> None:
    async def body() -> None:
        p = pool(max_queue=2)
        held, _ = await p.acquire(call())
        waiting = [asyncio.create_task(p.acquire(call(run_id=i))) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await p.acquire(call(run_id=9), admission=True)
        assert info.value.stage == "s" and p.rejected == 1 and p.queued == 2
        extra = asyncio.create_task(p.acquire(call(run_id=10)))  # a call of an admitted run still queues
        await asyncio.sleep(0)
        assert p.queued == 3
        p.release(held)  # the slot goes to the first waiter; the queue shrinks
        await asyncio.sleep(0)
        assert waiting[0].done() and p.queued == 2
        for t in (waiting[1], extra):
            t.cancel()
        await asyncio.gather(waiting[1], extra, return_exceptions=True)
        assert p.queued == 0

    run_async(body())


def test_cancelled_waiter_is_withdrawn_and_a_granted_slot_returned() -> None:
    async def body() -> None:
        p = pool()
        held, _ = await p.acquire(call())
        task = asyncio.create_task(p.acquire(call(run_id=1)))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert p.queued == 0
        p.release(held)
        assert held.inflight == 0  # nobody was waiting: the slot is free again
        again, _ = await p.acquire(call(run_id=2))
        assert again is held

    run_async(body())


def test_last_replica_failing_fails_the_waiters() -> None:
    async def body() -> None:
        p = pool(replicas=2)
        a, _ = await p.acquire(call())
        b, _ = await p.acquire(call())
        waiter = asyncio.create_task(p.acquire(call(run_id=3)))
        await asyncio.sleep(0)
        p.fail_replica(a, "crashed")
        assert not waiter.done()  # b is still healthy: keep waiting
        p.fail_replica(b, "crashed too")
        with pytest.raises(NoHealthyReplica, match="crashed too"):
            await waiter
        with pytest.raises(NoHealthyReplica):
            await p.acquire(call())

    run_async(body())


def test_idle_replica_of_another_pool_is_borrowed_when_own_is_busy() -> None:
    async def body() -> None:
        policy = Policy(borrow_idle=True)
        gen = pool(name="generate", policy=policy)
        fix = pool(name="fix", policy=policy)
        gen.peers, fix.peers = [fix], [gen]
        own, borrowed = await gen.acquire(call("generate"))
        assert not borrowed and own.pool == "generate"
        lent, borrowed = await gen.acquire(call("generate"))
        assert borrowed and lent.pool == "fix" and gen.borrowed == 1
        gen.release(lent)
        assert lent.inflight == 0
        # fix's own call is not blocked by the loan once it is returned
        back, borrowed = await fix.acquire(call("fix"))
        assert back is lent and not borrowed

    run_async(body())


def test_no_borrowing_from_a_busy_pool_or_another_model() -> None:
    async def body() -> None:
        policy = Policy(borrow_idle=True)
        gen = pool(name="generate", policy=policy)
        other = Pool("other", "llm", [Replica("o-0", "other", 1, model="other-model")], policy=policy, max_queue=4,
                     model="other-model")
        gen.peers = [other]
        await gen.acquire(call("generate"))
        task = asyncio.create_task(gen.acquire(call("generate")))
        await asyncio.sleep(0)
        assert not task.done() and gen.queued == 1  # the idle replica serves another model
        task.cancel()

    run_async(body())


def test_prefix_affinity_routes_to_the_replica_holding_the_prefix() -> None:
    from runtime.policies.cortex import Cortex

    async def body() -> None:
        p = pool(replicas=3, slots=4, policy=Cortex())
        p.replicas[2].remember_prefix("smollm2:schema")
        c = call()
        c.prefix_key, c.input_tokens = "smollm2:schema", 700
        replica, _ = await p.acquire(c)
        assert replica.replica_id == "s-2"
        other, _ = await p.acquire(call())  # no prefix: the least-loaded replica
        assert other.replica_id in ("s-0", "s-1")

    run_async(body())


def test_borrowing_can_be_switched_off_by_the_deployment() -> None:
    async def body() -> None:
        policy = Policy(borrow_idle=True)
        gen = Pool("generate", "llm", [Replica("g-0", "generate", 1, model="m")], policy=policy, max_queue=4,
                   model="m", borrow=False)
        fix = pool(name="fix", policy=policy)
        gen.peers = [fix]
        await gen.acquire(call("generate"))
        waiting = asyncio.create_task(gen.acquire(call("generate")))
        await asyncio.sleep(0)
        assert not waiting.done() and gen.borrowed == 0  # isolation holds: it waits for its own pool
        waiting.cancel()

    run_async(body())


def test_a_restored_replica_hands_its_slots_to_waiters_and_failures_are_reported() -> None:
    async def body() -> None:
        p = pool(slots=2, replicas=2)
        failed: list[str] = []
        p.on_replica_failed = lambda owner, replica: failed.append(f"{owner.name}/{replica.replica_id}")
        a, _ = await p.acquire(call(run_id=0))
        b, _ = await p.acquire(call(run_id=1))
        c, _ = await p.acquire(call(run_id=2))
        d, _ = await p.acquire(call(run_id=3))  # both replicas full
        waiters = [asyncio.create_task(p.acquire(call(run_id=i))) for i in (4, 5)]
        await asyncio.sleep(0)
        down = p.replicas[0]
        p.fail_replica(down, "EngineError: reset")
        p.fail_replica(down, "again")  # already out: not reported twice
        assert failed == ["s/s-0"] and p.healthy and p.queued == 2
        for replica in (a, b, c, d):
            if replica is down:
                p.release(replica)  # its calls end; a failed replica's slots go to nobody
        assert p.queued == 2 and down.inflight == 0
        p.restore_replica(down)
        granted = await asyncio.gather(*waiters)
        assert [r for r, _ in granted] == [down, down] and down.recoveries == 1 and down.failure is None
        p.restore_replica(down)  # healthy already: nothing changes
        assert down.recoveries == 1

    run_async(body())


def test_a_slot_freed_between_a_waiters_cancel_and_its_handler_goes_to_the_next_waiter() -> None:
    """Task.cancel() cancels the awaited future at once; the waiter learns it only when its task
    resumes. A release in between granted the slot to the cancelled waiter (inflight + 1, never
    released: set_result raised InvalidStateError), so dropped streams leaked a saturated pool's slots
    (found by benchmarks/fuzz_http.py). Now the slot goes to the next live waiter."""
    async def body() -> None:
        p = pool()
        held, _ = await p.acquire(call())
        gone = asyncio.create_task(p.acquire(call(run_id=1, deadline=1.0)))  # first in line
        live = asyncio.create_task(p.acquire(call(run_id=2, deadline=2.0)))
        await asyncio.sleep(0)
        gone.cancel()  # its future is cancelled now; its handler runs at the next loop step
        p.release(held)  # in between: the slot must not go to the cancelled waiter
        replica, _ = await live
        assert replica is held and held.inflight == 1
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert p.queued == 0
        p.release(replica)
        assert held.inflight == 0

    run_async(body())
