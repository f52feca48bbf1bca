"""The demo calibrates the engines that will serve (examples/demo.py ``_calibrate_serving_layout``): when
the plan on a fresh profile picks engines the profiles do not describe yet, they are started and
calibrated in turn; engines already described serve without another calibration.
Engines, calibration and planning are stand-ins here; the real run is benchmarks/real_vs_sim.py."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

import pytest
from rich.console import Console

from examples import demo


@dataclass
class FakeOrchestrator:
    layout: str
    events: list[str] = field(default_factory=list)

    async def start(self) -> None:
        self.events.append(f"start {self.layout}")

    async def stop(self) -> None:
        self.events.append(f"stop {self.layout}")

    async def deploy(self, spec) -> None:
        self.events.append(f"deploy {spec.llm_pools}")


@dataclass(frozen=True)
class FakeSpec:
    llm_pools: str

    @property
    def engines(self) -> str:
        """The engine configuration: a layout's name up to its ``/`` (``"one/8"``: engines ``one`` with
        another batch size)."""
        return self.llm_pools.split("/")[0]


def _run(monkeypatch, layouts: list[str]) -> tuple[tuple, list[str], str]:
    """Run the loop with plans that pick ``layouts`` in turn, from engines started as ``"one"``."""
    events: list[str] = []
    picks = iter(layouts)

    calibrated: set[str] = set()

    async def calibrate(orchestrator, console) -> None:
        events.append(f"calibrate {orchestrator.layout}")
        calibrated.add(orchestrator.layout.split("/")[0])

    monkeypatch.setattr(demo, "_calibrate", calibrate)
    monkeypatch.setattr("runtime.calibrate.calibration_missing",
                        lambda spec: [] if spec.engines in calibrated else [f"{spec.engines}: not calibrated"])
    monkeypatch.setattr(demo, "_plan", lambda program, console, rate: (next(picks), program, rate))
    monkeypatch.setattr(demo, "_spec", lambda program, plan: FakeSpec(plan))
    monkeypatch.setattr(demo, "_print_engines", lambda spec, backend, console: None)
    out = io.StringIO()
    first = FakeOrchestrator("one", events)
    result = asyncio.run(demo._calibrate_serving_layout(
        first, FakeSpec("one"), "program", 0.1, Console(file=out, width=200),
        lambda spec: ("vllm-server", FakeOrchestrator(spec.llm_pools, events))))
    return result, events, out.getvalue()


def test_the_layout_the_plan_keeps_is_the_one_calibrated(monkeypatch) -> None:
    (orch, spec, plan, _, _), events, text = _run(monkeypatch, ["two", "two"])
    # Calibrated on one engine, planned two: the two are started and calibrated before serving.
    assert events == ["calibrate one", "stop one", "start two", "calibrate two", "deploy two"]
    assert orch.layout == "two" and spec.llm_pools == "two" and plan == "two"
    assert "no profile describes" not in text


def test_an_unchanged_layout_keeps_its_engines(monkeypatch) -> None:
    (orch, spec, _, _, _), events, _ = _run(monkeypatch, ["one"])
    assert events == ["calibrate one", "deploy one"] and orch.layout == "one"


def test_the_same_engines_resized_are_restarted_without_another_calibration(monkeypatch) -> None:
    """The profile holds for the engines it was measured on whatever their batch or KV size: a plan that
    only resizes them restarts them and serves (the demo used to calibrate again each round)."""
    (orch, spec, _, _, _), events, text = _run(monkeypatch, ["one/8", "one/27"])
    assert events == ["calibrate one", "stop one", "start one/8"] and orch.layout == "one/8"
    assert "no profile describes" not in text


def test_engines_the_profiles_already_describe_end_the_loop(monkeypatch) -> None:
    """Back to engines calibrated before (one engine after two: the profile is an engine alone plus the
    contention of two): they serve as planned, with no calibration and no warning."""
    (orch, spec, _, _, _), events, text = _run(monkeypatch, ["two", "one"])
    assert [e for e in events if e.startswith("calibrate")] == ["calibrate one", "calibrate two"]
    assert orch.layout == "one" and "no profile describes" not in text


def test_a_layout_that_never_settles_is_bounded_and_said(monkeypatch) -> None:
    assert demo.CALIBRATION_ROUNDS == 3
    (orch, spec, _, _, _), events, text = _run(monkeypatch, ["two", "three", "four"])
    assert [e for e in events if e.startswith("calibrate")] == ["calibrate one", "calibrate two", "calibrate three"]
    assert orch.layout == "four" and spec.llm_pools == "four"  # the last plan's engines serve ...
    assert "the plan picked engines no profile describes after each of 3" in text  # ... and the demo says so


@pytest.mark.parametrize("rate", [0.1, 2.0])
def test_every_round_plans_for_the_requested_rate(monkeypatch, rate: float) -> None:
    """A plan may serve a lower rate than requested (the most the engines sustain); the next round
    still plans for the requested one."""
    asked: list[float] = []
    picks = iter(["two", "two"])
    monkeypatch.setattr(demo, "_calibrate", lambda o, c: asyncio.sleep(0))
    monkeypatch.setattr("runtime.calibrate.calibration_missing", lambda spec: ["two: not calibrated"])
    monkeypatch.setattr(demo, "_plan", lambda program, console, r: (asked.append(r), (next(picks), program, r / 2))[1])
    monkeypatch.setattr(demo, "_spec", lambda program, plan: FakeSpec(plan))
    monkeypatch.setattr(demo, "_print_engines", lambda spec, backend, console: None)
    result = asyncio.run(demo._calibrate_serving_layout(
        FakeOrchestrator("one"), FakeSpec("one"), "program", rate, Console(file=io.StringIO()),
        lambda spec: ("vllm-server", FakeOrchestrator(spec.llm_pools))))
    assert asked == [rate, rate] and result[4] == rate / 2 and result[1].llm_pools == "two"


def test_a_run_refused_by_admission_control_is_reported_not_a_crash() -> None:
    """Under load the Cortex policy may refuse a run (``Overloaded``): the demo records the refusal and
    counts it as an SLO miss, and the other runs go on (it used to end the demo with a traceback)."""
    from runtime.orchestrator import Overloaded

    class Run:
        def __init__(self, qid: str) -> None:
            self.finished = asyncio.Event()
            self.finished.set()
            self.info = type("Info", (), {"slo_met": True, "latency_s": 1.0, "calls": (), "id": qid})()

    class Orchestrator:
        async def submit(self, inputs):
            if inputs["question"] == "q2":
                raise Overloaded("stage 'fix' is saturated", stage="fix")
            return Run(inputs["question"])

    questions = [{"id": f"id{i}", "question": f"q{i}"} for i in range(1, 4)]
    infos, refused = asyncio.run(demo._send(Orchestrator(), questions, 1000.0, 1, Console(file=io.StringIO())))
    assert sorted(infos) == ["id1", "id3"] and list(refused) == ["id2"] and "saturated" in refused["id2"]
    rows = demo.predicted_vs_measured(None, list(infos.values()), refused=len(refused))
    assert rows[-1]["what"] == "SLO attainment" and rows[-1]["measured_p50"] == pytest.approx(2 / 3)
