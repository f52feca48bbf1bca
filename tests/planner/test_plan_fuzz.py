"""Hostile-but-valid programs through `cortexc plan` and `cortex simulate`: never a traceback, never a hang.

A few dozen seeded inputs per run (the long run is benchmarks/fuzz_plan.py); a failure prints the
input index, reproduced with ``tests.planner.plan_fuzzing.make_input(SEED, index)``.
"""

from __future__ import annotations

import pytest

from cortexlang.cli import compiler_app
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



@pytest.mark.parametrize("index", [474, 1340])
def test_earlier_hangs_are_refused_by_check(harness: Harness, index: int) -> None:
    """Seed 2's inputs 474 and 1340 set ``prefix_tokens = 1000000`` on a 600-token prompt: `cortex simulate`
    under autellix-plas ran past the bound. The prefix is longer than the prompt, so `cortexc check` refuses it
    (CX203) and nothing downstream sees it."""
    data, policy, verify = make_input(2, index)
    outcome = harness.run(data, policy, verify)
    assert outcome.failure is None and outcome.stages == ("check",) and outcome.seconds < 5
    assert "error[CX203]" in harness.runner.invoke(compiler_app, ["check", str(harness.path)]).output
