"""Property tests: ``fmt`` is idempotent and preserves the IR; no input makes the compiler raise.

Re-spaced inputs are made from real examples: the token stream is kept, the
whitespace between tokens is drawn at random (spaces, newlines, blank lines,
comments), so every generated file means the same program.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark

from cortexlang.compiler import compile_source
from cortexlang.diagnostics import DiagnosticCollector
from cortexlang.fmt import format_module
from cortexlang.syntax.parser import parse
from grammar import GRAMMAR_PATH
from tests.conftest import EXAMPLES

SOURCES = {p.name: p for p in sorted(EXAMPLES.glob("*.cortex")) + sorted((EXAMPLES / "errors").glob("*.cortex"))}
VALID = sorted(p.name for p in EXAMPLES.glob("*.cortex"))


@lru_cache(maxsize=None)
def _tokens(name: str) -> tuple[str, ...]:
    lexer = Lark(GRAMMAR_PATH.read_text(), parser="lalr", lexer="basic")
    return tuple(str(t) for t in lexer.lex(SOURCES[name].read_text()))


def _fmt(source: str) -> str | None:
    module = parse(source, "t.cortex", DiagnosticCollector("t.cortex", source))
    return None if module is None else format_module(module)


SEPARATORS = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", " # note\n", "\n  # a comment line\n"])


@st.composite
def respaced(draw, names=VALID):
    name = draw(st.sampled_from(names))
    toks = _tokens(name)
    seps = draw(st.lists(SEPARATORS, min_size=len(toks), max_size=len(toks)))
    return name, "".join(t + s for t, s in zip(toks, seps))


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_examples_are_formatted() -> None:
    for name in VALID:
        text = SOURCES[name].read_text()
        assert _fmt(text) == text, f"{name} is not in canonical layout; run `cortexc fmt`"


@SETTINGS
@given(respaced())
def test_fmt_is_idempotent(case) -> None:
    _, text = case
    once = _fmt(text)
    assert once is not None
    assert _fmt(once) == once


@SETTINGS
@given(respaced())
def test_fmt_preserves_the_ir(case) -> None:
    name, text = case
    base = SOURCES[name].parent
    original = compile_source(SOURCES[name].read_text(), "t.cortex", base)
    reformatted = compile_source(_fmt(text), "t.cortex", base)
    assert original.program is not None and reformatted.program == original.program


@st.composite
def mutated(draw):
    text = SOURCES[draw(st.sampled_from(sorted(SOURCES)))].read_text()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        chunk = draw(st.sampled_from(["{", "}", "->", "=", '"', "|", "@", "%", "(", "loop", "max", "on", "else",
                                      "1..", "$", "\n", "x", "9", "#", ".", "[", "]", "done"]))
        span = draw(st.integers(1, 20))
        text = text[:i] + (chunk if op != "delete" else "") + text[i + (span if op != "insert" else 0):]
    return text


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_inputs_give_diagnostics_never_exceptions(text: str) -> None:
    result = compile_source(text, "t.cortex", EXAMPLES)
    assert result.ok or any(d.is_error for d in result.diagnostics)
    for d in result.diagnostics:
        assert d.code.startswith("CX") and d.code != "CX901", d


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_raises(text: str) -> None:
    result = compile_source(text, "t.cortex", None)
    assert result.ok or result.errors
