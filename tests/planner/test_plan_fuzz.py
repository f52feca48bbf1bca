"""Hostile-but-valid programs through `cortexc plan` and `cortex simulate`: never a traceback, never a hang.

A few dozen seeded inputs per run (the long run is benchmarks/fuzz_plan.py); a failure prints the
input index, reproduced with ``tests.planner.plan_fuzzing.make_input(SEED, index)``.
"""

from __future__ import annotations

import pytest

from tests.planner.plan_fuzzing import Harness, make_input

SEED = 7
INPUTS = 24


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    return Harness(tmp_path_factory.mktemp("plan-fuzz"))


def test_mutated_examples_plan_and_simulate_without_tracebacks(harness: Harness) -> None:
    failures, reached = [], {"check": 0, "plan": 0, "simulate": 0}
    for index in range(INPUTS):
        data, policy, verify = make_input(SEED, index)
        outcome = harness.run(data, policy, verify)
        for stage in outcome.stages:
            reached[stage] += 1
        if outcome.failure:
            failures.append(f"input {index} ({policy}, verify={verify}): {outcome.failure}")
    assert not failures, "\n".join(failures)
    assert reached["simulate"] >= INPUTS // 4, f"too few inputs reached the planner and simulator: {reached}"

