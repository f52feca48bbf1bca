"""A hostile client against a real `cortex serve` stack (uvicorn on 127.0.0.1, simulated engines).

Malformed bodies, oversized bodies and headers, slow-trickle connections, cross-site and
rebinding requests, short tokens, /readyz detail and uncapped deadlines: every refusal is
a 4xx with a JSON error, never a 500, and the service keeps answering normally after.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime.orchestrator import Orchestrator
from runtime.orchestrator.engines import engine_factory
from runtime.serve import check_binding, create_app

from ..orchestrator.conftest import SPEEDUP, example_spec, scripted
from .live import LiveServer, live_server

TOKEN = "a-test-token-of-32-characters!!!"
BODY_LIMIT = 1 << 20
TIMEOUT_S = 1.0
"""Header and body deadlines of the test server (the defaults are 10 s)."""


def good_sql(stage: str, prompt: str) -> str:
    return "SELECT COUNT(*) AS customers FROM customers;"


def nl2sql_app(db: Path, token: str | None = None, **orchestrator: object):  # type: ignore[no-untyped-def]
    spec = example_spec("nl2sql", db, **orchestrator)
    orch = Orchestrator(spec, engine_factory("simulated", responder=scripted(good_sql), speedup=SPEEDUP))
    return create_app(orch, token=token, max_body_bytes=BODY_LIMIT, body_timeout_s=TIMEOUT_S)


@pytest.fixture(scope="module")
def server(sales_db_master: Path) -> Iterator[LiveServer]:
    with live_server(nl2sql_app(sales_db_master), header_timeout_s=TIMEOUT_S) as live:
        yield live


def rss_bytes() -> int:
    """Resident memory of this process (the server runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_json_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    # The OpenAI routes answer in OpenAI's shape (clients show only error.message), the others plainly.
    message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    assert isinstance(message, str) and body["retryable"] is False
    for fragment in fragments:
        assert fragment in message, message


def answers_normally(live: LiveServer) -> None:
    r = httpx.post(f"{live.url}/v1/runs", json={"inputs": {"question": "How many customers?"}, "wait": True},
                   timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "done", r.text[:300]


def raw_exchange(port: int, head: bytes, body_chunks: Iterator[bytes] = iter(()), timeout_s: float = 10.0
                 ) -> tuple[bytes, int]:
    """Send ``head`` then body chunks until the server answers; returns (its answer, body bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed
                break
            sent += len(chunk)
        answer = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
    return answer, sent


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():  # one chunk is enough for these small answers
        size, _, rest = body.partition(b"\r\n")
        body = rest[:int(size, 16)]
    return status, json.loads(body)


# ---------------------------------------------------------------------------- malformed bodies
MALFORMED = [
    (b"\xff\xfe{\"inputs\": 1}", "not valid UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b'{"inputs": {"question": ' + b'{"a": ' * 40 + b"1" + b"}" * 42, "nested deeper"),
    (b'{"inputs": {"question": ' + b"9" * 5000 + b"}}", "4,300 digits"),
    (b'{"inputs": {"question": NaN}}', "NaN"),
    (b'{"inputs": {"question": 1e400}}', "out of range"),
    (b'{"inputs": {"question": "\\ud800"}}', "surrogate"),
    (b'{"inputs": ["question"]}', "inputs"),
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
]


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/chat/completions"])
def test_malformed_bodies_are_400_with_a_json_error(server: LiveServer, path: str) -> None:
    headers = {"Content-Type": "application/json", "X-Cortex-Stage": "generate"}
    for body, why in MALFORMED:
        r = httpx.post(server.url + path, content=body, headers=headers, timeout=10)
        assert_json_error(r, 400)
        if path == "/v1/runs":
            assert why in r.json()["error"], (body[:60], r.json()["error"])
    answers_normally(server)


def test_chat_fields_of_the_wrong_type_are_400(server: LiveServer) -> None:
    url = server.url + "/v1/chat/completions"
    message = [{"role": "user", "content": "q"}]
    for metadata in ({"cortex_stage": "generate", "cortex_workflow": {}},
                     {"cortex_stage": "generate", "cortex_workflow": []},
                     {"cortex_stage": ["generate"]}, {"cortex_stage": "generate", "cortex_run": 7}):
        assert_json_error(httpx.post(url, json={"messages": message, "metadata": metadata}), 400, "metadata.cortex_")
    for bad in ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
                {"messages": message, "stop": ["x"] * 1000}, {"messages": message, "temperature": "hot"},
                {"messages": message, "max_tokens": 0}, {"messages": []}):
        assert_json_error(httpx.post(url, json=bad, headers={"X-Cortex-Stage": "generate"}), 400)
    r = httpx.post(url, json={"messages": message}, headers={"X-Cortex-Stage": "generate", "X-Cortex-Run": "r" * 500})
    assert_json_error(r, 400, "at most 128")
    ok = httpx.post(url, json={"messages": message, "metadata": {"cortex_stage": "generate", "user": {"x": 1}}})
    assert ok.status_code == 200, ok.text


def test_unknown_routes_and_methods_answer_json(server: LiveServer) -> None:
    assert_json_error(httpx.get(server.url + "/nope"), 404)
    assert_json_error(httpx.put(server.url + "/v1/runs", json={}), 405)


# ---------------------------------------------------------------------------- sizes
def test_a_200_mb_body_is_refused_by_its_length_without_being_read(server: LiveServer) -> None:
    before = rss_bytes()
    head = (b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n")
    chunk = b"x" * 65536
    answer, sent = raw_exchange(server.port, head, (chunk for _ in range(200_000_000 // 65536)))
    status, body = status_and_json(answer)
    assert status == 413 and "200000000 bytes" in body["error"]
    assert sent < 8 * BODY_LIMIT  # answered at once: what went out is what socket buffers took
    assert rss_bytes() - before < 64 << 20


def test_a_chunked_body_is_counted_and_cut_at_the_limit(server: LiveServer) -> None:
    before = rss_bytes()
    head = (b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    answer, sent = raw_exchange(server.port, head, (chunk for _ in range(200_000_000 // 65536)))
    status, body = status_and_json(answer)
    assert status == 413 and "over the limit" in body["error"]
    assert BODY_LIMIT < sent < 16 * BODY_LIMIT
    assert rss_bytes() - before < 64 << 20
    answers_normally(server)


def test_a_10_mb_header_is_refused(server: LiveServer) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    answer, sent = raw_exchange(server.port, head, (b"a" * 65536 for _ in range(160)))
    status, body = status_and_json(answer)
    assert status == 431 and "headers are over" in body["error"]
    assert sent < 10 << 20


# ---------------------------------------------------------------------------- slow clients
def test_slow_trickle_and_idle_connections_are_closed(server: LiveServer) -> None:
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(24)]
    try:
        for sock in socks[:12]:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        closed: set[int] = set()
        while len(closed) < len(socks) and time.monotonic() - started < 8 * TIMEOUT_S:
            for i, sock in enumerate(socks):
                if i in closed:
                    continue
                try:
                    if i < 12:
                        sock.sendall(b"a")  # one byte every ~0.1 s: never a whole header
                    if select.select([sock], [], [], 0)[0] and sock.recv(1024) == b"":
                        closed.add(i)
                except OSError:
                    closed.add(i)
            time.sleep(0.1)
        assert len(closed) == len(socks)  # idle and trickling alike, within a few header deadlines
    finally:
        for sock in socks:
            sock.close()
    answers_normally(server)


def test_a_body_that_never_finishes_gets_408(server: LiveServer) -> None:
    head = (b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"inputs\":")
    started = time.monotonic()
    answer, _ = raw_exchange(server.port, head, timeout_s=5 * TIMEOUT_S)
    status, body = status_and_json(answer)
    assert status == 408 and "did not arrive" in body["error"]
    assert time.monotonic() - started < 4 * TIMEOUT_S


# ---------------------------------------------------------------------------- web exposure
def test_cross_site_and_rebinding_requests_are_refused(server: LiveServer) -> None:
    runs_before = len(server.app.state.orchestrator.runs)
    body = json.dumps({"inputs": {"question": "q"}})
    # What an HTML form on another site can send: no JSON content type.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = httpx.post(server.url + "/v1/runs", content=body, headers={"Content-Type": content_type})
        assert_json_error(r, 415, "application/json")
    assert_json_error(httpx.post(server.url + "/v1/runs", content=body), 415)
    # DNS rebinding: the browser sends the attacker's name as Host.
    assert_json_error(httpx.get(server.url + "/v1/workflows", headers={"Host": "evil.example"}), 403, "Host")
    assert_json_error(httpx.get(server.url + "/metrics", headers={"Host": f"evil.example:{server.port}"}), 403)
    for origin in ("http://evil.example", "null", f"http://evil.example:{server.port}"):
        r = httpx.post(server.url + "/v1/runs", json={"inputs": {"question": "q"}}, headers={"Origin": origin})
        assert_json_error(r, 403, "cross-origin")
    assert len(server.app.state.orchestrator.runs) == runs_before  # not one run started
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "localhost"):
        assert httpx.get(server.url + "/v1/workflows", headers={"Host": host}).status_code == 200
    same_origin = {"Origin": f"http://127.0.0.1:{server.port}"}
    assert httpx.get(server.url + "/v1/workflows", headers=same_origin).status_code == 200


def test_short_tokens_are_refused_at_start_up(sales_db_master: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        nl2sql_app(sales_db_master, token="s3cret")
    with pytest.raises(ValueError, match="at least 16"):
        check_binding("0.0.0.0", "short-token")
    check_binding("0.0.0.0", TOKEN)


def test_readyz_tells_failure_text_only_with_the_token(sales_db_master: Path) -> None:
    app = nl2sql_app(sales_db_master, token=TOKEN)
    with live_server(app, header_timeout_s=TIMEOUT_S) as live:
        orch = app.state.orchestrator

        async def break_fix() -> None:
            replica = orch.pools_by_name["fix"].replicas[0]
            await replica.engine.stop()
            orch.pools_by_name["fix"].fail_replica(replica, "EngineError: http://10.1.2.3:9999 secret detail")

        live.call(break_fix())
        anonymous = httpx.get(live.url + "/readyz")
        assert anonymous.status_code == 503 and anonymous.json()["unhealthy"] == ["fix: fix-0"]
        assert "secret" not in anonymous.text and "10.1.2.3" not in anonymous.text
        insider = httpx.get(live.url + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert insider.status_code == 503 and "secret detail" in insider.text
        assert_json_error(httpx.get(live.url + "/v1/workflows"), 401, "token")


def test_deadline_s_is_finite_and_capped_at_the_run_timeout(server: LiveServer) -> None:
    orch = server.app.state.orchestrator
    for raw in (b'{"inputs": {"question": "q"}, "deadline_s": Infinity}',
                b'{"inputs": {"question": "q"}, "deadline_s": NaN}',
                b'{"inputs": {"question": "q"}, "deadline_s": -1}'):
        r = httpx.post(server.url + "/v1/runs", content=raw, headers={"Content-Type": "application/json"})
        assert_json_error(r, 400)
    r = httpx.post(server.url + "/v1/runs", json={"inputs": {"question": "q"}, "deadline_s": 1e300})
    assert r.status_code == 202
    run = orch.runs[r.json()["run_id"]]
    slo = orch.version().workflow.slo.latency_s
    assert run.timeout_at - run.arrival == pytest.approx(slo * orch.config.run_timeout_factor)
    r = httpx.post(server.url + "/v1/runs", json={"inputs": {"question": "q"}, "deadline_s": 2.5})
    run = orch.runs[r.json()["run_id"]]
    assert run.timeout_at - run.arrival == pytest.approx(2.5)


# ---------------------------------------------------------------------------- clients that go away
def test_a_client_gone_mid_body_is_not_logged_as_a_server_error(server: LiveServer,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Found by benchmarks/fuzz_http.py: each client that closed before its body was complete (or was
    dropped by uvicorn for bad chunk framing) made the app log two tracebacks as an internal error."""
    caplog.set_level("ERROR")
    start = b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # half a body, then gone
        sock.sendall(start + b"Content-Length: 100\r\n\r\n{\"inputs\":")
        time.sleep(0.2)
    answer, _ = raw_exchange(server.port, start + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    status, body = status_and_json(answer)  # bad framing: uvicorn answers, the app sees a disconnect
    assert status == 400 and body["error"] == "malformed HTTP request"
    time.sleep(0.3)
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
    answers_normally(server)


def test_many_external_run_names_do_not_lock_other_clients_out(sales_db_master: Path) -> None:
    """Found by benchmarks/fuzz_http.py: every chat call naming a new X-Cortex-Run opens an external run
    that holds a place in the run history until it has been idle for 300 s, so one client sending
    ``retained_runs`` quick calls (10,000 by default: ~10 s of calls) gets every other client's run
    refused with 429 for five minutes. Here with a history of 50. Now the external run idle longest
    ends when its place is needed (Orchestrator._make_room)."""
    with live_server(nl2sql_app(sales_db_master, retained_runs=50), header_timeout_s=TIMEOUT_S) as live:
        message = [{"role": "user", "content": "q"}]
        for i in range(50):
            r = httpx.post(live.url + "/v1/chat/completions", json={"model": "fix", "messages": message},
                           headers={"X-Cortex-Run": f"agent-{i}"}, timeout=30)
            assert r.status_code == 200, r.text[:200]
        answers_normally(live)


def test_a_whole_answer_nobody_waits_for_is_cancelled(sales_db_master: Path) -> None:
    """Found by benchmarks/fuzz_http.py (seed 2): a client that asked for a costly non-streamed completion
    (16 choices of 1,500 tokens) and left kept the engine busy for nobody; 14 calls still ran 30 s later."""
    spec = example_spec("nl2sql", sales_db_master)
    orch = Orchestrator(spec, engine_factory("simulated", responder=scripted(lambda s, p: "tok " * 3000), speedup=5.0))
    app = create_app(orch, max_body_bytes=BODY_LIMIT, body_timeout_s=TIMEOUT_S)
    with live_server(app, header_timeout_s=TIMEOUT_S) as live:
        body = json.dumps({"model": "fix", "messages": [{"role": "user", "content": "q"}], "n": 4,
                           "max_tokens": 1500}).encode()
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode())
        pool = orch.pools_by_name["fix"]
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head + body)
            deadline = time.monotonic() + 10
            while not pool.running and time.monotonic() < deadline:
                time.sleep(0.02)
            assert pool.running  # generating (1,500 tokens take over 10 s at this speed-up)
        left = time.monotonic()
        while pool.running and time.monotonic() - left < 5:
            time.sleep(0.05)
        assert pool.running == 0, pool.running  # cancelled, not run to the end
        assert httpx.get(live.url + "/readyz").status_code == 200


def test_streams_dropped_while_calls_queue_leave_no_slot_taken(sales_db_master: Path) -> None:
    """Found by benchmarks/fuzz_http.py (seed 2, ``work left running``): streams dropped while their calls
    wait for a slot of a saturated pool leak slots; 200 dropped at 32 at a time held all 16 slots of the
    ``fix`` pool with nothing running in its engine (calls then only ran where a peer pool lent a replica).
    Task.cancel() cancels the awaited future at once, but the waiter is marked cancelled only when the task
    resumes; a release in between granted the slot (inflight + 1) and set_result raised InvalidStateError.
    Now Pool._grant skips a waiter whose future is already done."""
    from concurrent.futures import ThreadPoolExecutor

    spec = example_spec("nl2sql", sales_db_master)
    orch = Orchestrator(spec, engine_factory("simulated", responder=scripted(lambda s, p: "tok " * 3000),
                                             speedup=50.0))
    app = create_app(orch, max_body_bytes=BODY_LIMIT, body_timeout_s=TIMEOUT_S)
    body = json.dumps({"model": "fix", "prompt": "q", "stream": True, "max_tokens": 2000, "n": 2}).encode()
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode())
    with live_server(app, header_timeout_s=TIMEOUT_S) as live:
        def drop_after_first_byte(_: int) -> None:
            with socket.create_connection(("127.0.0.1", live.port)) as sock:
                sock.sendall(head + body)
                sock.recv(1)

        with ThreadPoolExecutor(max_workers=32) as clients:
            list(clients.map(drop_after_first_byte, range(200)))
        pool = orch.pools_by_name["fix"]
        deadline = time.monotonic() + 10
        while pool.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.running == 0, f"{pool.running} of {pool.slots} slots still taken, engine idle"
