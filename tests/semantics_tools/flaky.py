"""Tools whose outcome is drawn at random, for the semantics agreement test.

``flaky:ok_750`` is an async tool that succeeds with probability 0.750 and
raises otherwise, so an orchestrator run takes a stage's ``ok`` edge with the
planning probability the test gave that edge. Draws come from one seeded RNG
(:func:`reseed` before each batch of runs) so the test is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

_rng = random.Random(0)


def reseed(seed: int) -> None:
    _rng.seed(seed)


class Unlucky(RuntimeError):
    """The drawn outcome was ``error``."""


def __getattr__(name: str) -> Callable[[dict[str, Any]], Awaitable[str]]:
    if not name.startswith("ok_"):
        raise AttributeError(name)
    p_ok = int(name[3:]) / 1000.0

    async def tool(ctx: dict[str, Any]) -> str:
        if _rng.random() < p_ok:
            return "ok"
        raise Unlucky("drawn error")

    return tool
