"""How far this machine's engines drift between calibrations, and planning with that margin.

A calibration (:mod:`runtime.calibrate`) measures the engines over a minute or two. A machine
other jobs share does not keep that speed: on the 2-vCPU development machines a calibration
made just after a real run was 15-35% slower than the one made just before it, and a plan
made on the faster one promised 97% of runs within the SLO where 67% made it
(``benchmarks/results/real_vs_sim_xeon_first.md``, ``real_vs_sim.md``). The spread *within*
one calibration (a few percent) does not show drift over minutes.

So every calibration stored by :func:`runtime.profiles.write_profile` is also appended to the
machine's ``history.jsonl``, and plans are made on the slowest of the recent calibrations:
:func:`planning_with_drift` makes the profile lookups return each calibrated profile with
every coefficient scaled by its *drift factor*

    f = max_i T(c_i) / T(c_now),   T(c) = P0 + n P + o (D0 + D1 + K (n + o / 2)),

the time of a reference call (``n`` = 512 prompt tokens, ``o`` = 128 output tokens, alone on
the engine) under calibration ``c``, over the last :data:`WINDOW` calibrations of the same
(model, device, tp) within :data:`MAX_AGE_DAYS` whose fit describes its probes (:data:`MAX_FIT_ERROR`;
``c_now``: the profile in use). Scaling every
coefficient by ``f`` slows every call by exactly ``f``, whatever its shape, so the coefficients'
poor identifiability from quick probes (one fit puts the time into ``K``, the next into ``D1``)
does not move the margin. ``f >= 1``; it is 1 on a machine calibrated once or steady. The
runtime's own estimates and the simulator's replay keep the latest calibration: the margin is
the plan's promise, not a forecast of the next call.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from planner.profiles import MAX_COEFFICIENT, TIME_COEFFICIENTS, calibrated_directories, clear_cache, use_calibrated

HISTORY_FILE = "history.jsonl"
WINDOW = 5
"""Calibrations of one profile the margin looks back over (the latest included)."""
MAX_AGE_DAYS = 7.0
"""Older calibrations say little about today's neighbours on the machine."""
REFERENCE_CALL = (512, 128)
"""(prompt, output) tokens of the call whose time compares two calibrations."""
MAX_FIT_ERROR = 0.10
"""A calibration whose fit misses its own probes by more than this (mean absolute relative error, prefill
or decode) describes them badly, so its reference call says nothing about drift and it is left out
of the margin: on the AMD EPYC a probe flaw put whole decode steps into the KV term (its fit missed the
probes by 13% and more), and the margin made from it planned for engines 28% slower than the
calibration in use."""
DISABLE_ENV = "CORTEX_PLAN_DRIFT"
"""``off`` plans on the latest calibration alone."""


def reference_call_s(coefficients: Mapping[str, float]) -> float:
    """``T(c)`` of the module docstring: the reference call's time alone on an engine, in seconds."""
    n, o = REFERENCE_CALL
    c = coefficients
    step_ms = c["decode_fixed_ms"] + c["decode_ms_per_seq"] + c["decode_ns_per_kv_token"] * 1e-6 * (n + o / 2)
    return (c["prefill_fixed_ms"] + n * c["prefill_us_per_token"] * 1e-3 + o * step_ms) * 1e-3


def _profile_key(data: Mapping) -> tuple[str, str, int]:
    return str(data["model"]), str(data["gpu"]).lower(), int(data["tp"])


_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError)
"""What a hand-edited or corrupt history line or profile file raises when read (NaN, Infinity, strings,
deep nesting): such a calibration is skipped, as an unreadable line always was."""


def _usable(data: object) -> tuple[tuple[str, str, int], float] | None:
    """(profile key, reference call time) of a history row or profile file's content, or None when
    it is no usable calibration: a field missing or of the wrong type, or a time that is not a finite
    positive number, or a coefficient outside a profile file's range (a 0 divided the margin by zero;
    NaN or Infinity made every planned time NaN; 1e308 overflowed)."""
    try:
        key, seconds = _profile_key(data), reference_call_s(data)  # type: ignore[arg-type]
        in_range = all(0.0 <= float(data[k]) <= MAX_COEFFICIENT for k in TIME_COEFFICIENTS)  # type: ignore[index]
    except _UNREADABLE:
        return None
    return (key, seconds) if in_range and 0.0 < seconds < float("inf") else None


def _fit_error(row: Mapping) -> float:
    """A history row's fit error; infinite (so the row is left out) when it is not a number."""
    try:
        value = float(row.get("fit_error", 0.0))
    except _UNREADABLE:
        return float("inf")
    return value if value == value else float("inf")  # NaN: unknown fit, left out


def record(directory: Path, data: Mapping, at: dt.datetime | None = None) -> None:
    """Append calibrated profile ``data`` (the profile file's content) to ``directory``'s history."""
    at = at or dt.datetime.now(dt.timezone.utc)
    line = {"at": at.isoformat(timespec="seconds"), "model": data["model"], "gpu": data["gpu"],
            "tp": int(data["tp"]), **{k: float(data[k]) for k in TIME_COEFFICIENTS},
            "load_average_before_after": (data.get("calibration") or {}).get("load_average_before_after")}
    errors = ((data.get("calibration") or {}).get("fit_error") or {}).values()
    if errors:
        line["fit_error"] = max(float(e) for e in errors)
    with open(directory / HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def history(directory: Path) -> list[dict]:
    """Every recorded calibration in ``directory``, oldest first (unreadable lines skipped)."""
    path = directory / HISTORY_FILE
    if not path.is_file():
        return []
    out = []
    # A non-UTF-8 byte spoils its line only (replaced, the line then fails to parse).
    for raw in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(raw)
            dt.datetime.fromisoformat(row["at"])
        except _UNREADABLE:
            continue
        if _usable(row) is not None:
            out.append(row)
    return out


@dataclass(frozen=True)
class Drift:
    """One calibrated profile's drift margin (module docstring)."""

    model: str
    device: str
    tp: int
    factor: float
    """Slowest recent calibration's reference call time over the profile in use's (>= 1)."""
    fastest: float
    """Fastest recent calibration's, likewise (<= 1)."""
    calibrations: int
    """Recent calibrations compared (the profile in use among them)."""
    slowest_at: str | None
    path: Path
    """The profile file in use."""

    def line(self) -> str:
        if self.calibrations < 2:
            return (f"drift {self.model} on {self.device} tp{self.tp}: one calibration here, no margin "
                    f"(each `cortex calibrate` or demo run adds one)")
        slowest = (f"planned on the slowest ({self.slowest_at}), {self.factor:.2f}x its times"
                   if self.slowest_at is not None else "the one in use is the slowest: planned on it")
        return (f"drift {self.model} on {self.device} tp{self.tp}: the last {self.calibrations} calibrations span "
                f"{100 * (self.fastest - 1):+.0f}% to {100 * (self.factor - 1):+.0f}% against the one in use; "
                + slowest)


def drifts(directory: Path, now: dt.datetime | None = None, window: int = WINDOW,
           max_age_days: float = MAX_AGE_DAYS) -> list[Drift]:
    """The drift margin of every profile file in ``directory`` (module docstring)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    rows = history(directory)
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            usable = _usable(data)
        except (OSError, *_UNREADABLE):  # a directory named *.json, a non-UTF-8 or corrupt file
            continue
        if usable is None:
            continue
        key, in_use = usable
        recent = [r for r in rows if _profile_key(r) == key
                  and (now - _aware(dt.datetime.fromisoformat(r["at"]))).total_seconds() <= max_age_days * 86400
                  and _fit_error(r) <= MAX_FIT_ERROR]
        recent = recent[-window:]
        ratios = [(reference_call_s(r) / in_use, r["at"]) for r in recent] or [(1.0, None)]
        slow = max(ratios)
        out.append(Drift(key[0], str(data["gpu"]), key[2], max(slow[0], 1.0), min(min(r for r, _ in ratios), 1.0),
                         max(len(recent), 1), slow[1] if slow[0] > 1.0 else None, path))
    return out


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


def scaled(data: Mapping, factor: float) -> dict:
    """Profile file content with every time coefficient multiplied by ``factor``."""
    out = dict(data)
    for k in TIME_COEFFICIENTS:
        out[k] = float(data[k]) * factor
    out["sources"] = [*data.get("sources", ()), f"slowed {factor:.3f}x to this machine's slowest recent "
                                                 f"calibration for planning (runtime/drift.py)"]
    return out


@contextmanager
def planning_with_drift(directory: Path | None = None,
                        report: Callable[[str], None] | None = None) -> Iterator[list[Drift]]:
    """Within the block, profile lookups return ``directory``'s (default: the active calibrated
    directory's) profiles slowed by their drift factors; yields the margins (empty when nothing
    is calibrated or ``CORTEX_PLAN_DRIFT=off``), each also passed to ``report`` as its line.
    Restores the lookups on exit."""
    active = calibrated_directories()
    directory = directory or (active[0] if active else None)
    if directory is None or os.environ.get(DISABLE_ENV, "").lower() in ("off", "0", "no") or not directory.is_dir():
        yield []
        return
    margins = drifts(directory)
    for m in margins if report is not None else ():
        report(m.line())
    with tempfile.TemporaryDirectory(prefix="cortex-drift-") as tmp:
        for d in margins:
            if d.factor > 1.0:
                data = json.loads(d.path.read_text(encoding="utf-8"))
                (Path(tmp) / d.path.name).write_text(json.dumps(scaled(data, d.factor)), encoding="utf-8")
        use_calibrated(Path(tmp), *active)
        clear_cache()
        try:
            yield margins
        finally:
            use_calibrated(*active)
            clear_cache()
