"""What an OpenAI client can name as its ``model``: the LLM stages and the models serving them.

Three kinds of names, looked up in this order by :func:`resolve`:

* ``workflow/stage``: that LLM stage of that deployed workflow;
* ``stage``: the LLM stage of that name (in the workflow the request names, or in the
  only workflow that has one);
* a model name (``smollm2``): the LLM stages whose pools serve that model; the call goes to
  the one that can serve it soonest (healthy, least expected wait in its pool's queue).

Anything else is :class:`UnknownTarget`, whose message lists every name that works.
:func:`model_objects` lists the same names in OpenAI's ``/v1/models`` schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cortexlang.ir import LLMStage
from runtime.orchestrator import Orchestrator
from runtime.orchestrator.versions import WorkflowVersion


class UnknownTarget(ValueError):
    """No stage or model of that name (or more than one stage): the message lists the choices."""


@dataclass(frozen=True)
class Target:
    """The stage a call is scheduled as, and what the client called it."""

    workflow: str
    stage: str
    model: str
    """The model serving the stage now."""


def _targets(version: WorkflowVersion) -> list[Target]:
    out = []
    for stage in version.workflow.stages:
        if isinstance(stage, LLMStage) and stage.name in version.pools:
            model = version.knobs.models.get(stage.name, stage.models[0].model)
            out.append(Target(version.name, stage.name, model))
    return out


def all_targets(orchestrator: Orchestrator, workflow: str | None = None) -> list[Target]:
    """Every LLM stage of the deployed workflows (only ``workflow``'s when given)."""
    return [t for name, v in orchestrator.versions.items() if workflow in (None, name) for t in _targets(v)]


def model_objects(orchestrator: Orchestrator, created: int) -> list[dict[str, Any]]:
    """``/v1/models`` entries: ``workflow/stage`` for every LLM stage, the bare stage name where it is
    unique, and every model serving a stage. ``cortex`` says what each name stands for."""
    targets = all_targets(orchestrator)
    by_stage: dict[str, list[Target]] = {}
    by_model: dict[str, list[Target]] = {}
    for t in targets:
        by_stage.setdefault(t.stage, []).append(t)
        by_model.setdefault(t.model, []).append(t)
    entries: dict[str, dict[str, Any]] = {}

    def add(name: str, kind: str, served: list[Target]) -> None:
        entries.setdefault(name, {"id": name, "object": "model", "created": created, "owned_by": "cortex",
                                  "cortex": {"kind": kind, "stages": [f"{t.workflow}/{t.stage}" for t in served],
                                             "models": sorted({t.model for t in served})}})

    for t in targets:
        add(f"{t.workflow}/{t.stage}", "stage", [t])
    for stage, served in by_stage.items():
        if len(served) == 1:
            add(stage, "stage", served)
    for model, served in by_model.items():
        add(model, "model", served)
    return list(entries.values())


def resolve(orchestrator: Orchestrator, name: str, workflow: str | None = None) -> Target:
    """The stage a request naming ``name`` as its model is scheduled as (see module docstring)."""
    targets = all_targets(orchestrator, workflow)
    wf, slash, stage = name.partition("/")
    if slash:
        found = [t for t in targets if t.workflow == wf and t.stage == stage]
    else:
        found = [t for t in targets if t.stage == name]
        if len(found) > 1:
            raise UnknownTarget(f"stage {name!r} is in several workflows: name one of "
                                f"{', '.join(f'{t.workflow}/{t.stage}' for t in found)}")
        if not found:
            found = [t for t in targets if t.model == name]
            if len(found) > 1:
                return min(found, key=lambda t: _wait(orchestrator, t))
    if found:
        return found[0]
    choices = sorted({f"{t.workflow}/{t.stage}" for t in targets} | {t.stage for t in targets}
                     | {t.model for t in targets})
    scope = f" in workflow {workflow!r}" if workflow else ""
    raise UnknownTarget(f"no stage or model {name!r}{scope}; choose one of: {', '.join(choices) or 'none deployed'}")


def _wait(orchestrator: Orchestrator, target: Target) -> tuple[bool, float]:
    """Sort key of a stage serving a model: healthy pools first, then the least expected wait."""
    pool = orchestrator.versions[target.workflow].pools[target.stage]
    return (not pool.healthy, pool.load().expected_wait_s)
