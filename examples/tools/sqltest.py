"""Tools of the CHESS-style example (examples/chess_sql.cortex): merging schema links and unit-testing
candidate queries. Both take named arguments (the stage's ``args``), JSON text rendered by the runtime.

:func:`unite` keeps the tables that a majority of the schema links name and says whether the question
needs a keyword-extraction step (when the links disagree). :func:`unit_test` scores one candidate from
what its branch produced: a query that ran and returned rows scores highest, fewer repairs score higher,
a candidate whose every attempt failed scores 0.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def unite(links: str) -> dict[str, Any]:
    """``links``: the JSON list of the link stage's results (each ``{"tables": [...]}``)."""
    parsed = [x for x in (_load(links) or []) if isinstance(x, dict)]
    votes = Counter(t for x in parsed for t in set(x.get("tables") or []) if isinstance(t, str))
    majority = len(parsed) / 2
    tables = sorted(t for t, n in votes.items() if n > majority)
    disagree = any(n <= majority for n in votes.values())
    return {"tables": tables, "needs_keywords": bool(disagree or not tables), "links": len(parsed)}


def unit_test(question: str, candidate: str, index: str) -> dict[str, Any]:
    """``candidate``: the JSON of one candidate branch's results by stage (``draft``, ``run``, ``revise``)."""
    results = _load(candidate) or {}
    run = results.get("run") if isinstance(results, dict) else None
    rows = run.get("row_count", 0) if isinstance(run, dict) else 0
    repaired = isinstance(results, dict) and results.get("revise") is not None
    score = 0.0 if not isinstance(run, dict) else (1.0 if rows else 0.4) - (0.2 if repaired else 0.0)
    return {"candidate": int(index), "score": round(max(score, 0.0), 3), "rows": rows, "question": question}
