"""Golden tests per stage: every example -> IR JSON; every error example -> diagnostics text."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexlang.compiler import compile_source
from cortexlang.diagnostics import render_all
from tests.conftest import EXAMPLES, REPO, check_golden

GOLDEN = Path(__file__).parent / "golden"
WORKFLOW_EXAMPLES = sorted(EXAMPLES.glob("*.cortex"))
ERROR_EXAMPLES = sorted((EXAMPLES / "errors").glob("*.cortex"))


def _compile(path: Path):
    rel = path.relative_to(REPO).as_posix()
    return compile_source(path.read_text(encoding="utf-8"), rel, path.parent)


def test_there_are_examples() -> None:
    assert len(WORKFLOW_EXAMPLES) >= 1 and len(ERROR_EXAMPLES) >= 30


@pytest.mark.parametrize("path", WORKFLOW_EXAMPLES, ids=lambda p: p.stem)
def test_example_compiles_to_golden_ir(path: Path) -> None:
    result = _compile(path)
    assert [d for d in result.diagnostics if d.is_error] == [], render_all(result.diagnostics, {result.path: result.source})
    check_golden(GOLDEN / "ir" / f"{path.stem}.json", result.program.canonical_json())


@pytest.mark.parametrize("path", WORKFLOW_EXAMPLES, ids=lambda p: p.stem)
def test_canonical_json_is_stable_and_round_trips(path: Path) -> None:
    first, second = _compile(path).program, _compile(path).program
    assert first.canonical_json() == second.canonical_json()
    assert type(first).from_json(first.canonical_json()) == first


@pytest.mark.parametrize("path", ERROR_EXAMPLES, ids=lambda p: p.stem)
def test_error_example_gives_golden_diagnostics(path: Path) -> None:
    result = _compile(path)
    assert result.diagnostics, "every file in examples/errors shows at least one diagnostic"
    code = path.stem.split("_")[0].upper()
    if code.startswith("CX"):
        assert code in {d.code for d in result.diagnostics}, f"{path.name} should show {code}"
    check_golden(GOLDEN / "diagnostics" / f"{path.stem}.txt", render_all(result.diagnostics, {result.path: result.source}) + "\n")


def test_every_code_has_an_example() -> None:
    from cortexlang.diagnostics import CODES

    shown = {p.stem.split("_")[0].upper() for p in ERROR_EXAMPLES}
    untestable = {"CX901"}  # internal errors have no example by design
    assert set(CODES) - shown - untestable == set()
