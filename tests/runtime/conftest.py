"""Fixtures shared by the runtime tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per module, for module-scoped engines that outlive a test."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
