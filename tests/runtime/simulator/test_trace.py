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


def test_remaining_path_is_learnt_from_the_trace_not_the_runs_own_future():
    """A replayed call's remaining critical path = its own time + the trace-wide mean of what follows
    calls of its stage at that visit; two runs with different futures see the same estimate."""
    from runtime.simulator.graph import llm_standalone_s
    from runtime.simulator.trace import RemainingPathStats, TraceRun

    reqs = parse_trace(LINES)
    program = Program(models=trace_models(reqs))
    layout = shared_layout({"H100": 1}, "llama8b", executor_slots=4)
    ref = Simulator(program, layout, FCFS(), trace=reqs, config=SimConfig()).ref_profiles
    t_fix = llm_standalone_s(ref["llama8b"], 900, 40)
    stats = RemainingPathStats(reqs, ref)
    # After run a's generate: execute (0.5 s) then fix, the longer of its two paths; nothing after b's.
    mean, std = stats.after("nl2sql", "generate", 0)
    assert mean == pytest.approx((0.5 + t_fix) / 2) and std == pytest.approx((0.5 + t_fix) / 2)
    assert stats.after("nl2sql", "execute", 0) == pytest.approx((t_fix, 0.0))
    assert stats.after("nl2sql", "fix", 0) == (0.0, 0.0)
    assert stats.after("nl2sql", "generate", 3) == stats.after("nl2sql", "generate", 0)  # unseen visit
    assert stats.after("other", "generate", 0) == (0.0, 0.0)  # unknown stage: nothing known to follow
    for i, req in enumerate(reqs):
        first = TraceRun(req, i, ref, stats).first_calls()[0]
        assert first.remaining_cp_s == pytest.approx(first.standalone_s + mean)
        assert first.remaining_std_s == pytest.approx(std)
        blind = TraceRun(req, i, ref).first_calls()[0]
        assert blind.remaining_cp_s == blind.standalone_s and blind.remaining_std_s == 0.0


def test_learnt_remaining_path_counts_visits_of_a_retried_stage():
    lines = ['{"run_id": "r", "workflow": "w", "arrival_s": 0, "calls": ['
             '{"id": "a", "stage": "try", "kind": "tool", "duration_s": 1.0},'
             '{"id": "b", "stage": "try", "kind": "tool", "duration_s": 2.0, "parents": ["a"]},'
             '{"id": "c", "stage": "done", "kind": "tool", "duration_s": 0.5, "parents": ["b"]}]}']
    from runtime.simulator.trace import RemainingPathStats

    stats = RemainingPathStats(parse_trace(lines), {})
    assert stats.after("w", "try", 0) == pytest.approx((2.5, 0.0))  # the retry and the last step follow
    assert stats.after("w", "try", 1) == pytest.approx((0.5, 0.0))
    assert stats.after("w", "try", 2) == pytest.approx((1.5, 1.0))  # unseen visit: over all visits


def test_a_run_of_many_calls_gets_its_visit_keys_in_linear_time() -> None:
    """A 20,000-call recorded run: each call's stage was looked up by scanning the run's calls
    (quadratic: 50,000 calls took over a minute in `cortex simulate --trace`)."""
    import json
    import time

    from runtime.simulator.trace import _visit_keys

    calls = [{"id": f"c{k}", "stage": "s", "kind": "sql", "duration_s": 0.001,
              "parents": [f"c{k - 1}"] if k else []} for k in range(20_000)]
    (req,) = parse_trace([json.dumps({"arrival_s": 0, "calls": calls})])
    start = time.process_time()
    keys = _visit_keys(req)
    assert time.process_time() - start < 2.0
    assert keys["c19999"] == ("trace", "s", 19_999)
