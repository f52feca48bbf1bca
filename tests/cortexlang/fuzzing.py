"""A seeded mutator over the example workflows and a harness that runs `cortexc` on each input, time-bounded.

Shared by tests/cortexlang/test_fuzz.py (a few thousand inputs) and
benchmarks/fuzz_compiler.py (the long run). Input ``i`` of seed ``s`` is always
the same bytes, so a failure is reproduced with :func:`make_input`.

Mutations start from a real file (every ``examples/*.cortex`` and
``examples/errors/*.cortex``) and apply one to three of: byte-level edits
(any byte, so non-UTF-8 too), token splices, truncation, deep nesting, huge,
zero and negative numbers, units apart from their numbers, hostile ``file(...)``
paths, repeated slices, long lines and control characters.

The harness runs ``cortexc check FILE`` and ``cortexc fmt --diff FILE`` in-process
through Click's test runner, as a user would run them on the mutated file, and
counts as a failure any exception other than a clean exit, an exit code other
than 0, 1 or 2, an internal compiler error (CX901), or more than the time limit:
:data:`LIMIT_S` of CPU time (so that other work on a shared machine does not
count), and :data:`HANG_S` of wall time for anything that waits instead.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from typer.testing import CliRunner

from cortexlang.cli import compiler_app

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SEED_FILES = sorted(EXAMPLES.glob("*.cortex")) + sorted((EXAMPLES / "errors").glob("*.cortex"))
LIMIT_S = 1.0  # CPU seconds per input (check and fmt together)
HANG_S = 10.0  # wall seconds per input

_CHUNKS = [
    b"{", b"}", b"[", b"]", b"(", b")", b'"', b'"""', b"->", b"=", b"|", b"@", b"%", b"..", b"$", b"#", b"\n",
    b"loop", b"max", b"then", b"within", b"on", b"else", b"done", b"fail", b"flow", b"llm", b"sql", b"tool",
    b"fanout", b"workflow", b"model", b"x", b"9", b".", b",", b"\\", b"\t", b"\r", b"\x00", b"\xff", b"\xc3",
    b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"5 GiB", b"10 s", b"99 %", b"0ms", b"0", b"0%", b"-1", b"1e9",
    b"$9999999999999999999/h", b"{{ x }}", b"{% if %}", b"file(", b"file()", b'file("")',
]
_HOSTILE_FILES = [b'file("\\0")', b'file("/dev/zero")', b'file("/proc/self/environ")', b'file("../../etc/passwd")',
                  b'file("prompts")', b'file("/")', b'file("\\udc80")', b'file("' + b"a/" * 300 + b'")']


class InputTimeout(BaseException):
    """Raised in the main thread when one input runs past the limit (a BaseException, so that
    neither the CLI runner nor the compiler can swallow it)."""


@contextmanager
def time_limit(seconds: float, cpu_seconds: float | None = None) -> Iterator[None]:
    """Interrupt the block with :class:`InputTimeout` after ``seconds`` of wall time or, when
    given, ``cpu_seconds`` of this process's CPU time (main thread, POSIX)."""

    def expire(signum, frame):  # noqa: ARG001 - the signal handler's signature
        raise InputTimeout(f"over {cpu_seconds} s of CPU" if signum == signal.SIGPROF else f"over {seconds} s")

    timers = [(signal.SIGALRM, signal.ITIMER_REAL, seconds)]
    if cpu_seconds is not None:
        timers.append((signal.SIGPROF, signal.ITIMER_PROF, cpu_seconds))
    previous = [signal.signal(sig, expire) for sig, _, _ in timers]
    for _, timer, limit in timers:
        signal.setitimer(timer, limit)
    try:
        yield
    finally:
        for (sig, timer, _), old in zip(timers, previous):
            signal.setitimer(timer, 0)
            signal.signal(sig, old)


# ----------------------------------------------------------------------------------- inputs


def _number(rng: random.Random) -> bytes:
    return rng.choice([b"9" * rng.randint(16, 400), b"1" + b"0" * rng.randint(15, 400), b"0", b"00",
                       b"0.0000000001", b"9" * 30 + b"." + b"9" * 30, b"1_000_000_000_000_000"])


def _nest(rng: random.Random) -> bytes:
    depth = rng.choice([40, 200, 1000, 5000])
    opener = rng.choice([b"[", b"(", b"{", b"a { ", b"x = [", b"on x { ok -> "])
    closer = {b"[": b"]", b"(": b")", b"{": b"}", b"a { ": b"}", b"x = [": b"]", b"on x { ok -> ": b"}"}[opener]
    body = opener * depth
    return body + (closer * depth if rng.random() < 0.5 else b"")


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One mutation of ``data``."""
    n = len(data)
    i = rng.randint(0, n)
    kind = rng.randrange(12)
    if kind == 0:  # random bytes: any value, so invalid UTF-8 as well
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[i + rng.randint(0, 8):]
    if kind == 1:  # delete a stretch
        return data[:i] + data[i + rng.randint(1, 40):]
    if kind in (2, 3):  # splice a token
        return data[:i] + rng.choice(_CHUNKS) + data[i + rng.choice([0, 0, 1, 3]):]
    if kind == 4:  # truncate
        return data[:i]
    if kind == 5:  # deep nesting, in the language or in a template expression
        if b"{{ " in data and rng.random() < 0.3:
            return data.replace(b"{{ ", b"{{ " + rng.choice([b"(", b"[", b"-", b"x."]) * rng.choice([50, 1000, 5000]), 1)
        return data[:i] + _nest(rng) + data[i:]
    if kind == 6:  # replace a number by a huge, zero or odd one
        digits = [k for k in range(n) if data[k:k + 1].isdigit() and (k == 0 or not data[k - 1:k].isdigit())]
        if not digits:
            return data + _number(rng)
        k = rng.choice(digits)
        end = k
        while end < n and data[end:end + 1].isdigit():
            end += 1
        return data[:k] + _number(rng) + data[end:]
    if kind == 7:  # a number apart from its unit
        return data.replace(rng.choice([b"ms", b"s ", b"%", b"KiB", b"B\n", b"/s"]),
                            rng.choice([b" ms", b" s ", b" %", b" KiB", b" B\n", b" /s"]), 1)
    if kind == 8:  # a hostile file(...)
        return data.replace(b'file("', rng.choice(_HOSTILE_FILES) + b' # file("', 1) if b'file("' in data \
            else data[:i] + b"x = " + rng.choice(_HOSTILE_FILES) + b"\n" + data[i:]
    if kind == 9:  # repeat a slice
        j = rng.randint(0, n)
        a, b = min(i, j), max(i, j)
        return data[:b] + data[a:b] * rng.randint(1, 20) + data[b:]
    if kind == 10:  # a long line
        return data[:i] + rng.choice([b"x", b"{", b"[", b"-> ", b"\"a", b"#"]) * rng.randint(1000, 20000) + data[i:]
    return data[:i] + rng.choice([b"\x00", b"\x0c", b"\x0b", b"\r", b"\x85", b"\xe2\x80\xa8", b"\t"]) + data[i:]


def make_input(seed: int, index: int) -> bytes:
    """Input ``index`` of run ``seed``: an example file with one to three mutations."""
    rng = random.Random(f"{seed}:{index}")
    data = rng.choice(SEED_FILES).read_bytes()
    for _ in range(rng.choice([1, 1, 2, 3])):
        data = mutate(rng, data)
    return data


# ----------------------------------------------------------------------------------- harness


@dataclass(frozen=True)
class Outcome:
    seconds: float  # wall
    cpu_seconds: float
    failure: str | None  # None: only diagnostics (or a clean usage error)


class Harness:
    """Runs ``cortexc check`` and ``cortexc fmt --diff`` on inputs written into a copy of the examples folder."""

    def __init__(self, workdir: Path) -> None:
        self.folder = workdir / "fuzz"
        shutil.copytree(EXAMPLES / "prompts", self.folder / "prompts", dirs_exist_ok=True)
        self.path = self.folder / "input.cortex"
        self.runner = CliRunner()
        self.run(SEED_FILES[0].read_bytes(), hang_s=60)  # warm: the commands import the compiler lazily

    def run(self, data: bytes, limit_s: float = LIMIT_S, hang_s: float = HANG_S) -> Outcome:
        self.path.write_bytes(data)
        start, cpu = time.perf_counter(), time.process_time()
        failure = None
        try:
            with time_limit(hang_s, cpu_seconds=limit_s):
                for args in (["check", str(self.path)], ["fmt", "--diff", str(self.path)]):
                    failure = failure or self._failure(self.runner.invoke(compiler_app, args))
        except InputTimeout as timeout:
            failure = str(timeout)
        return Outcome(time.perf_counter() - start, time.process_time() - cpu, failure)

    @staticmethod
    def _failure(result) -> str | None:
        exc = result.exception
        if exc is not None and not isinstance(exc, SystemExit):
            frame = traceback.extract_tb(result.exc_info[2])[-1]
            return f"{type(exc).__name__}: {str(exc)[:120]} at {Path(frame.filename).name}:{frame.lineno}"
        if result.exit_code not in (0, 1, 2):
            return f"exit code {result.exit_code}"
        if "CX901" in result.output:
            return "internal compiler error (CX901)"
        return None
