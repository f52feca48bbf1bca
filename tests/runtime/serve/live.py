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


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket already bound to a free port and listening, for an in-process server.

    Handing uvicorn the bound socket (``serve(sockets=[...])``) closes the race of probing a free port:
    between probing a port and binding it, a vLLM engine started by the same test can take it
    (a CI run failed on exactly that, ``address already in use``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


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
def live_server(app: FastAPI, *, host: str = "127.0.0.1", start_timeout_s: float = 300.0,
                **config: Any) -> Iterator[LiveServer]:
    """Serve ``app`` on ``host`` (127.0.0.1 by default) until the block ends; ``config`` goes to server_config.

    The server counts as started once the app's lifespan has run, which starts the orchestrator's
    engines: a real vLLM engine takes ~20 s on an idle 2-core machine and more when it is busy
    (a 30 s bound failed a run), hence the generous ``start_timeout_s``.
    """
    sock = listening_socket(host)
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(server_config(app, host, port, **config))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server stopped while starting (see the thread's exception above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start in {start_timeout_s:.0f} s")
        time.sleep(0.01)
    try:
        yield LiveServer(app, port, server, loop)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        loop.close()
        sock.close()
