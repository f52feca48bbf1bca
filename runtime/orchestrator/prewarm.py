"""Prewarming: a new replica computes its stages' shared prompt prefixes before it takes traffic.

The planner marks a pool's stage ``prewarm`` when the stage declares it or shares a prompt prefix
(``prefix_tokens``): the plan's latency assumes that prefix is resident in every replica's prefix
cache. A freshly started engine's cache is empty, so the first calls of each stage would pay the
whole prompt. Before a replica enters rotation (at start and on a scale-out) it is sent one
warm-up request per such stage: the stage's messages up to the first thing that varies between
runs, with ``max_tokens = 1``. Engines with prefix caching keep the prefix's KV blocks; later calls
of the stage share them up to the last whole block before the point where they differ.

The static prefix is the stage's system and user templates rendered with the workflow's ``vars``
and every other name replaced by a marker; the text stops at the first marker. A template whose
text starts with a varying part has no static prefix and is not warmed.

Warming is an optimisation: an engine that fails or times out on a warm-up is still put in
rotation (the failure is logged), never failed for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from cortexlang.ir import LLMStage, Workflow
from runtime.engines.base import ChatMessage, Engine, GenerationRequest

log = logging.getLogger("cortex.prewarm")

MARKER = "\x00"
"""Rendered in place of every name that is not a workflow ``var``: where the prompt starts to vary (one
control character, so that filters such as ``upper`` or ``trim`` leave it as it is)."""
WARM_UP_TIMEOUT_S = 60.0
"""The most a replica's warm-ups may take before it enters rotation anyway."""


class _Varies(Undefined):
    """An undefined name: renders as :data:`MARKER`; attribute and item access, arithmetic and calls give
    another varying value, comparisons are false (only the text before the first marker is kept, so
    what a template does with a varying value after it does not matter -- it must only not fail)."""

    def __str__(self) -> str:
        return MARKER

    def __getattr__(self, name: str) -> "_Varies":
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def _same(self, *_: object, **__: object) -> "_Varies":
        return self

    def _false(self, *_: object) -> bool:
        return False

    __getitem__ = __call__ = __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __rpow__ = _same
    __neg__ = __pos__ = _same
    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = Undefined.__hash__


def _static(template: str, variables: dict) -> tuple[str, bool]:
    """``template`` rendered with ``variables`` up to the first varying part, and whether it varies at all."""
    env = SandboxedEnvironment(undefined=_Varies, autoescape=False)
    try:
        text = env.from_string(template).render(variables)
    except (TemplateError, TypeError, ValueError):  # e.g. a filter applied to a varying part
        return "", True
    cut = text.find(MARKER)
    return (text, False) if cut < 0 else (text[:cut], True)


def static_prefix(workflow: Workflow, stage: str) -> tuple[ChatMessage, ...] | None:
    """The messages every call of LLM stage ``stage`` starts with (see the module docstring), or None
    when its prompt varies from its first character."""
    spec = workflow.stage(stage)
    if not isinstance(spec, LLMStage):
        raise ValueError(f"stage {stage!r} is not an LLM stage")
    variables = dict(workflow.vars)
    if spec.prompt.system:
        system, varies = _static(spec.prompt.system, variables)
        if varies:
            return (ChatMessage(role="system", content=system),) if system.strip() else None
        user, _ = _static(spec.prompt.template, variables)
        return (ChatMessage(role="system", content=system),) + (
            (ChatMessage(role="user", content=user),) if user.strip() else ())
    user, _ = _static(spec.prompt.template, variables)
    return (ChatMessage(role="user", content=user),) if user.strip() else None


WARM_UP_ID = "prewarm-"
"""Prefix of a warm-up request's id (``prewarm-<stage>-<replica>``); a run's calls are ``<run>.<stage>.<n>``."""


def is_warm_up(request: GenerationRequest) -> bool:
    """Whether ``request`` is a warm-up, not a run's call (for engines and tests that tell them apart)."""
    return request.request_id.startswith(WARM_UP_ID)


def warm_up_requests(workflow: Workflow, stages: Iterable[str]) -> list[GenerationRequest]:
    """One single-token request per stage of ``stages`` that has a static prefix."""
    out = []
    for stage in stages:
        messages = static_prefix(workflow, stage)
        if messages is not None:
            out.append(GenerationRequest(request_id=f"{WARM_UP_ID}{stage}", prompt=messages, max_tokens=1,
                                         temperature=0.0))
    return out


async def warm(engine: Engine, requests: Sequence[GenerationRequest], replica: str,
               timeout_s: float = WARM_UP_TIMEOUT_S) -> int:
    """Send ``requests`` to a started ``engine`` one after another; the number that succeeded. Never raises
    for a failed warm-up (the replica serves anyway, with a cold cache)."""
    done = 0
    try:
        async with asyncio.timeout(timeout_s):
            for request in requests:
                try:
                    await engine.generate(request.model_copy(update={"request_id": f"{request.request_id}-{replica}"}))
                    done += 1
                except Exception as exc:  # noqa: BLE001 -- an optimisation must not stop a replica
                    log.warning("warm-up %s on replica %s failed: %s", request.request_id, replica, exc)
    except TimeoutError:
        log.warning("warm-ups of replica %s took over %.0f s: it serves with %d of %d prefixes warm",
                    replica, timeout_s, done, len(requests))
    return done
