"""Parsing a request body as JSON that every later step can handle, or a clear reason why not.

:func:`parse_json` accepts what the API can serve and raises :class:`InvalidBody`
(a 400 with its message) for anything else:

* bytes that are not UTF-8;
* text that is not JSON, including the ``NaN``/``Infinity`` extensions and numbers
  that overflow a float (``1e400``): the run's status is JSON again later, and
  strict JSON has no non-finite numbers;
* integers longer than Python's 4,300-digit conversion limit;
* nesting deeper than :data:`MAX_JSON_DEPTH` (templates, pydantic and the JSON
  encoder all recurse);
* lone UTF-16 surrogates (``"\\ud800"``): valid JSON escapes, but no UTF-8 text
  holds them, so the answer that echoes them could not be encoded.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_JSON_DEPTH = 32
"""Arrays and objects nested deeper than this are refused."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidBody(ValueError):
    """The body cannot be served; the message says why (for a 400 answer)."""


def _reject_constant(name: str) -> Any:
    raise InvalidBody(f"the request body is not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidBody(f"the request body is not valid JSON: the number {text[:40]} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """``raw`` as a JSON value, checked as the module docstring says; :class:`InvalidBody` otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBody(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except InvalidBody:
        raise
    except RecursionError:
        raise InvalidBody(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidBody(f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
            from None
    except ValueError:  # int() refused a number of more than 4,300 digits
        raise InvalidBody("the request body holds an integer of more than 4,300 digits") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH or "\\u" in text:
        _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and lone surrogates, walked without recursion (the depth is what is in question)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidBody("the request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidBody(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)
