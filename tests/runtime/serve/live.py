"""A real uvicorn server on 127.0.0.1 (a free port) in a background thread, for end-to-end API tests.

The server runs with :func:`runtime.serve.server_config` (the hardened protocol and limits
``cortex serve`` uses) and its own event loop; the app's lifespan starts and stops the
orchestrator on that loop. Tests talk to it over real sockets (httpx or raw).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from runtime.serve import server_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """Handle of a running server: its base URL and, for inspection, its event loop."""

    def __init__(self, app: FastAPI, port: int, server: uvicorn.Server, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = server
        self.loop = loop

    def call(self, coro: Any, timeout_s: float = 30.0) -> Any:
        """Run ``coro`` on the server's loop (e.g. to inspect or poke the orchestrator) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)


@contextmanager
def live_server(app: FastAPI, *, host: str = "127.0.0.1", **config: Any) -> Iterator[LiveServer]:
    """Serve ``app`` on ``host`` (127.0.0.1 by default) until the block ends; ``config`` goes to server_config."""
    port = free_port()
    server = uvicorn.Server(server_config(app, host, port, **config))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(app, port, server, loop)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        loop.close()
