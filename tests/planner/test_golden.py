"""Golden text/JSON plans: the examples and two synthetic workflows.

Regenerate after an intended change with
``CORTEX_UPDATE_GOLDENS=1 .venv/bin/pytest tests/planner/test_golden.py`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexlang.compiler import compile_source
from planner.api import plan_program
from planner.plan import Infeasible, Plan
from planner.render import render_infeasible, render_plan
from planner.synthetic import nl2sql_program, research_program
from tests.conftest import EXAMPLES, REPO, check_golden

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.cortex"))


def _views(result: Plan | Infeasible) -> tuple[str, str]:
    if isinstance(result, Plan):
        return render_plan(result), result.canonical_json()
    return render_infeasible(result), result.model_dump_json(indent=2) + "\n"


GOLDEN_TIME_LIMIT_S = 60.0
"""Cut-loop budget for golden plans: the iteration cap, not the wall clock, ends each solve, so a golden
does not depend on how busy the machine is (the default budget is sub-second)."""


def _check(name: str, result: Plan | Infeasible) -> None:
    text, data = _views(result)
    check_golden(GOLDEN / f"{name}.txt", text)
    check_golden(GOLDEN / f"{name}.json", data)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_plans_match_goldens(path: Path) -> None:
    compiled = compile_source(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix(), path.parent)
    assert compiled.program is not None, "the example must compile"
    _check(f"example_{path.stem}", plan_program(compiled.program, time_limit_s=GOLDEN_TIME_LIMIT_S))


@pytest.mark.parametrize("name,program,mode", [
    ("nl2sql_h100_cost", nl2sql_program(rate=60.0, slo_s=2.5), "cost"),
    ("nl2sql_h100_headroom", nl2sql_program(rate=60.0, slo_s=2.5), "headroom"),
    ("research_cost", research_program(rate=2.0, slo_s=15.0), "cost"),
    ("nl2sql_infeasible", nl2sql_program(rate=10.0, slo_s=0.5), "cost"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_synthetic_plans_match_goldens(name: str, program, mode: str) -> None:
    _check(name, plan_program(program, mode=mode, time_limit_s=GOLDEN_TIME_LIMIT_S))


def test_golden_json_plans_load_back() -> None:
    for path in sorted(GOLDEN.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        if '"plan_version"' in text:
            assert Plan.from_json(text).canonical_json() == text
