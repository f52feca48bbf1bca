"""The NL2SQL question set: well-formed, and every reference query answers on the built database."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

QUESTIONS = Path(__file__).resolve().parents[2] / "examples" / "questions" / "nl2sql.jsonl"


def load() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_forty_well_formed_questions() -> None:
    questions = load()
    assert len(questions) == 40
    assert all(set(q) == {"id", "question", "reference_sql", "difficulty"} for q in questions)
    assert len({q["id"] for q in questions}) == 40
    assert len({q["question"].lower() for q in questions}) == 40
    mix = Counter(q["difficulty"] for q in questions)
    assert set(mix) == {"easy", "medium", "hard"} and min(mix.values()) >= 10


@pytest.mark.parametrize("item", load(), ids=lambda q: q["id"])
def test_reference_sql_is_one_read_only_select_that_returns_rows(item: dict, sales_db: Path) -> None:
    sql = item["reference_sql"]
    assert sql.rstrip().endswith(";") and sql.count(";") == 1
    assert sql.lstrip().upper().startswith(("SELECT", "WITH"))
    with sqlite3.connect(f"file:{sales_db}?mode=ro", uri=True) as conn:
        rows = conn.execute(sql).fetchall()
    assert rows, f"{item['id']} returned no rows"
    assert all(value is not None for row in rows for value in row), f"{item['id']} returned NULLs"
