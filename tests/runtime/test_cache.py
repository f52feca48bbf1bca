"""The agentic-state cache: normalised keys, versions, TTL, LRU bound, and the shared Redis backend."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from runtime.cache import InProcessCache, RedisCache, StateCache, normalise_sql
from runtime.sql import SQLResult

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def result(statement: str, outcome: str = "ok") -> SQLResult:
    rows = ((1, "eu"),) if outcome == "ok" else ()
    return SQLResult(database="shop", statement=statement, outcome=outcome, columns=("n", "r"), rows=rows,
                     error="boom" if outcome == "error" else None)


def test_normalisation_folds_case_and_space_but_not_literals() -> None:
    a = normalise_sql("SELECT  region , SUM(amount)\nFROM sales -- why\nWHERE region = 'Europe';")
    b = normalise_sql("select region,sum(amount) from sales where region='Europe'")
    assert a == b
    assert normalise_sql("select 1 where x = 'Europe'") != normalise_sql("select 1 where x = 'europe'")
    assert normalise_sql('select "Col" from t') != normalise_sql('select "col" from t')


async def test_sql_hits_across_spellings_and_misses_across_versions() -> None:
    cache = StateCache()
    assert await cache.put_sql("wf", "v1", result("SELECT n, r FROM t"))
    hit = await cache.get_sql("wf", "shop", "v1", "select n,r\n from T;")
    assert hit is not None and hit.cached and hit.rows == ((1, "eu"),)
    assert await cache.get_sql("wf", "shop", "v2", "SELECT n, r FROM t") is None  # the data changed
    assert await cache.get_sql("other", "shop", "v1", "SELECT n, r FROM t") is None  # another scope
    assert cache.stats.hits == 1 and cache.stats.misses == 2


async def test_errors_are_not_cached_but_empty_results_are() -> None:
    cache = StateCache()
    assert not await cache.put_sql("wf", "v1", result("SELECT x", "error"))
    assert await cache.put_sql("wf", "v1", result("SELECT y", "empty"))
    assert await cache.get_sql("wf", "shop", "v1", "SELECT x") is None
    empty = await cache.get_sql("wf", "shop", "v1", "SELECT y")
    assert empty is not None and empty.outcome == "empty"


async def test_ttl_and_lru_bound() -> None:
    backend = InProcessCache(max_entries=2)
    cache = StateCache(backend)
    await cache.put_tool("wf", "tools:f", {"a": 1}, "one")
    await cache.put_tool("wf", "tools:f", {"a": 2}, "two")
    assert await cache.get_tool("wf", "tools:f", {"a": 1}) == "one"  # now most recently used
    await cache.put_tool("wf", "tools:f", {"a": 3}, "three")  # evicts {"a": 2}
    assert len(backend) == 2
    assert await cache.get_tool("wf", "tools:f", {"a": 2}) is None
    assert await cache.get_tool("wf", "tools:f", {"a": 1}) == "one"
    await cache.put_tool("wf", "tools:g", {"b": 1}, [1, 2], ttl_s=0.02)
    await asyncio.sleep(0.05)
    assert await cache.get_tool("wf", "tools:g", {"b": 1}) is None


async def test_tool_keys_ignore_argument_order_and_scopes_invalidate() -> None:
    cache = StateCache()
    await cache.put_tool("run-1", "tools:search", {"q": "x", "k": 3}, {"hits": 2})
    assert await cache.get_tool("run-1", "tools:search", {"k": 3, "q": "x"}) == {"hits": 2}
    assert await cache.invalidate_scope("run-1") == 1
    assert await cache.get_tool("run-1", "tools:search", {"k": 3, "q": "x"}) is None


@pytest.fixture
async def redis_backend():
    backend = RedisCache("redis://127.0.0.1:6379/0", prefix=f"cortex-test:{uuid.uuid4().hex[:8]}:")
    try:
        await asyncio.wait_for(backend.ping(), 2)
    except Exception as exc:  # connection refused, timeout
        await backend.close()
        pytest.skip(f"Redis at 127.0.0.1:6379 does not answer: {exc}")
    yield backend
    await backend.delete_prefix("")
    await backend.close()


@pytest.mark.services
async def test_redis_is_shared_between_cache_instances_and_expires(redis_backend: RedisCache) -> None:
    writer = StateCache(redis_backend)
    reader = StateCache(RedisCache("redis://127.0.0.1:6379/0", prefix=redis_backend.prefix))
    try:
        await writer.put_sql("global", "v7", result("SELECT n, r FROM t"))
        shared = await reader.get_sql("global", "shop", "v7", "select n, r from t")
        assert shared is not None and shared.rows == ((1, "eu"),) and shared.cached
        await writer.put_tool("global", "tools:f", [1], "short", ttl_s=0.05)
        assert await reader.get_tool("global", "tools:f", [1]) == "short"
        await asyncio.sleep(0.2)
        assert await reader.get_tool("global", "tools:f", [1]) is None  # Redis expired it
        assert await writer.invalidate_scope("global") == 1
        assert await reader.get_sql("global", "shop", "v7", "SELECT n, r FROM t") is None
    finally:
        await reader.backend.close()  # type: ignore[attr-defined]
