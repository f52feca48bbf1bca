"""Random service times and inter-arrival times, parameterised by mean and CV.

Both families are moment-matched to a mean ``m`` and coefficient of variation ``cv``:

* lognormal: ``sigma^2 = ln(1 + cv^2)``, ``mu = ln(m) - sigma^2 / 2`` (:func:`cortexlang.laws.log_params`:
  the family of every law a program declares by a mean and a CV, which the planner reads too);
* gamma: shape ``k = 1 / cv^2``, scale ``theta = m * cv^2`` (``cv = 1`` is the
  exponential distribution, which the M/M/c checks rely on).

``cv == 0`` yields the constant ``m``. All draws go through a caller-owned
:class:`random.Random`, so a seed fixes every sample.
"""

from __future__ import annotations

import math
import random
from typing import Literal

from cortexlang.laws import log_params
from runtime.simulator.mt import MersenneTwister

try:
    import cython  # Cython's shadow module when interpreted: ``compiled`` is False
    _COMPILED = cython.compiled
except ImportError:  # no Cython, so no compiled build
    _COMPILED = False

Family = Literal["lognormal", "gamma"]


_Random = random.Random
_new_random = random.Random.__new__
_seed_state = random.Random.__mro__[1].seed  # the C generator's seed (_random.Random.seed)


def seeded_rng(seed: int) -> random.Random:
    """Exactly ``random.Random(seed)`` for an int ``seed`` (same state, same draws, ``gauss``
    included), built without the two Python frames of ``Random.__init__``/``Random.seed``: one
    per simulated run, a measurable share of an arrival. ``Random.seed(int)`` hands the int to
    the C generator's seed and ``__init__`` then clears ``gauss_next``; this does the same."""
    rng = _new_random(_Random)
    _seed_state(rng, seed)
    rng.gauss_next = None
    return rng


def run_rng(seed: int) -> random.Random | MersenneTwister:
    """The generator of one simulated run: ``random.Random(seed)``'s ``random()`` stream (and
    ``gammavariate``), from :func:`seeded_rng` when interpreted and from
    :class:`~runtime.simulator.mt.MersenneTwister` (the same stream, seeded and drawn in C) in the
    compiled build (:mod:`runtime.accel`), whose run walker types it so."""
    return MersenneTwister(seed) if _COMPILED else seeded_rng(seed)


def sample(rng: random.Random, mean: float, cv: float, family: Family = "gamma") -> float:
    """One draw with the given mean and coefficient of variation."""
    if mean <= 0.0:
        return 0.0
    if cv <= 0.0:
        return mean
    if family == "lognormal":  # the declared laws' family (cortexlang.laws)
        mu, sigma = log_params(mean, cv)
        return math.exp(normal(rng, mu, sigma))  # = rng.lognormvariate(mu, sigma)
    if family == "gamma":
        shape = 1.0 / (cv * cv)
        return rng.gammavariate(shape, mean / shape)
    raise ValueError(f"unknown distribution family {family!r}; use 'lognormal' or 'gamma'")


NV_MAGICCONST = 4 * math.exp(-0.5) / math.sqrt(2.0)
"""Kinderman and Monahan's constant, ``4 e^-0.5 / sqrt 2`` (as in CPython's ``random``)."""


def normal(rng: random.Random, mu: float, sigma: float) -> float:
    """``rng.normalvariate(mu, sigma)`` as CPython 3.11 computes it (Kinderman and Monahan's ratio
    of uniforms), written out: the same draws and the same value, without the library's Python
    frames (the simulator draws a few per call; this module may be compiled, runtime.accel)."""
    rand = rng.random
    while True:
        u1 = rand()
        u2 = 1.0 - rand()
        z = NV_MAGICCONST * (u1 - 0.5) / u2
        if z * z / 4.0 <= -math.log(u2):
            return mu + z * sigma


def sample_tokens(rng: random.Random, mean: int, cv: float, low: int = 1, high: int | None = None) -> int:
    """A positive token count around ``mean`` (lognormal), clipped to ``[low, high]``."""
    value = int(round(sample(rng, float(mean), cv, "lognormal")))
    value = max(value, low)
    return min(value, high) if high is not None else value


def interarrival(rng: random.Random, rate: float, pattern: str = "poisson", burstiness: float = 1.0) -> float:
    """Time to the next arrival for a process with ``rate`` arrivals per second.

    ``poisson``: exponential gaps; ``bursty``: gamma gaps with CV ``burstiness``;
    ``constant``: equal gaps.
    """
    mean = 1.0 / rate
    if pattern == "poisson":
        return -math.log(1.0 - rng.random()) / rate  # rng.expovariate(rate), written out
    if pattern == "bursty":
        return sample(rng, mean, burstiness, "gamma")
    if pattern == "constant":
        return mean
    raise ValueError(f"unknown arrival pattern {pattern!r}; use poisson, bursty or constant")
