"""Rendering of diagnostics and the code registry's documentation."""

from __future__ import annotations

import re

from cortexlang.diagnostics import CODES, DiagnosticCollector, Span, render, render_all
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
