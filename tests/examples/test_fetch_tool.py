"""The flaky fetch service and the fetch/backoff tools of the deep-research workflow."""

from __future__ import annotations

import pytest

from examples.tools.context import ToolInputError
from examples.tools.fetch import (
    FetchError, FlakyUpstream, failure_draw, make_backoff, make_fetch_sources, source_urls,
)
from examples.tools.retrieval import make_web_search


def outcomes(upstream: FlakyUpstream, keys: list[str]) -> list[bool]:
    failed = []
    for key in keys:
        try:
            upstream.get([key])
            failed.append(False)
        except FetchError:
            failed.append(True)
    return failed


def test_fails_about_the_configured_fraction_deterministically() -> None:
    keys = [f"https://example.test/{i}" for i in range(4000)]
    first = outcomes(FlakyUpstream(0.15, seed=7, docs=[]), keys)
    assert 0.13 <= sum(first) / len(keys) <= 0.17
    assert outcomes(FlakyUpstream(0.15, seed=7, docs=[]), keys) == first
    assert outcomes(FlakyUpstream(0.15, seed=8, docs=[]), keys) != first


def test_a_retry_is_an_independent_draw() -> None:
    upstream = FlakyUpstream(0.5, seed=3, docs=[])
    key = next(f"u{i}" for i in range(100) if failure_draw(3, (f"u{i}",), 0) < 0.5)
    with pytest.raises(FetchError, match="simulated"):
        upstream.get([key])
    expected = [failure_draw(3, (key,), n) < 0.5 for n in range(1, 20)]
    assert outcomes(upstream, [key] * 19) == expected
    assert not all(expected)


def test_extremes() -> None:
    assert not any(outcomes(FlakyUpstream(0.0, docs=[]), ["a", "b", "c"]))
    assert all(outcomes(FlakyUpstream(1.0, docs=[]), ["a", "b", "c"]))
    with pytest.raises(ValueError):
        FlakyUpstream(1.5)


def research_context() -> dict:
    web = make_web_search(delay_s=0.0)
    ctx = {"question": "discount rules", "plan": {"queries": ["discount approval", "volume discount tiers"]}}
    branches = [{"search": web({**ctx, "branch": b})} for b in range(2)]
    return {**ctx, "research": {"branches": branches}}


def test_fetch_sources_fetches_the_best_hits_of_every_branch() -> None:
    ctx = research_context()
    urls = source_urls(ctx)
    assert len(urls) == len(set(urls)) <= 6
    assert any("discount-approval-matrix" in u for u in urls) and any("volume-discount-tiers" in u for u in urls)
    result = make_fetch_sources(FlakyUpstream(0.0))(ctx)
    assert result["count"] == len(urls) and result["missing"] == []
    assert all(len(s["text"]) > 100 for s in result["sources"])


def test_unknown_urls_are_missing_not_errors() -> None:
    ctx = {"web": {"hits": [{"url": "https://kb.northstar.example/nope", "score": 1.0}]}}
    result = make_fetch_sources(FlakyUpstream(0.0))(ctx)
    assert result == {"sources": [], "missing": ["https://kb.northstar.example/nope"], "count": 0}


def test_fetch_without_hits_is_a_clear_input_error() -> None:
    with pytest.raises(ToolInputError, match="no search hits"):
        make_fetch_sources(FlakyUpstream(0.0))({"question": "q"})


def test_backoff_doubles_up_to_the_cap() -> None:
    waits: list[float] = []
    backoff = make_backoff(base_s=0.25, cap_s=1.0, sleep=waits.append)
    results = [backoff({"attempt": a}) for a in (1, 2, 3, 4)]
    assert waits == [0.25, 0.5, 1.0, 1.0]
    assert [r["attempt"] for r in results] == [1, 2, 3, 4]
    backoff({})
    assert waits[-1] == 0.25, "no attempt in the context counts as the first"
