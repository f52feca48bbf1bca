"""Shared fixtures: repository paths and the golden-file helper.

Set ``CORTEX_UPDATE_GOLDENS=1`` to rewrite golden files instead of comparing
(then review the diff before committing).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
UPDATE_GOLDENS = os.environ.get("CORTEX_UPDATE_GOLDENS") == "1"


def deep_research_with_width(tmp_path: Path, width: str):
    """examples/deep_research.cortex (copied with the examples it imports) with its fan-out's width
    declaration replaced by ``width``, compiled; the wide fan-outs the planner and fuzz tests need."""
    import shutil

    from cortexlang.compiler import compile_file

    shutil.copytree(EXAMPLES, tmp_path / "ex", ignore=shutil.ignore_patterns("__pycache__"))
    src = tmp_path / "ex" / "deep_research.cortex"
    text = src.read_text()
    assert "width = 4 | 2 @ 90%" in text
    src.write_text(text.replace("width = 4 | 2 @ 90%", f"width = {width}"))
    result = compile_file(src)
    assert result.program is not None, result.diagnostics
    return result.program


def check_golden(path: Path, actual: str) -> None:
    """Compare ``actual`` with the golden file at ``path`` (or rewrite it when updating)."""
    if UPDATE_GOLDENS or not path.exists():
        if not UPDATE_GOLDENS:
            pytest.fail(f"missing golden file {path.relative_to(REPO)}; run with CORTEX_UPDATE_GOLDENS=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path.relative_to(REPO)} differs; rerun with CORTEX_UPDATE_GOLDENS=1 and review"


@pytest.fixture
def repo() -> Path:
    return REPO


POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=2"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def require_postgres() -> None:
    """Skip the calling test (or fixture) with a clear reason when no PostgreSQL server answers."""
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(POSTGRES_DSN).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (db test) does not answer: {exc}")


def sales_schema_in_postgres(prefix: str, sqlite_path: Path):
    """Generator for a module fixture: the example sales data loaded into a fresh PostgreSQL schema
    named ``<prefix>_<random>`` (yielded), dropped afterwards; skips without a server."""
    import uuid

    from examples.data.load_postgres import drop, load

    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    load(POSTGRES_URL, name, sqlite_path=sqlite_path)
    try:
        yield name
    finally:
        drop(POSTGRES_URL, name)


@pytest.fixture(autouse=True)
def _shipped_profiles_only(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test sees the shipped latency profiles unless it calibrates itself: a profile that
    `cortex calibrate` (or `make demo`) stored for this machine must not leak into goldens or
    timings, nor a test's calibration into the next test."""
    from planner.profiles import use_calibrated

    monkeypatch.setenv("CORTEX_PROFILE_CACHE", str(tmp_path_factory.mktemp("profile-cache")))
    yield
    use_calibrated()
