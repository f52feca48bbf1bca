"""The simulated engine: continuous batching, priorities, KV pressure, prefix cache, abort."""

from __future__ import annotations

import asyncio

import pytest

from planner.profiles import LatencyProfile, get_profile
from runtime.engines.base import (
    ChatMessage, Engine, EngineError, EngineNotRunning, EngineSpec, GenerationRequest, GenerationResult,
    RequestRejected, TokenDelta,
)
from runtime.engines.factory import make_engine
from runtime.engines.simulated import CHARS_PER_TOKEN, SimulatedEngine, count_tokens

pytestmark = pytest.mark.anyio

# Millisecond iterations keep the tests quick without scaling the clock.
FAST = LatencyProfile(
    model="test", device="CPU", tp=1, prefill_per_token_s=1e-5, prefill_fixed_s=1e-3,
    decode_fixed_s=1e-3, decode_per_seq_s=1e-5, decode_per_kv_token_s=0.0,
    device_memory_bytes=1 << 30, memory_utilization=1.0, kv_cache_bytes=None, sources=(),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def engine(**kwargs: object) -> SimulatedEngine:
    options: dict[str, object] = {"kv_capacity_tokens": 4096, "default_output_tokens": 8}
    options.update(kwargs)
    return SimulatedEngine(FAST, **options)  # type: ignore[arg-type]


async def test_result_is_labelled_and_deterministic() -> None:
    async with engine() as eng:
        first = await eng.generate(GenerationRequest(prompt="How many orders?"))
        second = await eng.generate(GenerationRequest(prompt="How many orders?"))
    assert first.engine == "simulated" and eng.metrics().label == "simulated"
    assert first.text == second.text and first.text
    assert first.output_tokens == 8 and first.finish_reason == "stop"
    assert first.prompt_tokens == count_tokens("How many orders?")
    assert first.timing.ttft_s is not None and 0 <= first.timing.ttft_s <= first.timing.total_s


async def test_chat_prompt_counts_every_message() -> None:
    messages = (ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi"))
    async with engine() as eng:
        result = await eng.generate(GenerationRequest(prompt=messages))
    assert result.prompt_tokens == count_tokens("system: Be brief.\nuser: Hi\n")


async def test_max_tokens_and_stop_strings() -> None:
    answer = "SELECT region FROM sales; -- and then some rambling"
    async with engine(responder=lambda request: answer) as eng:
        cut = await eng.generate(GenerationRequest(prompt="q", stop=(";",)))
        short = await eng.generate(GenerationRequest(prompt="q", max_tokens=2))
    assert cut.text == "SELECT region FROM sales" and cut.finish_reason == "stop"
    assert short.finish_reason == "length" and short.output_tokens == 2
    assert short.text == answer[: 2 * CHARS_PER_TOKEN]


async def test_lower_priority_value_is_served_first() -> None:
    async with engine(max_num_seqs=1) as eng:
        blocker = asyncio.create_task(eng.generate(GenerationRequest(prompt="first", priority=0)))
        await asyncio.sleep(0)  # let the blocker be admitted before the others queue
        order: list[str] = []

        async def run(name: str, priority: int) -> None:
            await eng.generate(GenerationRequest(prompt=name, priority=priority))
            order.append(name)

        await asyncio.gather(run("low", 5), run("high", 1), run("mid", 3), blocker)
    assert order == ["high", "mid", "low"]


async def test_batching_respects_max_num_seqs() -> None:
    async with engine(max_num_seqs=4) as eng:
        tasks = [asyncio.create_task(eng.generate(GenerationRequest(prompt=f"q{i}"))) for i in range(10)]
        await asyncio.sleep(0.005)
        snapshot = eng.metrics()
        results = await asyncio.gather(*tasks)
    assert snapshot.running <= 4 and snapshot.running + snapshot.waiting == 10
    assert all(r.output_tokens == 8 for r in results)
    assert eng.metrics().requests_finished == 10


async def test_kv_pressure_preempts_and_still_finishes() -> None:
    # 6 sequences of 16 prompt + 64 output tokens need 30 blocks of 16; only 12 exist.
    async with engine(kv_capacity_tokens=192, block_size=16, default_output_tokens=64) as eng:
        results = await asyncio.gather(*(eng.generate(GenerationRequest(prompt="x" * 64 + str(i))) for i in range(6)))
        metrics = eng.metrics()
    assert all(r.output_tokens == 64 and r.finish_reason == "stop" for r in results)
    assert metrics.preemptions > 0
    assert metrics.kv_cache_usage == 0.0


async def test_prefix_cache_skips_shared_blocks() -> None:
    shared = "You translate questions into SQL for the sales schema. " * 20
    async with engine() as eng:
        cold = await eng.generate(GenerationRequest(prompt=shared + "Q1"))
        warm = await eng.generate(GenerationRequest(prompt=shared + "Q2"))
        rate = eng.metrics().prefix_cache_hit_rate
    assert cold.cached_prompt_tokens == 0
    assert warm.cached_prompt_tokens is not None and warm.cached_prompt_tokens >= count_tokens(shared) - 16
    assert rate is not None and 0 < rate < 1


async def test_abort_returns_partial_text() -> None:
    async with engine(default_output_tokens=10_000, kv_capacity_tokens=1 << 16) as eng:
        request = GenerationRequest(prompt="long", max_tokens=10_000)
        task = asyncio.create_task(eng.generate(request))
        while eng.metrics().generation_tokens_total < 3:
            await asyncio.sleep(0.002)
        assert await eng.abort(request.request_id)
        result = await task
        assert not await eng.abort(request.request_id)
    assert result.finish_reason == "abort"
    assert 0 < result.output_tokens < 10_000
    assert len(result.text) == result.output_tokens * CHARS_PER_TOKEN


async def test_cancelling_generate_frees_the_request() -> None:
    async with engine(default_output_tokens=10_000, kv_capacity_tokens=1 << 16) as eng:
        task = asyncio.create_task(eng.generate(GenerationRequest(prompt="long", max_tokens=10_000)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.005)
        metrics = eng.metrics()
    assert metrics.running == 0 and metrics.waiting == 0 and metrics.kv_cache_usage == 0.0


async def test_errors_before_start_and_for_oversized_prompts() -> None:
    eng = engine(kv_capacity_tokens=64)
    with pytest.raises(EngineNotRunning):
        await eng.generate(GenerationRequest(prompt="x"))
    async with eng:
        # A prompt that can never fit is the request's fault, not the engine's: RequestRejected
        # (not an EngineError, which would take the replica out of rotation).
        with pytest.raises(RequestRejected, match="does not fit") as caught:
            await eng.generate(GenerationRequest(prompt="x" * 1000))
        assert not isinstance(caught.value, EngineError)
        assert (await eng.health()).ok
        assert (await eng.generate(GenerationRequest(prompt="x", max_tokens=4))).finish_reason != "abort"
    assert (await eng.health()).state == "stopped"


async def test_prompt_plus_max_tokens_is_checked_against_the_context_before_queueing() -> None:
    eng = engine(kv_capacity_tokens=1 << 16, max_context=100)
    async with eng:
        with pytest.raises(RequestRejected, match="prompt is 1000 tokens long, more than the model's context of 100"):
            await eng.generate(GenerationRequest(prompt="x" * 4000, max_tokens=8))
        with pytest.raises(RequestRejected, match=r"plus max_tokens \(4096\) exceeds .* at most 90"):
            await eng.generate(GenerationRequest(prompt="x" * 40, max_tokens=4096))
        assert eng.metrics().waiting == 0 and eng.metrics().running == 0  # nothing was queued
        fits = await eng.generate(GenerationRequest(prompt="x" * 40, max_tokens=90))
        assert fits.finish_reason in ("stop", "length") and (await eng.health()).ok


async def test_factory_builds_from_the_cpu_profile() -> None:
    profile = get_profile("smollm2-135m", "CPU")
    spec = EngineSpec(model="unused", kv_cache_bytes=1 << 20, max_num_seqs=8)
    eng = make_engine("simulated", spec, profile=profile, kv_bytes_per_token=2048, speedup=1000.0)
    assert isinstance(eng, SimulatedEngine) and eng.total_blocks * eng.block_size == 512
    async with eng:
        result = await eng.generate(GenerationRequest(prompt="hello", max_tokens=4))
    # Reported timings are in model seconds: at least the profile's prefill + 3 decode steps.
    expected = profile.prefill_s(result.prompt_tokens) + 3 * profile.decode_step_s(1, 0)
    assert result.timing.total_s >= expected * 0.99


async def test_stream_yields_each_token_on_its_iteration_then_the_result() -> None:
    loop = asyncio.get_running_loop()
    async with engine(default_output_tokens=6) as eng:
        arrivals, items = [], []
        async for item in eng.stream(GenerationRequest(prompt="q", seed=3)):
            arrivals.append(loop.time())
            items.append(item)
        *deltas, result = items
        assert isinstance(result, GenerationResult) and len(deltas) == 6
        assert all(isinstance(d, TokenDelta) and len(d.text) == CHARS_PER_TOKEN for d in deltas)
        assert "".join(d.text for d in deltas) == result.text
        assert arrivals[1] > arrivals[0]  # one decode iteration apart, not all at the end

        stream = eng.stream(GenerationRequest(prompt="long", max_tokens=200))
        async for _ in stream:
            break
        await stream.aclose()  # closing early aborts the request in the engine
        assert eng.metrics().running == 0 and not eng._by_id


async def test_features_it_cannot_honour_are_refused_not_ignored() -> None:
    async with engine() as eng:
        for options in ({"response_format": {"type": "json_object"}}, {"logprobs": 0},
                        {"tools": ({"type": "function", "function": {"name": "f"}},)}):
            with pytest.raises(RequestRejected, match="simulated engine cannot honour"):
                await eng.generate(GenerationRequest(prompt="q", **options))


async def test_an_engine_that_does_not_stream_yields_its_whole_text_once() -> None:
    class Whole(Engine):
        label = "simulated"

        async def start(self) -> None: ...
        async def stop(self) -> None: ...
        async def abort(self, request_id: str) -> bool: return False
        def metrics(self): ...  # type: ignore[no-untyped-def]
        async def health(self): ...  # type: ignore[no-untyped-def]

        async def generate(self, request: GenerationRequest) -> GenerationResult:
            from runtime.engines.base import GenerationTiming
            return GenerationResult(request_id=request.request_id, text="all at once", prompt_tokens=1,
                                    output_tokens=3, finish_reason="stop", timing=GenerationTiming(total_s=0.0),
                                    engine="simulated")

    items = [item async for item in Whole().stream(GenerationRequest(prompt="q"))]
    assert [type(i) for i in items] == [TokenDelta, GenerationResult]
    assert items[0].text == "all at once" and items[0].tokens == 3
