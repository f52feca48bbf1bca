"""A short run of the HTTP fuzzer (benchmarks/fuzz_http.py) against a real `cortex serve` process.

A few hundred hostile inputs (seeded; simulated engines), eight connections at a time, with a
well-formed NL2SQL run between batches: no input may get a 5xx, a non-JSON error, a traceback
(in a body or in the server's log), hang past the bound or go unanswered; the server must stay
up and the good client must succeed every time. A failure message names the input, which
``benchmarks/fuzz_http.py --seed 11 --show I`` replays.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .http_fuzzing import Harness, make_case, start_server

SEED, INPUTS, BATCH = 11, 360, 60


def test_hostile_inputs_keep_the_promise(tmp_path: Path) -> None:
    failures: list[str] = []
    families: set[str] = set()
    with start_server(tmp_path) as server, ThreadPoolExecutor(max_workers=8) as pool:
        harness = Harness(server)
        for first in range(0, INPUTS, BATCH):
            cases = [(i, make_case(SEED, i)) for i in range(first, first + BATCH)]
            for (i, case), verdict in zip(cases, pool.map(lambda c: harness.run(c[1]), cases)):
                families.add(case.family)
                if verdict.failure is not None:
                    failures.append(f"input {i}: {verdict.failure}: {case.describe()} -> {verdict.detail}")
            ok, _, why = harness.good_request()
            assert ok, f"the good client failed after inputs {first}-{first + BATCH - 1}: {why}"
            assert server.alive()
        tracebacks = server.log_tracebacks()
    assert not failures, "\n".join(failures[:20])
    assert not tracebacks, tracebacks[:10]
    assert {"json body", "framing", "headers", "route", "slow client", "dropped stream"} <= families
