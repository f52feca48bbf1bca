"""Start-up benchmark: wall time of `cortexc --version` and `cortexc check` on one example.

Target (issue 13): <= 0.3 s each, as the median of fresh processes of the installed
console script, the way a user runs them. Two warm-up runs first (bytecode, the
parser-table cache in ~/.cache/cortexlang); the bare interpreter's start is shown
for scale. Writes benchmarks/results/startup_bench.md.

    .venv/bin/python benchmarks/startup_bench.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "startup_bench.md"
TARGET_S = 0.3


def wall_times(cmd: list[str], runs: int) -> list[float]:
    """Seconds per run of ``cmd`` (after two warm-up runs); fails if it does not exit 0."""
    out = []
    for i in range(runs + 2):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i >= 2:
            out.append(time.perf_counter() - start)
    return out


# Where `check`'s time goes: each step imports what the one before did not, in one fresh process.
_PHASES = """
import sys, time
marks = [time.perf_counter()]
def mark():
    marks.append(time.perf_counter())
import typer; mark()
import pydantic; mark()
import cortexlang.ir; mark()
import lark; mark()
import jinja2.sandbox, jinja2.meta; mark()
import cortexlang.cli; mark()
import cortexlang.compiler; mark()
cortexlang.compiler.compile_file("examples/nl2sql.cortex"); mark()
print(" ".join(f"{(b - a) * 1000:.1f}" for a, b in zip(marks, marks[1:])))
"""
PHASE_NAMES = ["typer (the CLI framework)", "pydantic", "the IR's pydantic models (cortexlang.ir)", "lark",
               "jinja2 (template checks)", "the rest of the CLI", "the compiler's passes", "compiling nl2sql.cortex"]


def phase_times(runs: int) -> list[float]:
    """Median milliseconds per phase of `check` (see _PHASES) over fresh processes."""
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _PHASES], cwd=ROOT, check=True, capture_output=True, text=True)
        samples.append([float(x) for x in out.stdout.split()])
    return [statistics.median(col) for col in zip(*samples)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    cortexc = str(Path(sys.executable).with_name("cortexc"))
    cases = [
        ("python -c pass (for scale)", [sys.executable, "-c", "pass"]),
        ("cortexc --version", [cortexc, "--version"]),
        ("cortexc check examples/nl2sql.cortex", [cortexc, "check", "examples/nl2sql.cortex"]),
    ]
    rows = []
    for name, cmd in cases:
        times = wall_times(cmd, args.runs)
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        verdict = "" if name.startswith("python") else ("meets" if median <= TARGET_S else "MISSES")
        rows.append((name, median, p90, min(times), verdict))
        print(f"{name:<40} median {median:.3f} s  p90 {p90:.3f} s  min {min(times):.3f} s  {verdict}")
    phases = phase_times(args.runs)
    for name, ms in zip(PHASE_NAMES, phases):
        print(f"  {name:<45} {ms:6.1f} ms")
    lines = [
        "# Start-up time",
        "",
        f"Wall time of fresh processes, median of {args.runs} runs after 2 warm-up runs, on "
        f"{os.cpu_count()} CPU(s) shared with other work; target <= {TARGET_S} s (issue 13).",
        "Written by `benchmarks/startup_bench.py`.",
        "",
        "| command | median | p90 | min | target |",
        "|---|---|---|---|---|",
        *(f"| `{n}` | {m:.3f} s | {p:.3f} s | {lo:.3f} s | {v} |" for n, m, p, lo, v in rows),
        "",
        "Where `check`'s time goes, in one process (median ms; each step imports what the one before did",
        "not; the interpreter's own start and exit come on top):",
        "",
        "| step | ms |",
        "|---|---|",
        *(f"| {name} | {ms:.1f} |" for name, ms in zip(PHASE_NAMES, phases)),
        "",
        "What keeps it low: the planner, the runtime, rich, asyncio and SQLAlchemy are imported only by",
        "the commands that use them; the compiler only by commands that compile; Lark's LALR tables are",
        "cached in the user's cache folder (built once, ~150 ms; loaded in ~3 ms); fewer garbage",
        "collections while importing and no interpreter teardown after `check`, `fmt`, `graph` and",
        "`compile` (cortexlang/cli/startup.py: ~20 ms and ~45 ms). The rest is mostly importing",
        "typer, pydantic with the IR's models, lark and jinja2, as the table shows.",
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
