"""What the demo plans with before this machine has recorded a run (examples/demo.py ``_learn``): the
shipped recording of SmolLM2 on the demo's questions, not the declared planning assumptions, which
SmolLM2 misses by far (its queries fail much more often than the file's 25% / 10%)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from examples import demo
from planner.observed import observe, read_trace


def _probabilities(program) -> dict[tuple[str, str], float]:
    wf = program.workflow()
    return {(e.source, e.target): e.probability for e in wf.edges}


def test_a_machine_without_runs_learns_from_the_shipped_recording(tmp_path: Path) -> None:
    out = io.StringIO()
    declared = demo._compile(Console(file=io.StringIO()))
    learnt = demo._learn(declared, tmp_path / "none.jsonl", Console(file=out, width=200), demo.RECORDED_TRACE)
    text = out.getvalue()
    assert "no runs recorded on this machine yet" in text and demo.RECORDED_TRACE.name in text
    expected = observe(declared, read_trace(demo.RECORDED_TRACE.read_text().splitlines())).program
    assert _probabilities(learnt) == _probabilities(expected) != _probabilities(declared)


def test_the_machines_own_runs_come_first_and_nothing_means_declared(tmp_path: Path) -> None:
    declared = demo._compile(Console(file=io.StringIO()))
    own = tmp_path / "own.jsonl"
    own.write_text(demo.RECORDED_TRACE.read_text().splitlines()[0] + "\n")
    out = io.StringIO()
    demo._learn(declared, own, Console(file=out, width=200), demo.RECORDED_TRACE)
    assert "learning from the previous run's trace" in out.getvalue() and str(own) in out.getvalue()
    out = io.StringIO()
    assert demo._learn(declared, tmp_path / "none.jsonl", Console(file=out, width=200)) is declared
    assert "planning with the declared branch probabilities" in out.getvalue()
