"""From driver rows to a bounded, JSON-safe result.

:func:`fetch_bounded` reads a cursor (anything with ``fetchmany(n)`` and a
DB-API ``description``) in batches sized to what is left of two budgets,
``row_limit`` rows and ``max_bytes`` of JSON, so a few huge rows never arrive
together: the first batch is one row, and each later batch is as many rows as
the budget left would hold at the average size so far.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

from runtime.sql.errors import StatementError

JsonValue = str | int | float | bool | None
Row = tuple[JsonValue, ...]
Fetched = tuple[tuple[str, ...], tuple[Row, ...], bool]
"""Column names, rows, and whether rows were left out (``truncated``)."""

_MAX_BATCH_ROWS = 1000


def json_safe(value: Any) -> JsonValue:
    """``value`` as a JSON-safe scalar: Decimal -> float, dates -> ISO text, bytes -> hex, else text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def json_size(row: Row) -> int:
    """About the length of ``row`` as JSON, without building it (a huge value is not copied again)."""
    size = 2 + len(row)  # brackets and separators
    for value in row:
        if isinstance(value, str):
            size += len(value) + 2
        elif value is None:
            size += 4
        else:
            size += len(str(value))
    return size


def fetch_bounded(cursor: Any, row_limit: int, max_bytes: int) -> Fetched:
    """Rows up to ``row_limit`` and ``max_bytes`` (see the module docstring).

    ``truncated`` when rows were left out; :class:`StatementError` when the
    statement returned no result set or its first row alone is over ``max_bytes``.
    """
    rows: list[Row] = []
    size, batch = 0, 1
    while True:
        want = min(batch, row_limit + 1 - len(rows))
        fetched = cursor.fetchmany(want)
        if cursor.description is None:
            raise StatementError("the statement returned no result set; only queries are allowed")
        for raw in fetched:
            row = tuple(json_safe(v) for v in raw)
            size += json_size(row)
            if len(rows) == row_limit or size > max_bytes:
                if not rows and size > max_bytes:
                    raise StatementError(f"the first row alone is over max_result_bytes ({max_bytes} bytes): "
                                         "select fewer or smaller columns")
                return _columns(cursor), tuple(rows), True
            rows.append(row)
        if len(fetched) < want:
            return _columns(cursor), tuple(rows), False
        batch = max(1, min(_MAX_BATCH_ROWS, (max_bytes - size) * len(rows) // max(size, 1)))


def _columns(cursor: Any) -> tuple[str, ...]:
    return tuple(str(d[0]) for d in cursor.description)
