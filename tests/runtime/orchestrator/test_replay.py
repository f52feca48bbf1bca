"""Replaying a recorded trace in the simulator on the layout that served it (runtime/replay.py).

Simulated engines in real time follow the same latency profile as the discrete-event
simulator, so a recorded batch replayed there must come out close to what was measured:
the check that recording, layout translation and replay line up end to end.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from runtime.orchestrator.recorder import trace_line
from runtime.replay import call_errors, compare, layout_of, recorded_placement, render, replay, stage_kinds

from .conftest import example_spec, run_async, sim_factory, split_pool, started


def test_layout_mirrors_the_spec() -> None:
    spec = example_spec("nl2sql")
    layout = {r.name: r for r in layout_of(spec)}
    for pool in spec.llm_pools:
        for rep in pool.replicas:
            sim = layout[rep.replica_id]
            assert sim.kind == "llm" and sim.stages == frozenset(pool.stages) and sim.model == pool.model
            assert sim.kv_capacity_tokens == rep.kv_capacity_tokens and sim.device == rep.device
    execs = [r for r in layout.values() if r.kind == "executor"]
    assert {next(iter(r.stages)) for r in execs} == {p.stage for p in spec.executor_pools}
    # a prefill/decode-disaggregated pool replays as prefill-only and decode-only replicas
    split = {r.name: r for r in layout_of(split_pool(spec, "generate", prefill=2, decode=1))}
    assert [split[f"generate-prefill-{i}"].role for i in range(2)] == ["prefill", "prefill"]
    assert split["generate-0"].role == "decode" and split["fix-0"].role == "mixed"


def test_a_recorded_batch_replays_close_to_what_was_measured(sales_db: Path) -> None:
    # Strict isolation: a borrowed call lands on another stage's engine, cold for its prefix, and the
    # simulator's own routing need not borrow the same calls (placement is not in the trace format).
    spec = example_spec("nl2sql", sales_db, borrow_idle=False)

    async def body() -> list[str]:
        orch = await started(spec, sim_factory(speedup=1.0))  # real time: measured seconds = model seconds
        try:
            async def one(i: int):
                await asyncio.sleep(0.4 * i)
                return await orch.run({"question": f"what was the revenue in region {i}?"})

            infos = await asyncio.gather(*(one(i) for i in range(6)))
        finally:
            await orch.stop()
        return [json.dumps(trace_line(info, spec.program)) for info in infos]

    lines = run_async(body(), timeout_s=120)
    replayed = replay(spec, lines)
    assert len(replayed.run_latency) == 6 and not any(math.isnan(x) for x in replayed.run_latency)
    assert set(replayed.stage_latency) >= {"generate", "execute"}
    result = compare(lines, replayed, stage_kinds(spec))
    assert {r.name for r in result.rows} >= {"generate", "end to end"} and "execute" not in {r.name for r in result.rows}
    e2e = result.get("end to end", "p50")
    assert e2e.measured > 0.5 and e2e.n == 6
    # Same profile on both sides; the real-time engine only adds event-loop delays.
    assert -0.35 < e2e.error < 0.15, render(result)
    assert "end to end" in render(result)
    # per call: every recorded generate call is paired with the simulated call it replays
    per_call = {e.stage: e for e in call_errors(lines, replayed, stage_kinds(spec))}
    recorded = sum(1 for line in lines for c in json.loads(line)["calls"] if c["stage"] == "generate")
    assert "execute" not in per_call and len(per_call["generate"].errors) == recorded
    assert per_call["generate"].quantile(50, absolute=True) < 0.35 and 0 <= per_call["generate"].within(0.25) <= 1
    _pinned_replay_follows_the_recording(spec, lines)


def _pinned_replay_follows_the_recording(spec, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    """``replay(pinned=True)`` puts every LLM call where the trace says it ran, another pool's replica
    included (a borrowed call), and leaves SQL calls to the policy."""
    runs = [json.loads(line) for line in lines]
    other = {"generate": "fix-0", "fix": "generate-0"}
    moved = 0
    for r in runs[::2]:  # every other run's LLM calls "ran" on the other stage's engine
        for c in r["calls"]:
            if c["kind"] == "llm":
                c["replica"], moved = other[c["stage"]], moved + 1
    moved_lines = [json.dumps(r) for r in runs]
    placement = recorded_placement(moved_lines)
    replayed = replay(spec, moved_lines, pinned=True)
    llm_calls = sum(len(v) for v in placement.values())
    assert moved > 0 and replayed.pinned == (llm_calls, llm_calls)
    for key, replicas in placement.items():
        assert replayed.call_replica[key] == replicas, key
    assert replay(spec, moved_lines).pinned is None


# Found by the hostile-user pass (round 3): replay read the lines for their measured prefixes and
# recorded replicas before validating them, so a malformed trace ended in a KeyError, TypeError or
# JSONDecodeError where `cortex simulate --trace` says which line is wrong.
_GOOD = ('{"arrival_s": 0, "calls": [{"id": "c0", "stage": "generate", "kind": "llm", "parents": [], '
         '"model": "smollm2", "input_tokens": 10, "output_tokens": 5, "cached_tokens": 8, "replica": "generate-0"}]}')


@pytest.mark.parametrize("bad", ["{", "[]", "42", '{"calls": 5}', '{"calls": [{}]}', '{"arrival_s": NaN, "calls": []}',
                                 _GOOD.replace('"stage": "generate", ', ""),
                                 _GOOD.replace('"arrival_s": 0', '"arrival_s": "soon"'),
                                 _GOOD.replace('"parents": []', '"parents": ["c0"]'),
                                 _GOOD.replace('"arrival_s": 0', '"arrival_s": Infinity'),
                                 "[" * 100_000])
@pytest.mark.parametrize("pinned", [False, True])
def test_a_malformed_trace_is_a_trace_error_naming_its_line(bad: str, pinned: bool) -> None:
    from runtime.simulator.trace import TraceError

    with pytest.raises(TraceError, match=r"recorded trace:2"):
        replay(example_spec("nl2sql"), [_GOOD, bad], pinned=pinned)
