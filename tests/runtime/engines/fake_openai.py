"""A tiny OpenAI-compatible endpoint on 127.0.0.1 that answers like vLLM: a test double of a remote server.

It counts ``CHARS_PER_TOKEN`` characters per token and, like vLLM, answers HTTP 400
with an ``error`` object when prompt + ``max_tokens`` exceed its ``max_model_len``;
otherwise it streams ``answer`` in OpenAI's chunk format with a usage chunk. Every
request body it received is kept in ``seen``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

CHARS_PER_TOKEN = 4


@dataclass
class FakeOpenAI:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)


def _app(fake: FakeOpenAI, max_model_len: int, answer: str) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        fake.seen.append(body)
        prompt = sum(len(m["content"]) for m in body["messages"]) // CHARS_PER_TOKEN
        if prompt + body["max_tokens"] > max_model_len:
            message = (f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                       f"{prompt + body['max_tokens']} tokens ({prompt} in the messages, {body['max_tokens']} "
                       "in the completion). Please reduce the length of the messages or completion.")
            return JSONResponse({"object": "error", "message": message, "type": "BadRequestError", "code": 400},
                                status_code=400)

        async def stream() -> AsyncIterator[str]:
            chunk = {"choices": [{"index": 0, "delta": {"content": answer}}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
            usage = {"prompt_tokens": prompt, "completion_tokens": len(answer) // CHARS_PER_TOKEN}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


@contextmanager
def fake_openai_server(max_model_len: int, answer: str = "SELECT 1;") -> Iterator[FakeOpenAI]:
    """Serve the fake endpoint on a free 127.0.0.1 port until the block ends."""
    from tests.runtime.serve.live import listening_socket

    sock = listening_socket()
    port = int(sock.getsockname()[1])
    fake = FakeOpenAI(f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(_app(fake, max_model_len, answer), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the fake OpenAI server did not start"
        time.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
