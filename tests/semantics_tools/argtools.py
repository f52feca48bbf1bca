"""Tools for the tool-feature tests: named arguments, and attempts that fail before they succeed."""

from __future__ import annotations

from collections import Counter
from typing import Any

calls: list[dict[str, Any]] = []
attempts: Counter[str] = Counter()


def lookup(query: str, k: str) -> dict[str, Any]:
    """Records its arguments; returns them as fields."""
    calls.append({"query": query, "k": k})
    return {"query": query, "k": int(k)}


def flaky(query: str) -> dict[str, Any]:
    """Fails the first two attempts for each query, then succeeds."""
    attempts[query] += 1
    if attempts[query] <= 2:
        raise ConnectionError(f"attempt {attempts[query]} for {query!r} failed")
    return {"query": query, "attempts": attempts[query]}
