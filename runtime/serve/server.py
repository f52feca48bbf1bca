"""Running the API with uvicorn, bounded against slow, oversized and misdirected clients.

:func:`serve` checks the binding and the token (:func:`check_binding`), tells the
app's guard which host names the bind address answers to (:func:`allowed_hosts_for`)
and runs uvicorn with :func:`server_config`:

* the h11 parser (pure Python, whose header limit is enforced; httptools has none)
  with request headers limited to :data:`MAX_HEADER_BYTES` (431 beyond);
* :class:`GuardedH11Protocol`: a connection that has no request in the app must
  complete one request's headers within :data:`HEADER_TIMEOUT_S` or is closed,
  however slowly it trickles bytes (uvicorn's keep-alive timer restarts on every
  byte); protocol errors are answered with JSON like every other error;
* idle keep-alive connections closed after :data:`KEEP_ALIVE_S`; no WebSockets.

The body limits and deadline live in the app (:mod:`runtime.serve.guard`).
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import json
from typing import Any

import h11
from fastapi import FastAPI
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
MIN_TOKEN_CHARS = 16
MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5.0


def check_token(token: str | None) -> None:
    """Refuse a guessable API token (ValueError with the reason and a way to make a good one)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the API token has {len(token)} characters; use at least {MIN_TOKEN_CHARS}, e.g. "
                         "python -c 'import secrets; print(secrets.token_urlsafe(32))'")


def check_binding(host: str, token: str | None) -> None:
    """Refuse to expose the API beyond localhost without a token, and any short token (ValueError)."""
    check_token(token or None)
    if host not in LOCAL_HOSTS and not token:
        raise ValueError(f"binding to {host} exposes the API to the network: pass --token (or set CORTEX_API_TOKEN)")


def allowed_hosts_for(host: str) -> frozenset[str] | None:
    """The ``Host`` names a server bound to ``host`` answers to; None (any) when bound to every interface."""
    name = host.strip().lower().strip("[]")
    if name in WILDCARD_HOSTS:
        return None
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name
        loopback = False
    return frozenset({name} | (LOCAL_HOSTS if loopback else set()))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-header deadline and JSON protocol errors (see module docstring)."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # the app has the request now
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()
        self._arm()  # before super(): it may start a pipelined request, which disarms again
        super().on_response_complete()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        too_big = len(self.conn.trailing_data[0]) >= limit
        status = 431 if too_big else 400
        message = f"the request headers are over {limit} bytes" if too_big else "malformed HTTP request"
        body = json.dumps({"error": message, "retryable": False}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            for event in (h11.Response(status_code=status, headers=headers, reason=http.HTTPStatus(status).phrase),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))  # type: ignore[arg-type]
        except h11.LocalProtocolError:  # a response was under way already: just close
            pass
        self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """:class:`GuardedH11Protocol` with another header deadline (tests use short ones)."""
    if header_timeout_s == GuardedH11Protocol.header_timeout_s:
        return GuardedH11Protocol
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning",
                  header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES) -> Any:
    """The uvicorn configuration :func:`serve` runs ``app`` with; sets the app guard's allowed host names."""
    import uvicorn

    guard = getattr(app.state, "guard", None)
    if guard is not None:
        guard.allowed_hosts = allowed_hosts_for(host)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                          http=guarded_protocol(header_timeout_s), ws="none",
                          h11_max_incomplete_event_size=max_header_bytes, timeout_keep_alive=KEEP_ALIVE_S,
                          server_header=False)


async def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn until interrupted (see module docstring)."""
    import uvicorn

    check_binding(host, token)
    await uvicorn.Server(server_config(app, host, port, log_level=log_level)).serve()
