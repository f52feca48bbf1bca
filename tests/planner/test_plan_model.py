"""The Plan model: canonical JSON round trip and strictness."""

from __future__ import annotations

import pydantic
import pytest

from planner.api import plan_program
from planner.plan import Plan
from planner.synthetic import nl2sql_program


def test_plan_round_trips_through_canonical_json(tmp_path) -> None:
    plan = plan_program(nl2sql_program(rate=20.0))
    assert isinstance(plan, Plan)
    path = tmp_path / "plan.json"
    plan.save(path)
    again = Plan.load(path)
    assert again == plan and again.canonical_json() == plan.canonical_json()
    assert plan.workflow().pool("generate").devices >= 1


def test_plan_is_frozen_and_strict() -> None:
    plan = plan_program(nl2sql_program())
    with pytest.raises(pydantic.ValidationError):
        plan.cost_per_hour = 0.0
    data = plan.model_dump(mode="json")
    data["surprise"] = 1
    with pytest.raises(pydantic.ValidationError):
        Plan.model_validate(data)


def test_plans_are_deterministic_for_a_seed() -> None:
    a = plan_program(nl2sql_program(rate=50.0, slo_s=3.0), seed=3)
    b = plan_program(nl2sql_program(rate=50.0, slo_s=3.0), seed=3)
    assert a.canonical_json() == b.canonical_json()
