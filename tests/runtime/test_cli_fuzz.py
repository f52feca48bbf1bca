"""Hostile command lines through `cortexc plan` and `cortex simulate|run`: never a traceback, never a hang.

A few dozen seeded inputs (the long run is benchmarks/fuzz_cli.py, whose report lists the failures
it found; each fix has its own test in tests/cortexlang/test_cli_hostile.py). A failure prints the
input index, reproduced with ``python benchmarks/fuzz_cli.py --seed SEED --show INDEX``.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.runtime.cli_fuzzing import Harness, make_case

SEED = 11
INPUTS = 40


@pytest.mark.slow  # about a minute: recording the base trace and planning four examples come first
def test_hostile_command_lines_end_cleanly(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path written by a command lands where the harness looks
    harness = Harness(tmp_path)
    failures, codes = [], Counter()
    for index in range(INPUTS):
        case = make_case(SEED, index, harness.base)
        outcome = harness.run(case, subprocess_mode=index % 10 == 0)
        codes[outcome.exit_code] += 1
        if outcome.failure:
            failures.append(f"input {index} [{case.surface}]: {outcome.failure}\n  {case.command()}")
    assert not failures, "\n".join(failures)
    assert codes[0] >= INPUTS // 10, f"too few inputs ran to the end: {codes}"
