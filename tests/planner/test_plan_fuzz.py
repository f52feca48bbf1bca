"""Hostile-but-valid programs through `cortexc plan` and `cortex simulate`: never a traceback, never a hang.

A few dozen seeded inputs per run (the long run is benchmarks/fuzz_plan.py); a failure prints the
input index, reproduced with ``tests.planner.plan_fuzzing.make_input(SEED, index)``.
"""

from __future__ import annotations

import random

import pytest

from cortexlang.cli import compiler_app
from tests.planner.edge_fuzzing import make_edge_input, mutate_edges
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


EDGE_INPUTS = 12


def test_edge_values_plan_and_simulate_without_tracebacks(harness: Harness) -> None:
    """The edge family (tests/planner/edge_fuzzing.py): knobs, loop bounds, SLOs and loads at their limits."""
    failures = []
    for index in range(EDGE_INPUTS):
        data, policy, verify = make_edge_input(SEED, index)
        outcome = harness.run(data, policy, verify)
        if outcome.failure:
            failures.append(f"edge input {index} ({policy}, verify={verify}): {outcome.failure}")
    assert not failures, "\n".join(failures)


def test_edge_mutations_rewrite_the_attribute_they_target() -> None:
    """Each rewrite keeps the attribute's name and changes its value only (the file keeps its shape); the
    output-length law's may add the stage's law on lines of their own, at the stage's indent."""
    rng = random.Random(0)
    source = b"  slo { latency = 6s  attainment = 99% }\n  llm a {\n    max_tokens = 9\n    output_tokens = 5\n  }\n"
    seen = {mutate_edges(rng, source) for _ in range(400)}
    for data in seen:
        assert data.count(b"slo {") == 1 and data.count(b"max_tokens = ") == 1 and data.count(b"output_tokens = ") == 1
        assert all(line.startswith(b"  ") for line in data.splitlines())
    assert any(b"attainment = 100%" in d for d in seen) and any(b"output_correlation = 1\n" in d for d in seen)
    assert any(b"max_tokens = 1\n    runaway = 0.999\n    output_cv = 3\n" in d for d in seen)
    assert any(b"output_tokens = 5\n    runaway = 1\n    output_cv = 0\n" in d for d in seen)
