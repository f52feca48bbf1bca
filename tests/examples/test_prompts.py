"""Prompt templates: each documents its variables and renders with a realistic context."""

from __future__ import annotations

import re

import pytest

from examples.sample_contexts import PROMPTS_DIR, render, sample_contexts

TEMPLATES = sorted(p.name for p in PROMPTS_DIR.glob("*.j2"))
CASES = sample_contexts()


def test_every_template_has_a_sample_context() -> None:
    assert sorted({template for template, _, _ in CASES}) == TEMPLATES


@pytest.mark.parametrize("template, case, ctx", CASES, ids=[f"{t}:{c}" for t, c, _ in CASES])
def test_renders_strictly(template: str, case: str, ctx: dict) -> None:
    text = render(template, ctx)  # StrictUndefined: any variable the context lacks fails here
    assert text.strip()
    assert "{{" not in text and "{%" not in text
    if "question" in ctx:
        assert ctx["question"] in text


@pytest.mark.parametrize("template", TEMPLATES)
def test_header_comment_documents_the_variables(template: str) -> None:
    source = (PROMPTS_DIR / template).read_text(encoding="utf-8")
    assert source.startswith("{#")
    header = source[: source.index("#}")]
    assert "Variables" in header
    used = set(re.findall(r"\{\{-?\s*([a-z_]+)", source)) - {"seen", "draft", "previous"}
    for name in used:
        assert name in header, f"{template} uses `{name}` without documenting it"


def test_nl2sql_templates_document_the_runtime_variables() -> None:
    generate = (PROMPTS_DIR / "nl2sql_generate.j2").read_text(encoding="utf-8")
    fix = (PROMPTS_DIR / "nl2sql_fix.j2").read_text(encoding="utf-8")
    for name in ("question", "schema"):
        assert re.search(rf"^\s+{name}\s", generate, re.M)
    for name in ("question", "schema", "sql", "error", "attempt"):
        assert re.search(rf"^\s+{name}\s", fix, re.M)


def test_nl2sql_prompts_ask_for_one_statement_and_carry_the_schema() -> None:
    by_case = {case: (template, ctx) for template, case, ctx in CASES}
    template, ctx = by_case["generate"]
    text = render(template, ctx)
    assert "CREATE TABLE sales" in text and "ending with ';'" in text
    assert text.rstrip().endswith("SQL:")
    first_fix = render(*by_case["first fix"])
    third_fix = render(*by_case["third fix"])
    assert "no such column: region" in first_fix and "simpler query" not in first_fix
    assert "the query returned no rows" in third_fix and "(2 so far)" in third_fix


def test_rag_answer_lists_each_retrieved_document_once() -> None:
    template, ctx = next((t, c) for t, case, c in CASES if t == "rag_answer.j2")
    text = render(template, ctx)
    ids = {hit["doc_id"] for stage in ("dense", "sparse", "web") for hit in ctx[stage]["hits"]}
    for doc_id in ids:
        assert text.count(f"[{doc_id}]") == 1


def test_react_think_shows_the_latest_observations_and_errors() -> None:
    by_case = {case: (t, c) for t, case, c in CASES if t == "react_think.j2"}
    first = render(*by_case["first step"])
    later = render(*by_case["after three tools"])
    failed = render(*by_case["after a tool error"])
    assert "Your last step" not in first and "Your last step" in later
    assert "list price $1,649.00" in later and "= 17809.2" in later
    assert "Your last action failed: not an arithmetic expression" in failed
