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


def test_round3_mutations_end_cleanly(tmp_path, monkeypatch) -> None:
    """Round 3's inputs (hostile calibration caches, re-parented traces): a few, each as a process.
    The hostile caches found tracebacks in `cortex run` (tests/runtime/test_drift.py has one test each)."""
    import random

    from tests.runtime.cli_fuzzing import EXAMPLES, Artefacts, Case, _round3, _run_calibrated, _with_hostile_parents

    monkeypatch.chdir(tmp_path)
    base = Artefacts(EXAMPLES, {}, [], {}, (EXAMPLES / "questions" / "nl2sql.jsonl").read_text())
    if not (EXAMPLES / "data" / "sales.db").is_file():
        pytest.skip("examples/data/sales.db is not built (examples/data/build_sales_db.py)")
    harness = Harness(tmp_path, base)
    failures = []
    for index in range(4):
        case = _run_calibrated(random.Random(f"test-r3:{index}"), base)
        outcome = harness.run(case)
        if outcome.failure:
            failures.append(f"input {index} [{case.note}]: {outcome.failure}\n  {case.command()}")
    assert not failures, "\n".join(failures)
    # The stream is its own: most inputs are left as they were, and the re-parenting keeps lines JSON.
    same = Case("plan-flags", "cortexc", ["plan"])
    untouched = [i for i in range(200) if _round3(3, i, same, base) is same]
    assert 170 <= len(untouched) < 200
    line = b'{"arrival_s": 0, "calls": [{"id": "c0", "parents": []}, {"id": "c1", "parents": ["c0"]}]}\n'
    for seed in range(8):
        assert _with_hostile_parents(random.Random(seed), line).count(b"\n") == 1
