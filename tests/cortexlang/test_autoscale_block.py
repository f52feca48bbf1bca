"""The workflow's ``autoscale`` block: the live monitor's replica limits and budget, declared in the language."""

from __future__ import annotations

import pytest

from cortexlang import ir
from tests.cortexlang.helpers import codes, llm, workflow

STAGES = llm("gen") + llm("fix", "pool = shared") + llm("check", "pool = shared")
FLOW = "flow { gen -> fix -> check -> done }"


def autoscale(block: str):
    return workflow(STAGES + "autoscale {\n" + block + "\n}\n" + FLOW)


def test_limits_per_pool_and_budget_lower_to_the_ir() -> None:
    result = autoscale("replicas = 2..6  budget = $1.50/h\npool gen { replicas = 1..3 }\npool shared { replicas = 4 }")
    assert result.ok, codes(result)
    declared = result.program.workflows[0].autoscale
    assert declared == ir.Autoscale(default=ir.ReplicaLimits(min_replicas=2, max_replicas=6), budget_per_hour=1.5,
                                    pools={"gen": ir.ReplicaLimits(min_replicas=1, max_replicas=3),
                                           "shared": ir.ReplicaLimits(min_replicas=4, max_replicas=4)})


def test_an_empty_block_has_the_monitor_defaults_and_no_block_none() -> None:
    assert autoscale("").program.workflows[0].autoscale == ir.Autoscale()
    assert workflow(STAGES + FLOW).program.workflows[0].autoscale is None


@pytest.mark.parametrize("block, code", [
    ("replicas = 4..1", "CX215"),                   # high..low
    ("pool gen { replicas = 3..2 }", "CX215"),
    ("pool gne { replicas = 1..2 }", "CX215"),      # no such LLM pool
    ("pool fix { replicas = 1..2 }", ""),           # a stage on a shared pool: its pool's limits (accepted)
    ("replicas = 0..2", "CX203"),                   # at least one replica
    ("budget = $0/h", "CX203"),
    ("replicas = 2s", "CX202"),
])
def test_bad_limits_are_reported(block: str, code: str) -> None:
    result = autoscale(block)
    if not code:
        assert result.ok, codes(result)
        return
    assert code in codes(result) and not result.ok
