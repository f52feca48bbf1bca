"""The OpenAI-compatible client against a small streaming server run with uvicorn on 127.0.0.1.

The server follows the OpenAI streaming format (SSE ``data:`` chunks, a final
``usage`` chunk, ``[DONE]``) and serves Prometheus text in vLLM's metric names.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from runtime.engines.base import (ChatMessage, DecodingConstraint, EngineError, GenerationRequest, RequestRejected,
                                  TokenDelta)
from runtime.engines.openai_remote import OpenAIRemoteEngine, metrics_from_prometheus, parse_prometheus
from tests.runtime.serve.live import listening_socket

pytestmark = pytest.mark.anyio

METRICS = """# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 400.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0
vllm:num_preemptions_total{engine="0",model_name="m"} 1.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 5.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0
"""


def build_app(seen: list[dict[str, Any]], disconnected: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return METRICS

    async def stream(body: dict[str, Any], chat: bool) -> AsyncIterator[str]:
        words = ["SELECT ", "1 ", "FROM ", "t", ";", " extra"] if body["max_tokens"] < 100 else ["w "] * 10_000
        sent, reason = 0, "length"
        if chat and body.get("tools"):  # a tool call, streamed as OpenAI does: id and name once, arguments in parts
            name = body["tools"][0]["function"]["name"]
            first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}
            for piece in (first, {"index": 0, "function": {"arguments": '{"q": '}},
                          {"index": 0, "function": {"arguments": '1}'}}):
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'tool_calls': [piece]}}]})}\n\n"
            words, reason = [], "tool_calls"
        try:
            for word in words:
                if word.strip() in body.get("stop", []):
                    reason = "stop"
                    break
                if sent == body["max_tokens"]:
                    break
                choice = {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
                if chat and body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": word, "logprob": -0.5, "bytes": list(word.encode()),
                                                       "top_logprobs": []}]}
                yield f"data: {json.dumps({'choices': [choice]})}\n\n"
                sent += 1
                await asyncio.sleep(0.002)
        except (asyncio.CancelledError, GeneratorExit):  # the client went away mid-stream
            disconnected.append(body.get("request_id", "?"))
            raise
        final = {"index": 0, "finish_reason": reason, **({"delta": {}} if chat else {"text": ""})}
        yield f"data: {json.dumps({'choices': [final]})}\n\n"
        usage = {"prompt_tokens": 7, "completion_tokens": sent, "prompt_tokens_details": {"cached_tokens": 4}}
        # vLLM's per-request timings (--enable-per-request-metrics) ride on the usage chunk; a text
        # prompt gets them, a chat one does not (as from a server without the option).
        metrics = {} if chat else {"metrics": {"queue_time_ms": 1.5, "time_to_first_token_ms": 20.0,
                                               "generation_time_ms": 300.0, "mean_itl_ms": 100.0}}
        yield f"data: {json.dumps({'choices': [], 'usage': usage, **metrics})}\n\n"
        yield "data: [DONE]\n\n"

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        seen.append(body)
        return StreamingResponse(stream(body, True), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        seen.append(body)
        if body["prompt"] == "bad":
            return StreamingResponse(iter(["nope"]), status_code=400)
        if body["prompt"] == "boom":
            return StreamingResponse(iter(["internal error " * 1000]), status_code=500)
        return StreamingResponse(stream(body, False), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict[str, Any]], list[str]]]:
    seen: list[dict[str, Any]] = []
    disconnected: list[str] = []
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(seen, disconnected), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", seen, disconnected
    srv.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_prometheus_parsing_sums_label_sets() -> None:
    samples = parse_prometheus(METRICS)
    assert samples["vllm:request_success_total"] == 7.0
    metrics = metrics_from_prometheus("vllm-server", samples)
    assert metrics.kv_cache_usage == 0.25 and metrics.running == 3 and metrics.waiting == 2
    assert metrics.prefix_cache_hit_rate == 0.25 and metrics.preemptions == 1 and metrics.requests_finished == 7


async def test_chat_stream_with_stop_usage_and_metrics(server: tuple[str, list, list]) -> None:
    url, seen, _ = server
    async with OpenAIRemoteEngine(url + "/v1", "m", metrics_interval_s=0.05) as eng:
        request = GenerationRequest(prompt=(ChatMessage(role="user", content="q"),), max_tokens=20, stop=(";",))
        result = await eng.generate(request)
        metrics = await eng.refresh_metrics()
    assert result.text == "SELECT 1 FROM t" and result.finish_reason == "stop"
    assert (result.prompt_tokens, result.output_tokens, result.cached_prompt_tokens) == (7, 4, 4)
    assert result.engine == "openai-remote" and result.timing.ttft_s is not None
    assert (result.timing.queue_s, result.timing.prefill_s, result.timing.decode_s) == (None, None, None)
    assert seen[-1]["messages"] == [{"role": "user", "content": "q"}] and seen[-1]["stop"] == [";"]
    assert "priority" not in seen[-1]  # plain OpenAI servers may reject unknown fields
    assert metrics.label == "openai-remote" and metrics.running == 3


async def test_text_prompt_length_and_vllm_extensions(server: tuple[str, list, list]) -> None:
    url, seen, _ = server
    async with OpenAIRemoteEngine(url, "m", vllm_extensions=True) as eng:
        result = await eng.generate(GenerationRequest(request_id="r-1", prompt="p", max_tokens=2, priority=4))
    assert result.text == "SELECT 1 " and result.finish_reason == "length"
    # vLLM's own clock, from its per-request metrics: queue, prefill (scheduled -> first token), decode.
    assert (result.timing.queue_s, result.timing.prefill_s, result.timing.decode_s) == (0.0015, 0.02, 0.3)
    assert seen[-1]["prompt"] == "p" and seen[-1]["priority"] == 4 and seen[-1]["request_id"] == "r-1"


async def test_abort_closes_the_stream(server: tuple[str, list, list]) -> None:
    url, _, disconnected = server
    async with OpenAIRemoteEngine(url, "m", vllm_extensions=True) as eng:
        request = GenerationRequest(request_id="long-1", prompt="p", max_tokens=5000)
        task = asyncio.create_task(eng.generate(request))
        await asyncio.sleep(0.2)
        assert await eng.abort("long-1")
        result = await task
        cancelled = asyncio.create_task(eng.generate(GenerationRequest(request_id="long-2", prompt="p", max_tokens=5000)))
        await asyncio.sleep(0.2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    assert result.finish_reason == "abort" and 0 < result.output_tokens < 5000
    deadline = time.monotonic() + 5
    while not {"long-1", "long-2"} <= set(disconnected) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert {"long-1", "long-2"} <= set(disconnected)


async def test_http_errors_and_unreachable_servers(server: tuple[str, list, list]) -> None:
    url, seen, _ = server
    async with OpenAIRemoteEngine(url, "m", max_context=64) as eng:
        # A 4xx blames the request (the replica stays usable); a 5xx is the endpoint failing.
        with pytest.raises(RequestRejected, match="HTTP 400") as rejected:
            await eng.generate(GenerationRequest(prompt="bad", max_tokens=8))
        assert not isinstance(rejected.value, EngineError)
        with pytest.raises(EngineError, match="HTTP 500") as failed:
            await eng.generate(GenerationRequest(prompt="boom", max_tokens=8))
        assert len(str(failed.value)) < 700  # the error body is read up to a bound, not whole
        # Refused before sending: even estimated from below, the prompt cannot fit the context.
        sent = len(seen)
        with pytest.raises(RequestRejected, match="at least 100 tokens"):
            await eng.generate(GenerationRequest(prompt="x" * 800, max_tokens=4))
        with pytest.raises(RequestRejected, match=r"max_tokens \(4096\)"):
            await eng.generate(GenerationRequest(prompt="p", max_tokens=4096))
        assert len(seen) == sent
        assert (await eng.generate(GenerationRequest(prompt="p", max_tokens=2))).text == "SELECT 1 "
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with pytest.raises(EngineError, match="not serving"):
        await OpenAIRemoteEngine(f"http://127.0.0.1:{dead}", "m").start()


def test_cpu_list_parsing_for_process_pinning() -> None:
    from runtime.engines.vllm_server import parse_cpu_list

    assert parse_cpu_list("0") == {0}
    assert parse_cpu_list("0-1") == {0, 1}
    assert parse_cpu_list("0,2-3") == {0, 2, 3}
    assert parse_cpu_list("auto") is None and parse_cpu_list(None) is None


@pytest.mark.anyio
async def test_deltas_stream_as_chunks_arrive_and_options_pass_through(server) -> None:  # type: ignore[no-untyped-def]
    url, seen, _ = server
    async with OpenAIRemoteEngine(url, "m") as engine:
        items = [item async for item in engine.stream(GenerationRequest(
            prompt=(ChatMessage(role="user", content="q"),), max_tokens=50, seed=7, logprobs=2,
            response_format={"type": "json_object"}))]
        deltas, result = items[:-1], items[-1]
        assert [d.text for d in deltas] == ["SELECT ", "1 ", "FROM ", "t", ";", " extra"]
        assert all(isinstance(d, TokenDelta) for d in deltas) and result.text == "".join(d.text for d in deltas)
        assert seen[-1]["seed"] == 7 and seen[-1]["response_format"] == {"type": "json_object"}
        assert seen[-1]["logprobs"] is True and seen[-1]["top_logprobs"] == 2
        assert [e["token"] for e in result.logprobs] == [d.text for d in deltas]
        assert [e for d in deltas for e in d.logprobs] == list(result.logprobs)  # streamed with their tokens

        tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        called = await engine.generate(GenerationRequest(prompt=(ChatMessage(role="user", content="q"),),
                                                         max_tokens=50, tools=(tool,), tool_choice="required"))
        assert seen[-1]["tools"] == [tool] and seen[-1]["tool_choice"] == "required"
        assert called.tool_calls == ({"id": "call_1", "type": "function",
                                      "function": {"name": "lookup", "arguments": '{"q": 1}'}},)


@pytest.mark.anyio
async def test_output_constraints_go_as_vllm_structured_outputs_or_a_strict_json_schema(server) -> None:  # type: ignore[no-untyped-def]
    url, seen, _ = server
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    as_json = DecodingConstraint(kind="json", spec=json.dumps(schema))
    as_regex = DecodingConstraint(kind="regex", spec="SELECT [0-9]+", source="regex")
    prompt = (ChatMessage(role="user", content="q"),)
    async with OpenAIRemoteEngine(url, "m", vllm_extensions=True) as vllm:
        result = await vllm.generate(GenerationRequest(prompt=prompt, max_tokens=5, constraint=as_regex))
        assert seen[-1]["structured_outputs"] == {"regex": "SELECT [0-9]+"} and "response_format" not in seen[-1]
        assert result.constraint == "enforced"
        await vllm.generate(GenerationRequest(prompt=prompt, max_tokens=5, constraint=as_json))
        assert seen[-1]["structured_outputs"] == {"json": schema}
        with pytest.raises(RequestRejected, match="declares an output constraint"):
            await vllm.generate(GenerationRequest(prompt=prompt, max_tokens=5, constraint=as_json,
                                                  response_format={"type": "json_object"}))
    async with OpenAIRemoteEngine(url, "m") as plain:  # any OpenAI-compatible server: a strict json_schema only
        await plain.generate(GenerationRequest(prompt=prompt, max_tokens=5, constraint=as_json))
        assert seen[-1]["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "output", "schema": schema, "strict": True}} and "structured_outputs" not in seen[-1]
        with pytest.raises(EngineError, match="cannot honour constraint:regex"):
            plain.require({as_regex.capability}, "stage s")


def test_vllm_server_asks_for_the_recorded_fields_only_where_its_vllm_has_them(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The server runs with the options that put cached tokens and vLLM's per-request times into each
    response when the installed vLLM declares them (read from its source, not imported), else without."""
    import importlib.util
    import types

    from runtime.engines import vllm_server
    from runtime.engines.base import EngineSpec

    spec = EngineSpec(model="m", served_model_name="m", max_model_len=512)
    argv = vllm_server.server_argv(spec, on_cpu=True, host="h", port=1, recording=vllm_server.RECORDING_OPTIONS)
    assert "--enable-prompt-tokens-details" in argv and "--enable-per-request-metrics" in argv
    assert "--enable-per-request-metrics" not in vllm_server.server_argv(spec, on_cpu=True, host="h", port=1)

    launchers = tmp_path / "entrypoints" / "launchers"
    launchers.mkdir(parents=True)
    (launchers / "cli_args.py").write_text("class FrontendArgs:\n    enable_prompt_tokens_details: bool = False\n")
    fake = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake if name == "vllm" else None)
    vllm_server.supported_recording_options.cache_clear()
    try:
        assert vllm_server.supported_recording_options() == ("enable_prompt_tokens_details",)
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
        vllm_server.supported_recording_options.cache_clear()
        assert vllm_server.supported_recording_options() == ()
    finally:
        vllm_server.supported_recording_options.cache_clear()


_TINY_SERVER = """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Health).serve_forever()
"""


async def test_a_vllm_server_whose_probed_port_was_taken_starts_on_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The port probe races the child's bind: a start that loses the race is retried once."""
    from runtime.engines import vllm_server
    from runtime.engines.base import EngineSpec

    taken = listening_socket()
    ports = iter([taken.getsockname()[1], vllm_server.free_port()])
    monkeypatch.setattr(vllm_server, "free_port", lambda host="127.0.0.1": next(ports))
    monkeypatch.setattr(vllm_server, "is_cpu_platform", lambda: False)
    monkeypatch.setattr(vllm_server, "supported_recording_options", lambda: ())
    monkeypatch.setattr(vllm_server, "server_argv",
                        lambda spec, *, on_cpu, host, port, recording: [sys.executable, "-c", _TINY_SERVER, host, str(port)])
    engine = vllm_server.VllmServerEngine(EngineSpec(model="m", max_model_len=64), startup_timeout_s=30)
    try:
        await engine.start()
        assert int(engine.base_url.rsplit(":", 1)[1]) != taken.getsockname()[1]
        assert (await engine.health()).ok
    finally:
        await engine.stop()
        taken.close()
