"""The safe calculator: arithmetic only, agent-style spellings, and guards."""

from __future__ import annotations

import math

import pytest

from examples.tools.calculator import CalculatorError, calculate, evaluate, normalise


@pytest.mark.parametrize("expression, value", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("7 // 2 + 7 % 2", 4),
    ("-2 ** 2", -4),
    ("2^10", 1024),
    ("1,500 * 12", 18000),
    ("$1,199.00 * 3 =", 3597),
    ("3 x 4", 12),
    ("15% * 2400", 360),
    ("2400 * (1 - 15%)", 2040),
    ("10 % 3", 1),
    ("sqrt(16) + abs(-2) + max(1, 500, 2)", 506),
    ("round(pi, 2)", 3.14),
    ("log(e)", 1),
])
def test_evaluates(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


def test_commas_inside_calls_stay_argument_separators() -> None:
    assert normalise("max(1,500)") == "max(1,500)"
    assert evaluate("max(1,500)") == 500


@pytest.mark.parametrize("expression, message", [
    ("__import__('os').system('true')", "not allowed"),
    ("().__class__", "not allowed"),
    ("open('x')", "not allowed"),
    ("x + 1", "unknown name 'x'"),
    ("1 / 0", "division by zero"),
    ("2 ** 10000", "exponent"),
    ("9 ** 9 ** 9", "exponent"),
    ("10.0 ** 400", "too large"),
    ("exp(1000)", "failed"),
    ("log(0)", "failed"),
    ("round(1.5, ndigits=1)", "keyword"),
    ("(1 + 2", "not an arithmetic expression"),
    ("", "empty"),
    ("1+" * 200 + "1", "longer than"),
    ("+".join(["1"] * 120), "more than"),
])
def test_rejects_with_a_clear_message(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError, match=message):
        evaluate(expression)


def test_tool_reads_the_agent_input_and_reports_an_observation() -> None:
    result = calculate({"question": "ignored", "think": {"action": "calculate", "input": "12 * 1649 * (1 - 0.15)"}})
    assert result["value"] == pytest.approx(16819.8)
    assert result["observation"] == "12 * 1649 * (1 - 0.15) = 16819.8"
    assert math.isfinite(result["value"])
