"""What every HTTP request passes before a route sees it (a pure ASGI middleware).

In this order, each refusal a JSON error ``{"error", "retryable"}`` sent without
reading the body:

1. **Host and Origin** (DNS rebinding, cross-site requests): when the server knows
   the names it answers to (:attr:`GuardSettings.allowed_hosts`, set by
   :func:`runtime.serve.server.serve` from the bind address), a ``Host`` header
   naming anything else, or an ``Origin`` header (browsers send one with
   cross-site requests) naming anything else, is refused with 403. A page on
   ``evil.example`` that rebinds its name to 127.0.0.1 still sends
   ``Host: evil.example``.
2. **Token**: with an API token, every path but the health checks needs
   ``Authorization: Bearer <token>`` (401), compared in constant time.
3. **Content type**: a POST, PUT or PATCH must say ``Content-Type:
   application/json`` (415). A cross-site HTML form can only send
   ``text/plain``, form or multipart bodies, so it cannot start a run.
4. **Body size**: a ``Content-Length`` over :attr:`GuardSettings.max_body_bytes`
   is refused at once (413); a body without one (chunked) is counted as it
   streams in and refused the moment it passes the limit. Nothing beyond the
   limit is buffered.
5. **Body deadline**: the whole body must arrive within
   :attr:`GuardSettings.body_timeout_s` of the request's start (408), so a client
   trickling a body byte by byte does not hold a connection and a task forever.

Answers to 408 and 413 close the connection (the unread rest of the body would
otherwise be taken for the next request). A client that goes away before its body is
complete (it closed the connection, or uvicorn dropped it for bad framing) ends the
request quietly: there is no one to answer, and it is not a server error to log with a
traceback (each such client would otherwise write two to the log).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.serve.errors import error_response

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Paths that need no token (health checks)."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_BODY_BYTES = 2 * 1024 * 1024
"""Largest request body: room for a prompt filling a 128k-token context, JSON-escaped."""
BODY_TIMEOUT_S = 10.0
"""Seconds from a request's start within which its whole body must have arrived."""


@dataclass
class GuardSettings:
    """The guard's knobs (mutable: :func:`~runtime.serve.server.serve` sets the host names it binds)."""

    token: str | None = None
    allowed_hosts: frozenset[str] | None = None
    """Host names (lower case, no port) the server answers to; None: any (bound to every interface)."""
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout_s: float = BODY_TIMEOUT_S
    _expected_auth: bytes = field(init=False, repr=False, default=b"")

    def __post_init__(self) -> None:
        self._expected_auth = f"Bearer {self.token}".encode() if self.token else b""

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        """True when a token is configured and ``headers`` carry it."""
        return bool(self._expected_auth) and hmac.compare_digest(headers.get(b"authorization", b""),
                                                                 self._expected_auth)


class ClientGone(Exception):
    """Raised from the wrapped ``receive`` when the client disconnected before its body was complete."""


class BodyRefused(Exception):
    """Raised from the wrapped ``receive`` to abandon a body; the guard answers ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or an origin's netloc, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestGuard:
    """The ASGI middleware (see module docstring)."""

    def __init__(self, app: ASGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._limited(receive), tracked_send)
        except ClientGone:  # nobody to answer (see module docstring)
            return
        except BodyRefused as exc:
            if started:  # too late for an answer: the connection just ends
                raise
            await error_response(exc.status, str(exc), headers={"Connection": "close"})(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Any:
        s = self.settings
        if s.allowed_hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1")
            if host_name(host) not in s.allowed_hosts:
                return error_response(403, f"this server does not answer to Host {host[:100]!r} "
                                           f"(it answers to {', '.join(sorted(s.allowed_hosts))})")
            origin = headers.get(b"origin", b"").decode("latin-1")
            if origin and host_name(urlsplit(origin).netloc) not in s.allowed_hosts:
                return error_response(403, f"cross-origin requests are refused (Origin {origin[:100]!r})")
        if s.token and scope["path"] not in OPEN_PATHS and not s.authorized(headers):
            return error_response(401, "missing or wrong API token (send Authorization: Bearer <token>)")
        if scope["method"] not in BODY_METHODS:
            return None
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media_type != b"application/json":
            return error_response(415, "send the request body as JSON with Content-Type: application/json")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, "Content-Length is not a number")
            if int(length) > s.max_body_bytes:
                return error_response(413, f"the request body is {int(length)} bytes; the limit is {s.max_body_bytes}",
                                      headers={"Connection": "close"})
        return None

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that counts the body and enforces the deadline until the body is complete."""
        limit, timeout_s = self.settings.max_body_bytes, self.settings.body_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        received = 0
        complete = False

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # later calls wait for a disconnect (streamed answers): no deadline on those
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BodyRefused(408, f"the request body did not arrive within {timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyRefused(413, f"the request body is over the limit of {limit} bytes")
                complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                raise ClientGone
            else:
                complete = True
            return message

        return limited
