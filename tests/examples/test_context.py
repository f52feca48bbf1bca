"""How tools read their input from the run context."""

from __future__ import annotations

from examples.tools.context import find_key, query_from, text_of


def test_text_of_accepts_the_result_shapes() -> None:
    assert text_of(" plain ") == "plain"
    assert text_of({"text": " from an llm "}) == "from an llm"
    assert text_of({"a": 1}) == '{"a": 1}'
    assert text_of(None) == ""


def test_query_precedence() -> None:
    ctx = {"question": "q", "rewrite": {"text": "rewritten"}}
    assert query_from(ctx) == "rewritten"
    ctx["plan"] = {"queries": ["first", "second"]}
    assert query_from({**ctx, "branch": 1}) == "second"
    assert query_from({**ctx, "branch": 3}) == "second", "a wider fan-out than the plan wraps around"
    ctx["replan"] = {"queries": ["newer"]}
    assert query_from({**ctx, "branch": 0}) == "newer", "the latest plan wins"
    ctx["think"] = {"action": "search", "input": "agent input"}
    assert query_from(ctx) == "agent input"
    assert query_from({**ctx, "query": "explicit"}) == "explicit"
    assert query_from({"question": "only the question"}) == "only the question"


def test_find_key_walks_nested_results_in_order() -> None:
    ctx = {"research": {"branches": [{"search": {"hits": [1]}}, {"search": {"hits": [2]}}]}, "web": {"hits": [3]}}
    assert list(find_key(ctx, "hits")) == [[1], [2], [3]]
