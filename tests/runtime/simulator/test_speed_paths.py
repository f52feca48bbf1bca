"""Fast paths added for simulator speed compute exactly what the code they replace computes."""

from __future__ import annotations

import random

import pytest

from runtime.policies.base import KEEP, Adaptation, Route, route_to
from runtime.simulator import events
from runtime.simulator.distributions import run_rng, seeded_rng
from runtime.simulator.mt import MersenneTwister


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


@pytest.mark.parametrize("seed", [0, 1, 7, -3, 2**32 - 1, 2**32, -(2**32 - 1), -(2**32), 1_000_003 * 9 + 5,
                                  2**64 + 1, 10**40])
def test_the_run_generator_draws_random_randoms_stream(seed: int) -> None:
    """MersenneTwister (and run_rng, whichever generator this build uses) draws exactly
    ``random.Random(seed)``'s ``random()`` and ``gammavariate`` values, across several twists of the
    624-word state."""
    for make in (MersenneTwister, run_rng):
        ref, rng = random.Random(seed), make(seed)
        assert [rng.random() for _ in range(2000)] == [ref.random() for _ in range(2000)]
        assert ([rng.gammavariate(a, 1.5) for a in (0.5, 1.0, 2.0) for _ in range(20)]
                == [ref.gammavariate(a, 1.5) for a in (0.5, 1.0, 2.0) for _ in range(20)])


def test_route_is_a_frozen_value() -> None:
    """Route (a C struct in the compiled build) keeps the dataclass contract: equality, hashing,
    defaults, and no assignment."""
    r = Route("h100-0")
    assert r == Route("h100-0", None) and hash(r) == hash(Route("h100-0"))
    assert r.decode_replica_id is None and Route("p", "d").decode_replica_id == "d"
    assert r != Route("h100-1")
    with pytest.raises(AttributeError):
        r.replica_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize("steps", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_event_heap_is_heapq(seed: int, steps: bool) -> None:
    """push_event/pop_event (the written-out, typed ones in either build) keep exactly the list
    ``heapq`` keeps and pop the same events, ties in time broken by ``seq``, infinite times included;
    and the same for an engine's finish heap, keyed by int steps (``steps``)."""
    import heapq

    push, pop = getattr(events, "written_out", (events.push_event, events.pop_event))
    rng = random.Random(seed)
    ref: list = []
    heap: list = []
    for seq in range(3000):
        if ref and rng.random() < 0.45:
            assert pop(heap) == heapq.heappop(ref)
        else:
            t = (rng.choice([0, 1, 2**40, rng.randint(0, 20)]) if steps else
                 rng.choice([0.0, 1.5, float("inf"), rng.random(), float(rng.randint(0, 20))]))
            item = (t, seq, "handler", seq)
            push(heap, item)
            heapq.heappush(ref, item)
        assert heap == ref
    while ref:
        assert pop(heap) == heapq.heappop(ref)
    with pytest.raises(IndexError):
        pop(heap)


def test_route_to_and_adaptation_are_the_dataclasses_values() -> None:
    """``route_to`` (a bare C struct in the compiled build) equals the constructor's Route; an
    Adaptation (a C struct there too) keeps the frozen dataclass contract."""
    r = route_to("h100-0")
    assert r == Route("h100-0") and hash(r) == hash(Route("h100-0")) and r.decode_replica_id is None
    assert KEEP == Adaptation() and KEEP.model is None and KEEP.hedge == 1
    assert Adaptation(model="m").model == "m" and Adaptation(hedge=2) != KEEP
    with pytest.raises(AttributeError):
        KEEP.hedge = 2  # type: ignore[misc]
