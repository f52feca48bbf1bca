"""Rendering of diagnostics and the code registry's documentation."""

from __future__ import annotations

import re

from cortexlang.compiler import compile_source
from cortexlang.diagnostics import CODES, EXCERPT_WIDTH, MAX_SHOWN, DiagnosticCollector, Span, render, render_all
from tests.conftest import REPO


def test_render_layout() -> None:
    src = "line one\n  fixx -> execute\n"
    diags = DiagnosticCollector("f.cortex", src)
    diags.error("CX301", "unknown node `fixx` in flow", Span(2, 3, 2, 7), hint="did you mean `fix`?")
    assert render(diags.items[0], src) == (
        "f.cortex:2:3: error[CX301]: unknown node `fixx` in flow\n"
        " 2 |   fixx -> execute\n"
        "   |   ^^^^\n"
        "   = help: did you mean `fix`?"
    )


def test_errors_sort_before_warnings_and_summary_counts() -> None:
    diags = DiagnosticCollector("f", "a\nb\n")
    diags.warning("CX410", "w", Span(1, 1, 1, 2))
    diags.error("CX301", "e", Span(2, 1, 2, 2))
    out = render_all(diags.sorted(), {"f": "a\nb\n"})
    assert out.index("error[CX301]") < out.index("warning[CX410]")
    assert out.endswith("1 error, 1 warning found")


def test_duplicates_are_reported_once() -> None:
    diags = DiagnosticCollector("f")
    for _ in range(2):
        diags.error("CX301", "same", Span(1, 1, 1, 2))
    assert len(diags.items) == 1


def test_every_code_is_documented() -> None:
    doc = (REPO / "docs" / "diagnostics.md").read_text()
    documented = set(re.findall(r"^\| (CX\d{3}) \|", doc, re.M))
    assert documented == set(CODES)


def test_a_long_line_is_shown_around_the_caret_only() -> None:
    src = "x" * 5000 + " oops " + "y" * 5000
    diags = DiagnosticCollector("f", src)
    diags.error("CX001", "bad", Span(1, 5002, 1, 5006))
    _, excerpt, caret = render(diags.items[0], src).split("\n")
    assert len(excerpt) <= EXCERPT_WIDTH + 10 and excerpt.startswith(" 1 | …") and excerpt.endswith("…")
    assert excerpt[caret.index("^"):][:4] == "oops" and caret.count("^") == 4


def test_control_characters_are_not_printed() -> None:
    src = "a\x00b\x1b[2Jc\x0cd"
    diags = DiagnosticCollector("f", src)
    diags.error("CX003", "invalid character U+0000", Span(1, 2, 1, 3))
    excerpt = render(diags.items[0], src).split("\n")[1]
    assert excerpt == " 1 | a b [2Jc d"


def test_many_diagnostics_are_capped_and_counted() -> None:
    # 10,000 unknown attributes in a 200 KB file: the 90 KB input printed 1.27 GB in 19 s.
    body = "".join(f"  bogus_{i} = {'1' * 10}\n" for i in range(10_000))
    result = compile_source("model m {\n" + body + "}\n", "big.cortex")
    out = render_all(result.diagnostics, {result.path: result.source})
    assert out.count(": error[") == MAX_SHOWN and f"{len(result.diagnostics) - MAX_SHOWN} more not shown" in out
    assert out.endswith(f"{len(result.diagnostics)} errors found") and len(out) < 40_000
