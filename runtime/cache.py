"""The agentic-state cache: results of SQL statements and tool calls, reused across runs.

A SQL entry is keyed by (database name, database version, normalised
statement: :func:`normalise_sql`, which never merges two different
statements); a tool entry by (entry point, canonical JSON of its arguments). A
``scope`` prefix separates entries that must not be shared (e.g. one run or
one workflow, as ``CachePolicy.scope`` declares). The database version
(:meth:`runtime.sql.SQLExecutor.version`) changes whenever the data may have
changed, so a stale result is never served after a write; the TTL bounds
staleness for tools.

Backends:

* :class:`InProcessCache` (default): an LRU dict bounded by ``max_entries``,
  each entry with a monotonic-clock expiry.
* :class:`RedisCache`: shared by every process that names the same Redis and
  prefix; expiry is Redis's own (``SET ... PX``), and Redis's eviction policy
  bounds the size.

Only ``ok`` and ``empty`` SQL results are cached: errors may be transient
(timeouts, connection loss) and the fix loop must see them fresh.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.sql.executor import SQLResult
from runtime.sql.lexer import SQL_WHITESPACE, LexError, code_tokens, tokenize

def normalise_sql(statement: str) -> str:
    """The cache's text for ``statement``: equal only for statements that give the same result.

    The statement's text from its first to its last code token: leading and
    trailing whitespace and comments and trailing ``;`` are dropped, found
    with the rules SQLite and PostgreSQL share (:mod:`runtime.sql.lexer`,
    ``portable``), so a ``;`` or ``--`` inside a literal is never taken for
    one. Everything between stays verbatim: SQLite names an unaliased result
    column by its expression's text, spaces and comments included
    (``SELECT 1  +  2`` has a column ``1  +  2``), and no case can be folded
    (``'Bob'``, ``AS Total``). Text the two dialects read differently
    (``E'...'``, ``$$...$$``, ``/* */``, brackets, backticks) or that does not
    lex is keyed exactly, less surrounding whitespace.
    """
    try:
        code = code_tokens(tokenize(statement, "portable"))
    except LexError:
        return statement.strip(SQL_WHITESPACE)
    while code and code[-1].text == ";":
        code.pop()
    if not code:
        return ""
    return statement[code[0].start:code[-1].start + len(code[-1].text)]


class CacheBackend(Protocol):
    """Byte-string storage with per-entry expiry."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...


class InProcessCache:
    """LRU-bounded, TTL-expiring storage in this process (monotonic clock)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._entries if k.startswith(prefix)]
        for k in doomed:
            del self._entries[k]
        return len(doomed)


class RedisCache:
    """Storage in Redis (redis-py asyncio), shared across processes; expiry by Redis."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "cortex:cache:") -> None:
        from redis.asyncio import Redis

        self.prefix = prefix
        self._redis = Redis.from_url(url)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self.prefix + key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.set(self.prefix + key, value, px=max(int(ttl_s * 1000), 1))

    async def delete_prefix(self, prefix: str) -> int:
        count = 0
        async for key in self._redis.scan_iter(match=f"{self.prefix}{prefix}*", count=500):
            count += int(await self._redis.delete(key))
        return count

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class StateCache:
    """SQL/tool result cache over a :class:`CacheBackend` (see module docstring)."""

    def __init__(self, backend: CacheBackend | None = None, *, default_ttl_s: float = 300.0) -> None:
        self.backend: CacheBackend = backend if backend is not None else InProcessCache()
        self.default_ttl_s = default_ttl_s
        self.stats = CacheStats()

    @staticmethod
    def sql_key(scope: str, database: str, version: str, statement: str) -> str:
        return f"{scope}:sql:{database}:{_digest(version, normalise_sql(statement))}"

    @staticmethod
    def tool_key(scope: str, entry: str, arguments: Any) -> str:
        canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
        return f"{scope}:tool:{entry}:{_digest(canonical)}"

    async def get_sql(self, scope: str, database: str, version: str, statement: str) -> SQLResult | None:
        raw = await self._get(self.sql_key(scope, database, version, statement))
        if raw is None:
            return None
        return SQLResult.model_validate_json(raw).model_copy(update={"cached": True})

    async def put_sql(self, scope: str, version: str, result: SQLResult, ttl_s: float | None = None) -> bool:
        """Store ``result`` unless it is an error; returns whether it was stored."""
        if result.outcome == "error":
            return False
        key = self.sql_key(scope, result.database, version, result.statement)
        await self._set(key, result.model_dump_json().encode(), ttl_s)
        return True

    async def get_tool(self, scope: str, entry: str, arguments: Any) -> Any | None:
        raw = await self._get(self.tool_key(scope, entry, arguments))
        return None if raw is None else json.loads(raw)["value"]

    async def put_tool(self, scope: str, entry: str, arguments: Any, value: Any, ttl_s: float | None = None) -> None:
        """Store a JSON-serialisable tool result."""
        await self._set(self.tool_key(scope, entry, arguments), json.dumps({"value": value}).encode(), ttl_s)

    async def invalidate_scope(self, scope: str) -> int:
        return await self.backend.delete_prefix(f"{scope}:")

    async def _get(self, key: str) -> bytes | None:
        raw = await self.backend.get(key)
        if raw is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return raw

    async def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        await self.backend.set(key, value, ttl_s if ttl_s is not None else self.default_ttl_s)
        self.stats.stores += 1
