"""A seeded mutator of *valid* example programs and a harness running `cortexc plan` and `cortex simulate` on them.

The compiler fuzz (tests/cortexlang/fuzzing.py) mostly produces files that do not compile, so
they never reach the planner or the simulator. Here every mutation keeps the file's syntax
plausible: it changes one to three numbers (rates, probabilities, token counts, SLO latencies,
loop bounds, inventory counts, prices) to zero, one, tiny or huge values keeping their units,
or deletes or duplicates a whole line (an inventory entry, an SLO, a load). Inputs that compile
without errors are then planned (``cortexc plan --no-verify``, and for one in four with
verification on a small budget) and simulated (``cortex simulate --runs 40``, a random policy).

Shared by tests/planner/test_plan_fuzz.py (a few dozen inputs) and benchmarks/fuzz_plan.py (the
long run). Input ``i`` of seed ``s`` is always the same bytes (:func:`make_input`). A failure is
any exception escaping the command (a traceback), an exit code other than 0, 1 or 2, an
internal compiler error (CX901), a traceback in the output, or more than :data:`HANG_S` seconds of wall time (planning a hostile input must fail fast, not search).
"""

from __future__ import annotations

import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from cortexlang.cli import compiler_app, runtime_app
from tests.cortexlang.fuzzing import Harness as CompilerHarness
from tests.cortexlang.fuzzing import InputTimeout, time_limit

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SEED_FILES = sorted(EXAMPLES.glob("*.cortex"))
HANG_S = 30.0  # wall seconds per input, check + plan + simulate together
POLICIES = ("fcfs", "cortex", "hexagent", "autellix-plas", "hexgen-text2sql")
_NUMBER = re.compile(rb"(?<![\w.])\d+(?:\.\d+)?")
_VALUES = [b"0", b"1", b"2", b"3", b"0.001", b"0.5", b"99", b"100", b"1000", b"65536", b"1000000", b"1e9"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One value-level mutation that keeps the file's shape."""
    lines = data.split(b"\n")
    kind = rng.randrange(5)
    if kind <= 2:  # a number, its unit kept
        spans = [m.span() for m in _NUMBER.finditer(data)]
        if spans:
            a, b = rng.choice(spans)
            return data[:a] + rng.choice(_VALUES) + data[b:]
    if kind == 3 and len(lines) > 1:  # delete one line
        del lines[rng.randrange(len(lines))]
        return b"\n".join(lines)
    i = rng.randrange(len(lines))  # duplicate one line
    return b"\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])


def make_input(seed: int, index: int) -> tuple[bytes, str, bool]:
    """Input ``index`` of run ``seed``: (file bytes, simulation policy, verify the plan?)."""
    rng = random.Random(f"plan:{seed}:{index}")
    path = rng.choice(SEED_FILES)
    data = path.read_bytes()
    for _ in range(rng.choice([1, 1, 2, 3])):
        data = mutate(rng, data)
    return data, rng.choice(POLICIES), rng.random() < 0.25


@dataclass(frozen=True)
class Outcome:
    seconds: float
    stages: tuple[str, ...]  # the commands the input reached: "check", "plan", "simulate"
    failure: str | None


class Harness:
    """Runs check, plan and simulate on inputs written into a copy of the examples folder (so that
    prompts, schemas, tools and data files resolve as they do for the originals)."""

    def __init__(self, workdir: Path) -> None:
        self.folder = workdir / "plan-fuzz"
        shutil.copytree(EXAMPLES, self.folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.cortex", "__pycache__"))
        self.path = self.folder / "input.cortex"
        self.runner = CliRunner()

    def run(self, data: bytes, policy: str, verify: bool, hang_s: float = HANG_S) -> Outcome:
        self.path.write_bytes(data)
        start, reached, failure = time.perf_counter(), [], None
        try:
            with time_limit(hang_s):
                reached.append("check")
                result = self.runner.invoke(compiler_app, ["check", str(self.path)])
                failure = self._failure(result)
                if failure is None and result.exit_code == 0:
                    reached.append("plan")
                    args = ["plan", str(self.path)] + (["--verify-budget", "0.5"] if verify else ["--no-verify"])
                    failure = self._failure(self.runner.invoke(compiler_app, args))
                    if failure is None:
                        reached.append("simulate")
                        failure = self._failure(self.runner.invoke(
                            runtime_app, ["simulate", str(self.path), "--runs", "40", "--policy", policy]))
        except InputTimeout as timeout:
            failure = f"{reached[-1]}: {timeout}"
        return Outcome(time.perf_counter() - start, tuple(reached), failure)

    @staticmethod
    def _failure(result) -> str | None:
        """The compiler fuzz's verdict on one command (an escaped exception, an odd exit code), and a
        traceback printed instead of raised also fails."""
        failure = CompilerHarness._failure(result)
        if failure is None and "Traceback" in result.output:
            return "a traceback in the output"
        return failure
