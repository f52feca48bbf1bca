"""Hostile HTTP traffic against a real `cortex serve` process: cases, a raw-socket client, a verdict.

Shared by ``benchmarks/fuzz_http.py`` (thousands of inputs) and ``test_http_fuzz.py`` (a few
hundred, in CI). The server is a child process (:func:`start_server`): the nl2sql example on
**simulated** engines (SmolLM2 CPU profile, ``speedup`` times faster), uvicorn with the
``cortex serve`` configuration (:func:`runtime.serve.server_config`), shorter header and body
deadlines than the default so slow-client cases end quickly.

Case ``i`` of seed ``s`` is :func:`make_case` ``(s, i)``: exact bytes written on one connection
(malformed, truncated, oversized or deeply nested JSON, fields of the wrong type, huge numbers,
NaN, unicode oddities, bad ``Content-Length``/``Transfer-Encoding``/chunk framing, odd request
lines, methods and paths), optionally trickled (slowloris) or cut off, or a streamed completion
dropped mid-stream. :meth:`Harness.run` sends it with a time bound and returns a
:class:`Verdict`; the failure kinds (:data:`FAILURE_KINDS`) are what the team guide promises
never happens: a 5xx, an error body that is not JSON, traceback text in a body, no answer to a
whole request (or a connection held past the bound), the server's death, and (checked between
batches by :meth:`Harness.good_request`) a well-formed client starved.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "nl2sql.cortex"
GOOD_SQL = "SELECT COUNT(*) AS customers FROM customers;"
LONG_PROMPT = "LONG STORY"
"""A prompt holding this gets a long answer (streams that a case drops mid-way)."""
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
BODY_LIMIT = 1 << 20
BOUND_S = 10.0
"""Per-request bound: every case must be answered (or, if it never finishes its request, closed) within it."""
HEAVY_BOUND_S = 60.0
"""Bound for a valid request at the API's limits (16 x 1,500 tokens alone take ~2 s; a flood queues them)."""
GOOD_BOUND_S = 10.0
"""A well-formed request must succeed within this, whatever else is going on."""

FAILURE_KINDS = ("5xx", "non-JSON error body", "traceback in body", "hang", "no answer", "server death",
                 "good client starved", "traceback in server log", "work left running")
"""The last two are bugs a client does not see: an exception the server logged as unexpected, and runs
or calls still queued or running after every client has gone (e.g. a dropped stream not aborted)."""


# ----------------------------------------------------------------------------- the server
def serve_main(port: int, db: str, speedup: float, header_timeout_s: float, body_timeout_s: float) -> None:
    """Child process: the nl2sql example on simulated engines, served on 127.0.0.1:``port``."""
    import asyncio

    import uvicorn

    from cortexlang.compiler import compile_file
    from runtime.build.layout import default_spec
    from runtime.orchestrator import Orchestrator
    from runtime.orchestrator.engines import engine_factory
    from runtime.serve import create_app, server_config

    program = compile_file(EXAMPLE).program
    assert program is not None
    spec = default_spec(program, base_dir=EXAMPLE.parent, backend="simulated")
    spec = spec.model_copy(update={"databases": tuple(d.model_copy(update={"url": f"sqlite:///{db}"})
                                                      for d in spec.databases)})

    def respond(request) -> str:  # type: ignore[no-untyped-def]
        prompt = request.prompt if isinstance(request.prompt, str) else request.prompt[-1].content
        return "tok " * 3000 if LONG_PROMPT in prompt else GOOD_SQL

    app = create_app(Orchestrator(spec, engine_factory("simulated", responder=respond, speedup=speedup)),
                     max_body_bytes=BODY_LIMIT, body_timeout_s=body_timeout_s)
    asyncio.run(uvicorn.Server(server_config(app, "127.0.0.1", port, header_timeout_s=header_timeout_s)).serve())


@dataclass
class ServerProcess:
    """The child serving the API, and its log (stderr: a traceback there is logged, not shown)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tracebacks(self) -> list[str]:
        """The last line of each traceback in the server's log so far (the exception)."""
        found, lines = [], self.log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last)"):
                j = i + 1
                while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                    j += 1
                found.append(lines[j] if j < len(lines) else "?")
        return found

    def rss_bytes(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sales_db(workdir: Path) -> Path:
    """A private copy of the example's SQLite database (built if missing)."""
    import shutil

    from examples.data.build_sales_db import DEFAULT_DB, build

    target = workdir / "sales.db"
    if DEFAULT_DB.exists():
        shutil.copy(DEFAULT_DB, target)
        return target
    return build(target)


@contextmanager
def start_server(workdir: Path, speedup: float = 50.0, header_timeout_s: float = HEADER_TIMEOUT_S,
                 body_timeout_s: float = BODY_TIMEOUT_S) -> Iterator[ServerProcess]:
    """The API in a child process until the block ends (killed then, if still running)."""
    port = free_port()
    log = workdir / "server.log"
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.runtime.serve.http_fuzzing import serve_main;"
            f" serve_main({port}, {str(sales_db(workdir))!r}, {speedup}, {header_timeout_s}, {body_timeout_s})")
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=err, cwd=workdir)
    server = ServerProcess(proc, port, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if not server.alive():
                raise RuntimeError(f"the server died at start-up:\n{log.read_text()[-3000:]}")
            try:
                status, _, _ = exchange(port, request("GET", "/readyz"), 5.0)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not get ready in 120 s")
            time.sleep(0.2)
        yield server
    finally:
        if server.alive():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------------------- raw HTTP
def request(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            content_type: str | None = "application/json") -> bytes:
    """A well-framed HTTP/1.1 request (``Content-Length`` for a body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body is not None:
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Reply:
    """An HTTP response read off a socket: status, headers (lower-case names) and body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether ``sock`` has data (or EOF) within ``timeout_s`` (poll: descriptors past 1024 are fine)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(timeout_s, 0.0) * 1000))


def read_reply(sock: socket.socket, deadline: float, head_only: bool = False,
               stop_after: int | None = None) -> Reply | None:
    """One response (1xx skipped), or None when the connection closed first. ``stop_after``: return once
    that many body bytes came (a client dropping a stream). Raises TimeoutError past ``deadline``."""
    buf = b""

    def more() -> bytes:
        left = deadline - time.monotonic()
        if left <= 0 or not readable(sock, left):
            raise TimeoutError
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""

    while True:
        while b"\r\n\r\n" not in buf:
            data = more()
            if not data:
                return None
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if 100 <= status < 200:
            continue
        break
    if head_only or status in (204, 304):
        return Reply(status, headers, b"")
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(buf) < size and (stop_after is None or len(buf) < stop_after):
            data = more()
            if not data:
                break
            buf += data
        return Reply(status, headers, buf[:size])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                data = more()
                if not data:
                    return Reply(status, headers, body)
                buf += data
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                data = more()
                if not data:
                    return Reply(status, headers, body + buf)
                buf += data
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0 or (stop_after is not None and len(body) >= stop_after):
                return Reply(status, headers, body)
    while stop_after is None or len(buf) < stop_after:  # until close
        data = more()
        if not data:
            break
        buf += data
    return Reply(status, headers, buf)


def exchange(port: int, raw: bytes, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw``, read one response: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(raw)
        reply = read_reply(sock, time.monotonic() + timeout_s)
    if reply is None:
        raise ConnectionError("closed without an answer")
    return reply.status, reply.headers, reply.body


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One hostile exchange on one connection.

    ``parts`` are written in order, ``gap_s`` apart (a trickle when > 0). ``complete``: the parts
    make whole requests, each of which must be answered (else the server may just close the
    connection, within the bound). ``drop_after``: read that many body bytes, then close.
    """

    family: str
    parts: list[bytes]
    complete: bool = True
    gap_s: float = 0.0
    drop_after: int | None = None
    head_only: bool = False
    note: str = ""
    bound_s: float | None = None
    """A longer bound than the harness's (valid requests for a lot of work, which queue behind each other)."""

    def describe(self, width: int = 160) -> str:
        raw = b"".join(self.parts)
        shown = raw[:width]
        more = f" (+{len(raw) - width} bytes)" if len(raw) > width else ""
        return f"[{self.family}] {shown!r}{more}" + (f" {self.note}" if self.note else "")


WEIRD_STRINGS = [
    "", " ", "\u0000", "\x7f", "\u202e\u2066evil", "\ufeff", "\u200b" * 50, "\U0001f4a9" * 30, "é" * 1000,
    "\\ud800", "'; DROP TABLE customers; --", "{{inputs}}", "{% raw %}", "${jndi:ldap://x}", "%s%s%n",
    "\r\nX-Injected: 1", "a" * 100_000, "Ｓｅｌｅｃｔ", "ℌ𝔢𝔩𝔩𝔬", "..\\..\\etc\\passwd", "generate", "fix",
    "nl2sql/generate", "nl2sql", "smollm2", LONG_PROMPT,
]
WEIRD_NUMBERS = ["0", "-0", "-1", "1e308", "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 4000,
                 "1" * 5000, "0.0000000000000000000000001", "9" * 20, "-9223372036854775809", "1E-400", "2.5",
                 "18446744073709551616", "1.7976931348623157e308", "0x10", "01", "+1", ".5", "1.", "1e", "--1"]


def _value(rng: random.Random, depth: int = 0) -> str:
    """A random JSON-ish value as text (sometimes not valid JSON)."""
    roll = rng.random()
    if roll < 0.25:
        return json.dumps(rng.choice(WEIRD_STRINGS), ensure_ascii=rng.random() < 0.5).replace(
            '"\\\\ud800"', '"\\ud800"')
    if roll < 0.45:
        return rng.choice(WEIRD_NUMBERS)
    if roll < 0.55:
        return rng.choice(["null", "true", "false", "[]", "{}", '""', "[null]", '{"": null}'])
    if roll < 0.65:
        n = rng.choice([33, 100, 1000, 20_000])
        return "[" * n + "]" * n if rng.random() < 0.5 else '{"a":' * n + "1" + "}" * n
    if roll < 0.8 and depth < 3:
        return "[" + ", ".join(_value(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    if depth < 3:
        keys = rng.sample(["role", "content", "question", "type", "text", "x", "", "__proto__"], rng.randint(0, 3))
        return "{" + ", ".join(f'"{k}": {_value(rng, depth + 1)}' for k in keys) + "}"
    return '"x"'


RUN_FIELDS = ["inputs", "workflow", "deadline_s", "wait"]
CHAT_FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "n",
               "seed", "stream", "stream_options", "metadata", "response_format", "tools", "tool_choice",
               "logprobs", "top_logprobs", "presence_penalty", "logit_bias", "user"]
LEGACY_FIELDS = ["model", "prompt", "max_tokens", "n", "stream", "logprobs", "echo", "suffix", "best_of", "stop",
                 "seed", "temperature"]


def _good_body(path: str, rng: random.Random) -> dict:
    if path == "/v1/runs":
        return {"inputs": {"question": "How many customers?"}, "wait": rng.random() < 0.3}
    if path == "/v1/completions":
        return {"model": "generate", "prompt": "How many customers?", "max_tokens": 16}
    return {"model": rng.choice(["generate", "fix", "nl2sql/generate", "smollm2"]),
            "messages": [{"role": "user", "content": "How many customers?"}], "max_tokens": 16}


def _json_body(rng: random.Random) -> tuple[str, bytes]:
    """A body for one of the POST routes: a good one with fields replaced, added or removed."""
    path = rng.choice(["/v1/runs", "/v1/chat/completions", "/v1/completions"])
    body = _good_body(path, rng)
    fields = {"/v1/runs": RUN_FIELDS, "/v1/completions": LEGACY_FIELDS}.get(path, CHAT_FIELDS)
    text = json.dumps(body)
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(fields)
        body.pop(name, None) if rng.random() < 0.15 else None
        text = json.dumps(body)[:-1] + (", " if body else "") + f'"{name}": {_value(rng)}' + "}"
        if rng.random() < 0.5:
            break
    if path == "/v1/runs" and rng.random() < 0.3:
        text = text.replace('"How many customers?"', _value(rng), 1)
    if path == "/v1/chat/completions" and rng.random() < 0.3:
        text = text.replace('"How many customers?"', _value(rng), 1)
    return path, text.encode("utf-8", "surrogatepass")


def _mangle(rng: random.Random, raw: bytes) -> bytes:
    """Truncate, flip bytes, splice in junk or invalid UTF-8."""
    roll = rng.random()
    if roll < 0.3 and raw:
        return raw[:rng.randrange(len(raw))]
    if roll < 0.55 and raw:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if roll < 0.75:
        at = rng.randrange(len(raw) + 1)
        junk = rng.choice([b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00", b"\xf4\x90\x80\x80", b",,", b"}",
                           b"/*", b"\\", b"\"", b"\xe2\x80"])
        return raw[:at] + junk + raw[at:]
    return rng.choice([b"\xef\xbb\xbf", b" " * 1000, b"\n", b"[", b"null"]) + raw


def case_json(rng: random.Random) -> Case:
    path, body = _json_body(rng)
    if rng.random() < 0.35:
        body = _mangle(rng, body)
    headers = {"X-Cortex-Stage": rng.choice(WEIRD_STRINGS[:6] + ["generate"])} if rng.random() < 0.2 else {}
    headers = {k: v for k, v in headers.items() if "\r" not in v and "\n" not in v}
    try:
        raw = request("POST", path, body, headers)
    except UnicodeEncodeError:
        raw = request("POST", path, body)
    return Case("json body", [raw])


def case_framing(rng: random.Random) -> Case:
    """Bad Content-Length, Transfer-Encoding and chunk framing on a small valid body."""
    body = json.dumps({"inputs": {"question": "q"}}).encode()
    start = b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    kind = rng.randrange(12)
    if kind == 0:
        length = rng.choice([b"-1", b"1e3", b"0x10", b"99999999999999999999999", b" 10", b"", b"+5", b"\xff"])
        return Case("framing", [start + b"Content-Length: " + length + b"\r\n\r\n" + body])
    if kind == 1:  # two different lengths
        return Case("framing", [start + b"Content-Length: 5\r\nContent-Length: 30\r\n\r\n" + body])
    if kind == 2:  # length and chunked together (request smuggling)
        return Case("framing", [start + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
                                .encode() + body])
    if kind == 3:  # shorter than the body: the rest is taken for the next request
        return Case("framing", [start + b"Content-Length: 10\r\n\r\n" + body])
    if kind == 4:  # longer than the body: never completes
        return Case("framing", [start + f"Content-Length: {len(body) + 50}\r\n\r\n".encode() + body],
                    complete=False)
    if kind == 5:
        size = rng.choice([b"zz", b"-1", b"ffffffffffffffffffff", b"1;" + b"x" * 5000, b"", b"0x5", b" 5"])
        return Case("framing", [start + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + body + b"\r\n0\r\n\r\n"])
    if kind == 6:  # chunk without its CRLF, or a size that lies
        chunk = f"{len(body) + rng.choice([-3, 0, 7]):x}\r\n".encode() + body + rng.choice([b"", b"XX", b"\r\n"])
        return Case("framing", [start + b"Transfer-Encoding: chunked\r\n\r\n" + chunk + b"0\r\n\r\n"],
                    complete=rng.random() < 0.0)
    if kind == 7:
        te = rng.choice([b"gzip", b"chunked, gzip", b"identity", b"xchunked", b"chunked\x00", b"CHUNKED", b" chunked"])
        return Case("framing", [start + b"Transfer-Encoding: " + te + b"\r\n\r\n" + body], complete=False)
    if kind == 8:  # trailers after the last chunk
        trailer = rng.choice([b"X-T: 1\r\n", b"Content-Length: 5\r\n", b"bad trailer\r\n", b"X: " + b"y" * 70000 + b"\r\n"])
        return Case("framing", [start + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode()
                                + body + b"\r\n0\r\n" + trailer + b"\r\n"], complete=False)
    if kind == 9:  # many tiny chunks
        chunks = b"".join(b"1\r\n" + body[i:i + 1] + b"\r\n" for i in range(len(body)))
        return Case("framing", [start + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"])
    if kind == 10:  # pipelined: a good request then garbage then a good one
        good = request("GET", "/healthz")
        return Case("framing", [good + rng.choice([b"\x16\x03\x01\x02\x00", b"GARBAGE\r\n\r\n", b"\r\n" * 50]) + good],
                    complete=False)
    return Case("framing", [start + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode() + body])


def case_headers(rng: random.Random) -> Case:
    """Odd request lines and headers on otherwise simple requests."""
    kind = rng.randrange(12)
    get = b"GET /v1/workflows HTTP/1.1\r\n"
    if kind == 0:
        line = rng.choice([b"GET / HTTP/1.1", b"GET /healthz HTTP/1.0", b"GET /healthz HTTP/2.0", b"GET /healthz HTTP/9.9",
                           b"GET /healthz", b"GET  /healthz  HTTP/1.1", b"get /healthz HTTP/1.1", b"/healthz",
                           b"GET http://evil.example/healthz HTTP/1.1", b"GET * HTTP/1.1", b"\x00\x01\x02",
                           b"GET /health\x00z HTTP/1.1", b"GET /\xff\xfe HTTP/1.1", b"PRI * HTTP/2.0"])
        return Case("request line", [line + b"\r\nHost: 127.0.0.1\r\n\r\n"])
    if kind == 1:
        name = rng.choice([b"X Bad", b"X\x00Bad", b"\xffX", b":authority", b"", b"X-\xe2\x80\x8b", b"Host "])
        return Case("headers", [get + b"Host: 127.0.0.1\r\n" + name + b": v\r\n\r\n"])
    if kind == 2:  # obsolete line folding
        return Case("headers", [get + b"Host: 127.0.0.1\r\nX-A: a\r\n folded\r\n\r\n"])
    if kind == 3:
        return Case("headers", [b"GET /v1/workflows HTTP/1.1\r\n\r\n"], note="no Host")
    if kind == 4:
        return Case("headers", [get + b"Host: 127.0.0.1\r\nHost: evil.example\r\n\r\n"])
    if kind == 5:
        count = rng.choice([100, 1000, 3000])
        return Case("headers", [get + b"Host: 127.0.0.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(count))
                                + b"\r\n"])
    if kind == 6:
        value = rng.choice([b"\xff\xfe", b"\x00", "é".encode(), b"a" * 60000, b"Bearer " + b"x" * 5000])
        name = rng.choice([b"Authorization", b"Origin", b"Content-Type", b"X-Cortex-Stage", b"Cookie", b"Accept"])
        return Case("headers", [get + b"Host: 127.0.0.1\r\n" + name + b": " + value + b"\r\n\r\n"])
    if kind == 7:
        ct = rng.choice([b"application/json; charset=latin-1", b"application/JSON", b"application/json\x00",
                         b"text/json", b"application/json; boundary=" + b"x" * 1000, b"", b";application/json"])
        body = json.dumps(_good_body("/v1/chat/completions", rng)).encode()
        return Case("headers", [b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ct
                                + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body])
    if kind == 8:
        host = rng.choice([b"", b"127.0.0.1:99999", b"[::1", b"127.0.0.1:", b"\xff", b"a" * 5000, b"127.0.0.1 evil"])
        return Case("headers", [get + b"Host: " + host + b"\r\n\r\n"])
    if kind == 9:  # LF-only line endings
        return Case("headers", [b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n"])
    if kind == 10:
        stage = rng.choice(["generate", "fix", "execute", "x" * 200, "gen\terate", "nl2sql/fix"])
        run = rng.choice(["r", "r" * 129, "run 1", "../x"])
        body = json.dumps({"messages": [{"role": "user", "content": "q"}]}).encode()
        raw = request("POST", "/v1/chat/completions", body, {"X-Cortex-Stage": stage, "X-Cortex-Run": run,
                                                             "X-Cortex-Workflow": rng.choice(["nl2sql", "nope", ""])})
        return Case("headers", [raw])
    return Case("headers", [b"\r\n" * rng.randint(1, 100) + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"])


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "BREW", "get",
           "G\u00c9T", "X" * 300]
PATHS = ["/", "/v1", "/v1/runs", "/v1/runs/", "/v1/runs/nope", "/v1/runs/%00", "/v1/runs/..%2f..%2fetc%2fpasswd",
         "/v1/runs/" + "a" * 5000, "/v1/runs/x/events", "/v1/runs/x/events?tokens=true", "/v1/models",
         "/v1/models/%ff%fe", "/v1/models/" + "m/" * 500, "/v1/models/generate", "/v1/workflows", "/metrics",
         "/healthz?x=" + "%" * 100, "/readyz", "//v1//runs", "/v1/chat/completions", "/v1/completions",
         "/v1/runs?wait=true", "/docs", "/openapi.json", "/v1/runs/\u00e9", "/%2e%2e/%2e%2e/etc/passwd",
         "/v1/runs/" + "%" + "zz", "/v1/runs/" + "\u202e"]


def case_route(rng: random.Random) -> Case:
    method, path = rng.choice(METHODS), rng.choice(PATHS)
    body = json.dumps(_good_body("/v1/runs", rng)).encode() if rng.random() < 0.5 else None
    raw = (f"{method} ".encode("utf-8") + path.encode("utf-8") + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           + (b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body) if body is not None else b"")
           + b"\r\n" + (body or b""))
    if method == "GET" and path.startswith("/v1/runs/") and path.endswith("events"):
        return Case("route", [raw], drop_after=1)  # unknown run: a 404 at once
    return Case("route", [raw], head_only=method == "HEAD")


def case_oversize(rng: random.Random) -> Case:
    size = rng.choice([BODY_LIMIT + 1, 3 * BODY_LIMIT, 20 * BODY_LIMIT])
    if rng.random() < 0.5:
        head = (f"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\n\r\n").encode()
    else:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
               b"Transfer-Encoding: chunked\r\n\r\n"
        chunk = b"10000\r\n" + b"[" * 65536 + b"\r\n"
        return Case("oversize", [head] + [chunk] * (size // 65536 + 1), complete=False)
    return Case("oversize", [head] + [b"{" * 65536] * (size // 65536 + 1), complete=False)


def case_slow(rng: random.Random) -> Case:
    """Slowloris: a request trickled byte by byte, or a body that stops half-way."""
    body = json.dumps(_good_body("/v1/runs", rng)).encode()
    raw = request("POST", "/v1/runs", body)
    if rng.random() < 0.5:
        cut = rng.randrange(10, len(raw) - 1)
        return Case("slow client", [raw[i:i + 1] for i in range(cut)], complete=False, gap_s=0.05)
    head, _, rest = raw.partition(b"\r\n\r\n")
    return Case("slow client", [head + b"\r\n\r\n" + rest[:len(rest) // 2]], complete=False)


def case_stream(rng: random.Random) -> Case:
    """A streamed completion or a run's events, dropped after a few bytes."""
    if rng.random() < 0.7:
        path = rng.choice(["/v1/chat/completions", "/v1/completions"])
        content = f"{LONG_PROMPT} {rng.random()}"
        body = ({"model": "fix", "messages": [{"role": "user", "content": content}], "stream": True,
                 "max_tokens": 2000, "n": rng.choice([1, 2, 4])} if path == "/v1/chat/completions" else
                {"model": "fix", "prompt": content, "stream": True, "max_tokens": 2000,
                 "stream_options": {"include_usage": True}})
        return Case("dropped stream", [request("POST", path, json.dumps(body).encode())],
                    drop_after=rng.choice([1, 200, 2000]))
    body = json.dumps({"inputs": {"question": "How many customers?"}}).encode()
    return Case("dropped stream", [request("POST", "/v1/runs", body)], note="then its events, dropped",
                drop_after=rng.choice([1, 100]))


def case_heavy(rng: random.Random) -> Case:
    """Valid requests at the limits: the most choices, messages, stop strings or prompt the API admits."""
    kind = rng.randrange(4)
    messages = [{"role": "user", "content": "How many customers?"}]
    if kind == 0:
        body = {"model": "fix", "messages": [{"role": "user", "content": LONG_PROMPT}], "n": 16, "max_tokens": 1500}
    elif kind == 1:
        body = {"model": "generate", "messages": messages * 9_999 + messages, "max_tokens": 8}
    elif kind == 2:
        body = {"model": "fix", "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 1500,
                "stop": ["x" * 60_000 + str(i) for i in range(16)]}
    else:
        body = {"model": "generate", "prompt": ["q " * 400] * 16, "max_tokens": 4}
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    return Case("heavy but valid", [request("POST", path, json.dumps(body).encode())], bound_s=HEAVY_BOUND_S)


FAMILIES: list[tuple[float, Callable[[random.Random], Case]]] = [
    (0.39, case_json), (0.15, case_framing), (0.15, case_headers), (0.12, case_route), (0.03, case_oversize),
    (0.07, case_slow), (0.07, case_stream), (0.02, case_heavy),
]


def make_case(seed: int, index: int) -> Case:
    """Input ``index`` of ``seed`` (deterministic)."""
    rng = random.Random(f"{seed}:{index}")
    roll, total = rng.random(), 0.0
    for weight, make in FAMILIES:
        total += weight
        if roll < total:
            return make(rng)
    return FAMILIES[-1][1](rng)


# ----------------------------------------------------------------------------- verdicts
@dataclass
class Verdict:
    """What one case got: a failure kind (None: fine), the statuses seen, the time it took."""

    failure: str | None
    statuses: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    detail: str = ""


def judge(reply: Reply, head: bool = False) -> str | None:
    """The failure kind of one response, None when it keeps the promise (``head``: an answer to HEAD,
    which has no body, so only its content type is checked)."""
    text = reply.body.decode("utf-8", "replace")
    if "Traceback (most recent call last)" in text or 'File "/' in text:
        return "traceback in body"
    if reply.status >= 500:
        return "5xx"
    if reply.status >= 400:
        if "json" not in reply.headers.get("content-type", ""):
            return "non-JSON error body"
        if head:
            return None
        try:
            body = json.loads(reply.body)
        except ValueError:
            return "non-JSON error body"
        if not isinstance(body, dict) or "error" not in body:
            return "non-JSON error body"
    return None


class Harness:
    """Sends cases to one server with the per-request bound, and checks a good client between batches."""

    def __init__(self, server: ServerProcess, bound_s: float = BOUND_S) -> None:
        self.server = server
        self.bound_s = bound_s

    def run(self, case: Case) -> Verdict:
        started = time.monotonic()
        bound_s = case.bound_s or self.bound_s
        deadline = started + bound_s
        statuses: list[int] = []
        try:
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=bound_s) as sock:
                failure, detail = self._drive(sock, case, deadline, statuses)
        except ConnectionRefusedError:
            failure, detail = "server death", "connection refused"
        except TimeoutError:
            failure, detail = "hang", f"nothing within {bound_s:g} s"
        if failure is None and not self.server.alive():
            failure, detail = "server death", f"exit code {self.server.proc.returncode}"
        return Verdict(failure, statuses, time.monotonic() - started, detail)

    def _drive(self, sock: socket.socket, case: Case, deadline: float, statuses: list[int]
               ) -> tuple[str | None, str]:
        for i, part in enumerate(case.parts):
            if i and case.gap_s:
                time.sleep(case.gap_s)
                if time.monotonic() > deadline:
                    return "hang", "still reading a trickle past the bound"
            if readable(sock, 0):  # the server answered (or closed) early
                break
            try:
                sock.sendall(part)
            except OSError:  # closed on us: fine for a request the server refuses mid-way
                break
        answered = 0
        while True:
            try:
                reply = read_reply(sock, deadline, head_only=case.head_only, stop_after=case.drop_after)
            except TimeoutError:
                if case.complete and not answered:
                    return "hang", f"no answer within {case.bound_s or self.bound_s:g} s"
                if case.complete or answered:
                    return None, ""  # answered, connection kept alive: fine
                return "hang", "an incomplete request held past the bound"
            if reply is None:
                if case.complete and not answered:
                    return "no answer", "closed without an answer"
                return None, ""
            answered += 1
            statuses.append(reply.status)
            failure = judge(reply, case.head_only)
            if failure is not None:
                return failure, f"{reply.status} {reply.body[:300]!r}"
            if case.drop_after is not None:
                if case.note.startswith("then its events") and reply.status == 202:
                    run_id = json.loads(reply.body)["run_id"]
                    case = Case(case.family, [], drop_after=case.drop_after)
                    sock.sendall(request("GET", f"/v1/runs/{run_id}/events?tokens=true"))
                    continue
                return None, ""  # dropped mid-stream: close now
            if "close" in reply.headers.get("connection", "").lower():
                return None, ""
            if not case.complete:
                continue  # a pipelined or over-long request: see what else comes, until the bound
            return None, ""

    def connection_flood(self, connections: int, hold_s: float) -> list[socket.socket]:
        """Open ``connections`` sockets that each stop half-way through a request (headers or body) and
        hold them ``hold_s``; returns those the server has not closed by then (it should close all)."""
        socks = []
        body = json.dumps({"inputs": {"question": "q"}}).encode()
        half_body = request("POST", "/v1/runs", body)[:-len(body) // 2]
        for i in range(connections):
            try:
                sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127" if i % 2 else half_body)
                socks.append(sock)
            except OSError:
                break
        time.sleep(hold_s)
        still_open = []
        for sock in socks:
            if self._answered(sock):
                sock.close()
            else:
                still_open.append(sock)
        return still_open

    @staticmethod
    def _answered(sock: socket.socket) -> bool:
        """Whether the server closed the connection (after a 408 or not): read what is there, without waiting."""
        try:
            while readable(sock, 0):
                if not sock.recv(65536):
                    return True
            return False
        except OSError:
            return True

    def busy_work(self) -> list[str]:
        """The ``/metrics`` lines that count calls still queued or running in pools and engines (non-zero
        only). Not ``cortex_runs_active``: an external run (a chat call naming ``X-Cortex-Run``) stays
        active by design until idle for 300 s."""
        _, _, text = exchange(self.server.port, request("GET", "/metrics"), GOOD_BOUND_S)
        busy = []
        for line in text.decode().splitlines():
            name = line.split("{", 1)[0]
            if name in ("cortex_pool_queue_depth", "cortex_pool_running", "cortex_replica_requests_running",
                        "cortex_replica_requests_waiting") and float(line.rsplit(" ", 1)[1]):
                busy.append(line)
        return busy

    def drained(self, within_s: float) -> bool:
        """Whether every call has finished within ``within_s`` (no work stuck after its client left)."""
        deadline = time.monotonic() + within_s
        while self.busy_work():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def good_request(self) -> tuple[bool, float, str]:
        """(succeeded, seconds, why not) for a well-formed run, waited for, within :data:`GOOD_BOUND_S`."""
        body = json.dumps({"inputs": {"question": "How many customers?"}, "wait": True}).encode()
        started = time.monotonic()
        try:
            status, _, answer = exchange(self.server.port, request("POST", "/v1/runs", body), GOOD_BOUND_S)
        except (OSError, TimeoutError) as exc:
            return False, time.monotonic() - started, f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        if status != 200:
            return False, elapsed, f"{status} {answer[:200]!r}"
        if json.loads(answer).get("status") != "done":
            return False, elapsed, f"run ended {json.loads(answer).get('status')}"
        return True, elapsed, ""
