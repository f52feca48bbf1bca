"""A decode engine fed by prefill engines (runtime/engines/disaggregated.py), on stand-in engines that
record what they are asked; the real vLLM KV hand-over is tested in test_vllm_real.py (slow)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from runtime.engines.base import (
    DecodingConstraint, Engine, EngineError, EngineHealth, EngineMetrics, GenerationRequest, GenerationResult,
    GenerationTiming, TokenDelta, token_sink,
)
from runtime.engines.disaggregated import (
    KV_RETENTION_S, STORAGE_CONNECTOR, STORAGE_PATH_KEY, DisaggregatedEngine, PrefillGroup, kv_transfer_config,
    with_storage,
)


class Recording(Engine):
    """Answers ``text`` after ``delay_s``, streaming it word by word to the caller's sink; records requests."""

    label = "vllm-server"
    capabilities = frozenset({"stream", "abort", "logprobs", "constraint:regex"})

    def __init__(self, text: str = "one two three", *, delay_s: float = 0.0, fail: bool = False,
                 cached: int = 0) -> None:
        self.text, self.delay_s, self.fail, self.cached = text, delay_s, fail, cached
        self.requests: list[GenerationRequest] = []
        self.streamed: list[str] = []
        self.started = self.stopped = False
        self.ready = True

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        sink = token_sink()
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise EngineError("engine died")
        words = self.text.split()[:request.max_tokens]
        for w in words:
            self.streamed.append(w)
            if sink is not None:
                sink(TokenDelta(request_id=request.request_id, text=w + " "))
        text = " ".join(words) + " " if words else ""
        return GenerationResult(
            request_id=request.request_id, text=text, prompt_tokens=300, output_tokens=len(words),
            finish_reason="length", engine=self.label, cached_prompt_tokens=self.cached,
            timing=GenerationTiming(queue_s=0.001, ttft_s=self.delay_s, total_s=self.delay_s,
                                    prefill_s=self.delay_s / 2, decode_s=self.delay_s / 4))

    async def abort(self, request_id: str) -> bool:
        return False

    def metrics(self) -> EngineMetrics:
        return EngineMetrics(label=self.label, running=len(self.requests))

    async def health(self) -> EngineHealth:
        return EngineHealth(state="ready" if self.ready else "failed", detail="" if self.ready else "down")


def _request(**kw) -> GenerationRequest:  # type: ignore[no-untyped-def]
    return GenerationRequest(request_id="r1", prompt="schema ... question", max_tokens=3, stop=(";",), **kw)


def test_the_prompt_is_prefilled_on_a_prefill_engine_then_decoded_on_the_decode_engine() -> None:
    prefill, decode = Recording(delay_s=0.02, cached=128), Recording(delay_s=0.01, cached=256)
    engine = DisaggregatedEngine(decode, PrefillGroup([prefill], None))
    constraint = DecodingConstraint(kind="regex", spec="SELECT .*")
    result = asyncio.run(engine.generate(_request(constraint=constraint, temperature=0.7, logprobs=2)))
    (pre,), (dec,) = prefill.requests, decode.requests
    # the prefill runs the same prompt for one greedy token, without anything that shapes the output
    assert pre.prompt == dec.prompt and pre.max_tokens == 1 and pre.temperature == 0.0
    assert pre.constraint is None and pre.logprobs is None and pre.stop == ()
    assert pre.request_id == "r1-prefill"
    # the decode engine gets the request as sent
    assert dec.request_id == "r1" and dec.max_tokens == 3 and dec.constraint == constraint and dec.logprobs == 2
    assert result.text == "one two three " and result.output_tokens == 3
    t = result.timing
    assert t.queue_s == 0.001 and t.prefill_s == pytest.approx(0.01) and t.decode_s == pytest.approx(0.0025)
    assert t.ttft_s is not None and t.ttft_s >= 0.02 + 0.01 and t.total_s >= t.ttft_s
    assert result.cached_prompt_tokens == 128 and result.kv_received_tokens == 256


def test_only_the_decode_engines_tokens_reach_a_stream() -> None:
    prefill, decode = Recording("DISCARDED"), Recording("a b c")
    engine = DisaggregatedEngine(decode, PrefillGroup([prefill], None))

    async def body() -> list:
        return [item async for item in engine.stream(_request())]

    items = asyncio.run(body())
    deltas = [i.text for i in items if isinstance(i, TokenDelta)]
    assert "".join(deltas) == "a b c " and "DISCARDED" not in "".join(deltas)
    assert isinstance(items[-1], GenerationResult) and prefill.streamed == ["DISCARDED"]


def test_prefills_go_to_the_least_busy_engine_and_skip_a_failed_one() -> None:
    slow, fast = Recording(delay_s=0.05), Recording(delay_s=0.05)
    group = PrefillGroup([slow, fast], None)
    engines = [DisaggregatedEngine(Recording(), group) for _ in range(4)]

    async def body() -> None:
        await asyncio.gather(*(e.generate(_request()) for e in engines))

    asyncio.run(body())
    assert len(slow.requests) == 2 and len(fast.requests) == 2  # 4 concurrent prefills, spread evenly

    dead, alive = Recording(fail=True), Recording()
    engine = DisaggregatedEngine(Recording(), PrefillGroup([dead, alive], None))
    for _ in range(4):
        assert asyncio.run(engine.generate(_request())).text == "one two three "
    # the dead engine (never busy) took one call's first attempt, then was tried last while it backs off
    assert len(dead.requests) == 1 and len(alive.requests) == 4

    all_dead = DisaggregatedEngine(Recording(), PrefillGroup([Recording(fail=True), Recording(fail=True)], None))
    with pytest.raises(EngineError, match="every prefill engine failed"):
        asyncio.run(all_dead.generate(_request()))


def test_health_needs_the_decode_engine_and_one_prefill_engine() -> None:
    p1, p2, decode = Recording(), Recording(), Recording()
    engine = DisaggregatedEngine(decode, PrefillGroup([p1, p2], None))
    assert asyncio.run(engine.health()).ok
    p1.ready = False
    assert asyncio.run(engine.health()).ok
    p2.ready = False
    health = asyncio.run(engine.health())
    assert health.state == "failed" and "no prefill engine is ready" in health.detail
    p1.ready = p2.ready = True
    decode.ready = False
    assert asyncio.run(engine.health()).detail == "down"


def test_the_store_is_private_pruned_of_old_entries_and_removed_at_stop(tmp_path: Path) -> None:
    store = tmp_path / "kv"
    store.mkdir()
    old, new = store / "old", store / "new"
    old.mkdir()
    new.mkdir()
    (old / "layer0.safetensors").write_bytes(b"x")
    past = time.time() - KV_RETENTION_S - 5
    os.utime(old, (past, past))
    engines = [Recording()]
    group = PrefillGroup(engines, store)
    asyncio.run(group.start())
    assert engines[0].started
    group.prune()
    assert not old.exists() and new.exists()
    asyncio.run(group.stop())
    assert engines[0].stopped and not store.exists()


def test_the_connector_config_gets_the_groups_store_only_where_it_stores_files(tmp_path: Path) -> None:
    producer = kv_transfer_config("kv_producer")
    assert producer["kv_connector"] == STORAGE_CONNECTOR and producer["kv_load_failure_policy"] == "recompute"
    bound = with_storage(producer, tmp_path)
    assert bound is not None and bound["kv_connector_extra_config"][STORAGE_PATH_KEY] == str(tmp_path)
    assert producer["kv_connector_extra_config"] == {}  # not mutated
    other = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert with_storage(other, tmp_path) == other and with_storage(None, tmp_path) is None
