"""Rendering LLM stages' prompts: jinja2 in a sandbox, templates compiled once per version.

The context a template sees (the IR's contract, :data:`cortexlang.ir.TEMPLATE_BUILTINS`):
the workflow inputs, the workflow ``vars``, the latest result of every stage
that has run (by stage name; inside a fan-out branch, that branch's own stages
shadow the run's), and the builtins ``previous``, ``attempt``, ``error`` and
``sql``. Inside a ``width`` fan-out ``branch`` is the 0-based branch index.

Templates come from the user's files, so they run in jinja2's
:class:`~jinja2.sandbox.SandboxedEnvironment` (no access to dunder attributes
or unsafe callables). A missing name renders empty and chains
(``ChainableUndefined``), as the compiler's CX602 warning promises;
``x is defined`` works as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import json

from jinja2 import ChainableUndefined, Template, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from cortexlang.ir import LLMStage, ToolStage, Workflow
from runtime.engines.base import ChatMessage


class PromptError(ValueError):
    """A template failed to render (the stage's ``error`` outcome carries the message)."""


class PromptRenderer:
    """Compiled templates of one workflow: its LLM stages' prompts and system messages, and its
    tools' named arguments."""

    def __init__(self, workflow: Workflow) -> None:
        self._env = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=False)
        self._env.policies["json.dumps_function"] = _dumps  # `x | tojson` of a missing field gives null
        self._prompts: dict[str, Template] = {}
        self._systems: dict[str, Template] = {}
        for s in workflow.stages:
            if isinstance(s, LLMStage):
                self._prompts[s.name] = self._compile(s.name, s.prompt.template)
                if s.prompt.system:
                    self._systems[s.name] = self._compile(s.name, s.prompt.system)
        self._args: dict[str, dict[str, Template]] = {
            s.name: {k: self._compile(s.name, t) for k, t in s.args.items()}
            for s in workflow.stages if isinstance(s, ToolStage) and s.args}

    def _compile(self, stage: str, text: str) -> Template:
        try:
            return self._env.from_string(text)
        except TemplateError as exc:  # the compiler reports these (CX601); keep the runtime robust anyway
            raise PromptError(f"prompt of stage {stage!r} does not compile: {exc}") from exc

    def render(self, stage: str, context: Mapping[str, Any]) -> tuple[ChatMessage, ...]:
        """The stage's chat messages: an optional system message, then the prompt as one user message."""
        try:
            user = self._prompts[stage].render(context)
            system = self._systems[stage].render(context) if stage in self._systems else None
        except TemplateError as exc:
            raise PromptError(f"prompt of stage {stage!r} failed to render: {exc}") from exc
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as exc:
            raise PromptError(f"prompt of stage {stage!r} failed to render: {type(exc).__name__}: {exc}") from exc
        if system:
            return (ChatMessage(role="system", content=system), ChatMessage(role="user", content=user))
        return (ChatMessage(role="user", content=user),)


    def arguments(self, stage: str, context: Mapping[str, Any]) -> dict[str, str] | None:
        """The tool stage's named arguments rendered from ``context`` (None: it takes the context)."""
        templates = self._args.get(stage)
        if templates is None:
            return None
        try:
            return {name: t.render(context) for name, t in templates.items()}
        except TemplateError as exc:
            raise PromptError(f"an argument of stage {stage!r} failed to render: {exc}") from exc
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as exc:
            raise PromptError(f"an argument of stage {stage!r} failed to render: {type(exc).__name__}: {exc}") from exc


def _dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, default=lambda v: None if isinstance(v, Undefined) else str(v), **kwargs)
