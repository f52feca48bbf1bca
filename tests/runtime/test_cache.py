"""The agentic-state cache: keys that never merge different statements, versions, TTL, LRU, Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexlang.ir import Database
from runtime.cache import InProcessCache, RedisCache, StateCache, normalise_sql
from runtime.sql import SQLExecutor, SQLResult
from tests.security.databases import make_sqlite, postgres_schema, reader_url_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def result(statement: str, outcome: str = "ok") -> SQLResult:
    rows = ((1, "eu"),) if outcome == "ok" else ()
    return SQLResult(database="shop", statement=statement, outcome=outcome, columns=("n", "r"), rows=rows,
                     error="boom" if outcome == "error" else None)


def test_normalisation_drops_only_surrounding_trivia_and_semicolons() -> None:
    assert normalise_sql("  -- why\nSELECT region FROM sales WHERE region = 'Europe' ; ;-- done\n") == (
        "SELECT region FROM sales WHERE region = 'Europe'")
    assert normalise_sql("SELECT ';' -- ;") == "SELECT ';'"
    # Inside, everything counts: SQLite names the column "1  +  2"; case is meaningful in literals and labels.
    assert normalise_sql("SELECT 1  +  2") != normalise_sql("SELECT 1 + 2")
    assert normalise_sql("SELECT 1 AS Total") != normalise_sql("select 1 as total")


COLLIDING_BEFORE = [
    # An apostrophe in a comment opened a "string" that swallowed the rest of the statement.
    ("SELECT region -- don't\nFROM sales WHERE region = 'EU'",
     "SELECT region -- don't\nFROM sales WHERE region = 'eu'"),
    # Dollar quotes: their content was lower-cased and its spaces collapsed.
    ("SELECT $$Bob  Smith$$", "SELECT $$bob smith$$"),
    ("SELECT $t$ -- not a comment $t$", "SELECT $t$ $t$"),
    # E'' strings: \' was taken for the end of the string.
    ("SELECT E'\\'', 'A  B'", "SELECT E'\\'', 'a b'"),
    ("SELECT 'a' || E'\\' -- x'", "SELECT 'a' || E'\\' -- y'"),
    # Spaces around operators were removed: '< =' is a syntax error, '<=' is not.
    ("SELECT 1 <= 2", "SELECT 1 < = 2"),
    # Adjacent literals: PostgreSQL joins them only across a line break.
    ("SELECT 'a'\n'b'", "SELECT 'a' 'b'"),
]


@pytest.mark.parametrize(("a", "b"), COLLIDING_BEFORE)
def test_statements_that_differ_never_share_a_key(a: str, b: str) -> None:
    assert StateCache.sql_key("g", "db", "v", a) != StateCache.sql_key("g", "db", "v", b)


async def test_sql_hits_across_spellings_and_misses_across_versions() -> None:
    cache = StateCache()
    assert await cache.put_sql("wf", "v1", result("SELECT n, r FROM t"))
    hit = await cache.get_sql("wf", "shop", "v1", "\n  SELECT n, r FROM t; -- the same query")
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
        shared = await reader.get_sql("global", "shop", "v7", "SELECT n, r FROM t;")
        assert shared is not None and shared.rows == ((1, "eu"),) and shared.cached
        await writer.put_tool("global", "tools:f", [1], "short", ttl_s=0.05)
        assert await reader.get_tool("global", "tools:f", [1]) == "short"
        await asyncio.sleep(0.2)
        assert await reader.get_tool("global", "tools:f", [1]) is None  # Redis expired it
        assert await writer.invalidate_scope("global") == 1
        assert await reader.get_sql("global", "shop", "v7", "SELECT n, r FROM t") is None
    finally:
        await reader.backend.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------ against real databases
@pytest.fixture(scope="module")
def executors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SQLExecutor]]:
    """A SQLite executor, and a PostgreSQL one (SELECT-only role) when the server answers."""
    lite = SQLExecutor(Database(name="lite", url=f"sqlite:///{make_sqlite(tmp_path_factory.mktemp('c') / 'c.db')}",
                                pool_size=1))
    out = [lite]
    with ExitStack() as stack:
        try:
            schema = stack.enter_context(postgres_schema("cortex_cache"))
            out.append(SQLExecutor(Database(name="pg", url=reader_url_for(schema), pool_size=1)))
        except pytest.skip.Exception:
            pass  # SQLite alone still proves the property; the PostgreSQL half needs the server
        yield out
        for ex in out:
            ex.close()


async def cached_run(cache: StateCache, ex: SQLExecutor, statement: str) -> SQLResult:
    """What the orchestrator does: a hit, or run the statement and store its result."""
    version = ex.version_sync()
    hit = await cache.get_sql("global", ex.database.name, version, statement)
    if hit is not None:
        return hit
    result = ex.execute_sync(statement)
    await cache.put_sql("global", version, result)
    return result


def answer(result: SQLResult) -> tuple:
    return result.outcome, result.columns, result.rows


async def test_each_statement_gets_its_own_rows_end_to_end(executors: list[SQLExecutor]) -> None:
    for ex in executors:
        cache = StateCache()
        for a, b in COLLIDING_BEFORE:
            await cached_run(cache, ex, a)
            assert answer(await cached_run(cache, ex, b)) == answer(ex.execute_sync(b)), (ex.database.name, a, b)


_FRAGMENTS = ["'a'", "'A  b'", "'", "''", "1", " ", "  ", "\n", "\r", "--", "-- don't\n", "$$", "$$x$$", "$t$",
              "E'\\''", "\\", ";", "/*", "*/", '"a"', "||", ",", "+", "-", "x", "AS", "Total"]
_SIMILAR = {"'a'": "'A'", "'A  b'": "'a b'", " ": "  ", "  ": " ", "\n": " ", "x": "X", "AS": "as", "Total": "total",
            "$$x$$": "$$X$$", "--": "- -", "-- don't\n": "-- dont\n"}
"""Each fragment's look-alike: a change only of case, spacing or comment text."""
_LEADING = ["", " ", "\n", "-- c\n", "/* c */ ", "-- don't\n"]
_TRAILING = ["", ";", " ;", " -- x", ";\n-- y';", " /* z */", "; ;", "\r"]


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(core=st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=8), changed=st.integers(0, 7),
       around=st.tuples(*[st.sampled_from(d) for d in (_LEADING, _TRAILING, _LEADING, _TRAILING)]))
def test_equal_keys_mean_equal_answers_on_sqlite_and_postgres(executors: list[SQLExecutor], core: list[str],
                                                              changed: int, around: tuple[str, str, str, str]) -> None:
    # Two texts that differ in trivia around them and one look-alike fragment: when the cache gives
    # them one key, both databases must answer them alike.
    other = list(core)
    other[changed % len(core)] = _SIMILAR.get(other[changed % len(core)], other[changed % len(core)])
    a = around[0] + "SELECT " + "".join(core) + around[1]
    b = around[2] + "SELECT " + "".join(other) + around[3]
    if normalise_sql(a) != normalise_sql(b):
        return
    for ex in executors:
        assert answer(ex.execute_sync(a)) == answer(ex.execute_sync(b)), (ex.database.name, a, b)
