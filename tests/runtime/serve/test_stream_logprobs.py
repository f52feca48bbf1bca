"""Streaming with logprobs: each piece's chunk carries its tokens' log-probabilities, in OpenAI's
chunk schema (parsed here with the official client's own chunk models), chat and legacy completions."""

from __future__ import annotations

import asyncio
import json

from openai.types.completion_choice import Logprobs as LegacyLogprobs
from openai.types.chat import ChatCompletionChunk

from runtime.engines.base import GenerationResult, GenerationTiming, TokenDelta
from runtime.serve.openai_api import ChatCompletionIn, Completion, CompletionIn

TOKENS = ("SELECT", " 1")
ENTRIES = tuple({"token": t, "logprob": -0.5 * i, "bytes": list(t.encode()),
                 "top_logprobs": [{"token": t, "logprob": -0.5 * i, "bytes": list(t.encode())}]}
                for i, t in enumerate(TOKENS))


def _chunks(kind: str) -> list[dict]:
    async def body() -> list[bytes]:
        pieces: asyncio.Queue = asyncio.Queue()
        for token, entry in zip(TOKENS, ENTRIES):
            pieces.put_nowait((0, TokenDelta(request_id="r", text=token, logprobs=(entry,))))
        pieces.put_nowait((0, GenerationResult(
            request_id="r", text="".join(TOKENS), prompt_tokens=3, output_tokens=2, finish_reason="stop",
            timing=GenerationTiming(total_s=0.1), engine="vllm-inproc", logprobs=ENTRIES)))
        call = asyncio.get_running_loop().create_future()
        call.set_result(None)
        return [b async for b in Completion(kind, "m", "generate", None).stream([call], pieces, False)]

    events = asyncio.run(body())
    return [json.loads(e[len(b"data: "):]) for e in events if e.startswith(b"data: {")]


def test_chat_stream_chunks_carry_their_tokens_logprobs() -> None:
    chunks = [ChatCompletionChunk.model_validate(c) for c in _chunks("chat")]
    pieces = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert [c.choices[0].delta.content for c in pieces] == list(TOKENS)
    assert [e.token for c in pieces for e in c.choices[0].logprobs.content] == list(TOKENS)
    assert [e.logprob for c in pieces for e in c.choices[0].logprobs.content] == [0.0, -0.5]


def test_legacy_stream_chunks_carry_their_tokens_logprobs() -> None:
    # (the client's own Completion model wants a finish_reason on every chunk; vLLM's chunks have null too)
    pieces = [LegacyLogprobs.model_validate(c["choices"][0]["logprobs"]) for c in _chunks("text")
              if c["choices"][0]["text"]]
    assert [p.tokens for p in pieces] == [[t] for t in TOKENS]
    assert [p.token_logprobs for p in pieces] == [[0.0], [-0.5]]


def test_logprobs_with_stream_is_no_longer_refused() -> None:
    chat = ChatCompletionIn.model_validate({"model": "m", "messages": [{"role": "user", "content": "q"}],
                                            "stream": True, "logprobs": True, "top_logprobs": 1})
    legacy = CompletionIn.model_validate({"model": "m", "prompt": "q", "stream": True, "logprobs": 1})
    assert chat.unsupported() is None and chat.engine_options()["logprobs"] == 1
    assert legacy.unsupported() is None and legacy.engine_options()["logprobs"] == 1
