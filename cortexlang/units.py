"""The language's units: each word and its factor to the IR's base unit.

Durations go to seconds, sizes to bytes, counts to ones, rates to per second.
Kept apart from the value converters because the parser needs the words too,
to recognise a unit written apart from its number (`5 GiB`).
"""

from __future__ import annotations

DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
SIZE_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
COUNT_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
RATE_PER = {"s": 1.0, "min": 1 / 60.0, "m": 1 / 60.0, "h": 1 / 3600.0}

UNIT_WORDS = frozenset(u for table in (DURATION_UNITS, SIZE_UNITS, COUNT_UNITS, RATE_PER) for u in table if u)
