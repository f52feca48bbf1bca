"""Units and value conversion (passes.values) through small workflows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cortexlang.diagnostics import render_all
from cortexlang.passes.files import MAX_FILE_BYTES
from tests.cortexlang.helpers import MODEL, codes, compile_source


def _model(attr: str):
    return compile_source(f'model m {{ weights = "w"  params = 8B  max_context = 4096  {attr} }}', "t.cortex")


@pytest.mark.parametrize("text, expected", [
    ("128KiB", 128 * 1024), ("1.5GB", 1_500_000_000), ("512B", 512), ("2MiB", 2 * 2**20),
])
def test_sizes(text: str, expected: int) -> None:
    result = _model(f"kv_bytes_per_token = {text}")
    assert result.ok
    assert result.program.models[0].kv_bytes_per_token == expected


@pytest.mark.parametrize("text, expected", [("7.6B", 7.6e9), ("135M", 135e6), ("32K", 32e3), ("1_000", 1000.0)])
def test_counts(text: str, expected: float) -> None:
    result = compile_source(f'model m {{ weights = "w"  params = {text}  max_context = 4096  kv_bytes_per_token = 1KiB }}', "t")
    assert result.program.models[0].params == pytest.approx(expected)


def _slo_load(slo: str, load: str = "rate = 5/s"):
    return compile_source(MODEL + f'''workflow w {{
  slo {{ {slo} }}
  load {{ {load} }}
  tool t {{ entry = "m:f"  service = 1us }}
  flow {{ t -> done }}
}}''', "t.cortex")


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("8s", 8.0), ("2m", 120.0), ("1h", 3600.0), ("500us", 5e-4)])
def test_durations(text: str, seconds: float) -> None:
    result = _slo_load(f"latency = {text}  attainment = 99%")
    assert result.program.workflows[0].slo.latency_s == pytest.approx(seconds)
    assert result.program.workflows[0].slo.attainment == pytest.approx(0.99)


@pytest.mark.parametrize("text, per_s", [("5/s", 5.0), ("120/min", 2.0), ("3600/h", 1.0)])
def test_rates(text: str, per_s: float) -> None:
    assert _slo_load("latency = 8s  attainment = 90%", f"rate = {text}").program.workflows[0].load.rate_per_s == pytest.approx(per_s)


@pytest.mark.parametrize("slo, code", [
    ("latency = 8  attainment = 99%", "CX202"),      # no unit
    ("latency = 8sec  attainment = 99%", "CX202"),   # unknown unit
    ("latency = 5/s  attainment = 99%", "CX202"),    # a rate is not a duration
    ("latency = 8s  attainment = 0.99", "CX202"),    # a fraction is not a percentage
    ("latency = 8s  attainment = 101%", "CX203"),
    ('latency = "8s"  attainment = 99%', "CX201"),
    ("latency = 8s | 4s  attainment = 99%", "CX204"),  # not malleable
])
def test_bad_values(slo: str, code: str) -> None:
    result = _slo_load(slo)
    assert not result.ok
    assert code in codes(result)


@pytest.mark.parametrize("written, suggested", [("0.95", "95%"), ("0.999", "99.9%"), ("95", "95%"), ("95pct", "95%")])
def test_percentage_hint_suggests_the_same_share(written: str, suggested: str) -> None:
    (diag,) = _slo_load(f"latency = 8s  attainment = {written}").diagnostics
    assert (diag.code, diag.hint) == ("CX202", f"write it like `{suggested}`")


def test_money_needs_per_hour() -> None:
    ok = compile_source("resources { gpu H100 { count = 2  cost = $3.50/h } }", "t")
    assert ok.program.inventory.gpus[0].cost_per_hour == 3.5
    assert ok.program.inventory.gpus[0].memory_bytes == 80 * 2**30  # default for a known kind
    bad = compile_source("resources { gpu H100 { count = 2  cost = $3.50 } }", "t")
    assert codes(bad) == ["CX202"]


def test_knobs_choice_range_and_quality() -> None:
    result = compile_source(MODEL + '''model small { weights = "s"  params = 1B  max_context = 4096  kv_bytes_per_token = 32KiB }
workflow w {
  llm a { model = m | small @ 90%  prompt = "p"  max_tokens = 256 | 128 @ 95%  input_tokens = 10  output_tokens = 5  hedge = 1..3 }
  flow { a -> done }
}''', "t")
    stage = result.program.workflows[0].stages[0]
    assert [(o.model, o.quality) for o in stage.models] == [("m", 1.0), ("small", 0.9)]
    assert [(o.value, o.quality) for o in stage.max_tokens.options] == [(256, 1.0), (128, 0.95)]
    assert [o.value for o in stage.hedge.options] == [3, 2, 1]  # a range prefers its largest value
    assert stage.max_tokens.malleable and stage.max_tokens.preferred == 256


def test_kv_bytes_derived_from_architecture() -> None:
    result = compile_source('model m { weights = "w"  params = 8B  max_context = 8192  layers = 32  kv_heads = 8  head_dim = 128 }', "t")
    assert result.program.models[0].kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # bf16 default


def test_inconsistent_kv_facts_warn() -> None:
    result = compile_source('model m { weights = "w"  params = 8B  max_context = 8192  layers = 32  kv_heads = 8  head_dim = 128  kv_bytes_per_token = 1KiB }', "t")
    assert result.ok and codes(result) == ["CX207"]
    assert result.program.models[0].kv_bytes_per_token == 1024


@pytest.mark.parametrize("stage, attr", [('sql s { database = db  service = 0ms }', "service"),
                                         ('tool t { entry = "m:f"  service = 0s }', "service"),
                                         ('tool t { entry = "m:f"  service = 1ms  budget = 0s }', "budget")])
def test_zero_durations_the_ir_refuses_are_range_errors_at_the_value(stage: str, attr: str) -> None:
    name = stage.split()[1]
    result = compile_source(MODEL + f"workflow w {{\n  {stage}\n  flow {{ {name} -> done }}\n}}\n", "t.cortex")
    (d,) = result.diagnostics
    assert d.code == "CX203" and f"`{attr}` is out of range" in d.message and "greater than 0" in d.message
    assert result.source.split("\n")[d.span.line - 1][d.span.col - 1:].startswith("0")


def test_a_zero_attainment_is_a_range_error() -> None:
    result = _slo_load("latency = 8s  attainment = 0%")
    assert codes(result) == ["CX203"] and "`attainment`" in result.diagnostics[0].message


@pytest.mark.parametrize("number", ["9" * 400, "1" + "0" * 16, "1" + "0" * 400 + ".5"])
def test_huge_numbers_are_range_errors(number: str) -> None:
    for attr in (f"kv_bytes_per_token = {number}KiB", f"layers = {number}"):
        result = _model(attr)
        assert codes(result) == ["CX203"] and "too large" in result.diagnostics[0].message, attr
    count = compile_source(f'model m {{ weights = "w"  params = {number}B  max_context = 4096  kv_bytes_per_token = 1KiB }}', "t")
    assert codes(count) == ["CX203"]
    assert codes(_slo_load(f"latency = {number}s  attainment = 99%")) == ["CX203"]
    assert codes(_slo_load("latency = 8s  attainment = 99%", f"rate = {number}/s")) == ["CX203"]


def _prompt_file(path: str, base: Path):
    return compile_source(MODEL + f'workflow w {{\n  llm a {{ model = m  prompt = file("{path}")  max_tokens = 16  '
                          'input_tokens = 10  output_tokens = 5 }\n  flow { a -> done }\n}\n', "t.cortex", base)


def test_file_reads_inside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.j2").write_text("Hello")
    assert _prompt_file("prompts/p.j2", tmp_path).program.workflows[0].stages[0].prompt.template == "Hello"


@pytest.mark.parametrize("path, code, reason", [
    ("\\0", "CX205", "NUL character"),
    ("/etc/passwd", "CX208", "outside the workflow's folder"),
    ("/proc/self/environ", "CX208", "outside the workflow's folder"),
    ("../outside.txt", "CX208", "outside the workflow's folder"),
    ("link_out", "CX208", "a symbolic link leads outside"),
    ("zero", "CX208", "a symbolic link leads outside"),
    ("fifo", "CX205", "not a regular file"),
    ("sub", "CX205", "is a directory"),
    ("big.txt", "CX205", "larger than 1024 KiB"),
    ("latin1.txt", "CX205", "not UTF-8"),
    ("missing.txt", "CX205", "No such file"),
])
def test_file_refuses_what_is_not_a_small_text_file_in_the_folder(tmp_path: Path, path: str, code: str,
                                                                  reason: str) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    (folder / "link_out").symlink_to(tmp_path / "outside.txt")
    (folder / "zero").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo")  # opening it must not block
    (folder / "sub").mkdir()
    (folder / "big.txt").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    (folder / "latin1.txt").write_bytes("café".encode("latin-1"))
    result = _prompt_file(path, folder)
    (d,) = result.diagnostics
    assert d.code == code and reason in d.message, d.message
    assert "secret" not in d.message


def test_a_range_knob_spans_at_most_so_many_values() -> None:
    body = 'llm a { model = m  prompt = "p"  max_tokens = 1..99999999  input_tokens = 10  output_tokens = 5 }\n'
    result = compile_source(MODEL + "workflow w {\n" + body + "flow { a -> done }\n}\n", "t.cortex")
    (d,) = result.diagnostics
    assert d.code == "CX203" and "spans 99,999,999 values" in d.message


def test_a_databases_result_size_bound_is_a_size_of_at_least_1kib() -> None:
    from cortexlang.compiler import compile_source

    def db(value: str):
        src = f'database d {{ url = "sqlite:///x.db"  max_result_bytes = {value} }}\n'
        return compile_source(src, "t.cortex")

    ok = db("64KiB")
    assert ok.program is not None and ok.program.database("d").max_result_bytes == 64 * 1024
    assert "CX203" in [d.code for d in db("100B").diagnostics]


@pytest.mark.parametrize("value, ok", [("0", True), ("0.85", True), ("1", True), ("1.5", False), ("2", False)])
def test_output_correlation_is_a_number_from_0_to_1(value: str, ok: bool) -> None:
    stage = f'llm g {{ model = m  prompt = "q"  max_tokens = 64  input_tokens = 100  output_tokens = 20  output_correlation = {value} }}'
    result = compile_source(MODEL + f"workflow w {{\n  {stage}\n  flow {{ g -> done }}\n}}\n", "t.cortex")
    if ok:
        assert result.ok and result.program.workflow().stage("g").output_correlation == float(value)
    else:
        assert codes(result) == ["CX203"] and f"`{value}` is out of range: must be within [0.0, 1.0]" in (
            result.diagnostics[0].message)


@pytest.mark.parametrize("attr, value, ok, bounds", [
    ("runaway", "0.42", True, ""), ("runaway", "1", True, ""), ("runaway", "1.2", False, "[0.0, 1.0]"),
    ("output_cv", "0.65", True, ""), ("output_cv", "0", True, ""), ("output_cv", "11", False, "[0.0, 10.0]")])
def test_the_output_length_law_is_declared_in_range(attr: str, value: str, ok: bool, bounds: str) -> None:
    stage = f'llm g {{ model = m  prompt = "q"  max_tokens = 64  input_tokens = 100  output_tokens = 20  {attr} = {value} }}'
    result = compile_source(MODEL + f"workflow w {{\n  {stage}\n  flow {{ g -> done }}\n}}\n", "t.cortex")
    if ok:
        assert result.ok and getattr(result.program.workflow().stage("g"), attr) == float(value)
    else:
        assert codes(result) == ["CX203"] and f"`{value}` is out of range: must be within {bounds}" in (
            result.diagnostics[0].message)


def test_an_undeclared_output_law_keeps_the_defaults() -> None:
    stage = 'llm g { model = m  prompt = "q"  max_tokens = 64  input_tokens = 100  output_tokens = 20 }'
    g = compile_source(MODEL + f"workflow w {{\n  {stage}\n  flow {{ g -> done }}\n}}\n", "t.cortex").program.workflow().stage("g")
    assert g.output_cv is None and g.runaway == 0.0 and g.mean_output_tokens(64) == 20
    assert g.model_copy(update={"runaway": 0.5}).mean_output_tokens(64) == pytest.approx(42.0)


def _law_stage(attrs: str) -> tuple[str, object]:
    """(source, compile result) of one LLM stage carrying ``attrs`` on a line of their own (line 10)."""
    stage = f'llm g {{ model = m  prompt = "q"  max_tokens = 64  input_tokens = 100  output_tokens = 20\n  {attrs} }}'
    source = MODEL + f"workflow w {{\n  {stage}\n  flow {{ g -> done }}\n}}\n"
    return source, compile_source(source, "t.cortex")


@pytest.mark.parametrize("attr", ["runaway", "output_cv"])
@pytest.mark.parametrize("value, code", [
    ("-0.1", "CX003"), ("1e-9", "CX003"),                 # no negatives, no exponents in the language
    ("10.0000001", "CX203"), ("1_000", "CX203"), ("1" + "0" * 400, "CX203"), ("1" + "0" * 5000, "CX203"),
    ("nan", "CX201"), ("inf", "CX201"), ('"0.5"', "CX201"), ("[0.5]", "CX201"), ("[]", "CX201"), ("true", "CX201"),
    ("0..1", "CX201"), ('file("x")', "CX201"), ("m", "CX201"),
    ("5s", "CX202"), ("50%", "CX202"), ("5/s", "CX202"), ("1KiB", "CX202"), ("8B", "CX202"), ("1e", "CX202"),
    ("0.5 | 0.1 @ 90%", "CX204"), ("0.2 @ 50%", "CX204"),
    ("", "CX001"), ("0.5 0.6", "CX001"), ("{ x = 1 }", "CX001"), ("1e309", "CX001"),
])
def test_a_malformed_output_law_is_a_located_diagnostic(attr: str, value: str, code: str) -> None:
    """Out of range, the wrong type (string, duration, percentage, rate, size, list, range, knob) or not a
    number at all: one ``t.cortex:10:col: error[CODE]`` on the attribute's line, never an exception."""
    source, result = _law_stage(f"{attr} = {value}")
    assert not result.ok and codes(result)[0] == code
    text = render_all(result.diagnostics, {"t.cortex": source})
    assert re.match(rf"t\.cortex:10:\d+: error\[{code}\]", text) and "Traceback" not in text


@pytest.mark.parametrize("attrs", ["runaway = 0.5\n  runaway = 0.5", "runaway = 0.5  runaway = 0.6",
                                   "output_cv = 1\n  output_cv = 2", "output_cv = 1  runaway = 0.1  output_cv = 1"])
def test_an_output_law_set_twice_is_refused(attrs: str) -> None:
    source, result = _law_stage(attrs)
    assert codes(result) == ["CX104"] and "is set twice" in result.diagnostics[0].message
    assert re.match(r"t\.cortex:1[01]:\d+: error\[CX104\]", render_all(result.diagnostics, {"t.cortex": source}))


@pytest.mark.parametrize("attr, value, expected", [
    ("runaway", "0", 0.0), ("runaway", "0.000000001", 1e-9), ("runaway", "0.999", 0.999), ("runaway", "1", 1.0),
    ("output_cv", "0.000001", 1e-6), ("output_cv", "10", 10.0), ("output_cv", "10.0", 10.0),
    ("runaway", "0." + "0" * 400 + "1", 0.0),         # underflows to 0: in range
    ("runaway", "0." + "9" * 400, 1.0),               # rounds to the bound: in range
])
def test_the_output_laws_edges_are_accepted(attr: str, value: str, expected: float) -> None:
    _, result = _law_stage(f"{attr} = {value}")
    assert result.ok and getattr(result.program.workflow().stage("g"), attr) == expected
