"""The CHESS-style example's tools: merging schema links and unit-testing candidates."""

from __future__ import annotations

import json

from examples.tools.sqltest import unit_test, unite


def test_unite_keeps_the_majority_and_asks_for_keywords_when_links_disagree() -> None:
    links = [{"tables": ["sales", "regions"]}, {"tables": ["sales"]}, {"tables": ["sales", "regions"]}]
    assert unite(json.dumps(links)) == {"tables": ["regions", "sales"], "needs_keywords": False, "links": 3}
    split = [{"tables": ["sales"]}, {"tables": ["customers"]}]
    assert unite(json.dumps(split))["needs_keywords"] is True
    assert unite("not json") == {"tables": [], "needs_keywords": True, "links": 0}


def test_unit_test_scores_rows_first_and_repairs_against() -> None:
    ran = {"draft": "SELECT 1", "run": {"row_count": 3}, "revise": None}
    repaired = {"draft": "x", "run": {"row_count": 3}, "revise": "SELECT 1"}
    empty = {"draft": "x", "run": {"row_count": 0}}
    scores = [unit_test("q", json.dumps(c), str(i))["score"] for i, c in enumerate([ran, repaired, empty, {}])]
    assert scores == [1.0, 0.8, 0.4, 0.0]
