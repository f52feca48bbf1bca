"""Fast paths added for simulator speed compute exactly what the code they replace computes."""

from __future__ import annotations

import random

import pytest

from runtime.policies.base import Route
from runtime.simulator.distributions import seeded_rng


@pytest.mark.parametrize("seed", [0, 1, 7, -3, 1_000_003 * 9 + 5, 2**64 + 1, 10**40])
def test_seeded_rng_is_random_random(seed: int) -> None:
    """Same state and the same draws as ``random.Random(seed)``, Gaussian pairs included."""
    ref, fast = random.Random(seed), seeded_rng(seed)
    assert type(fast) is random.Random
    assert fast.getstate() == ref.getstate()

    def draws(r: random.Random) -> list:
        return [r.random() for _ in range(50)] + [r.gauss(1.0, 2.0) for _ in range(7)] + [
            r.randint(0, 9**20), r.lognormvariate(0.5, 0.3), r.gammavariate(2.0, 1.5)]

    assert draws(fast) == draws(ref)
    assert fast.getstate() == ref.getstate()


def test_route_is_a_frozen_value() -> None:
    """Route (a C struct in the compiled build) keeps the dataclass contract: equality, hashing,
    defaults, and no assignment."""
    r = Route("h100-0")
    assert r == Route("h100-0", None) and hash(r) == hash(Route("h100-0"))
    assert r.decode_replica_id is None and Route("p", "d").decode_replica_id == "d"
    assert r != Route("h100-1")
    with pytest.raises(AttributeError):
        r.replica_id = "x"  # type: ignore[misc]
