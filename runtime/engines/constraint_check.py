"""Does a text satisfy a :class:`DecodingConstraint`? For engines that do not decode under it.

The simulated engine has no model to constrain: it answers with its responder's text and labels
the result with this check (``satisfied`` / ``violated`` / ``unchecked``) instead of pretending.
The check uses xgrammar, the backend vLLM-CPU enforces constraints with, when it is installed
(grammar, regex and JSON schema alike, so "satisfied" means what vLLM would have accepted);
without it, JSON schemas are checked with ``jsonschema`` and regexes with Python's ``re``
(``fullmatch``), and grammars are ``unchecked``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from runtime.engines.base import ConstraintCheck, DecodingConstraint


def check_text(constraint: DecodingConstraint, text: str) -> ConstraintCheck:
    """Whether ``text`` (the whole output) is one the constraint admits."""
    grammar = _xgrammar_grammar(constraint.kind, constraint.spec)
    if grammar is not None:
        from xgrammar.testing import _is_grammar_accept_string  # xgrammar's own whole-string matcher

        return "satisfied" if _is_grammar_accept_string(grammar, text) else "violated"
    if constraint.kind == "regex":
        return "satisfied" if re.fullmatch(constraint.spec, text) else "violated"
    if constraint.kind == "json":
        import jsonschema

        try:
            jsonschema.validate(json.loads(text), json.loads(constraint.spec))
        except (ValueError, jsonschema.ValidationError):
            return "violated"
        return "satisfied"
    return "unchecked"


@lru_cache(maxsize=64)
def _xgrammar_grammar(kind: str, spec: str) -> Any:
    """The constraint compiled by xgrammar (cached per spec), or None without xgrammar."""
    try:
        import xgrammar
    except ImportError:
        return None
    if kind == "json":
        return xgrammar.Grammar.from_json_schema(spec)
    if kind == "regex":
        return xgrammar.Grammar.from_regex(spec)
    return xgrammar.Grammar.from_ebnf(spec)


def validate(constraint: DecodingConstraint) -> None:
    """Raise ValueError when xgrammar cannot compile the constraint (a grammar with a syntax error,
    a regex feature it lacks): for start-up, so a deployment fails before its first call. A no-op
    without xgrammar."""
    try:
        _xgrammar_grammar(constraint.kind, constraint.spec)
    except (RuntimeError, ValueError) as exc:  # xgrammar raises RuntimeError for parse errors
        raise ValueError(f"xgrammar cannot compile this {constraint.kind} constraint: {str(exc)[:300]}") from None
