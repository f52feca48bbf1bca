"""The OpenAI-compatible front door as unchanged clients use it: the official ``openai`` client
(sync and async) against a real uvicorn server on 127.0.0.1 (the configuration ``cortex serve``
runs) over simulated engines that generate token by token on the SmolLM2 CPU profile's timeline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError, OpenAI

from runtime.engines.simulated import CHARS_PER_TOKEN, SimulatedEngine
from runtime.orchestrator import Orchestrator
from runtime.serve import create_app

from ..orchestrator.conftest import example_spec, sim_factory
from .live import LiveServer, live_server

SPEEDUP = 5.0
"""The profile's ~17 ms per decode step becomes ~3.4 ms: tokens arrive visibly apart, tests stay quick."""
LONG = 300
"""Tokens of a long answer (asked for with "long" in the prompt): long enough to close a stream mid-way."""


def script(stage: str, prompt: str) -> str:
    if "long" in prompt:
        return "tick " * LONG
    if stage == "generate":
        return "SELECT COUNT(*) AS n FROM customers; -- " + "pad " * 40
    return f"answer from {stage}: " + "word " * 20


@pytest.fixture(scope="module")
def live(sales_db_master: Path) -> Iterator[LiveServer]:
    engines: list[SimulatedEngine] = []
    orch = Orchestrator(example_spec("nl2sql", sales_db_master), sim_factory(script, SPEEDUP, engines))
    with live_server(create_app(orch)) as server:
        server.engines = engines  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def client(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


USER = [{"role": "user", "content": "fix this SQL"}]


def test_models_lists_stages_and_models_and_retrieves_one(client: OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"nl2sql/generate", "nl2sql/fix", "generate", "fix", "smollm2"} <= set(models)
    assert all(m.object == "model" and m.owned_by == "cortex" for m in models.values())
    assert models["smollm2"].model_extra["cortex"]["stages"] == ["nl2sql/fix", "nl2sql/generate"]
    assert client.models.retrieve("nl2sql/fix").model_extra["cortex"] == {
        "kind": "stage", "stages": ["nl2sql/fix"], "models": ["smollm2"]}
    with pytest.raises(NotFoundError, match="GET /v1/models lists them"):
        client.models.retrieve("gpt-4o")


def test_a_stage_or_model_name_routes_the_call_and_an_unknown_one_lists_the_choices(client: OpenAI) -> None:
    by_stage = client.chat.completions.create(model="nl2sql/fix", messages=USER)
    assert by_stage.choices[0].message.content == script("fix", "") and by_stage.model == "nl2sql/fix"
    assert by_stage.usage.completion_tokens == -(-len(script("fix", "")) // CHARS_PER_TOKEN)
    by_model = client.chat.completions.create(model="smollm2", messages=USER, max_tokens=30, stop=[";"])
    stage = by_model.model_extra["cortex"]["stage"]
    assert stage in ("generate", "fix") and by_model.model == "smollm2"
    assert by_model.choices[0].message.content == script(stage, "").split(";")[0][:30 * CHARS_PER_TOKEN]
    by_header = client.chat.completions.create(model="anything", messages=USER,
                                               extra_headers={"X-Cortex-Stage": "generate"})
    assert by_header.model_extra["cortex"]["stage"] == "generate"
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert "no stage or model 'gpt-4o'" in str(refused.value)
    assert "fix, generate, nl2sql/fix, nl2sql/generate, smollm2" in str(refused.value)


def test_async_client_with_n_choices_and_a_seed(live: LiveServer) -> None:
    async def body() -> None:
        async with AsyncOpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0) as client:
            many, one = await asyncio.gather(
                client.chat.completions.create(model="fix", messages=USER, n=3, seed=11),
                client.chat.completions.create(model="generate", messages=USER))
        assert [c.index for c in many.choices] == [0, 1, 2]
        assert all(c.message.content == script("fix", "") and c.finish_reason == "stop" for c in many.choices)
        assert many.usage.completion_tokens == 3 * -(-len(script("fix", "")) // CHARS_PER_TOKEN)
        assert one.choices[0].message.content == script("generate", "").split(";")[0]  # the stage's stop

    asyncio.run(body())


def test_streaming_sends_text_as_the_engine_generates_it(client: OpenAI) -> None:
    started = time.monotonic()
    arrivals, pieces, finishes, usage = [], [], [], None
    for chunk in client.chat.completions.create(model="fix", messages=USER, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append(time.monotonic() - started)
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    tokens = -(-len(script("fix", "")) // CHARS_PER_TOKEN)
    assert "".join(pieces) == script("fix", "") and len(pieces) == tokens  # one chunk per token
    assert arrivals[0] < arrivals[-1] / 2  # the first text long before the last: not sent at the end
    assert finishes == ["stop"] and usage is not None and usage.completion_tokens == tokens


def test_closing_a_stream_mid_way_aborts_the_engine_request(client: OpenAI, live: LiveServer) -> None:
    engines: list[SimulatedEngine] = live.engines  # type: ignore[attr-defined]
    before = sum(e.metrics().generation_tokens_total for e in engines)
    stream = client.chat.completions.create(model="fix", messages=[{"role": "user", "content": "long"}],
                                            stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    deadline = time.monotonic() + 5
    while any(e.metrics().running or e.metrics().waiting for e in engines) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(e.metrics().running or e.metrics().waiting for e in engines)
    assert sum(e.metrics().generation_tokens_total for e in engines) - before < LONG / 2


def test_options_an_engine_cannot_honour_are_refused_never_ignored(client: OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    for options, message in (
        ({"response_format": {"type": "json_object"}}, "cannot honour response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
         "cannot honour response_format"),
        ({"tools": [tool], "tool_choice": "auto"}, "cannot honour tools"),
        ({"logprobs": True, "top_logprobs": 2}, "cannot honour logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"tool_choice": "auto"}, "tool_choice needs tools"),
    ):
        with pytest.raises(BadRequestError, match=message):
            client.chat.completions.create(model="fix", messages=USER, **options)
    # Refused before the first byte when streaming too.
    with pytest.raises(BadRequestError, match="cannot honour response_format"):
        client.chat.completions.create(model="fix", messages=USER, stream=True,
                                       response_format={"type": "json_object"})
    # "text" is the default format, and tool_choice "none" asks for no tools: both are honoured.
    plain = client.chat.completions.create(model="fix", messages=USER, response_format={"type": "text"},
                                           tools=[tool], tool_choice="none")
    assert plain.choices[0].message.content == script("fix", "")


def test_legacy_completions_whole_and_streamed(client: OpenAI) -> None:
    whole = client.completions.create(model="fix", prompt=["one", "two"], n=2)
    assert whole.object == "text_completion" and [c.index for c in whole.choices] == [0, 1, 2, 3]
    assert all(c.text == script("fix", "") for c in whole.choices)
    pieces = [c.choices[0].text for c in client.completions.create(model="fix", prompt="p", stream=True)
              if c.choices]
    assert "".join(pieces) == script("fix", "") and len(pieces) > 10
    with pytest.raises(BadRequestError, match="echo, suffix and best_of"):
        client.completions.create(model="fix", prompt="p", echo=True)


def test_a_runs_event_stream_carries_its_tokens(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        run_id = http.post("/v1/runs", json={"inputs": {"question": "long"}}).json()["run_id"]
        with http.stream("GET", f"/v1/runs/{run_id}/events", params={"tokens": "true"}) as events:
            frames = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: ")]
    tokens = [f for f in frames if f["event"] == "token"]
    assert tokens and {f["stage"] for f in tokens} <= {"generate", "fix"}
    assert all(f["run_id"] == run_id and f["request_id"].startswith(f"{run_id}.") for f in tokens)
    assert frames[-1]["event"] == "run_finished"
    # Token events go to live subscribers that ask for them only, not into the run's kept history.
    with httpx.Client(base_url=live.url, timeout=30) as http:
        with http.stream("GET", f"/v1/runs/{run_id}/events") as events:
            replayed = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: ")]
    assert replayed and not any(f["event"] == "token" for f in replayed)


def test_metrics_split_tokens_and_tpot_and_a_cancelled_run_is_no_slo_miss(client: OpenAI, live: LiveServer) -> None:
    client.chat.completions.create(model="fix", messages=USER)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        run_id = http.post("/v1/runs", json={"inputs": {"question": "long"}}).json()["run_id"]
        assert http.delete(f"/v1/runs/{run_id}").json()["status"] == "cancelled"
        assert http.get(f"/v1/runs/{run_id}").json()["slo_met"] is None
        text = http.get("/metrics").text
    assert 'cortex_runs_total{workflow="nl2sql",status="cancelled"}' in text
    assert 'cortex_stage_time_per_output_token_seconds_count{workflow="nl2sql",stage="fix"}' in text
    assert 'cortex_stage_queue_seconds_count{workflow="nl2sql",stage="fix"}' in text
    assert 'cortex_stage_ttft_seconds_count{workflow="nl2sql",stage="fix"}' in text
    for counter in ("cortex_stage_output_tokens_total", "cortex_stage_prompt_tokens_total"):
        line = next(line for line in text.splitlines()
                    if line.startswith(counter + '{workflow="nl2sql",stage="fix"}'))
        assert int(line.split()[-1]) > 0
