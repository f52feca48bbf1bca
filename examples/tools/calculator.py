"""Safe arithmetic for agents: parse with :mod:`ast`, evaluate a whitelist, never ``eval``.

Accepted: numbers, ``+ - * / // % **``, unary signs, parentheses, the constants
``pi`` and ``e``, and the functions ``abs round min max sqrt log log10 exp
floor ceil``. Agent-style spellings are normalised first: thousands separators
(``1,500``, outside function calls), ``^`` for power, ``x``/``×`` between numbers for multiplication and
a postfix percent (``15%`` = 0.15, when not followed by an operand).

Guards, so an expression cannot exhaust the process: at most
:data:`MAX_LENGTH` characters and :data:`MAX_NODES` syntax nodes, exponents up
to :data:`MAX_EXPONENT` in magnitude, and every intermediate value finite and
below :data:`MAX_MAGNITUDE`.

Tool entry: :func:`calculate` (``ctx -> {"expression", "value", "observation"}``).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

from .context import query_from

MAX_LENGTH = 300
MAX_NODES = 200
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e300


class CalculatorError(ValueError):
    """The expression is not valid arithmetic, or evaluating it would fail; the message says why."""


_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "log": math.log,
    "log10": math.log10, "exp": math.exp, "floor": math.floor, "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def normalise(expression: str) -> str:
    """Rewrite agent-style spellings into Python arithmetic (see the module docstring)."""
    text = expression.strip().rstrip("=").strip()
    if not re.search(r"[A-Za-z_]\s*\(", text):  # commas are argument separators inside calls
        text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,500 -> 1500
    text = text.replace("^", "**").replace("×", "*").replace("÷", "/")
    text = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])", " * ", text)  # 3 x 4 -> 3 * 4
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\d(.a-zA-Z])", r"(\1/100)", text)  # 15% -> (15/100)
    return text.replace("$", "")


def _check(value: float) -> float:
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("the result is too large or not a finite number")
    return value


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            left = float(left)  # float power: overflow raises instead of building a huge integer
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("the result is too large") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise CalculatorError(f"{node.func.id}() takes no keyword arguments")
        args = [_eval(a) for a in node.args]
        try:
            return _check(_FUNCTIONS[node.func.id](*args))
        except (TypeError, ValueError, OverflowError) as exc:
            raise CalculatorError(f"{node.func.id}() failed: {exc}") from None
    if isinstance(node, ast.Name):
        raise CalculatorError(f"unknown name {node.id!r}; only numbers, pi, e and math functions are allowed")
    raise CalculatorError(f"{type(node).__name__} is not allowed in arithmetic")


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression; raises :class:`CalculatorError` with a clear message."""
    if not expression.strip():
        raise CalculatorError("empty expression")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    text = normalise(expression)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression has more than {MAX_NODES} parts")
    return _eval(tree)


def _format(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if abs(value) >= 1e15 or abs(value) < 1e-4 else f"{round(value, 6)}"


def calculate(ctx: dict) -> dict:
    """Tool: evaluate the expression chosen by the agent (``think.input``, or ``query``/``question``)."""
    expression = query_from(ctx)
    value = evaluate(expression)
    return {"expression": expression, "value": value, "observation": f"{expression} = {_format(value)}"}
