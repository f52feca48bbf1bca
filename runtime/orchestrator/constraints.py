"""LLM stages' output constraints, from the IR to what engines enforce, once per deployment.

:func:`required_capabilities` says which engine capabilities a pool's stages need (checked on
the built engines before they start: an engine that cannot honour a constraint fails the
deployment, never a call). :func:`decoding_constraints` turns each constrained stage's IR
constraint into a :class:`DecodingConstraint`: JSON schema, regex and grammar as declared, and
``sql = DATABASE`` as the SELECT-only grammar of that database's live schema
(:mod:`runtime.sql.grammar`, read through the stage's started SQL executor). Each is compiled by
xgrammar when it is installed, so a grammar with a syntax error fails here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cortexlang.ir import LLMStage, OutputConstraint, Workflow
from runtime.engines.base import ConstraintKind, DecodingConstraint
from runtime.engines.constraint_check import validate
from runtime.sql.executor import SQLExecutor
from runtime.sql.grammar import read_schema, select_grammar

ENGINE_KIND: dict[str, ConstraintKind] = {"json": "json", "regex": "regex", "grammar": "grammar", "sql": "grammar"}
"""IR constraint kind -> the kind engines enforce (an SQL constraint is a grammar)."""


class ConstraintSetupError(RuntimeError):
    """A stage's constraint cannot be prepared (its database has no tables, xgrammar refuses it)."""


def required_capabilities(workflow: Workflow, stages: Iterable[str]) -> set[str]:
    """The ``constraint:<kind>`` capabilities the engines serving ``stages`` need."""
    out = set()
    for name in stages:
        stage = workflow.stage(name)
        if isinstance(stage, LLMStage) and stage.constraint is not None:
            out.add(f"constraint:{ENGINE_KIND[stage.constraint.kind]}")
    return out


def decoding_constraints(workflow: Workflow, executors: Mapping[str, SQLExecutor]) -> dict[str, DecodingConstraint]:
    """Stage name -> its engine-level constraint, for every constrained LLM stage. Blocking (it
    reads database schemas): run it in a thread. Raises :class:`ConstraintSetupError`."""
    grammars: dict[str, str] = {}  # one schema read per database
    out = {}
    for stage in workflow.stages:
        if not isinstance(stage, LLMStage) or stage.constraint is None:
            continue
        try:
            out[stage.name] = _decoding(stage.constraint, executors, grammars)
            validate(out[stage.name])
        except (ValueError, KeyError) as exc:
            raise ConstraintSetupError(f"stage {stage.name!r}: {exc}") from exc
    return out


def _decoding(c: OutputConstraint, executors: Mapping[str, SQLExecutor], grammars: dict[str, str]) -> DecodingConstraint:
    if c.kind == "sql":
        assert c.database is not None
        if c.database not in grammars:
            executor = executors.get(c.database)
            if executor is None:
                raise KeyError(f"database {c.database!r} is not set up")
            grammars[c.database] = select_grammar(read_schema(executor.engine))
        return DecodingConstraint(kind="grammar", spec=grammars[c.database], source=f"sql:{c.database}")
    spec = {"json": c.json_schema, "regex": c.regex, "grammar": c.grammar}[c.kind]
    assert spec is not None  # the IR guarantees the field of its kind
    return DecodingConstraint(kind=ENGINE_KIND[c.kind], spec=spec, source=c.path or c.kind)
