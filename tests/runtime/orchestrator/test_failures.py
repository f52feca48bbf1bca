"""Failures: a replica killed mid-run, overload, destructive SQL, cancellation, deadlines."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest

from runtime.build.spec import RuntimeSpec
from runtime.engines.base import ChatMessage, EngineError, EngineHealth, GenerationRequest, GenerationResult
from runtime.engines.simulated import SimulatedEngine
from runtime.orchestrator import Overloaded, UnknownRun
from runtime.orchestrator.engines import replica_profile
from runtime.orchestrator.health import ReplicaProber

from .conftest import example_spec, run_async, scripted, sim_factory, started

GOOD_SQL = "SELECT COUNT(*) AS n FROM customers;"


def with_replicas(spec: RuntimeSpec, pool: str, n: int) -> RuntimeSpec:
    pools = []
    for p in spec.llm_pools:
        if p.name == pool:
            reps = tuple(p.replicas[0].model_copy(update={"replica_id": f"{pool}-{i}"}) for i in range(n))
            p = p.model_copy(update={"replicas": reps})
        pools.append(p)
    return spec.model_copy(update={"llm_pools": tuple(pools)})


def long_answer(stage: str, prompt: str) -> str:
    return "SELECT COUNT(*) AS n FROM customers -- " + "padding " * 40 + ";"


def test_killed_replica_calls_complete_on_the_other(sales_db: Path) -> None:
    engines: list = []

    async def body() -> None:
        spec = with_replicas(example_spec("nl2sql", sales_db), "generate", 2)
        orch = await started(spec, sim_factory(long_answer, speedup=200, engines=engines))
        try:
            runs = [await orch.submit({"question": f"how many customers {i}"}) for i in range(12)]
            await asyncio.sleep(0.01)
            victim = orch.pools_by_name["generate"].replicas[0]
            assert victim.inflight > 0  # killed with calls in flight
            await victim.engine.stop()
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=30) for r in runs))
        finally:
            await orch.stop()
        assert [i.status for i in infos] == ["done"] * 12
        assert victim.healthy is False and "stopped" in (victim.failure or "")
        survivors = {c.replica for i in infos for c in i.calls if c.stage == "generate"}
        # every generate call, retried or not, finished on a live replica: the survivor, or an idle
        # replica of the fix pool lent to it (borrowing, when the policy allows it)
        assert "generate-1" in survivors and survivors <= {"generate-1", "fix-0"}

    run_async(body())


def test_all_replicas_killed_runs_fail_with_a_clear_error(sales_db: Path) -> None:
    async def body() -> None:
        spec = example_spec("nl2sql", sales_db)
        orch = await started(spec, sim_factory(long_answer, speedup=200))
        try:
            runs = [await orch.submit({"question": f"q{i}"}) for i in range(30)]  # 16 run, 14 wait
            await asyncio.sleep(0.01)
            await orch.pools_by_name["generate"].replicas[0].engine.stop()
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=10) for r in runs))
            assert not orch.ready()
            with pytest.raises(Exception, match="no healthy replica"):
                await orch.run({"question": "after the crash"})
        finally:
            await orch.stop()
        # Nothing hangs, nothing is silently lost: calls that finished before the crash completed
        # their runs; every other run (in flight or queued) ends 'error' with the reason.
        assert {i.status for i in infos} <= {"done", "error"}
        failed = [i for i in infos if i.status == "error"]
        assert len(failed) >= 14 and all("no healthy replica" in (i.error or "") for i in failed)

    run_async(body())


def test_overload_rejects_with_a_retryable_error_and_bounded_queues(sales_db: Path) -> None:
    async def body() -> None:
        spec = example_spec("nl2sql", sales_db, max_active_runs=1000, policy="fcfs")
        pools = tuple(p.model_copy(update={"max_queue": 8}) for p in spec.llm_pools)
        spec = spec.model_copy(update={"llm_pools": pools})
        orch = await started(spec, sim_factory(long_answer, speedup=50))
        admitted, rejected = [], []
        try:
            for i in range(100):
                try:
                    admitted.append(await orch.submit({"question": f"q{i}"}))
                except Overloaded as exc:
                    rejected.append(exc)
                await asyncio.sleep(0)
            generate = orch.pools_by_name["generate"]
            assert generate.queued <= generate.max_queue  # bounded, whatever the offered load
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=60) for r in admitted))
            text = orch.metrics_text()
        finally:
            await orch.stop()
        assert rejected and len(admitted) + len(rejected) == 100
        assert len(admitted) <= 16 + 8 + 1  # slots + queue (+ one freed while submitting)
        exc = rejected[0]
        assert exc.stage == "generate" and exc.retry_after_s > 0 and "retry later" in str(exc)
        assert all(i.status == "done" for i in infos)
        assert f'cortex_runs_rejected_total{{workflow="nl2sql"}} {len(rejected)}' in text

    run_async(body())


def test_max_active_runs_is_enforced(sales_db: Path) -> None:
    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db, max_active_runs=3), sim_factory(long_answer))
        try:
            runs = [await orch.submit({"question": f"q{i}"}) for i in range(3)]
            with pytest.raises(Overloaded, match="runs are in flight"):
                await orch.submit({"question": "one too many"})
            await asyncio.gather(*(orch.wait(r.run_id) for r in runs))
            assert (await orch.run({"question": "fits again"})).status == "done"
        finally:
            await orch.stop()

    run_async(body())


DESTRUCTIVE = [
    "DROP TABLE sales;",
    "DELETE FROM customers;",
    "UPDATE products SET unit_price = 0;",
    "INSERT INTO regions (region_id, name) VALUES (99, 'Atlantis');",
    "CREATE TABLE evil(x);",
    "PRAGMA query_only = OFF;",
    "ATTACH DATABASE '/tmp/evil.db' AS evil;",
]


def test_destructive_sql_is_refused_and_the_database_is_unchanged(sales_db: Path) -> None:
    before = hashlib.sha256(sales_db.read_bytes()).hexdigest()
    seen: dict[str, list[str]] = {}

    async def body() -> None:
        for statement in DESTRUCTIVE:
            def script(stage: str, prompt: str, statement: str = statement) -> str:
                seen.setdefault(statement, []).append(prompt)
                return statement if stage == "generate" else GOOD_SQL

            orch = await started(example_spec("nl2sql", sales_db), sim_factory(script))
            try:
                info = await orch.run({"question": "delete everything"})
            finally:
                await orch.stop()
            first = info.calls[1]
            assert first.stage == "execute" and first.outcome == "error", statement
            assert first.error, statement
            assert info.status == "done"  # the fix stage got the refusal and wrote a harmless query
            assert first.error.split(":")[0] in seen[statement][1] or first.error in seen[statement][1]

    run_async(body())
    assert hashlib.sha256(sales_db.read_bytes()).hexdigest() == before
    con = sqlite3.connect(sales_db)
    try:
        assert con.execute("SELECT COUNT(*) FROM sales").fetchone()[0] > 0
        assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'evil'").fetchone()[0] == 0
    finally:
        con.close()


def test_cancelling_a_run_aborts_its_calls_in_the_engine(sales_db: Path) -> None:
    engines: list = []

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(long_answer, speedup=5, engines=engines))
        try:
            run = await orch.submit({"question": "slow"})
            await asyncio.sleep(0.05)
            assert engines[0].metrics().running + engines[0].metrics().waiting >= 1 or any(
                e.metrics().running for e in engines)
            assert await orch.cancel(run.run_id) is True
            info = orch.status(run.run_id)
            await asyncio.sleep(0.01)
            assert info.status == "cancelled"
            assert all(e.metrics().running == 0 and e.metrics().waiting == 0 for e in engines)
        finally:
            await orch.stop()

    run_async(body())


def test_deadline_times_the_run_out_end_to_end(sales_db: Path) -> None:
    engines: list = []

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(long_answer, speedup=5, engines=engines))
        try:
            info = await orch.run({"question": "slow"}, deadline_s=0.05)
            await asyncio.sleep(0.01)
            assert info.status == "timeout" and "deadline" in (info.error or "")
            assert info.slo_met is False
            assert all(e.metrics().running == 0 for e in engines)
        finally:
            await orch.stop()

    run_async(body())


def test_missing_inputs_and_unknown_runs_are_clear_errors(sales_db: Path) -> None:
    from runtime.orchestrator import BadRequest, UnknownRun

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(long_answer))
        try:
            with pytest.raises(BadRequest, match="needs input"):
                await orch.submit({"query": "wrong name"})
            with pytest.raises(UnknownRun, match="no run 'nope'"):
                orch.status("nope")
        finally:
            await orch.stop()

    run_async(body())


class FlakyEngine(SimulatedEngine):
    """A simulated engine whose backend can be broken (generate raises, health says failed) and repaired."""

    broken = False
    blips = 0
    """Calls that fail with a transient error while health stays fine."""

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if self.broken or self.blips:
            self.blips = max(self.blips - 1, 0)
            raise EngineError("connection reset by the engine")
        return await super().generate(request)

    async def health(self) -> EngineHealth:
        return EngineHealth(state="failed", detail="down") if self.broken else await super().health()


def flaky_factory(engines: list[FlakyEngine]):  # type: ignore[no-untyped-def]
    def build(spec: RuntimeSpec, pool: object, rep: object) -> FlakyEngine:
        engine = FlakyEngine(replica_profile(rep), kv_capacity_tokens=rep.kv_capacity_tokens,  # type: ignore[attr-defined]
                             max_num_seqs=16, responder=scripted(lambda s, p: GOOD_SQL), speedup=2000,
                             max_context=rep.engine.max_model_len)  # type: ignore[attr-defined]
        engines.append(engine)
        return engine

    return build


def test_a_failed_replica_is_probed_with_backoff_and_brought_back(sales_db: Path) -> None:
    engines: list[FlakyEngine] = []

    async def body() -> None:
        spec = example_spec("nl2sql", sales_db, borrow_idle=False)
        prober = ReplicaProber(first_delay_s=0.02, max_delay_s=0.08)
        orch = await started(spec, flaky_factory(engines), prober=prober)
        try:
            generate = orch.pools_by_name["generate"]
            replica = generate.replicas[0]
            engine = replica.engine
            assert isinstance(engine, FlakyEngine)
            engine.broken = True
            info = await orch.run({"question": "q"})
            assert info.status == "error" and "no healthy replica" in (info.error or "")
            await asyncio.sleep(0.3)  # several probes, all failed: still out, still probed
            assert not orch.ready() and prober.probing == 1 and not replica.healthy
            engine.broken = False
            for _ in range(100):
                if orch.ready():
                    break
                await asyncio.sleep(0.01)
            assert orch.ready() and replica.recoveries == 1 and prober.probing == 0
            assert (await orch.run({"question": "q"})).status == "done"
            # A transient error with a healthy engine: the pool is empty only until the first probe.
            engine.blips = 1
            info = await orch.run({"question": "q"})
            await asyncio.sleep(0.1)
            assert orch.ready() and replica.recoveries == 2
            assert (await orch.run({"question": "q"})).status == "done"
            assert 'cortex_replica_recoveries_total{pool="generate",replica="generate-0"} 2' in orch.metrics_text()
        finally:
            await orch.stop()
        assert prober.probing == 0

    run_async(body())


def test_a_request_too_long_for_the_context_fails_its_run_not_the_replica(sales_db: Path) -> None:
    engines: list[FlakyEngine] = []

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), flaky_factory(engines))
        try:
            info = await orch.run({"question": "x" * 150_000})
            assert info.status == "error" and "context of 2048 tokens" in (info.error or "")
            assert orch.ready() and (await orch.run({"question": "q"})).status == "done"
        finally:
            await orch.stop()

    run_async(body())


def two_speed(stage: str, prompt: str) -> str:
    """``generate`` answers long (a run stays in flight for seconds); ``fix`` answers at once."""
    return "SELECT 1 -- " + "padding " * 200 if stage == "generate" else "ok"


def test_history_never_evicts_runs_in_flight_and_external_runs_end_when_idle(sales_db: Path) -> None:
    message = (ChatMessage(role="user", content="fix it"),)

    async def body() -> None:
        spec = example_spec("nl2sql", sales_db, retained_runs=4, borrow_idle=False)
        orch = await started(spec, sim_factory(two_speed, speedup=0.5), external_run_idle_s=0.3)
        try:
            slow = [await orch.submit({"question": f"slow {i}"}) for i in range(2)]
            await orch.chat(message, stage="fix", run_id="agent-1")
            await orch.chat(message, stage="fix", run_id="agent-2")
            assert orch.status("agent-1").status == "running"  # an external run lasts until idle
            # Full (two runs in flight, two idle external runs): a fresh name ends the external run idle
            # longest (it is not in flight), never a run in flight; so do fresh runs, until every place
            # holds a run in flight.
            await orch.chat(message, stage="fix", run_id="agent-3")
            with pytest.raises(UnknownRun):
                orch.status("agent-1")  # ended for the room, then evicted
            slow += [await orch.submit({"question": f"slow {i}"}) for i in (2, 3)]
            with pytest.raises(Overloaded, match="history is full of runs in flight"):
                await orch.chat(message, stage="fix", run_id="agent-4")  # would evict a run in flight
            assert all(orch.status(r.run_id).status == "running" for r in slow)
            assert await orch.cancel(slow[0].run_id) is True  # still there, still cancellable
            # A call in flight keeps its external run alive past the idle time; naming a run that
            # ended starts it afresh.
            call = asyncio.create_task(orch.chat(message, stage="generate", run_id="agent-2"))
            await asyncio.sleep(0.5)
            assert orch.status("agent-2").status == "running" and not call.done()
            await call
            assert len(orch.status("agent-2").calls) == 1
            await asyncio.sleep(0.45)
            assert orch.status("agent-2").status == "done"
        finally:
            await orch.stop()

    run_async(body())


def test_a_refused_hedged_request_fails_its_run_and_keeps_every_candidate_replica() -> None:
    engines: list[SimulatedEngine] = []

    async def body() -> None:
        spec = with_replicas(example_spec("rag"), "answer", 2)
        assert spec.knobs.hedge["answer"] == 2
        orch = await started(spec, sim_factory(lambda s, p: "an answer " * 5, speedup=500, engines=engines))
        try:
            for replica in orch.pools_by_name["answer"].replicas:
                replica.engine.max_context = 1024  # type: ignore[union-attr]
            info = await orch.run({"question": "Who approves a discount? " * 400})
            assert info.status == "error" and (info.error or "").startswith("stage 'answer'")
            assert "context of 1024 tokens" in (info.error or "")
            assert orch.ready() and all(r.healthy for r in orch.pools_by_name["answer"].replicas)
        finally:
            await orch.stop()

    run_async(body())
