"""Hostile-user fuzzing of the command lines of `cortexc plan` and `cortex simulate|run`.

Target (issue 10): no traceback from `cortexc plan` or `cortex simulate` on any input. Where
benchmarks/fuzz_plan.py mutates the .cortex files, this attacks the command-line surface around
them (tests/runtime/cli_fuzzing.py: `plan --observed TRACE`, `--disaggregate`, `--inventory`,
`--diff`, `-o`; `simulate --trace [--slo-scale] [--layout] [--plan]`, `--layout plan` on colocated
and P/D plans; `run --record`) with hostile traces, plans, files and flag values. Each input must end
with exit 0 or 1/2 and an error message, no traceback, within the per-input bound (30 CPU seconds,
120 wall seconds), writing nothing
outside its folder. Inputs run in process (Typer's runner); every ``--subprocess-every``-th input
runs as a real `cortexc`/`cortex` process instead. Input ``i`` of seed ``s`` is
``make_case(s, i, artefacts)``; a failure's reproducer is printed with it.
Writes benchmarks/results/fuzz_cli.md.

    .venv/bin/python benchmarks/fuzz_cli.py [--inputs 2000] [--seed 1] [--subprocess-every 10]
                                            [--minutes M] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.runtime.cli_fuzzing import ALL_SURFACES, HANG_S, WALL_FACTOR, Harness, make_case  # noqa: E402

OUT = Path(__file__).parent / "results" / "fuzz_cli.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--subprocess-every", type=int, default=10, help="every N-th input as a real process (0: none)")
    ap.add_argument("--minutes", type=float, default=None, help="stop starting inputs after this many minutes")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--show", type=int, nargs="+", default=None,
                    help="reproduce these inputs: write their files, run them, print the output (no report)")
    args = ap.parse_args()
    if args.show is not None:
        show(args.seed, args.show)
        return
    load_start = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-cli-"))
    args.out = args.out.resolve()  # before the chdir: a relative --out was lost after the whole run
    os.chdir(workdir)  # a relative path a command writes would land here, where the harness sees it
    harness = Harness(workdir)
    codes: dict[str, Counter] = defaultdict(Counter)
    failures: list[str] = []
    seconds: list[tuple[float, int, str]] = []
    cpu: list[tuple[float, int, str]] = []
    start = time.perf_counter()
    done = 0
    for i in range(args.inputs):
        if args.minutes is not None and time.perf_counter() - start > 60 * args.minutes:
            break
        case = make_case(args.seed, i, harness.base)
        real = bool(args.subprocess_every) and i % args.subprocess_every == 0 or bool(case.env)
        outcome = harness.run(case, subprocess_mode=real)
        done += 1
        codes[case.surface][outcome.exit_code if outcome.exit_code is not None else "hang"] += 1
        codes[case.surface]["process" if real else "in-process"] += 1
        seconds.append((outcome.seconds, i, case.command()))
        cpu.append((outcome.cpu_seconds, i, case.command()))
        if outcome.failure:
            failures.append(f"- input {i} [{case.surface}{', process' if real else ''}"
                            f"{'; ' + case.note if case.note else ''}]: {outcome.failure}\n  `{case.command()}`")
            print(failures[-1], flush=True)
        if i % 100 == 0:
            print(f"{i} inputs, {len(failures)} failures, {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    total = time.perf_counter() - start
    slowest, costliest = max(seconds), max(cpu)
    rows = ["| surface | inputs | as a process | exit 0 | exit 1 | exit 2 | other/hang |", "|---|---|---|---|---|---|---|"]
    for s in ALL_SURFACES:
        c = codes[s]
        n = c["process"] + c["in-process"]
        other = n - c[0] - c[1] - c[2]
        rows.append(f"| {s} | {n} | {c['process']} | {c[0]} | {c[1]} | {c[2]} | {other} |")
    lines = [
        "# Fuzzing the command lines of `cortexc plan` and `cortex simulate|run`", "",
        f"`python benchmarks/fuzz_cli.py --inputs {args.inputs} --seed {args.seed} --subprocess-every "
        f"{args.subprocess_every}" + (f" --minutes {args.minutes:g}" if args.minutes is not None else "") + "`",
        f"on this machine ({os.cpu_count()} cores shared with other work; load average "
        f"{load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end), {started:%Y-%m-%d %H:%M} UTC.", "",
        f"- inputs run: {done} (generator: tests/runtime/cli_fuzzing.py; input i = `make_case({args.seed}, i, "
        "artefacts)`)",
        f"- failures (traceback, exit code other than 0/1/2, non-zero exit without an error line, over "
        f"{HANG_S:.0f} s of CPU or {WALL_FACTOR * HANG_S:.0f} s of wall time, or a file written outside the input's "
        f"folder): **{len(failures)}**",
        f"- CPU time per input: median {statistics.median(c for c, _, _ in cpu):.2f} s, max {costliest[0]:.2f} s "
        f"(input {costliest[1]}: `{costliest[2]}`)",
        f"- wall time per input: median {statistics.median(s for s, _, _ in seconds):.2f} s, max "
        f"{slowest[0]:.2f} s (input {slowest[1]}: `{slowest[2]}`); total {total / 60:.1f} min", "",
    ] + rows + (["", "Failures:"] + failures if failures else [])
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def show(seed: int, indices: list[int]) -> None:
    """Write input ``i``'s files under a temporary folder, run it in process and print what it printed."""
    from typer.testing import CliRunner

    from cortexlang.cli import compiler_app, runtime_app

    workdir = Path(tempfile.mkdtemp(prefix="fuzz-cli-show-"))
    harness = Harness(workdir)
    for i in indices:
        case = make_case(seed, i, harness.base)
        folder = harness._prepare(case)
        argv = case.argv(folder)
        print(f"== input {i} [{case.surface}{'; ' + case.note if case.note else ''}]: {case.app} {' '.join(argv)}")
        result = CliRunner().invoke(compiler_app if case.app == "cortexc" else runtime_app, argv)
        print(result.output[-3000:])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            import traceback

            traceback.print_exception(*result.exc_info)
        print(f"exit {result.exit_code}; files kept in {folder}")


if __name__ == "__main__":
    main()
