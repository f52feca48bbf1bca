"""The engine's written-out profile formulas must equal the planner's, bit for bit.

The engine computes an admitting iteration's time without calling the profile (a hot path); the
planner's :class:`planner.profiles.LatencyProfile` stays the one definition, so every profile the
simulator knows is checked here on a spread of batches, KV sizes and prompt lengths.
"""

from __future__ import annotations

import random

import pytest

from planner.profiles import all_profiles
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.engine import LLMEngine


@pytest.mark.parametrize("p", all_profiles(), ids=lambda p: f"{p.model}-{p.device}-tp{p.tp}")
def test_admitting_iteration_time_equals_the_profile(p):
    eng = LLMEngine(None, ReplicaSpec(name="e", kind="llm", device="H100", model="m"), p, 1, 1 << 20)
    rng = random.Random(1)
    for _ in range(200):
        prefill, b, k = rng.randint(1, 8192), rng.choice([0, 0, rng.randint(1, 256)]), rng.randint(0, 1 << 20)
        expected = p.iteration_s(prefill, b, k) if b else p.prefill_s(prefill)
        assert eng._iteration_s(prefill, b, k) == expected  # exact: same operations, same order
