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


def test_knob_settings_name_every_value_the_workflow_does_not_declare() -> None:
    from cortexlang.compiler import compile_file
    from planner.plan import KnobSettings
    from tests.conftest import EXAMPLES

    wf = compile_file(EXAMPLES / "chess_sql.cortex").program.workflows[0]
    llm = next(s for s in wf.stages if s.kind == "llm")
    fanout = next(f for f in wf.fanouts if f.width is not None)
    nested = next(lp for f in wf.fanouts for b in f.branches for lp in b.loops)  # a loop inside a branch
    good = KnobSettings(models={llm.name: llm.models[0].model}, max_tokens={llm.name: llm.max_tokens.preferred},
                        retry_depth={nested.name: nested.max_iterations.preferred},
                        fanout_width={fanout.name: fanout.width.preferred})
    assert good.violations(wf) == []
    bad = KnobSettings(models={llm.name: "gpt-9", "nope": "x"}, hedge={llm.name: 10**6},
                       retry_depth={"no_loop": 2}, fanout_width={fanout.name: 0})
    wrong = bad.violations(wf)
    assert len(wrong) == 5, wrong
    assert any("'gpt-9', not one of the declared options" in w for w in wrong)
    assert any("model of 'nope': the workflow has no such LLM stage" in w for w in wrong)
    assert any(f"hedge width of '{llm.name}' is 1000000" in w for w in wrong)
    assert any("retry depth of 'no_loop': the workflow has no such loop" in w for w in wrong)
    assert any(f"fan-out width of '{fanout.name}' is 0" in w for w in wrong)
