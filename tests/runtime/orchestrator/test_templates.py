"""Prompt rendering: the documented context, a sandbox, forgiving undefined names."""

from __future__ import annotations

import pytest

from cortexlang.ir import IntKnob, LLMStage, ModelOption, Prompt, Workflow, Edge, Condition
from runtime.orchestrator.templates import PromptError, PromptRenderer


def renderer(template: str, system: str | None = None) -> PromptRenderer:
    stage = LLMStage(name="s", models=(ModelOption(model="m"),), prompt=Prompt(template=template, system=system),
                     max_tokens=IntKnob.fixed(8), input_tokens=10, output_tokens=5)
    wf = Workflow(name="w", stages=(stage,), entry="s",
                  edges=(Edge(source="s", target="done", condition=Condition(kind="always"), probability=1.0),))
    return PromptRenderer(wf)


def test_context_variables_and_system_message() -> None:
    r = renderer("Q: {{ question }} / {{ generate.text }} / attempt {{ attempt }} / {{ error }}", system="S {{ schema }}")
    messages = r.render("s", {"question": "why", "generate": {"text": "SELECT 1"}, "attempt": 2,
                              "error": "no such table", "schema": "T(a)"})
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content == "S T(a)"
    assert messages[1].content == "Q: why / SELECT 1 / attempt 2 / no such table"


def test_missing_names_render_empty_and_tojson_gives_null() -> None:
    r = renderer("[{{ nothing }}][{{ think.thought }}][{{ think.input | tojson }}]{% if revise is defined %}x{% endif %}")
    assert r.render("s", {})[0].content == "[][][null]"


def test_sandbox_blocks_attribute_escapes() -> None:
    r = renderer("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(PromptError, match="failed to render"):
        r.render("s", {})


def test_render_errors_are_prompt_errors() -> None:
    r = renderer("{{ 1 / count }}")
    with pytest.raises(PromptError, match="ZeroDivisionError"):
        r.render("s", {"count": 0})
