"""A flaky page-fetch service and the tools that use it (deep-research workflow).

:class:`FlakyUpstream` simulates a fetch service over the knowledge-base corpus
(URLs are the documents' ``url``). It fails a request with probability
``failure_rate``, *deterministically*: request number ``n`` (0-based) for a
given set of URLs fails iff::

    u(seed, urls, n) < failure_rate,   u = blake2b(seed | urls | n) / 2**64  in [0, 1)

so a fixed seed reproduces the same failures in the same order, about
``failure_rate`` of all requests fail, and a retry of a failed request is an
independent draw. Failures raise :class:`FetchError` (a ``ConnectionError``):
the stage's outcome is ``error``, which the workflow routes to :func:`backoff`.

Tool entries:

* :func:`fetch_sources` — fetch the pages behind the search hits found so far
  (every ``hits`` list anywhere in the context, best scores first, at most
  :data:`MAX_SOURCES`); returns ``{"sources": [{"url", "title", "text"}],
  "missing": [url], "count"}``. Unknown URLs are ``missing``, not errors.
* :func:`backoff` — wait before a retry: ``min(cap, base * 2**(attempt - 1))``
  seconds, ``attempt`` from ``ctx["attempt"]`` (1 if absent).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from .context import ToolInputError, find_key
from .corpus import Document, load_corpus

MAX_SOURCES = 6
DEFAULT_FAILURE_RATE = 0.15
DEFAULT_SEED = 7


class FetchError(ConnectionError):
    """The (simulated) upstream did not answer; retrying may succeed."""


def failure_draw(seed: int, urls: tuple[str, ...], n: int) -> float:
    """The uniform draw in [0, 1) that decides whether request ``n`` for ``urls`` fails."""
    key = f"{seed}|{'|'.join(urls)}|{n}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2**64


class FlakyUpstream:
    """A simulated page-fetch service that fails a seeded fraction of requests (see the module docstring).

    Thread-safe: the per-request counters are guarded by a lock.
    """

    def __init__(self, failure_rate: float = DEFAULT_FAILURE_RATE, seed: int = DEFAULT_SEED,
                 latency_s: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                 docs: Iterable[Document] | None = None) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate}")
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.failure_rate, self.seed, self.latency_s, self._sleep = failure_rate, seed, latency_s, sleep
        self._docs = {d.url: d for d in docs} if docs is not None else None
        self._requests: Counter = Counter()
        self._lock = threading.Lock()

    def _pages(self) -> dict[str, Document]:
        if self._docs is None:
            self._docs = {d.url: d for d in load_corpus()}
        return self._docs

    def get(self, urls: Iterable[str]) -> dict[str, Document | None]:
        """The page at each URL (``None`` for unknown URLs); raises :class:`FetchError` on a simulated failure."""
        key = tuple(urls)
        with self._lock:
            n = self._requests[key]
            self._requests[key] += 1
        if self.latency_s:
            self._sleep(self.latency_s)
        if failure_draw(self.seed, key, n) < self.failure_rate:
            raise FetchError(f"fetch service timed out on {len(key)} URL(s) (simulated failure, request {n + 1})")
        pages = self._pages()
        return {url: pages.get(url) for url in key}


def source_urls(ctx: dict, limit: int = MAX_SOURCES) -> list[str]:
    """URLs of the best-scoring search hits anywhere in ``ctx``, deduplicated, at most ``limit``."""
    best: dict[str, float] = {}
    for hits in find_key(ctx, "hits"):
        for hit in hits if isinstance(hits, list) else ():
            if isinstance(hit, dict) and isinstance(hit.get("url"), str):
                score = float(hit.get("score", 0.0))
                best[hit["url"]] = max(score, best.get(hit["url"], score))
    ranked = sorted(best, key=lambda url: (-best[url], url))
    return ranked[:limit]


def make_fetch_sources(upstream: FlakyUpstream) -> Callable[[dict], dict]:
    """A ``fetch_sources`` tool bound to ``upstream`` (tests pass their own)."""

    def fetch_sources(ctx: dict) -> dict:
        urls = source_urls(ctx)
        if not urls:
            raise ToolInputError("no search hits with URLs in the context to fetch")
        pages = upstream.get(urls)
        sources = [{"url": u, "title": d.title, "text": d.text} for u, d in pages.items() if d is not None]
        missing = [u for u, d in pages.items() if d is None]
        return {"sources": sources, "missing": missing, "count": len(sources)}

    fetch_sources.__doc__ = "Tool: fetch the full pages behind the search hits in the context (flaky upstream)."
    return fetch_sources


def make_backoff(base_s: float = 0.25, cap_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> Callable[[dict], dict]:
    """A ``backoff`` tool: exponential wait before a retry (see the module docstring)."""
    if base_s < 0 or cap_s < base_s:
        raise ValueError("need 0 <= base_s <= cap_s")

    def backoff(ctx: dict) -> dict:
        attempt = ctx.get("attempt", 1)
        attempt = attempt if isinstance(attempt, int) and attempt >= 1 else 1
        delay = min(cap_s, base_s * 2 ** (attempt - 1))
        sleep(delay)
        return {"attempt": attempt, "waited_s": delay}

    backoff.__doc__ = "Tool: wait min(cap, base * 2**(attempt-1)) seconds before retrying a fetch."
    return backoff


UPSTREAM = FlakyUpstream(failure_rate=DEFAULT_FAILURE_RATE, seed=DEFAULT_SEED, latency_s=0.05)
fetch_sources = make_fetch_sources(UPSTREAM)
backoff = make_backoff()
