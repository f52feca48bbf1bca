"""The HTTP API on simulated engines: runs, SSE events, OpenAI-compatible chat, metrics, health, auth."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from runtime.serve import check_binding, create_app

from ..orchestrator.conftest import example_spec, run_async, sim_factory, started


async def client_for(spec, script, token=None, **kwargs):  # type: ignore[no-untyped-def]
    orch = await started(spec, sim_factory(script), **kwargs)
    app = create_app(orch, token=token, manage_lifecycle=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cortex")
    return orch, client


TOKEN = "a-test-token-of-32-characters!!!"


def sql_script(stage: str, prompt: str) -> str:
    return "SELECT COUNT(*) AS customers FROM customers;"


def test_start_a_run_poll_it_and_stream_its_events(sales_db: Path) -> None:
    async def body() -> None:
        orch, client = await client_for(example_spec("nl2sql", sales_db), sql_script)
        try:
            r = await client.post("/v1/runs", json={"inputs": {"question": "How many customers?"}})
            assert r.status_code == 202 and r.headers["location"].startswith("/v1/runs/")
            run_id = r.json()["run_id"]
            events = await client.get(f"/v1/runs/{run_id}/events")
            assert events.headers["content-type"].startswith("text/event-stream")
            frames = [f for f in events.text.split("\n\n") if f.strip()]
            kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
            assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
            last = json.loads(frames[-1].split("\n")[1].removeprefix("data: "))
            assert last["status"] == "done" and last["run_id"] == run_id
            status = (await client.get(f"/v1/runs/{run_id}")).json()
            con = sqlite3.connect(sales_db)
            expected = con.execute("SELECT COUNT(*) FROM customers").fetchone()[0]
            con.close()
            assert status["status"] == "done" and status["output"]["columns"] == ["customers"]
            assert status["output"]["rows"] == [[expected]]
            assert status["engines"] == ["simulated"]
            waited = await client.post("/v1/runs", json={"inputs": {"question": "again"}, "wait": True})
            assert waited.status_code == 200 and waited.json()["status"] == "done"
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_bad_requests_are_clear(sales_db: Path) -> None:
    async def body() -> None:
        orch, client = await client_for(example_spec("nl2sql", sales_db), sql_script)
        try:
            r = await client.post("/v1/runs", json={"inputs": {"q": 1}})
            assert r.status_code == 400 and "needs input(s) question" in r.json()["error"]
            r = await client.post("/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
            r = await client.get("/v1/runs/nope")
            assert r.status_code == 404 and r.json()["retryable"] is False
            r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 400 and "X-Cortex-Stage" in r.json()["error"]["message"]
            r = await client.post("/v1/chat/completions", headers={"X-Cortex-Stage": "execute"},
                                  json={"messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 400 and "no LLM stage 'execute'" in r.json()["error"]["message"]
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_openai_compatible_chat_is_scheduled_as_the_named_stage(sales_db: Path) -> None:
    async def body() -> None:
        orch, client = await client_for(example_spec("nl2sql", sales_db), lambda s, p: f"answer from {s}")
        try:
            r = await client.post("/v1/chat/completions",
                                  headers={"X-Cortex-Stage": "fix", "X-Cortex-Run": "agent-7"},
                                  json={"model": "smollm2", "max_tokens": 16,
                                        "messages": [{"role": "user", "content": "fix this SQL"}]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"] == "answer from fix"
            assert body["usage"]["completion_tokens"] > 0 and body["cortex"]["engine"] == "simulated"
            r = await client.post("/v1/chat/completions",
                                  json={"metadata": {"cortex_stage": "generate", "cortex_run": "agent-7"},
                                        "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]})
            assert r.status_code == 200
            run = (await client.get("/v1/runs/agent-7")).json()
            assert [c["stage"] for c in run["calls"]] == ["fix", "generate"]
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_stream_true_answers_with_openai_chunks(sales_db: Path) -> None:
    async def body() -> None:
        orch, client = await client_for(example_spec("nl2sql", sales_db), lambda s, p: f"answer from {s}")
        try:
            r = await client.post("/v1/chat/completions", headers={"X-Cortex-Stage": "fix"},
                                  json={"stream": True, "stream_options": {"include_usage": True},
                                        "messages": [{"role": "user", "content": "fix this SQL"}]})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
            assert len({c["id"] for c in chunks}) == 1
            assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # sent at once
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            assert text == "answer from fix"
            # The role chunk, one chunk per simulated token (4 characters) as generated, then the finish.
            finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
            assert finishes == [None] * (1 + len("answer from fix") // 4 + 1) + ["stop"]
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
            assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI's, with include_usage
            # Without include_usage: no usage chunk; errors before the answer stay plain JSON errors.
            r = await client.post("/v1/chat/completions", headers={"X-Cortex-Stage": "fix"},
                                  json={"stream": True, "messages": [{"role": "user", "content": "x"}]})
            assert all("usage" not in json.loads(line[6:]) for line in r.text.splitlines()
                       if line.startswith("data: {"))
            r = await client.post("/v1/chat/completions", headers={"X-Cortex-Stage": "execute"},
                                  json={"stream": True, "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 400 and "no LLM stage 'execute'" in r.json()["error"]["message"]
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_a_slow_streamed_call_sends_its_first_byte_and_keepalives_at_once(sales_db: Path, monkeypatch) -> None:
    from runtime.serve import openai_api

    monkeypatch.setattr(openai_api, "STREAM_KEEPALIVE_S", 0.01)

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(lambda s, p: "x " * 40, speedup=1.0))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(orch, manage_lifecycle=False)),
                                   base_url="http://cortex")
        try:
            r = await client.post("/v1/chat/completions", headers={"X-Cortex-Stage": "fix"},
                                  json={"stream": True, "messages": [{"role": "user", "content": "x"}]})
            lines = [line for line in r.text.splitlines() if line]
            assert lines[0].startswith("data: ") and '"role": "assistant"' in lines[0]
            assert any(line.startswith(": ") for line in lines)  # comments while the engine works
            assert lines[-1] == "data: [DONE]"
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_overload_is_429_with_retry_after(sales_db: Path) -> None:
    async def body() -> None:
        spec = example_spec("nl2sql", sales_db, max_active_runs=2)
        orch, client = await client_for(spec, lambda s, p: "SELECT 1 -- " + "pad " * 200)
        try:
            codes = [(await client.post("/v1/runs", json={"inputs": {"question": f"q{i}"}})) for i in range(4)]
            assert [c.status_code for c in codes].count(202) == 2
            rejected = [c for c in codes if c.status_code == 429]
            assert rejected and rejected[0].json()["retryable"] is True and int(rejected[0].headers["retry-after"]) >= 1
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_metrics_health_and_readiness(sales_db: Path) -> None:
    async def body() -> None:
        orch, client = await client_for(example_spec("nl2sql", sales_db), sql_script)
        try:
            await client.post("/v1/runs", json={"inputs": {"question": "q"}, "wait": True})
            metrics = await client.get("/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            assert 'cortex_runs_total{workflow="nl2sql",status="done"} 1' in metrics.text
            assert "cortex_pool_queue_depth" in metrics.text and "cortex_replica_kv_cache_usage" in metrics.text
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert (await client.get("/readyz")).status_code == 200
            await orch.pools_by_name["fix"].replicas[0].engine.stop()
            orch.pools_by_name["fix"].fail_replica(orch.pools_by_name["fix"].replicas[0], "stopped by the test")
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "fix-0" in ready.json()["unhealthy"][0]
            workflows = (await client.get("/v1/workflows")).json()
            assert workflows["nl2sql"]["inputs"] == ["question"]
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_api_token_guards_everything_but_health(sales_db: Path) -> None:
    async def body() -> None:
        orch, client = await client_for(example_spec("nl2sql", sales_db), sql_script, token=TOKEN)
        try:
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/healthz")).status_code == 200
            ok = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
            wrong = await client.get("/v1/workflows", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        finally:
            await client.aclose()
            await orch.stop()

    run_async(body())


def test_binding_beyond_localhost_needs_a_token() -> None:
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", TOKEN)
    with pytest.raises(ValueError, match="--token"):
        check_binding("0.0.0.0", None)
