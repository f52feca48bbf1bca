"""The JSONL trace format: parsing, validation messages, replay."""

from __future__ import annotations

import pytest

from runtime.policies.fcfs import FCFS
from runtime.simulator.cluster import shared_layout
from runtime.simulator.sim import SimConfig, Simulator
from runtime.simulator.trace import TraceError, dump_trace, parse_trace, trace_models
from cortexlang.ir import Program

LINES = [
    '{"run_id": "a", "workflow": "nl2sql", "arrival_s": 0.0, "status": "done", "calls": ['
    '{"id": "g", "stage": "generate", "kind": "llm", "model": "llama8b", "input_tokens": 800, "output_tokens": 60,'
    ' "parents": []},'
    '{"id": "x", "stage": "execute", "kind": "sql", "duration_s": 0.5, "parents": ["g"], "outcome": "error"},'
    '{"id": "f", "stage": "fix", "kind": "llm", "model": "llama8b", "input_tokens": 900, "output_tokens": 40,'
    ' "parents": ["x"]},'
    '{"id": "t", "stage": "lookup", "kind": "tool", "duration_s": 0.2, "parents": ["g"]}]}',
    "",
    '{"run_id": "b", "workflow": "nl2sql", "arrival_s": 0.1, "calls": ['
    '{"id": "g", "stage": "generate", "kind": "llm", "model": "llama8b", "input_tokens": 500, "output_tokens": 20}]}',
]


def test_parse_and_round_trip():
    reqs = parse_trace(LINES)
    assert [r.run_id for r in reqs] == ["a", "b"]
    assert reqs[0].calls[1].parents == ("g",) and reqs[0].calls[1].outcome == "error"
    assert parse_trace(dump_trace(reqs).splitlines()) == reqs


def test_replay_follows_the_dag():
    reqs = parse_trace(LINES)
    program = Program(models=trace_models(reqs))
    layout = shared_layout({"H100": 1}, "llama8b", executor_slots=4)
    res = Simulator(program, layout, FCFS(), trace=reqs,
                    config=SimConfig(warmup_fraction=0.0, record_calls=True)).run()
    assert list(res.status) == ["done", "done"]
    calls = {(c[0], c[2]): c for c in res.calls}
    # execute starts after generate ends; fix after execute; the tool in parallel with execute.
    assert calls[(0, "execute")][6] >= calls[(0, "generate")][7]
    assert calls[(0, "fix")][6] >= calls[(0, "execute")][7]
    assert calls[(0, "lookup")][6] < calls[(0, "execute")][7]
    # Standalone = generate + execute (0.5) + fix (the longest path), on the idle cluster.
    assert res.standalone[0] > 0.5 and res.end[0] - res.arrival[0] >= res.standalone[0] * (1 - 1e-9)


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('{"arrival_s": 0, "calls": []}', "non-empty 'calls'"),
    ('{"arrival_s": 0, "calls": [{"id": "a", "stage": "s", "kind": "llm", "model": "llama8b"}]}', "input_tokens"),
    ('{"arrival_s": 0, "calls": [{"id": "a", "stage": "s", "kind": "sql"}]}', "duration_s"),
    ('{"arrival_s": 0, "calls": [{"id": "a", "stage": "s", "kind": "gpu", "duration_s": 1}]}', "kind must be"),
    ('{"arrival_s": 0, "calls": [{"id": "a", "stage": "s", "kind": "tool", "duration_s": 1, "parents": ["z"]}]}',
     "unknown parents"),
    ('{"arrival_s": 0, "calls": [{"id": "a", "stage": "s", "kind": "tool", "duration_s": 1, "parents": ["b"]},'
     '{"id": "b", "stage": "s", "kind": "tool", "duration_s": 1, "parents": ["a"]}]}', "cycle"),
    ('{"calls": [{"id": "a", "stage": "s", "kind": "tool", "duration_s": 1}]}', "arrival_s"),
])
def test_bad_lines_get_clear_messages(line, message):
    with pytest.raises(TraceError, match=message) as info:
        parse_trace([line], "t.jsonl")
    assert "t.jsonl:1" in str(info.value)


def test_unknown_model_is_reported():
    reqs = parse_trace(['{"arrival_s": 0, "calls": [{"id": "a", "stage": "s", "kind": "llm", "model": "gpt9",'
                        ' "input_tokens": 5, "output_tokens": 5}]}'])
    with pytest.raises(TraceError, match="unknown models"):
        trace_models(reqs)


def test_a_call_longer_than_the_models_context_is_refused_like_vllm_would():
    reqs = parse_trace(['{"run_id": "long", "arrival_s": 0, "calls": [{"id": "a", "stage": "s", "kind": "llm",'
                        ' "model": "llama8b", "input_tokens": 12000, "output_tokens": 50}]}'])
    with pytest.raises(TraceError, match="exceed llama8b's context of 8192"):
        trace_models(reqs)
