"""Long fuzz run of `cortexc check` and `cortexc fmt --diff` over mutated examples.

Target (issue 13): >= 100,000 inputs, no exception (only diagnostics or a clean usage
error) and no input over 1 s (of CPU time: the machine is shared; wall time is
reported too, and bounded at 10 s to catch anything that waits). The mutator and the harness are the test suite's
(tests/cortexlang/fuzzing.py; the suite runs a few thousand of the same inputs):
input ``i`` of seed ``s`` is always the same bytes, so any failure listed here is
reproduced with ``make_input(s, i)``.

Each chunk of input indices runs in a fresh worker process (Click's test runner keeps
every captured stream alive in a long-lived process, which slows it down over tens of
thousands of inputs); inside it each input is bounded at 1 s by SIGALRM, and the parent
gives up on a chunk that does not come back (a hang inside C code would not see the
alarm) and counts it. Times are per input, `check` and `fmt --diff` together.
Writes benchmarks/results/fuzz_compiler.md (or ``--out``).

    .venv/bin/python benchmarks/fuzz_compiler.py [--inputs 100000] [--seed 1] [--workers 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cortexlang.fuzzing import HANG_S, LIMIT_S, Harness, InputTimeout, make_input  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fuzz_compiler.md"
CHUNK = 250


def _run_chunk(task: tuple[int, int, int]) -> list[tuple[int, int, float, float, str | None]]:
    """(index, input bytes, wall seconds, CPU seconds, failure) for inputs [start, stop) of ``seed``."""
    seed, start, stop = task
    out = []
    with tempfile.TemporaryDirectory(prefix="cortex-fuzz-") as folder:
        harness = Harness(Path(folder))
        for index in range(start, stop):
            data = make_input(seed, index)
            try:
                outcome = harness.run(data)
                out.append((index, len(data), outcome.seconds, outcome.cpu_seconds, outcome.failure))
            except (Exception, InputTimeout) as exc:  # counted, never a silently lost worker
                out.append((index, len(data), 0.0, 0.0, f"escaped the harness: {type(exc).__name__}: {exc}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    args = parser.parse_args()
    args.out = args.out.resolve()

    tasks = [(args.seed, s, min(s + CHUNK, args.inputs)) for s in range(0, args.inputs, CHUNK)]
    rows: list[tuple[int, int, float, float, str | None]] = []
    lost = 0
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers, maxtasksperchild=1) as pool:
        results = pool.imap_unordered(_run_chunk, tasks)
        for done in range(len(tasks)):
            try:
                rows.extend(results.next(timeout=CHUNK * HANG_S + 60))
            except multiprocessing.TimeoutError:
                lost = len(tasks) - done
                pool.terminate()
                break
            if (done + 1) % 40 == 0:
                print(f"{len(rows):,} inputs, {sum(r[4] is not None for r in rows)} failures, "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
    wall = time.perf_counter() - started
    write_report(args, rows, lost, wall)


def _quantiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=1000, method="inclusive") if len(values) >= 2 else values * 999
    return {"median": statistics.median(values), "p99": q[989], "p99.9": q[998], "max": max(values)}


def write_report(args: argparse.Namespace, rows: list, lost_chunks: int, wall: float) -> None:
    cpu, clock = _quantiles([r[3] for r in rows]), _quantiles([r[2] for r in rows])
    failures = [r for r in rows if r[4] is not None]
    kinds = Counter(r[4].split(" at ")[0][:100] for r in failures)
    slowest = sorted(rows, key=lambda r: -r[3])[:5]
    lines = [
        "# Fuzzing `cortexc check` and `cortexc fmt --diff`",
        "",
        f"Written by `benchmarks/fuzz_compiler.py --inputs {args.inputs} --seed {args.seed} --workers {args.workers}`"
        f" on {os.cpu_count()} CPU(s) shared with other work. Inputs are the examples (`examples/*.cortex`,"
        " `examples/errors/*.cortex`) with one to three mutations each: bytes (non-UTF-8 included), token"
        " splices, truncation, deep nesting (language and templates), huge/zero numbers, units apart from"
        " their numbers, hostile `file(...)` paths, repeated slices, long lines, control characters."
        " Times are per input, `check` and `fmt --diff` together; the limit is on CPU time, since other"
        " work on the machine stretches wall time.",
        "",
        "| figure | CPU time | wall time |",
        "|---|---|---|",
        *(f"| {k} | {cpu[k] * 1000:.1f} ms | {clock[k] * 1000:.1f} ms |" for k in ("median", "p99", "p99.9", "max")),
        "",
        "| figure | value |",
        "|---|---|",
        f"| inputs run | {len(rows):,} |",
        f"| failures (exception, CX901, exit code 3+, over {LIMIT_S:g} s CPU or {HANG_S:g} s wall) | {len(failures)} |",
        f"| chunks lost to a hung worker | {lost_chunks} |",
        f"| total wall time | {wall:.0f} s |",
        "",
        "Slowest inputs by CPU time (`make_input(seed, index)` in tests/cortexlang/fuzzing.py reproduces each):",
        "",
        *(f"- index {i}: {size:,} bytes, {c * 1000:.0f} ms CPU, {w * 1000:.0f} ms wall" for i, size, w, c, _ in slowest),
        "",
    ]
    if failures:
        lines += ["Failures by kind:", "", *(f"- {n} x {kind}" for kind, n in kinds.most_common()), "",
                  "First failing inputs: " + ", ".join(str(r[0]) for r in failures[:20]), ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
