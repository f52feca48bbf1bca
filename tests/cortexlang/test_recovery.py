"""Syntax-error recovery: every independent error in one run, at the right place, with hints that work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cortexlang.compiler import compile_source
from cortexlang.diagnostics import DiagnosticCollector
from cortexlang.syntax.parser import parse
from cortexlang.syntax.scan import MAX_NESTING
from tests.conftest import EXAMPLES
from tests.cortexlang.fuzzing import time_limit
from tests.cortexlang.helpers import MODEL, codes, llm

WORKFLOW_EXAMPLES = sorted(EXAMPLES.glob("*.cortex"))


def _lines(result) -> list[tuple[str, int]]:
    return [(d.code, d.span.line if d.span else 0) for d in result.diagnostics]


def test_unterminated_strings_before_an_unclosed_block_end_quickly() -> None:
    # Issue 13: this made error recovery loop forever, allocating ~45 MB/s.
    source = 'model m {\n  weights = "\n}\nworkflow w {\n  prompt = """"""\n'
    with time_limit(5):
        result = compile_source(source, "t.cortex")
    assert ("CX004", 2) in _lines(result) and ("CX002", 4) in _lines(result)


def _closing_braces(text: str) -> list[tuple[int, int]]:
    """(line index, column) of each `}` that ends a line outside strings: a block's own `}`."""
    out = []
    for i, line in enumerate(text.split("\n")):
        code = line.split("#")[0].rstrip()
        if code.endswith("}") and not code.endswith("}}") and '"""' not in code:
            out.append((i, len(code) - 1))
    return out


@pytest.mark.parametrize("path", WORKFLOW_EXAMPLES, ids=lambda p: p.stem)
def test_a_missing_brace_is_found_where_it_is_missing_and_the_hint_fixes_it(path: Path) -> None:
    """Delete each block's `}` in turn: CX002 points at that block's `{`, and doing what the hint says
    gives back the original program, with no new error."""
    text = path.read_text(encoding="utf-8")
    original = compile_source(text, "t.cortex", path.parent).program
    assert original is not None
    for index, col in _closing_braces(text):
        lines = text.split("\n")
        lines[index] = lines[index][:col] + lines[index][col + 1:]
        result = compile_source("\n".join(lines), "t.cortex", path.parent)
        (unclosed,) = [d for d in result.diagnostics if d.is_error]
        assert unclosed.code == "CX002" and "unclosed `{` opened here" in unclosed.message
        assert lines[unclosed.span.line - 1][unclosed.span.col - 1] == "{"
        after = re.search(r"add `\}` after line (\d+)", unclosed.hint or "")
        at = int(after.group(1)) if after else len(lines)
        assert after or unclosed.hint == "add `}` at the end of the file"
        fixed = lines[:at] + ["}"] + lines[at:]
        assert compile_source("\n".join(fixed), "t.cortex", path.parent).program == original, (index, unclosed.hint)


def test_a_missing_brace_at_the_end_is_reported_at_the_open_block() -> None:
    result = compile_source(MODEL + "workflow w {\n  tool t { entry = \"m:f\"  service = 1ms }\n  flow { t -> done }\n",
                            "t.cortex")
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.hint) == ("CX002", 8, "add `}` at the end of the file")


@pytest.mark.parametrize("written, fixed", [("5 GiB", "5GiB"), ("128 KiB", "128KiB"), ("10 s", "10s"),
                                            ("2.5\tms", "2.5ms"), ("99 %", "99%"), ("5 /s", "5/s")])
def test_a_unit_written_apart_from_its_number_gets_a_fix_it(written: str, fixed: str) -> None:
    attr = {"GiB": "kv_bytes_per_token", "KiB": "kv_bytes_per_token", "s": "service", "ms": "service",
            "%": "attainment", "/s": "rate"}[fixed.lstrip("0123456789._")]
    block = {"kv_bytes_per_token": "model m", "service": "tool t", "attainment": "slo", "rate": "load"}[attr]
    source = f"workflow w {{\n{block} {{\n  {attr} = {written}\n  bogus = 1\n}}\n}}\n"
    if block.startswith("model"):
        source = f"{block} {{\n  {attr} = {written}\n  bogus = 1\n}}\n"
    result = compile_source(source, "t.cortex")
    (spaced,) = [d for d in result.diagnostics if d.code == "CX001"]
    assert (spaced.span.line, spaced.span.col) == (source.split("\n").index(f"  {attr} = {written}") + 1, len(attr) + 6)
    assert spaced.hint == f"write `{fixed}`" and "written together" in spaced.message
    # Recovery joins them, so the rest of the block is still checked (`bogus` is unknown).
    assert "CX102" in codes(result)
    assert "CX001" not in codes(compile_source(source.replace(written, fixed), "t.cortex"))


def test_one_syntax_error_does_not_hide_the_other_errors() -> None:
    body = (llm("a", "max_tokens = ]").replace("max_tokens = 16  ", "")
            + llm("b", "temperature = 9") + llm("c")
            + "flow {\n a -> b -> cc\n c -> done\n}\n")
    result = compile_source(MODEL + "workflow w {\n" + body + "}\n", "t.cortex")
    assert sorted(codes(result)) == ["CX001", "CX203", "CX301"]  # syntax, value range, unknown flow node


def test_a_syntax_error_in_a_model_hides_no_stage_and_invents_no_unknown_name() -> None:
    source = MODEL.replace("params = 8B", "params = 8B ]") + "workflow w {\n" + llm("a") + llm("b", "top_p = 0") \
        + "flow { a -> done }\n}\n"
    result = compile_source(source, "t.cortex")
    assert sorted(codes(result)) == ["CX001", "CX203", "CX410"]  # no "unknown model `m`"


def test_a_syntax_error_in_the_flow_skips_only_that_flow() -> None:
    source = MODEL + "workflow w {\n" + llm("a", "output_tokens = 0").replace("output_tokens = 5 ", "") \
        + "flow { a -> -> done }\n}\nworkflow v {\n" + llm("a") + "flow { a -> nowhere }\n}\n"
    result = compile_source(source, "t.cortex")
    assert sorted(codes(result)) == ["CX001", "CX203", "CX301"]


def test_nesting_deeper_than_the_limit_is_one_diagnostic() -> None:
    source = "x { a = " + "[" * (MAX_NESTING + 5) + "]" * (MAX_NESTING + 5) + " }"
    diags = DiagnosticCollector("t.cortex", source)
    assert parse(source, "t.cortex", diags, recover=True) is None
    assert [(d.code, d.span.col) for d in diags.items] == [("CX005", 8 + MAX_NESTING)]


def test_strict_parse_returns_nothing_past_a_syntax_error() -> None:
    source = "a { x = ] }\nb { y = 1 }\n"
    strict, recovering = DiagnosticCollector("t", source), DiagnosticCollector("t", source)
    assert parse(source, "t", strict) is None
    module = parse(source, "t", recovering, recover=True)
    assert module.recovered and [b.recovered for b in module.blocks] == [True, False]
    assert strict.items == recovering.items


def test_errors_in_one_workflow_hide_nothing_in_another() -> None:
    broken = "workflow a {\n" + llm("x", "top_k = 3") + "flow { x -> done }\n}\n"
    sound = ("workflow b {\n  slo { latency = 10ms  attainment = 99% }\n"
             + llm("g").replace('"p"', '"{{ questoin }}"') + 'tool t { entry = "m:f"  service = 1s }\n'
             + "flow { g -> t -> done }\n}\n")
    result = compile_source(MODEL + broken + sound, "t.cortex")
    # unknown attribute in `a`; in `b`, the SLO its tool alone cannot meet and the template's typo
    assert sorted(codes(result)) == ["CX102", "CX501", "CX602"]


def test_a_syntax_error_in_a_fan_out_branch_flow_skips_the_workflow_flow() -> None:
    source = (EXAMPLES / "chess_sql.cortex").read_text(encoding="utf-8")
    start = source.index("flow {", source.index("fanout testers"))
    broken = source[:start] + "flow { unit_test -> -> done }" + source[source.index("\n  }\n", start):]
    result = compile_source(broken, "t.cortex", EXAMPLES)
    assert codes(result) == ["CX001"]


def test_a_compiler_bug_is_an_internal_error_diagnostic_not_a_traceback(monkeypatch) -> None:
    import cortexlang.compiler as compiler

    def broken(*args, **kwargs):
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(compiler, "build_flow", broken)
    result = compile_source(MODEL + "workflow w {\n" + llm("a") + "flow { a -> done }\n}\n", "t.cortex")
    (d,) = result.diagnostics
    assert d.code == "CX901" and "IndexError: tuple index out of range" in d.message and result.program is None
