"""Units and value conversion (passes.values) through small workflows."""

from __future__ import annotations

import pytest

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
