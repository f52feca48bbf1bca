"""Fixtures for the example material: one sales database built per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.data.build_sales_db import build


@pytest.fixture(scope="session")
def sales_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built sales database in a temporary directory (never the checked-out one)."""
    return build(tmp_path_factory.mktemp("sales") / "sales.db")
