"""Realistic run contexts for every example prompt template, built by calling the real tools.

Each entry of :func:`sample_contexts` is ``(template file, case, ctx)``: the
context a stage would see at that point of a run (workflow inputs plus earlier
stage results by stage name, shaped as described in
:mod:`examples.tools.context`). LLM outputs that a context needs are written
here by hand (they stand in for a model); everything a tool returns comes from
the tool itself, with simulated delays and failures switched off.

Used by the tests (every template renders under ``StrictUndefined``) and by
``python -m examples.measure_prompts`` (prompt sizes for the ``input_tokens``
planning numbers).
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from examples.data.sales_schema import schema_text
from examples.tools.calculator import CalculatorError, calculate
from examples.tools.fetch import FlakyUpstream, make_fetch_sources
from examples.tools.lookup import lookup
from examples.tools.retrieval import bm25_search, dense_search, make_web_search

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"

_web_search = make_web_search(delay_s=0.0)
_fetch_sources = make_fetch_sources(FlakyUpstream(failure_rate=0.0))

# Stand-ins for model outputs, of typical length.
_RAG_DRAFT = (
    "Discounts above 20% need the VP of Sales, who may approve up to 30%; above 30% the CFO must approve, "
    "and only for multi-year Enterprise agreements [d080]. Opened, non-defective hardware can be returned "
    "within 30 days with a 15% restocking fee, and Enterprise contracts extend the return window to 45 days "
    "[d082]. A 25% discount on an Enterprise order is possible: 15-20% from volume tiers plus 5 points of "
    "contract pricing [d079]."
)
_SUMMARY = (
    "- Volume discounts run from 5% (from $1,000 of list value) to 20% (from $150,000) [d079]\n"
    "- Enterprise contracts add 5 points, Public Sector 3 [d079]\n"
    "- Account executives approve up to 10%, directors 20%, the VP 30% [d080]\n"
    "- A quarterly promotion adds 5 points but not with trade-in credit [d081]"
)


def _rag_contexts() -> list[tuple[str, str, dict]]:
    ctx: dict = {"question": "Who has to approve a 25% discount on an Enterprise laptop order, "
                             "and how long can the customer return opened laptops?"}
    ctx["rewrite"] = {"text": "discount approval 25% Enterprise return window opened laptops"}
    ctx.update(dense=dense_search(ctx), sparse=bm25_search(ctx), web=_web_search(ctx))
    out = [("rag_answer.j2", "first answer", dict(ctx))]
    ctx["answer"] = {"text": _RAG_DRAFT}
    out.append(("rag_verify.j2", "first draft", dict(ctx)))
    ctx["verify"] = {"verdict": "unsupported",
                     "issues": "The answer says opened laptops can be returned; [d082] adds a restocking fee "
                               "only for non-defective units, which the answer omits for Enterprise."}
    out.append(("rag_revise.j2", "first revision", dict(ctx)))
    ctx["revise"] = {"text": _RAG_DRAFT + " The 15% restocking fee applies to opened, non-defective units."}
    out.append(("rag_verify.j2", "revised draft", dict(ctx)))
    out.append(("rag_revise.j2", "second revision", dict(ctx)))
    return out


def _react_contexts() -> list[tuple[str, str, dict]]:
    ctx: dict = {"question": "What would 12 Aurora 14 Pro laptops cost after the volume discount?"}
    out = [("react_think.j2", "first step", dict(ctx))]
    ctx["think"] = {"thought": "I need the list price.", "action": "lookup", "input": "Aurora 14 Pro"}
    ctx["lookup"] = lookup(ctx)
    ctx["think"] = {"thought": "Which volume discount applies to $19,788?", "action": "search",
                    "input": "volume discount tiers"}
    ctx["search"] = bm25_search(ctx)
    ctx["think"] = {"thought": "$19,788 is in the 10% tier.", "action": "calculate", "input": "12 * 1649 * (1 - 0.10)"}
    ctx["calculate"] = calculate(ctx)
    out.append(("react_think.j2", "after three tools", dict(ctx)))
    try:  # a malformed expression: the runtime passes the tool's error message as `error`
        calculate({"query": "12 * $1,649 less 10%"})
    except CalculatorError as exc:
        out.append(("react_think.j2", "after a tool error", {**ctx, "error": str(exc)}))
    ctx["think"] = {"thought": "I have the total.", "action": "finish",
                    "input": "12 Aurora 14 Pro laptops cost $17,809.20 after the 10% volume discount."}
    out.append(("react_answer.j2", "finished", dict(ctx)))
    return out


def _research_contexts() -> list[tuple[str, str, dict]]:
    ctx: dict = {"question": "How do volume discounts, approvals and promotions combine for Enterprise customers?"}
    out = [("research_plan.j2", "first round", dict(ctx))]
    ctx["plan"] = {"queries": ["volume discount tiers", "discount approval matrix", "quarterly promotions",
                               "enterprise contract pricing"]}
    branches = []
    for branch in range(len(ctx["plan"]["queries"])):
        branch_ctx = {**ctx, "branch": branch}
        branch_ctx["search"] = _web_search(branch_ctx)
        out.append(("research_summarize.j2", f"branch {branch}", dict(branch_ctx)))
        branches.append({"search": branch_ctx["search"], "summarize": {"text": _SUMMARY}})
    ctx["research"] = {"branches": branches}
    ctx["fetch"] = _fetch_sources(ctx)
    out.append(("research_synthesize.j2", "first round", dict(ctx)))
    ctx["synthesize"] = {"text": "Summary. " + _SUMMARY * 4}
    out.append(("research_critique.j2", "first round", dict(ctx)))
    ctx["critique"] = {"verdict": "gaps", "gaps": ["approval above 30%", "stacking promotions with trade-ins"]}
    out.append(("research_replan.j2", "second round", dict(ctx)))
    ctx["replan"] = {"queries": ["CFO approval multi-year agreements", "trade-in credit promotions"]}
    out.append(("research_replan.j2", "third round", dict(ctx)))
    out.append(("research_synthesize.j2", "later round", dict(ctx)))
    return out


def _nl2sql_contexts() -> list[tuple[str, str, dict]]:
    base = {"question": "What was the total revenue per region in 2023?", "schema": schema_text()}
    failed = "SELECT region, SUM(revenue) FROM sales WHERE year = 2023 GROUP BY region;"
    return [
        ("nl2sql_generate.j2", "generate", dict(base)),
        ("nl2sql_fix.j2", "first fix", {**base, "sql": failed, "error": "no such column: region", "attempt": 1}),
        ("nl2sql_fix.j2", "third fix", {**base, "sql": failed, "error": "the query returned no rows", "attempt": 3}),
    ]


def _chess_contexts() -> list[tuple[str, str, dict]]:
    base = {"question": "Which region had the highest revenue in 2024?", "schema": schema_text()}
    unite = {"tables": ["regions", "sales"], "needs_keywords": True, "links": 3}
    tests = {"branches": [{"unit_test": {"candidate": i, "score": s, "rows": r}}
                          for i, (s, r) in enumerate([(1.0, 4), (0.4, 0), (0.8, 4)])]}
    failed = "SELECT name, SUM(revenue) FROM sales GROUP BY name;"
    return [
        ("chess_link.j2", "first link", {**base, "history": {}}),
        ("chess_link.j2", "third link", {**base, "history": {"link": [{"tables": ["sales"]},
                                                                      {"tables": ["sales", "regions"]}]}}),
        ("chess_keywords.j2", "keywords", {**base, "unite": unite}),
        ("chess_draft.j2", "without keywords", {**base, "unite": unite, "keywords": None, "branch": 0}),
        ("chess_draft.j2", "with keywords", {**base, "unite": unite, "keywords": {"keywords": ["2024"]}, "branch": 2}),
        ("chess_revise.j2", "revise", {**base, "sql": failed, "error": "no such column: name"}),
        ("chess_select.j2", "select", {**base, "testers": tests}),
    ]


def sample_contexts() -> list[tuple[str, str, dict]]:
    """``(template file name, case, ctx)`` for every template in ``examples/prompts``."""
    return _nl2sql_contexts() + _rag_contexts() + _react_contexts() + _research_contexts() + _chess_contexts()


def render(template_file: str, ctx: dict, *, strict: bool = True) -> str:
    """Render ``examples/prompts/<template_file>`` with ``ctx``; ``strict`` fails on any undefined use."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
                             keep_trailing_newline=True)
    return env.from_string((PROMPTS_DIR / template_file).read_text(encoding="utf-8")).render(**ctx)
