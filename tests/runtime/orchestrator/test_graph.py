"""The IR's execution semantics: edge choice, loop membership (for `attempt`), nested loop resets."""

from __future__ import annotations

from cortexlang.ir import (
    SLO, Condition, Edge, IntKnob, LLMStage, Loop, ModelOption, Program, Prompt, SQLStage, Workflow,
)
from runtime.orchestrator.graph import ExecGraph, field_text

from .conftest import compile_example


def graph(name: str) -> ExecGraph:
    program = compile_example(name)
    return ExecGraph(program, program.workflow(), {})


def test_outcome_edges_of_nl2sql() -> None:
    g = graph("nl2sql")
    assert g.semantics.select_edge("execute", "ok", {}).target == "done"
    assert g.semantics.select_edge("execute", "error", {}).target == "fix"
    assert g.semantics.select_edge("execute", "empty", {}).target == "fix"
    fix = g.semantics.select_edge("fix", "ok", {"text": "SELECT 1"})
    assert fix.target == "execute" and fix.loop == "repair"
    assert g.semantics.select_edge("generate", "error", None).target == "execute"  # an always edge covers every outcome


def test_field_branches_fall_back_to_else() -> None:
    g = graph("react_agent")
    assert g.semantics.select_edge("think", "ok", {"action": "lookup"}).target == "lookup"
    assert g.semantics.select_edge("think", "ok", {"action": "finish"}).target == "answer"
    assert g.semantics.select_edge("think", "ok", {"thought": "no action field"}).target == "answer"
    assert g.semantics.select_edge("think", "error", None).target == "answer"


def test_field_values_compare_in_json_spelling() -> None:
    assert field_text(True) == "true" and field_text(None) == "null" and field_text(2.0) == "2"
    assert field_text("supported") == "supported"


def test_innermost_loops() -> None:
    assert graph("nl2sql").innermost_loop == {"execute": "repair", "fix": "repair"}
    react = graph("react_agent").innermost_loop
    assert react["think"] == react["search"] == react["calculate"] == "steps" and "answer" not in react
    research = graph("deep_research")
    loops = research.innermost_loop
    assert loops["backoff"] == loops["fetch"] == "refetch"
    assert loops["replan"] == loops["critique"] == loops["synthesize"] == "rounds"
    assert loops["summarize"] == loops["search"] == "rounds"  # branch stages share the fan-out's loops
    assert "plan" not in loops
    assert research.semantics.nested["rounds"] == ("refetch",)


def test_estimates_rank_the_remaining_path() -> None:
    g = graph("nl2sql")
    assert g.remaining_s("generate") > g.remaining_s("execute") > 0
    assert g.expected_s("generate") > g.expected_s("execute")


def test_a_model_without_a_profile_still_gets_estimates() -> None:
    from cortexlang.ir import ModelSpec

    model = ModelSpec(name="m", weights="/nowhere", params=1e9, max_context=4096, kv_bytes_per_token=1024)
    stage = LLMStage(name="a", models=(ModelOption(model="m"),), prompt=Prompt(template="hi"),
                     max_tokens=IntKnob.fixed(8), input_tokens=10, output_tokens=5)
    sql = SQLStage(name="q", database="db")
    wf = Workflow(name="w", stages=(stage, sql), entry="a", slo=SLO(latency_s=1, attainment=0.9),
                  edges=(Edge(source="a", target="q", condition=Condition(kind="always"), probability=1.0),
                         Edge(source="q", target="done", condition=Condition(kind="outcome", values=("ok",)),
                              probability=0.5),
                         Edge(source="q", target="a", condition=Condition(kind="else"), probability=0.5, loop="l")),
                  loops=(Loop(name="l", max_iterations=IntKnob.fixed(2)),))
    g = ExecGraph(Program(models=(model,), workflows=(wf,)), wf, {})
    assert g.remaining_s("a") > 0 and g.innermost_loop == {"a": "l", "q": "l"}
