"""Reading a tool's inputs out of the run context.

Every example tool has the signature ``tool(ctx: dict) -> dict``. ``ctx`` holds
the workflow inputs (``ctx["question"]``) and the latest result of each stage
that has run, by stage name. These examples assume the result shapes below;
the helpers accept the plausible variants so a tool does not break on them:

* an LLM stage with ``output = text``: ``{"text": "..."}`` (a bare string is accepted);
* an LLM stage with ``output = json``: the parsed object, its keys are fields;
* a tool stage: the dict the tool returned;
* a fan-out: ``{"branches": [{stage: result, ...}, ...]}``;
* inside a ``width`` fan-out, ``ctx["branch"]`` is the 0-based index of the branch;
* in a loop, ``ctx["attempt"]`` is the 1-based iteration number, where the runtime provides it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class ToolInputError(ValueError):
    """The context does not hold what the tool needs; the message says what is missing."""


def text_of(value: Any) -> str:
    """The text of a stage result: a string, a ``text`` field, or the JSON of anything else."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"].strip()
    return json.dumps(value, sort_keys=True, default=str)


def query_from(ctx: dict) -> str:
    """The search query for this call, by the first rule that applies:

    1. ``ctx["query"]``: an explicit query (direct calls, tests);
    2. ``ctx["think"]["input"]``: the ReAct agent's chosen action input;
    3. ``ctx[plan]["queries"][ctx["branch"]]`` for ``plan`` in (``replan``, ``plan``):
       the deep-research sub-question of this fan-out branch (the latest plan wins);
    4. ``ctx["rewrite"]``: the RAG workflow's rewritten query;
    5. ``ctx["question"]``: the workflow input.

    Raises :class:`ToolInputError` when none yields a non-empty string.
    """
    if isinstance(ctx.get("query"), str) and ctx["query"].strip():
        return ctx["query"].strip()
    think = ctx.get("think")
    if isinstance(think, dict) and isinstance(think.get("input"), str) and think["input"].strip():
        return think["input"].strip()
    branch = ctx.get("branch")
    for plan_stage in ("replan", "plan"):
        plan = ctx.get(plan_stage)
        queries = plan.get("queries") if isinstance(plan, dict) else None
        if isinstance(queries, list) and queries:
            index = branch if isinstance(branch, int) else 0
            text = text_of(queries[index % len(queries)])
            if text:
                return text
    for key in ("rewrite", "question"):
        text = text_of(ctx.get(key))
        if text:
            return text
    raise ToolInputError(
        "no query in the context: expected one of 'query', 'think.input', 'plan.queries', 'rewrite', 'question'"
    )


def find_key(value: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in nested dicts/lists, depth first, in order."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from find_key(v, key)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from find_key(item, key)
