"""A request the engine refuses is that caller's 400, never a dead pool (a real server on 127.0.0.1).

Regressions: a 150 KB question on the simulated engine, and ``max_tokens: 4096`` against an
OpenAI-compatible endpoint answering HTTP 400, each used to take the only replica out of
rotation so that every later request got 503 until a restart.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from runtime.orchestrator import Orchestrator
from runtime.orchestrator.engines import engine_factory
from runtime.serve import create_app

from ..engines.fake_openai import fake_openai_server
from ..orchestrator.conftest import SPEEDUP, example_spec, scripted
from .live import LiveServer, live_server

QUESTION_150KB = "How many customers are there? " * 5_000


def good_sql(stage: str, prompt: str) -> str:
    return "SELECT COUNT(*) AS customers FROM customers;"


def chat(live: LiveServer, content: str, **fields: object) -> httpx.Response:
    return httpx.post(f"{live.url}/v1/chat/completions", headers={"X-Cortex-Stage": "generate"}, timeout=30,
                      json={"messages": [{"role": "user", "content": content}], **fields})


def still_serving(live: LiveServer) -> None:
    orch = live.app.state.orchestrator
    assert all(r.healthy for p in orch.pools_by_name.values() for r in p.replicas)
    assert httpx.get(f"{live.url}/readyz").status_code == 200
    r = httpx.post(f"{live.url}/v1/runs", json={"inputs": {"question": "How many customers?"}, "wait": True},
                   timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "done", r.text[:300]
    ok = chat(live, "How many customers?", max_tokens=16)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_a_150_kb_question_is_refused_and_the_pool_keeps_serving(sales_db_master: Path) -> None:
    assert len(QUESTION_150KB.encode()) >= 150_000
    orch = Orchestrator(example_spec("nl2sql", sales_db_master),
                        engine_factory("simulated", responder=scripted(good_sql), speedup=SPEEDUP))
    with live_server(create_app(orch)) as live:
        r = chat(live, QUESTION_150KB)
        assert r.status_code == 400 and "more than the model's context of 2048 tokens" in r.json()["error"]["message"]
        r = chat(live, "How many customers?", max_tokens=4096)
        assert r.status_code == 400 and "max_tokens (4096) exceeds the model's context" in r.json()["error"]["message"]
        run = httpx.post(f"{live.url}/v1/runs", json={"inputs": {"question": QUESTION_150KB}, "wait": True},
                         timeout=30).json()
        assert run["status"] == "error" and "stage 'generate'" in run["error"] and "context" in run["error"]
        still_serving(live)


def test_an_openai_endpoint_answering_400_fails_only_that_call(sales_db_master: Path) -> None:
    with fake_openai_server(max_model_len=1024, answer="SELECT COUNT(*) AS customers FROM customers;") as fake:
        orch = Orchestrator(example_spec("nl2sql", sales_db_master),
                            engine_factory("openai-remote", endpoints={"smollm2": fake.url}))
        with live_server(create_app(orch)) as live:
            # Over the declared context of 2048: refused here, before anything is sent.
            r = chat(live, "How many customers?", max_tokens=4096)
            assert r.status_code == 400 and "max_tokens (4096)" in r.json()["error"]["message"]
            assert not any(body["max_tokens"] == 4096 for body in fake.seen)
            # Within the declared context, but the endpoint's is smaller: its HTTP 400 is relayed.
            r = chat(live, "How many customers?", max_tokens=1500)
            assert r.status_code == 400, r.text
            message = r.json()["error"]["message"]
            assert "HTTP 400" in message and "maximum context length is 1024" in message
            assert fake.seen[-1]["max_tokens"] == 1500
            still_serving(live)
