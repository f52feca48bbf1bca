"""Calibration history and the drift margin plans are made with (runtime/drift.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from planner.profiles import PROFILE_DIR, get_profile
from runtime import drift, profiles

SHIPPED = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)


def _calibration(factor: float, **shape: float) -> dict:
    """The shipped SmolLM2 CPU profile as if calibrated, every time ``factor`` x (and ``shape`` x per coefficient)."""
    data = dict(SHIPPED)
    for k in drift.TIME_COEFFICIENTS:
        data[k] = SHIPPED[k] * factor * shape.get(k, 1.0)
    return data


def test_the_reference_call_time_is_prefill_plus_its_decode_steps():
    c = {"prefill_fixed_ms": 10.0, "prefill_us_per_token": 1000.0, "decode_fixed_ms": 20.0,
         "decode_ms_per_seq": 2.0, "decode_ns_per_kv_token": 1000.0}
    # 10 ms + 512 x 1 ms + 128 x (20 + 2 + 1e-3 x (512 + 64)) ms
    assert drift.reference_call_s(c) == pytest.approx((10 + 512 + 128 * (22 + 0.576)) / 1000)
    assert drift.reference_call_s(_calibration(1.3)) == pytest.approx(1.3 * drift.reference_call_s(SHIPPED))


def test_the_margin_is_the_slowest_recent_calibration_against_the_one_in_use(tmp_path: Path):
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(_calibration(1.0)))
    history = [(1.8, 10.0), (1.25, 3.0), (0.9, 2.0), (1.1, 1.0), (1.0, 0.0)]  # (speed factor, days ago)
    for factor, days in history:
        drift.record(tmp_path, _calibration(factor), at=NOW - dt.timedelta(days=days))
    (m,) = drift.drifts(tmp_path, now=NOW)
    # The 10-day-old 1.8x is too old; of the rest, 1.25x is the slowest and 0.9x the fastest.
    assert m.factor == pytest.approx(1.25) and m.fastest == pytest.approx(0.9) and m.calibrations == 4
    assert "+25%" in m.line() and "-10%" in m.line()
    # Only the last WINDOW calibrations count.
    (m,) = drift.drifts(tmp_path, now=NOW, window=2)
    assert m.factor == pytest.approx(1.1) and m.calibrations == 2


def test_a_reshaped_fit_with_the_same_speed_is_no_drift(tmp_path: Path):
    """Quick probes cannot tell decode_ms_per_seq from decode_ns_per_kv_token: a fit that moves time
    between them at the same reference call time must not count as a slowdown."""
    base = _calibration(1.0)
    k_only = dict(base, decode_ms_per_seq=0.0, decode_ns_per_kv_token=base["decode_ns_per_kv_token"]
                  + base["decode_ms_per_seq"] * 1e6 / (512 + 64))
    assert drift.reference_call_s(k_only) == pytest.approx(drift.reference_call_s(base))
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(base))
    drift.record(tmp_path, k_only, at=NOW)
    drift.record(tmp_path, base, at=NOW)
    (m,) = drift.drifts(tmp_path, now=NOW)
    assert m.factor == pytest.approx(1.0) and m.calibrations == 2 and "no margin" not in m.line()


def test_a_calibration_whose_fit_misses_its_probes_is_left_out_of_the_margin(tmp_path: Path):
    """A fit that describes its own probes badly (here 35% off on average) is a measurement error, not a
    slower machine: it never sets the margin. A well-fitted slower one still does."""
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(_calibration(1.0)))
    broken = dict(_calibration(1.3), calibration={"fit_error": {"prefill": 0.02, "decode": 0.35}})
    slower = dict(_calibration(1.1), calibration={"fit_error": {"prefill": 0.02, "decode": 0.03}})
    for at, data in ((2, broken), (1, slower), (0, _calibration(1.0))):
        drift.record(tmp_path, data, at=NOW - dt.timedelta(hours=at))
    assert [r.get("fit_error") for r in drift.history(tmp_path)] == [0.35, 0.03, None]
    (m,) = drift.drifts(tmp_path, now=NOW)
    assert m.factor == pytest.approx(1.1) and m.calibrations == 2


def test_one_calibration_gives_no_margin_and_says_so(tmp_path: Path):
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(_calibration(1.0)))
    (m,) = drift.drifts(tmp_path, now=NOW)
    assert m.factor == 1.0 and m.calibrations == 1 and "no margin" in m.line()
    (tmp_path / drift.HISTORY_FILE).write_text("not json\n{\"at\": \"yesterday\"}\n")  # damaged lines: skipped
    (m,) = drift.drifts(tmp_path, now=NOW)
    assert m.factor == 1.0


def test_plans_see_the_slowed_profile_and_nothing_else_does(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CORTEX_MACHINE_KEY", "drift box")
    profiles.write_profile(_calibration(1.4))  # an earlier, slower calibration
    path = profiles.write_profile(_calibration(1.0))  # the one in use
    assert len(drift.history(profiles.machine_dir())) == 2  # write_profile keeps the history
    profiles.write_profile({**_calibration(1.0), "calibration": {"load_average_before_after": [0.5, 0.7]}})
    assert drift.history(profiles.machine_dir())[-1]["load_average_before_after"] == [0.5, 0.7]
    assert profiles.activate() == profiles.machine_dir()
    latest = get_profile("smollm2-135m", "CPU", 1)
    assert latest.path == str(path)
    with drift.planning_with_drift() as margins:
        (m,) = margins
        assert m.factor == pytest.approx(1.4)
        slowed = get_profile("smollm2-135m", "CPU", 1)
        assert slowed.request_s(700, 60) == pytest.approx(1.4 * latest.request_s(700, 60), rel=1e-9)
        assert slowed.decode_step_s(4, 2000) == pytest.approx(1.4 * latest.decode_step_s(4, 2000), rel=1e-9)
    again = get_profile("smollm2-135m", "CPU", 1)  # restored: estimates and replays use the latest
    assert again.path == str(path) and again.request_s(700, 60) == latest.request_s(700, 60)
    monkeypatch.setenv(drift.DISABLE_ENV, "off")
    with drift.planning_with_drift() as margins:
        assert margins == [] and get_profile("smollm2-135m", "CPU", 1).path == str(path)


def test_without_a_calibration_nothing_changes():
    with drift.planning_with_drift() as margins:
        assert margins == []
        assert get_profile("smollm2-135m", "CPU", 1).path == str(PROFILE_DIR / "smollm2-135m__cpu__tp1.json")


def test_the_margin_reaches_the_plan(monkeypatch: pytest.MonkeyPatch, repo: Path):
    """The demo's workflow planned on a machine whose history holds a 1.5x slower calibration: the
    plan's predicted latency grows (or its capacity does), never shrinks."""
    from cortexlang.compiler import compile_file
    from planner.api import plan_program

    monkeypatch.setenv("CORTEX_MACHINE_KEY", "drift box 2")
    profiles.write_profile(_calibration(1.5))
    profiles.write_profile(_calibration(1.0))
    profiles.activate()
    program = compile_file(repo / "examples" / "nl2sql.cortex").program
    plain = plan_program(program)
    with drift.planning_with_drift():
        careful = plan_program(program)
    (wp,) = plain.workflows
    (wc,) = careful.workflows
    assert (wc.latency.p50 > wp.latency.p50 * 1.2) or (careful.cost_per_hour > plain.cost_per_hour)


def test_the_line_names_no_timestamp_when_the_profile_in_use_is_the_slowest(tmp_path: Path):
    base = _calibration(1.0)
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(base))
    drift.record(tmp_path, _calibration(0.7), at=NOW)
    drift.record(tmp_path, base, at=NOW)
    (m,) = drift.drifts(tmp_path, now=NOW)
    assert m.factor == 1.0 and m.slowest_at is None
    assert "None" not in m.line() and "the one in use is the slowest: planned on it" in m.line()


# ------------------------------------------------------------------ hostile calibration caches
# Found by the hostile-user pass (round 3): each of these, written into the machine's profile cache,
# made `cortex run|serve|dev` end in a traceback (OverflowError, ZeroDivisionError, UnicodeDecodeError,
# ValueError, TypeError, IsADirectoryError, NameError-free NaN plans) before a single run started.
INF, NAN = float("inf"), float("nan")
_ZERO = {k: 0.0 for k in drift.TIME_COEFFICIENTS}


@pytest.mark.parametrize("edit", [{"tp": INF}, {"tp": 0}, {"device_memory_gib": INF}, {"device_memory_gib": NAN},
                                  {"decode_fixed_ms": NAN}, {"decode_fixed_ms": INF}, {"decode_fixed_ms": 1e300},
                                  {"decode_fixed_ms": "5"}, {"decode_fixed_ms": True}, {"prefill_fixed_ms": -50.0},
                                  _ZERO, {"kv_cache_gib": -1}, {"kv_cache_gib": INF}, {"memory_utilization": NAN},
                                  {"memory_utilization": 0}, {"structured_output": {"decode_factor": INF}},
                                  {"model": 0}, {"gpu": ""}],
                         ids=repr)
def test_a_profile_file_with_a_value_no_engine_has_is_refused_naming_the_field(edit: dict) -> None:
    from planner.profiles import LatencyProfile

    with pytest.raises(ValueError) as refused:
        LatencyProfile.from_dict({**SHIPPED, **edit})
    why = str(refused.value)
    assert (("must be a number in" in why or "must be a non-empty string" in why)
            and any(k in why or k == "structured_output" for k in edit)) or "takes no time" in why


def test_every_shipped_profile_passes_the_checks() -> None:
    from planner.profiles import LatencyProfile

    for path in PROFILE_DIR.glob("*.json"):
        LatencyProfile.from_dict(json.loads(path.read_text()), str(path))


def _hostile_line(**edit: object) -> str:
    row = {"at": NOW.isoformat(), "model": SHIPPED["model"], "gpu": SHIPPED["gpu"], "tp": 1,
           **{k: SHIPPED[k] * 2 for k in drift.TIME_COEFFICIENTS}}
    return json.dumps({**row, **edit})


@pytest.mark.parametrize("line", [
    _hostile_line(tp=INF), _hostile_line(fit_error="abc"), _hostile_line(fit_error=None), _hostile_line(fit_error=NAN),
    _hostile_line(decode_fixed_ms=NAN), _hostile_line(decode_fixed_ms=INF), _hostile_line(decode_fixed_ms=1e308),
    _hostile_line(decode_fixed_ms=-1e6), _hostile_line(**_ZERO), "[]", "42", "[" * 100_000,
], ids=lambda s: s[:60])
def test_a_hostile_history_line_is_skipped_and_the_margin_stays_finite(tmp_path: Path, line: str) -> None:
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(_calibration(1.0)))
    (tmp_path / drift.HISTORY_FILE).write_bytes(b"\xff\xfe not utf-8\n" + line.encode() + b"\n")
    drift.record(tmp_path, _calibration(1.2), at=NOW)
    (m,) = drift.drifts(tmp_path, now=NOW)
    assert m.calibrations == 1 and m.factor == pytest.approx(1.2)  # only the readable calibration counts


@pytest.mark.parametrize("content", [json.dumps(_calibration(0.0)), b"\xff\xfe", None], ids=["zero", "not-utf8", "dir"])
def test_a_hostile_profile_file_has_no_margin_and_breaks_nothing(tmp_path: Path, content: str | bytes | None) -> None:
    path = tmp_path / "smollm2-135m__cpu__tp1.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    drift.record(tmp_path, _calibration(1.2), at=NOW)
    assert drift.drifts(tmp_path, now=NOW) == []
    with drift.planning_with_drift(tmp_path) as margins:
        assert margins == []
