"""Hedging, malleability, retry pruning, the agentic-state cache, events, metrics, external calls."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.engines.base import ChatMessage
from runtime.policies.base import Adaptation, CallView, Policy, StageLoad

from .conftest import example_spec, run_async, sim_factory, started
from .test_failures import with_replicas


def rag_script(stage: str, prompt: str) -> str:
    if stage == "verify":
        return json.dumps({"verdict": "supported", "issues": ""})
    return "Discounts above 20% need the VP of Sales [d080]. " + "More words. " * 20


def test_hedged_candidates_first_wins_and_the_rest_are_aborted() -> None:
    engines: list = []

    async def body() -> None:
        spec = with_replicas(example_spec("rag"), "answer", 2)
        assert spec.knobs.hedge["answer"] == 2
        orch = await started(spec, sim_factory(rag_script, speedup=500, engines=engines))
        try:
            info = await orch.run({"question": "Who approves a 25% discount?"})
        finally:
            await orch.stop()
        answer = next(c for c in info.calls if c.stage == "answer")
        assert answer.candidates == 2 and answer.outcome == "ok"
        answer_engines = [e for e in engines if e.metrics().requests_finished and e.metrics().generation_tokens_total]
        assert all(e.metrics().running == 0 and e.metrics().waiting == 0 for e in engines)
        assert orch.summary()["stages"]["answer"]["hedged"] == 1
        assert len(answer_engines) >= 2

    run_async(body())


@dataclass
class SwapToLighter(Policy):
    name: str = "swap"

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        return Adaptation(model="llama8b") if call.stage == "answer" else Adaptation()


def test_malleability_swaps_to_the_lighter_declared_model_on_a_free_replica() -> None:
    async def body() -> None:
        orch = await started(example_spec("rag"), sim_factory(rag_script), policy=SwapToLighter())
        try:
            info = await orch.run({"question": "Who approves a 25% discount?"})
        finally:
            await orch.stop()
        answer = next(c for c in info.calls if c.stage == "answer")
        assert answer.model == "llama8b" and answer.replica.split("-")[0] in ("rewrite", "verify", "revise")
        assert orch.summary()["stages"]["answer"]["swapped"] == 1

    run_async(body())


@dataclass
class PruneEverything(Policy):
    name: str = "prune"

    def prune_retry(self, call: CallView, loop: str, iteration: int, load: StageLoad) -> bool:
        return True


def test_pruned_retry_takes_the_loop_exit(sales_db: Path) -> None:
    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(lambda s, p: "SELECT nope FROM nowhere;"),
                             policy=PruneEverything())
        try:
            info = await orch.run({"question": "q"})
        finally:
            await orch.stop()
        assert info.status == "fail" and info.pruned == 1 and info.retries == 0
        assert [c.stage for c in info.calls] == ["generate", "execute", "fix"]

    run_async(body())


def test_tool_results_are_cached_across_runs() -> None:
    async def body() -> None:
        orch = await started(example_spec("rag"), sim_factory(rag_script))
        try:
            first = await orch.run({"question": "Who approves a 25% discount?"})
            second = await orch.run({"question": "Who approves a 25% discount?"})
        finally:
            await orch.stop()
        cached = {c.stage for c in second.calls if c.cached}
        assert not any(c.cached for c in first.calls)
        assert {"dense", "sparse", "web"} <= cached

    run_async(body())


def test_events_stream_from_start_to_finish(sales_db: Path) -> None:
    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(lambda s, p: "SELECT 1 AS one;"))
        try:
            run = await orch.submit({"question": "q"})
            kinds = [e.kind async for e in orch.events(run.run_id)]
            replay = [e.kind async for e in orch.events(run.run_id)]  # after the end: the stored events
        finally:
            await orch.stop()
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        assert kinds.count("stage_started") == 2 and "edge" in kinds
        assert replay == kinds

    run_async(body())


def test_metrics_text_has_the_families(sales_db: Path) -> None:
    async def body() -> str:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(lambda s, p: "SELECT 1 AS one;"))
        try:
            await asyncio.gather(*(orch.run({"question": f"q{i}"}) for i in range(3)))
            return orch.metrics_text()
        finally:
            await orch.stop()

    text = run_async(body())
    for needle in ('cortex_runs_total{workflow="nl2sql",status="done"} 3', "cortex_pool_queue_depth{pool=\"generate\"} 0",
                   "cortex_replica_kv_cache_usage{", 'cortex_slo_attainment{workflow="nl2sql"} 1.0',
                   'cortex_stage_latency_seconds_bucket{workflow="nl2sql",stage="execute",le="+Inf"} 3',
                   "# TYPE cortex_run_latency_seconds histogram"):
        assert needle in text, needle


def test_external_chat_calls_join_a_named_run(sales_db: Path) -> None:
    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(lambda s, p: "SELECT 2;"))
        try:
            msg = (ChatMessage(role="user", content="write SQL"),)
            a = await orch.chat(msg, stage="generate", run_id="agent-1")
            b = await orch.chat(msg, stage="fix", run_id="agent-1", max_tokens=8)
            info = orch.status("agent-1")
        finally:
            await orch.stop()
        assert a.engine == "simulated" and a.text == "SELECT 2"  # the stage's stop strings apply
        assert [c.stage for c in info.calls] == ["generate", "fix"] and b.output_tokens <= 8

    run_async(body())


def _redis_or_skip() -> str:
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except Exception as exc:  # no server here: the in-process cache is tested above
        pytest.skip(f"Redis at {url} does not answer ({type(exc).__name__})")
    return url


@pytest.mark.services
def test_sql_cache_is_shared_across_orchestrators_through_redis(sales_db: Path) -> None:
    import uuid

    from runtime.cache import RedisCache, StateCache

    url = _redis_or_skip()
    prefix = f"cortex:test:{uuid.uuid4().hex}:"

    async def one_orchestrator() -> object:
        cache = StateCache(RedisCache(url, prefix=prefix))
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(lambda s, p: "SELECT COUNT(*) FROM sales;"),
                             cache=cache)
        try:
            return await orch.run({"question": "how many sales lines?"})
        finally:
            await orch.stop()

    async def body() -> None:
        first = await one_orchestrator()
        second = await one_orchestrator()  # another orchestrator (as another process would be)
        assert [c.cached for c in first.calls if c.stage == "execute"] == [False]
        assert [c.cached for c in second.calls if c.stage == "execute"] == [True]
        assert second.output["rows"] == first.output["rows"]
        cleanup = RedisCache(url, prefix=prefix)
        await cleanup.delete_prefix("")
        await cleanup.close()

    run_async(body())


def test_redis_cache_is_configured_from_the_spec(sales_db: Path) -> None:
    from runtime.cache import RedisCache
    from runtime.orchestrator import Orchestrator

    spec = example_spec("nl2sql", sales_db, cache="redis", redis_url="redis://127.0.0.1:6379/0")
    orch = Orchestrator(spec, sim_factory())
    assert isinstance(orch.cache.backend, RedisCache)
