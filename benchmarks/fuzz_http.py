"""Hostile-client fuzzing of `cortex serve`'s HTTP front door (simulated engines).

Promise under test (team guide): bad input gets a 4xx with a JSON error, never a traceback, a
hang or a 500, and one bad request never degrades service for others. A real server runs in a
child process (tests/runtime/serve/http_fuzzing.py: the nl2sql example on SIMULATED engines,
uvicorn with the `cortex serve` configuration, header and body deadlines of 2 s instead of
10 s so slow-client cases end quickly). Inputs are sent in batches over raw sockets by
``--concurrency`` threads at once (a flood); input ``i`` of seed ``s`` is ``make_case(s, i)``:
malformed, truncated, oversized and deeply nested JSON, wrong types, huge numbers and NaN,
unicode oddities, bad Content-Length / Transfer-Encoding / chunk framing, odd request lines,
headers, methods and paths, slowloris trickles and half bodies, streamed completions and event
streams dropped mid-stream, valid requests at the API's limits (16 choices, 10,000 messages, 16
stop strings of 60 kB; bound 60 s, as they queue behind each other). Each must end within the
per-request bound (10 s) with a response
that keeps the promise (or, for a request never completed, a closed connection).

While each batch floods the server, a well-formed client runs NL2SQL runs (``POST /v1/runs``,
``wait``) one after another; each must succeed within 10 s, and its latency during the flood is
compared with the same request on the idle server (median ratio). Then ``--flood`` half-finished
requests are opened at once (slowloris): the server must close every one within its deadline
while the good client still gets through; and every run and call must have finished (nothing
left running for a client that went away). Last, ``--external-runs`` chat calls each name a new
external run (``X-Cortex-Run``), and a good run must still be admitted. Failure kinds: 5xx, non-JSON
error body, traceback in body, hang, no answer, server death, good client starved, and a traceback
in the server's log (an exception the server treated as a bug, though the client saw none).
Writes benchmarks/results/fuzz_http.md; ``--show I`` reruns input I and prints the exchange.

    .venv/bin/python benchmarks/fuzz_http.py [--inputs 6000] [--seed 1] [--batch 200] [--concurrency 16]
                                             [--speedup 50] [--flood 2000] [--external-runs 10000]
                                             [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.runtime.serve.http_fuzzing import (  # noqa: E402
    BOUND_S,
    FAILURE_KINDS,
    GOOD_BOUND_S,
    HEADER_TIMEOUT_S,
    Harness,
    make_case,
    start_server,
)

OUT = Path(__file__).parent / "results" / "fuzz_http.md"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def idle_latencies(harness: Harness, count: int) -> list[float]:
    out = []
    for _ in range(count):
        ok, seconds, why = harness.good_request()
        if not ok:
            raise RuntimeError(f"the good client fails on the idle server: {why}")
        out.append(seconds)
    return out


def connection_flood(harness: Harness, connections: int) -> dict:
    """Open ``connections`` half-finished requests at once (slowloris), run good requests while they are
    held, and check that the server closed every one within its header/body deadline (plus 2 s)."""
    result: dict = {"connections": connections, "good": []}
    done = threading.Event()

    def good_client() -> None:
        while not done.is_set():
            result["good"].append(harness.good_request())

    thread = threading.Thread(target=good_client, daemon=True)
    thread.start()
    still_open = harness.connection_flood(connections, HEADER_TIMEOUT_S + 2.0)
    done.set()
    thread.join(GOOD_BOUND_S + 1)
    result["still_open"] = len(still_open)
    for sock in still_open:
        sock.close()
    return result


def external_run_flood(harness: Harness, calls: int) -> dict:
    """``calls`` quick chat calls, each naming a new external run (``X-Cortex-Run``), then one good run.
    Last, because what it finds lasts: each external run holds a place in the run history until idle
    for 300 s."""
    import json

    from tests.runtime.serve.http_fuzzing import exchange, request

    body = json.dumps({"model": "fix", "messages": [{"role": "user", "content": "q"}], "max_tokens": 4}).encode()
    started = time.monotonic()

    def call(i: int) -> int:
        return exchange(harness.server.port, request("POST", "/v1/chat/completions", body,
                                                     {"X-Cortex-Run": f"agent-{i}"}), GOOD_BOUND_S)[0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(call, range(calls)))
    seconds = time.monotonic() - started
    ok, _, why = harness.good_request()
    return {"calls": calls, "seconds": seconds, "statuses": statuses, "ok_after": ok, "why": why}


def fuzz(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-http-"))
    failures: dict[str, list[str]] = defaultdict(list)
    families: Counter = Counter()
    statuses: Counter = Counter()
    elapsed: list[float] = []
    flood_latency: list[float] = []
    starved = 0
    loads = [os.getloadavg()]
    with start_server(workdir, speedup=args.speedup) as server:
        harness = Harness(server)
        idle_before = idle_latencies(harness, args.idle)
        rss_start, cpu_start = server.rss_bytes(), server.cpu_s()
        started = time.monotonic()
        done = 0
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for first in range(0, args.inputs, args.batch):
                indices = range(first, min(first + args.batch, args.inputs))
                cases = {i: make_case(args.seed, i) for i in indices}
                batch_done = threading.Event()
                futures = {i: pool.submit(harness.run, cases[i]) for i in indices}
                threading.Thread(target=lambda: ([f.result() for f in futures.values()], batch_done.set()),
                                 daemon=True).start()
                while not batch_done.wait(0.05):  # the good client, during the flood
                    ok, seconds, why = harness.good_request()
                    if batch_done.is_set() and ok:
                        break
                    flood_latency.append(seconds)
                    if not ok:
                        starved += 1
                        failures["good client starved"].append(f"during inputs {first}-{indices[-1]}: {why}")
                for i, future in futures.items():
                    verdict = future.result()
                    families[cases[i].family] += 1
                    statuses.update(verdict.statuses or ["closed"])
                    elapsed.append(verdict.elapsed_s)
                    if verdict.failure is not None:
                        failures[verdict.failure].append(f"input {i}: {cases[i].describe()} -> {verdict.detail}")
                ok, seconds, why = harness.good_request()  # and right after it
                if not ok:
                    starved += 1
                    failures["good client starved"].append(f"after inputs {first}-{indices[-1]}: {why}")
                done += len(indices)
                loads.append(os.getloadavg())
                print(f"{done}/{args.inputs} inputs, {sum(len(v) for v in failures.values())} failures, "
                      f"load {loads[-1][0]:.1f}", flush=True)
                if not server.alive():
                    failures["server death"].append(f"after inputs {first}-{indices[-1]}")
                    break
        wall = time.monotonic() - started
        idle_after = idle_latencies(harness, args.idle) if server.alive() else []
        flood = connection_flood(harness, args.flood) if args.flood and server.alive() else None
        if server.alive() and not harness.drained(30.0):
            failures["work left running"].append(f"30 s after the end: {'; '.join(harness.busy_work())}")
        if flood is not None:
            if flood["still_open"]:
                failures["hang"].append(f"connection flood: {flood['still_open']} of {args.flood} half-finished "
                                        f"requests still open {HEADER_TIMEOUT_S + 2:g} s later")
            for ok, _, why in flood["good"]:
                if not ok:
                    starved += 1
                    failures["good client starved"].append(f"during the connection flood: {why}")
        external = external_run_flood(harness, args.external_runs) if args.external_runs and server.alive() else None
        if external is not None and not external["ok_after"]:
            starved += 1
            failures["good client starved"].append(
                f"after {args.external_runs} chat calls each naming a new X-Cortex-Run: {external['why']}")
        for exception in server.log_tracebacks():  # read before the shutdown, which logs its own
            failures["traceback in server log"].append(exception)
        rss_end, cpu_end = server.rss_bytes(), server.cpu_s()
        log_tail = server.log.read_text(errors="replace")[-2000:]
    return {"failures": failures, "families": families, "statuses": statuses, "elapsed": elapsed,
            "flood": flood_latency, "idle_before": idle_before, "idle_after": idle_after, "starved": starved,
            "loads": loads, "wall": wall, "rss": (rss_start, rss_end), "cpu": cpu_end - cpu_start, "done": done,
            "log_tail": log_tail, "flood_phase": flood, "external": external}


def flood_line(flood: dict | None) -> str:
    if flood is None:
        return "* connection flood: not run"
    good = [seconds for ok, seconds, _ in flood["good"] if ok]
    return (f"* connection flood: {flood['connections']} half-finished requests (header or body) opened at once; "
            f"{flood['still_open']} still open {HEADER_TIMEOUT_S + 2:g} s later; good client meanwhile "
            f"{len(good)}/{len(flood['good'])} succeeded, median {statistics.median(good) * 1000:.0f} ms, max "
            f"{max(good) * 1000:.0f} ms" if good else "* connection flood: the good client got nothing through")


def external_line(external: dict | None) -> str:
    if external is None:
        return "* external-run flood: not run"
    return (f"* external-run flood (last): {external['calls']} chat calls, each naming a new `X-Cortex-Run`, in "
            f"{external['seconds']:.0f} s ({dict(external['statuses'])}); a good run afterwards: "
            + ("succeeded" if external["ok_after"] else f"**refused**: {external['why'][:200]}"))


def report(args: argparse.Namespace, r: dict, started: datetime.datetime) -> str:
    idle = r["idle_before"] + r["idle_after"]
    ratio = statistics.median(r["flood"]) / statistics.median(idle) if r["flood"] and idle else float("nan")
    loads = r["loads"]
    total_failures = sum(len(v) for v in r["failures"].values())
    lines = [
        "# HTTP front-door fuzz (`cortex serve`, SIMULATED engines)", "",
        f"Command: `.venv/bin/python benchmarks/fuzz_http.py --inputs {args.inputs} --seed {args.seed} "
        f"--batch {args.batch} --concurrency {args.concurrency} --speedup {args.speedup:g} --flood {args.flood} "
        f"--external-runs {args.external_runs}`  ",
        f"Started {started:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs; load average (1 min) "
        f"{loads[0][0]:.1f} at the start, {min(l[0] for l in loads):.1f}-{max(l[0] for l in loads):.1f} during, "
        f"{loads[-1][0]:.1f} at the end (the machine is shared: wall-clock figures are inflated by other jobs).", "",
        f"Server: the nl2sql example on simulated engines (SmolLM2 CPU profile x{args.speedup:g}), uvicorn with "
        f"the `cortex serve` configuration, header/body deadlines {HEADER_TIMEOUT_S:g} s (default 10 s), "
        f"body limit 1 MiB. Per-request bound {BOUND_S:g} s; good-client bound {GOOD_BOUND_S:g} s.", "",
        "## Result", "",
        f"* inputs sent: **{r['done']}** in {r['wall']:.0f} s wall, {args.concurrency} connections at a time; "
        f"server CPU {r['cpu']:.0f} s",
        f"* failures: **{total_failures}**",
    ]
    lines += [f"  * {kind}: {len(r['failures'].get(kind, []))}" for kind in FAILURE_KINDS]
    lines += [
        f"* good client (NL2SQL run, `wait`): {len(r['flood'])} requests during the flood, "
        f"{sum(1 for f in r['failures'].get('good client starved', []) if f.startswith('during inputs'))} failed; "
        f"median {statistics.median(r['flood']) * 1000:.0f} ms during vs "
        f"{statistics.median(idle) * 1000:.0f} ms idle: **ratio {ratio:.2f}**; p95 during "
        f"{percentile(r['flood'], 0.95) * 1000:.0f} ms, max {max(r['flood'], default=0) * 1000:.0f} ms"
        if r["flood"] else "* good client: no request completed during the flood",
        f"* per-input time: median {statistics.median(r['elapsed']) * 1000:.0f} ms, p99 "
        f"{percentile(r['elapsed'], 0.99):.2f} s, max {max(r['elapsed']):.2f} s (slow-client inputs wait for "
        "the server's deadline by design)",
        f"* server RSS {r['rss'][0] / 2**20:.0f} MiB before the flood, {r['rss'][1] / 2**20:.0f} MiB after",
        flood_line(r["flood_phase"]),
        external_line(r["external"]), "",
        "## Inputs by family", "", "| family | inputs |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(r["families"].items())], "",
        "## Answers by status", "", "| status | count |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(r["statuses"].items(), key=lambda kv: str(kv[0]))], "",
        "`closed`: the server closed the connection without an answer, only for requests that were never "
        "completed (a trickle, a half body, an unterminated chunk stream) or dropped by the client.", "",
    ]
    if total_failures:
        lines += ["## Failures (first 10 per kind; reproduce with `--show I`)", ""]
        for kind, items in r["failures"].items():
            lines += [f"### {kind} ({len(items)})", ""] + [f"* `{item[:400]}`" for item in items[:10]] + [""]
    return "\n".join(lines) + "\n"


def show(seed: int, indices: list[int], speedup: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-http-show-"))
    with start_server(workdir, speedup=speedup) as server:
        harness = Harness(server)
        for i in indices:
            case = make_case(seed, i)
            verdict = harness.run(case)
            print(f"input {i}: {case.describe(2000)}\n  -> {verdict}")
        print(server.log.read_text(errors="replace")[-3000:])


def main() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the connection flood holds thousands of sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--speedup", type=float, default=50.0, help="simulated engines run this much faster than real")
    ap.add_argument("--flood", type=int, default=2000,
                    help="half-finished requests opened at once after the batches (0: no connection flood)")
    ap.add_argument("--external-runs", type=int, default=10_000,
                    help="chat calls naming new external runs, at the very end (0: none; 10,000 fills the default "
                         "run history)")
    ap.add_argument("--idle", type=int, default=10, help="good-client requests on the idle server, before and after")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--show", type=int, nargs="+", default=None, help="rerun these inputs and print them (no report)")
    args = ap.parse_args()
    if args.show is not None:
        show(args.seed, args.show, args.speedup)
        return
    started = datetime.datetime.now(datetime.timezone.utc)
    result = fuzz(args)
    text = report(args, result, started)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
