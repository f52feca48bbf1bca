"""`make demo`'s loop (examples/demo.py) on simulated engines: plan for the load it sends, record,
compare with the plan, replay in the simulator; the second run learns from the first one's trace.
The real-engine run is `make demo` itself and benchmarks/real_vs_sim.py."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from rich.console import Console

from examples import demo


def _run(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = io.StringIO()
    args = demo.parser().parse_args(["--engine", "simulated", "--questions", "4", "--rate", "1",
                                     "--record", str(tmp_path / "trace.jsonl"), *extra])
    result = asyncio.run(asyncio.wait_for(demo.run_demo(args, Console(file=out, width=160)), 120))
    return result, out.getvalue()


def test_demo_loop_on_simulated_engines(tmp_path: Path) -> None:
    first, text = _run(tmp_path)
    assert "no recorded runs yet" in text and "4 runs, Poisson at 1 runs/s" in text
    assert first["plan"] is not None and first["plan"].workflows[0].rate_per_s == 1.0  # planned for what it sends
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(x)["workflow"] == "nl2sql" for x in lines)
    rows = {r["what"]: r for r in first["predicted"]}
    assert {"generate", "end to end", "SLO attainment"} <= set(rows)
    low, high = rows["SLO attainment"]["measured_interval"]  # 4 runs: a wide 95% interval around the share
    assert 0 <= low <= rows["SLO attainment"]["measured_p50"] <= high <= 1 and high - low > 0.3
    assert rows["end to end"]["predicted_p50"] > 0 and rows["end to end"]["measured_p50"] > 0
    replay = first["replay"]
    assert replay.get("end to end", "p50").n == 4 and replay.get("generate", "p50").simulated > 0
    assert "simulated replay vs measured" in text and "predicted vs measured [SIMULATED ENGINES]" in text
    assert "calibrating" not in text  # simulated engines follow their profile: nothing to calibrate

    second, text = _run(tmp_path)
    assert "learning from the previous run's trace" in text and "Observed: 4 recorded runs" in text
    assert second["plan"] is not None


def test_a_rate_the_engines_cannot_sustain_is_lowered_to_one_they_can() -> None:
    """Planned for more than this machine's engines can serve, the demo plans for (and sends) the highest
    rate they sustain, instead of running with no plan to hold the measurements against."""
    out = io.StringIO()
    console = Console(file=out, width=160)
    program = demo._compile(console)
    plan, _, rate = demo._plan(program, console, 1000.0)
    assert plan is not None and 0 < rate < 1000.0 and plan.workflows[0].rate_per_s == rate
    assert "sustain at most" in out.getvalue()
    faster = demo._sustainable_rate(program, 1000.0)
    assert faster == rate  # deterministic search
    from planner.api import plan_program
    from planner.plan import Infeasible
    assert isinstance(plan_program(program, rate=rate * 1.1), Infeasible)  # within the search's resolution


def test_the_demo_plans_on_the_slowest_recent_calibration(monkeypatch) -> None:
    """With a history of calibrations on this machine, the demo's plan is made on the slowest recent
    one (runtime/drift.py) and says so; its promise is then slower than the latest profile's."""
    from runtime import drift, profiles

    monkeypatch.setenv("CORTEX_MACHINE_KEY", "demo drift box")
    shipped = json.loads((profiles.PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
    for factor in (1.3, 1.0):  # an earlier calibration 30% slower, then the one in use
        profiles.write_profile({**shipped, **{k: shipped[k] * factor for k in drift.TIME_COEFFICIENTS}})
    profiles.activate()
    out = io.StringIO()
    console = Console(file=out, width=200)
    program = demo._compile(console)
    careful, _, _ = demo._plan(program, console, 0.05)
    assert "drift smollm2-135m on CPU tp1: the last 2 calibrations span +0% to +30%" in out.getvalue()
    monkeypatch.setenv(drift.DISABLE_ENV, "off")
    plain, _, _ = demo._plan(program, console, 0.05)
    assert careful.workflows[0].latency.p50 > 1.2 * plain.workflows[0].latency.p50


def test_measured_attainment_is_shown_with_its_interval() -> None:
    """33 of 40 runs on time: the 95% (Wilson) interval 68.0-91.3% holds 90%, and the table says so."""
    from runtime.simulator.verify import wilson_interval

    low, high = wilson_interval(33, 40)
    assert round(100 * low, 1) == 68.0 and round(100 * high, 1) == 91.3
    assert demo.attainment_text(33 / 40, (low, high)) == "82.5% (68.0-91.3%)"
    assert demo.attainment_text(0.94) == "94.0%" and demo.attainment_text(None) == "-"
