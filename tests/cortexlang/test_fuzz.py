"""Fuzzing `cortexc check` and `cortexc fmt --diff`: diagnostics only, never an exception, never over a CPU second.

A few thousand seeded inputs here (the same ones every run); benchmarks/fuzz_compiler.py
runs the same mutator over 100,000 and more. See tests/cortexlang/fuzzing.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.cortexlang.fuzzing import Harness, make_input

SEED = 13
INPUTS = 2500


def test_mutated_examples_give_diagnostics_within_a_cpu_second(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    failures = []
    for index in range(INPUTS):
        outcome = harness.run(make_input(SEED, index))
        if outcome.failure is not None:
            failures.append(f"make_input({SEED}, {index}): {outcome.failure}")
    assert not failures, f"{len(failures)} of {INPUTS} inputs failed:\n" + "\n".join(failures[:20])
