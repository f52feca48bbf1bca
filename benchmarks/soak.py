"""Soak: mixed valid and malformed traffic at 10x admitted capacity against `cortex serve` (simulated engines).

What it does, all on 127.0.0.1:

1. Starts ``cortex serve nl2sql.cortex --engine simulated`` (the real CLI, a subprocess; the
   example copied to a scratch folder with its own sales database).
2. **Capacity**: a closed loop of ``--calibrate-clients`` clients, each submitting a run with
   ``wait: true`` and backing off on 429, for ``--calibrate-s``; the admitted capacity is the
   rate of runs that finished in it.
3. **Load**, for ``--duration`` seconds (default 600): valid runs arriving at ``--factor``
   (default 10) x capacity, and on top of them OpenAI-compatible chat calls (a few agents
   reusing run ids, some streamed) and malformed requests, each kind at its own rate: bodies
   that are not UTF-8, nested 100,000 deep, integers of 5,000 digits, NaN, unknown fields,
   ``metadata.cortex_workflow`` as ``{}``/``[]``, ``text/plain`` posts, foreign Host and Origin
   headers, unknown routes; over raw sockets: a declared 200 MB body, a chunked body
   streamed past the limit, a 70 KB header, a body that stops half way, and a standing pool
   of slow-trickle connections (one header byte per second each). Every admitted run is
   followed (``GET /v1/runs/{id}``) until it finishes.
4. **Recovery**: when the load stops, how long until ``/readyz`` answers 200 and a new run is
   admitted (202) and finishes; then every admitted run must finish within the run timeout.

Reported: responses by kind and status, 5xx responses (target 0), client-side failures
(timeouts, resets), admitted runs by final status, lost runs (404 before finishing) and
stuck runs (unfinished after the run timeout), the server's peak RSS (``VmHWM``) and RSS
samples, slow-trickle connections and how fast the server closed them, and recovery time.
Every loop is bounded by time or count; client concurrency is capped (``--max-inflight``),
and the report says how much traffic was sent versus offered.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--factor 10] [--out benchmarks/results/soak.md]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
FINISHED = {"done", "fail", "error", "timeout", "cancelled"}


# ---------------------------------------------------------------------------- the server
def scratch_example(folder: Path) -> Path:
    """nl2sql.cortex with its prompts and a fresh sales database in ``folder``."""
    sys.path.insert(0, str(REPO))
    from examples.data.build_sales_db import build

    shutil.copy(REPO / "examples" / "nl2sql.cortex", folder / "nl2sql.cortex")
    shutil.copytree(REPO / "examples" / "prompts", folder / "prompts")
    (folder / "data").mkdir()
    build(folder / "data" / "sales.db")
    return folder / "nl2sql.cortex"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(target: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cortex = Path(sys.executable).parent / "cortex"
    with open(log, "wb") as out:
        return subprocess.Popen([str(cortex), "serve", str(target), "--engine", "simulated", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=target.parent)


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` memory field in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"cortex serve exited with code {proc.returncode}; see its log")
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("cortex serve did not become ready")


# ---------------------------------------------------------------------------- bookkeeping
@dataclass
class Tally:
    responses: Counter[tuple[str, int]] = field(default_factory=Counter)
    client_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    offered: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    run_latency_s: list[float] = field(default_factory=list)
    final: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    pending: dict[str, float] = field(default_factory=dict)
    checks: list[tuple[float, str]] = field(default_factory=list)
    trickle_closed_after_s: list[float] = field(default_factory=list)
    trickle_open_at_end: int = 0

    def answer(self, kind: str, status: int) -> None:
        self.responses[(kind, status)] += 1

    def failed(self, kind: str, exc: BaseException) -> None:
        self.client_errors[(kind, type(exc).__name__)] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.responses.items() if status >= 500)

    def admitted(self, run_id: str, now: float) -> None:
        self.pending[run_id] = now
        heapq.heappush(self.checks, (now + 2.0, run_id))


# ---------------------------------------------------------------------------- traffic
QUESTIONS = ["How many customers are there?", "Total sales per region?", "Top 5 products by revenue?",
             "Which customers bought nothing?", "Average order value in 2024?"]

MALFORMED: list[tuple[str, str, dict[str, str], bytes]] = [
    ("bad_utf8", "/v1/runs", {"Content-Type": "application/json"}, b'{"inputs": {"question": "\xff\xfe"}}'),
    ("deep_json", "/v1/runs", {"Content-Type": "application/json"}, b"[" * 100_000 + b"]" * 100_000),
    ("big_int", "/v1/runs", {"Content-Type": "application/json"},
     b'{"inputs": {"question": ' + b"7" * 5000 + b"}}"),
    ("nan", "/v1/runs", {"Content-Type": "application/json"}, b'{"inputs": {"question": "q"}, "deadline_s": NaN}'),
    ("unknown_field", "/v1/runs", {"Content-Type": "application/json"}, b'{"inputs": {"question": "q"}, "x": 1}'),
    ("workflow_obj", "/v1/chat/completions", {"Content-Type": "application/json"},
     b'{"messages": [{"role": "user", "content": "q"}], "metadata": {"cortex_stage": "fix", "cortex_workflow": {}}}'),
    ("workflow_list", "/v1/chat/completions", {"Content-Type": "application/json"},
     b'{"messages": [{"role": "user", "content": "q"}], "metadata": {"cortex_stage": "fix", "cortex_workflow": []}}'),
    ("text_plain", "/v1/runs", {"Content-Type": "text/plain"}, b'{"inputs": {"question": "q"}}'),
    ("foreign_host", "/v1/runs", {"Content-Type": "application/json", "Host": "evil.example"},
     b'{"inputs": {"question": "q"}}'),
    ("foreign_origin", "/v1/runs", {"Content-Type": "application/json", "Origin": "http://evil.example"},
     b'{"inputs": {"question": "q"}}'),
    ("unknown_route", "/v1/nope", {"Content-Type": "application/json"}, b"{}"),
    ("huge_max_tokens", "/v1/chat/completions", {"Content-Type": "application/json", "X-Cortex-Stage": "fix"},
     b'{"messages": [{"role": "user", "content": "q"}], "max_tokens": 4096}'),
]


class Load:
    """The traffic of the load phase (see module docstring)."""

    def __init__(self, url: str, port: int, tally: Tally, max_inflight: int) -> None:
        self.url = url
        self.port = port
        self.tally = tally
        self.slots = asyncio.Semaphore(max_inflight)
        self.client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0, connect=10.0),
                                        limits=httpx.Limits(max_connections=max_inflight,
                                                            max_keepalive_connections=64))
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, kind: str, coro: Any) -> None:
        self.tally.offered[kind] += 1
        if self.slots.locked():
            self.tally.skipped[kind] += 1
            coro.close()
            return
        task = asyncio.create_task(self._bounded(kind, coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _bounded(self, kind: str, coro: Any) -> None:
        async with self.slots:
            try:
                await coro
            except Exception as exc:  # no HTTP answer (timeout, reset, garbled): counted, never fatal
                self.tally.failed(kind, exc)

    # ------------------------------------------------------------------ valid traffic
    async def run(self) -> None:
        body = {"inputs": {"question": random.choice(QUESTIONS)}}
        r = await self.client.post("/v1/runs", json=body)
        self.tally.answer("run", r.status_code)
        if r.status_code == 202:
            self.tally.admitted(r.json()["run_id"], time.monotonic())

    async def chat(self, stream: bool) -> None:
        headers = {"X-Cortex-Stage": "fix", "X-Cortex-Run": f"soak-agent-{random.randrange(16)}"}
        body = {"messages": [{"role": "user", "content": "fix: SELECT * FROM nope"}], "max_tokens": 48,
                "stream": stream}
        kind = "chat_stream" if stream else "chat"
        if stream:
            async with self.client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                async for _ in r.aiter_bytes():
                    pass
        else:
            r = await self.client.post("/v1/chat/completions", json=body, headers=headers)
        self.tally.answer(kind, r.status_code)

    # ------------------------------------------------------------------ malformed over HTTP
    async def malformed(self) -> None:
        kind, path, headers, body = random.choice(MALFORMED)
        r = await self.client.post(path, content=body, headers=headers)
        self.tally.answer(kind, r.status_code)

    # ------------------------------------------------------------------ malformed over raw sockets
    async def raw(self, kind: str, head: bytes, chunks: int = 0, chunk: bytes = b"", stall_s: float = 0.0) -> None:
        """Send ``head`` (then up to ``chunks`` x ``chunk`` until answered, or stall) and read the status."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(head)
            await writer.drain()
            answer = asyncio.ensure_future(reader.read(4096))
            for _ in range(chunks):
                if answer.done():
                    break
                writer.write(chunk)
                try:
                    await asyncio.wait_for(writer.drain(), 5.0)
                except (ConnectionError, asyncio.TimeoutError):
                    break
            data = await asyncio.wait_for(answer, 30.0 + stall_s)
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
            self.tally.answer(kind, status)
        finally:
            writer.close()

    def raw_kinds(self) -> list[tuple[str, Any]]:
        json_post = b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        return [
            ("declared_200mb", lambda: self.raw("declared_200mb", json_post + b"Content-Length: 200000000\r\n\r\n")),
            ("chunked_flood", lambda: self.raw("chunked_flood", json_post + b"Transfer-Encoding: chunked\r\n\r\n",
                                               chunks=64, chunk=b"10000\r\n" + b"x" * 65536 + b"\r\n")),
            ("header_bomb", lambda: self.raw("header_bomb", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-B: ",
                                             chunks=2, chunk=b"a" * 35_000)),
            ("stalled_body", lambda: self.raw("stalled_body", json_post + b"Content-Length: 100\r\n\r\n{\"in",
                                              stall_s=10.0)),
        ]

    async def trickle(self, stop: asyncio.Event) -> None:
        """One slow-trickle connection after another: a header byte per second until the server closes it."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError as exc:
                self.tally.failed("trickle", exc)
                await asyncio.sleep(1.0)
                continue
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                for _ in range(120):  # bounded: the server should close within its header deadline
                    if stop.is_set():
                        self.tally.trickle_open_at_end += 1
                        return
                    writer.write(b"a")
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                            break
                    except asyncio.TimeoutError:
                        continue
                self.tally.trickle_closed_after_s.append(time.monotonic() - started)
            except (ConnectionError, OSError):
                self.tally.trickle_closed_after_s.append(time.monotonic() - started)
            finally:
                writer.close()

    # ------------------------------------------------------------------ following runs
    async def follow(self, until: float) -> None:
        """Poll admitted runs (each every few seconds) until they finish, or ``until``."""
        tally = self.tally
        while time.monotonic() < until and (tally.checks or not self.stopped):
            if not tally.checks or tally.checks[0][0] > time.monotonic():
                await asyncio.sleep(0.05)
                continue
            _, run_id = heapq.heappop(tally.checks)
            try:
                r = await self.client.get(f"/v1/runs/{run_id}")
            except httpx.HTTPError as exc:
                tally.failed("poll", exc)
                heapq.heappush(tally.checks, (time.monotonic() + 2.0, run_id))
                continue
            tally.answer("poll", r.status_code)
            if r.status_code == 404:
                tally.lost.append(run_id)
                tally.pending.pop(run_id, None)
            elif r.status_code == 200 and r.json()["status"] in FINISHED:
                info = r.json()
                tally.final[info["status"]] += 1
                tally.run_latency_s.append(info.get("latency_s") or 0.0)
                tally.pending.pop(run_id, None)
            else:
                heapq.heappush(tally.checks, (time.monotonic() + 3.0, run_id))

    stopped = False


async def calibrate(url: str, clients: int, seconds: float) -> float:
    """Finished runs per second with ``clients`` closed-loop clients (wait: true, backing off on 429),
    counted over the second half of ``seconds`` (the first half fills the pipeline)."""
    finished = 0
    started = time.monotonic()
    window = started + seconds / 2
    deadline = started + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal finished
        while time.monotonic() < deadline:
            try:
                r = await client.post("/v1/runs", json={"inputs": {"question": random.choice(QUESTIONS)},
                                                        "wait": True})
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            if r.status_code == 200 and window <= time.monotonic() < deadline:
                finished += 1
            elif r.status_code == 429:
                await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 1.0))

    async with httpx.AsyncClient(base_url=url, timeout=300.0,
                                 limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return finished / (deadline - window)


async def recovery(url: str, timeout_s: float = 60.0) -> tuple[float, float, str]:
    """(seconds to /readyz 200 and a run admitted, seconds until that run finished, its status)."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        while time.monotonic() - started < timeout_s:
            try:
                ready = (await client.get("/readyz")).status_code == 200
                r = await client.post("/v1/runs", json={"inputs": {"question": QUESTIONS[0]}}) if ready else None
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code == 202:
                admitted_s = time.monotonic() - started
                run_id = r.json()["run_id"]
                while time.monotonic() - started < timeout_s + 120:
                    status = (await client.get(f"/v1/runs/{run_id}")).json()["status"]
                    if status in FINISHED:
                        return admitted_s, time.monotonic() - started, status
                    await asyncio.sleep(0.1)
                return admitted_s, float("nan"), "unfinished"
            await asyncio.sleep(0.05)
    return float("nan"), float("nan"), "not admitted"


def git_commit() -> str:
    """The checked-out commit, with ``+changes`` when the work tree differs from it."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no")
                                                  else "")


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    commit = git_commit()  # what the server runs: taken before it starts
    folder = Path(tempfile.mkdtemp(prefix="cortex-soak-"))
    target = scratch_example(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(target, port, folder / "server.log")
    rss: list[tuple[float, int]] = []
    log_tail = ""
    try:
        startup_s = await wait_ready(url, proc)
        capacity = await calibrate(url, args.calibrate_clients, args.calibrate_s)
        run_rate = capacity * args.factor
        tally = Tally()
        load = Load(url, port, tally, args.max_inflight)
        stop = asyncio.Event()
        started = time.monotonic()
        end = started + args.duration
        follower = asyncio.create_task(load.follow(end + args.drain_s))
        trickles = [asyncio.create_task(load.trickle(stop)) for _ in range(args.trickle)]
        raw_kinds = load.raw_kinds()
        rates = {"run": run_rate, "chat": args.chat_rate, "chat_stream": args.chat_rate / 4,
                 "malformed": args.malformed_rate, "raw": args.raw_rate}
        next_at = {kind: started + random.expovariate(rate) for kind, rate in rates.items() if rate > 0}
        next_sample = started
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                rss.append((now - started, proc_status(proc.pid, "VmRSS")))
                next_sample = now + 1.0
            kind = min(next_at, key=next_at.__getitem__)
            if next_at[kind] > now:
                await asyncio.sleep(min(next_at[kind] - now, 0.05))
                continue
            next_at[kind] += random.expovariate(rates[kind])
            if kind == "run":
                load.spawn("run", load.run())
            elif kind in ("chat", "chat_stream"):
                load.spawn(kind, load.chat(kind == "chat_stream"))
            elif kind == "malformed":
                load.spawn("malformed", load.malformed())
            else:
                name, make = random.choice(raw_kinds)
                load.spawn(name, make())
        stop.set()
        load.stopped = True
        recovered_s, recovered_run_s, recovered_status = await recovery(url)
        await asyncio.gather(*trickles)
        if load.tasks:
            await asyncio.wait(list(load.tasks), timeout=60.0)
        await follower
        rss.append((time.monotonic() - started, proc_status(proc.pid, "VmRSS")))
        peak = proc_status(proc.pid, "VmHWM")
        server_alive = proc.poll() is None
        await load.client.aclose()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_tail = (folder / "server.log").read_text(errors="replace")[-4000:]
        shutil.rmtree(folder, ignore_errors=True)
        if proc.returncode not in (0, -15):
            print(log_tail, file=sys.stderr)
    return {
        "commit": commit, "duration_s": args.duration, "startup_s": startup_s, "capacity_runs_per_s": capacity,
        "factor": args.factor, "rates_per_s": rates, "tally": tally, "peak_rss_bytes": peak, "rss": rss,
        "recovered_s": recovered_s, "recovered_run_s": recovered_run_s, "recovered_status": recovered_status,
        "server_alive": server_alive, "log_tail": log_tail, "tracebacks": log_tail.count("Traceback"),
    }


# ---------------------------------------------------------------------------- the report
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    t: Tally = result["tally"]
    commit = result["commit"]
    mib = 1024 * 1024
    admitted = sum(t.final.values()) + len(t.lost) + len(t.pending)
    by_kind: dict[str, Counter[int]] = {}
    for (kind, status), n in t.responses.items():
        by_kind.setdefault(kind, Counter())[status] += n
    rss = [b for _, b in result["rss"]]
    lines = [
        "# Soak: 10x admitted capacity, mixed valid and malformed traffic (simulated engines)",
        "",
        f"`.venv/bin/python benchmarks/soak.py --duration {args.duration:g} --factor {args.factor:g}` "
        f"(server started at commit {commit}, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}); "
        "`cortex serve examples/nl2sql.cortex --engine simulated` on 127.0.0.1, load generator in another "
        "process on the same machine. Engines are **simulated** (SmolLM2 CPU profile, real time).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| server start to ready | {result['startup_s']:.1f} s |",
        f"| admitted capacity (closed loop, {args.calibrate_clients} clients, runs finished in the last "
        f"{args.calibrate_s / 2:g} of {args.calibrate_s:g} s) | "
        f"{result['capacity_runs_per_s']:.2f} runs/s |",
        f"| offered valid runs | {result['rates_per_s']['run']:.1f}/s ({args.factor:g}x capacity) for "
        f"{args.duration:g} s, plus chat {args.chat_rate:g}/s, streamed chat {args.chat_rate / 4:g}/s, "
        f"malformed JSON/HTTP {args.malformed_rate:g}/s, raw-socket attacks {args.raw_rate:g}/s, "
        f"{args.trickle} standing slow-trickle connections |",
        f"| requests offered / skipped by the client cap ({args.max_inflight} in flight) | "
        f"{sum(t.offered.values())} / {sum(t.skipped.values())} |",
        f"| **5xx responses** | **{t.server_errors}** |",
        f"| client-side failures (no HTTP answer) | {sum(t.client_errors.values())} "
        f"{dict(t.client_errors) if t.client_errors else ''} |",
        f"| runs admitted (202) | {admitted} |",
        f"| admitted runs by final status | {dict(t.final)} |",
        f"| **lost runs** (404 before finishing) | **{len(t.lost)}** |",
        f"| **stuck runs** (unfinished {args.drain_s:g} s after the load) | **{len(t.pending)}** |",
        f"| run latency of admitted runs, p50 / p99 | {percentile(t.run_latency_s, 50):.1f} s / "
        f"{percentile(t.run_latency_s, 99):.1f} s |",
        f"| **server peak RSS** (VmHWM) | **{result['peak_rss_bytes'] / mib:.0f} MiB** "
        f"(RSS first / max / last sample: {rss[0] / mib:.0f} / {max(rss) / mib:.0f} / {rss[-1] / mib:.0f} MiB) |",
        f"| slow-trickle connections closed by the server | {len(t.trickle_closed_after_s)}, after "
        f"{percentile(t.trickle_closed_after_s, 50):.1f} s median, {max(t.trickle_closed_after_s or [0]):.1f} s max "
        f"({t.trickle_open_at_end} still open when the load stopped) |",
        f"| **after the load stops: /readyz 200 and a new run admitted** | **{result['recovered_s']:.2f} s** |",
        f"| ... that run finished ({result['recovered_status']}) | {result['recovered_run_s']:.1f} s after the stop |",
        f"| server alive at the end / tracebacks in its log tail | {result['server_alive']} / "
        f"{result['tracebacks']} |",
        "",
        "Responses by kind and HTTP status:",
        "",
        "| kind | statuses |",
        "|---|---|",
    ]
    for kind in sorted(by_kind):
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(by_kind[kind].items()))
        lines.append(f"| {kind} | {statuses} |")
    lines += ["", "Status 0 for a raw-socket kind means the server closed the connection without an answer.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--factor", type=float, default=10.0, help="valid runs offered per admitted run/s")
    parser.add_argument("--calibrate-s", type=float, default=60.0)
    parser.add_argument("--calibrate-clients", type=int, default=256)
    parser.add_argument("--chat-rate", type=float, default=4.0)
    parser.add_argument("--malformed-rate", type=float, default=10.0)
    parser.add_argument("--raw-rate", type=float, default=1.0)
    parser.add_argument("--trickle", type=int, default=32, help="standing slow-trickle connections")
    parser.add_argument("--max-inflight", type=int, default=512, help="client requests in flight at most")
    parser.add_argument("--drain-s", type=float, default=150.0, help="wait for admitted runs after the load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args()
    random.seed(args.seed)
    result = asyncio.run(soak(args))
    text = report(result, args)
    print(text)
    if result["tracebacks"]:
        print(result["log_tail"], file=sys.stderr)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    t: Tally = result["tally"]
    ok = t.server_errors == 0 and not t.lost and not t.pending and result["recovered_s"] <= 5.0
    print(json.dumps({"ok": ok, "5xx": t.server_errors, "lost": len(t.lost), "stuck": len(t.pending),
                      "peak_rss_mib": round(result["peak_rss_bytes"] / 2**20), "recovered_s": result["recovered_s"]}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
