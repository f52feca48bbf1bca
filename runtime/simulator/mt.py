# cython: boundscheck=False, wraparound=False, overflowcheck=False
# distutils: extra_compile_args = -ffp-contract=off -funroll-loops
# (-funroll-loops: seeding is a serial chain of ~1,250 short steps per run, of which the loop test is a
# fifth; -ffp-contract=off is runtime.accel.COMPILE_ARGS', repeated so it holds however the lists merge.)
"""CPython's ``random.Random(seed).random()`` stream for an int seed, written out for the compiled build.

Every simulated run draws its script from its own generator seeded by an int
(:func:`runtime.simulator.distributions.seeded_rng`). CPython's generator is
MT19937 (Matsumoto and Nishimura) with the reference ``init_by_array`` seeding
and 53-bit ``random()``, as in ``Modules/_randommodule.c``:

* seed: the int's absolute value, cut into 32-bit words (least significant first;
  ``0`` is one word) is the key of ``init_by_array``, which starts from the state
  of ``init_genrand(19650218)``;
* ``random()``: two words ``a, b`` -> ``((a >> 5) * 2^26 + (b >> 6)) / 2^53``;
* a word: the next state word, tempered (``y ^= y >> 11``, ``y ^= (y << 7) &
  0x9d2c5680``, ``y ^= (y << 15) & 0xefc60000``, ``y ^= y >> 18``).

:class:`MersenneTwister` computes exactly those values, with two changes that
do not change any of them: the starting state ``init_genrand(19650218)`` is
computed once (:data:`_START`), and the state is twisted one word at a time as
it is drawn instead of 624 words at once. (Twisting word ``i`` reads words
``i + 1`` and ``i + 397`` of the old state, or ``i - 227`` of the new one once
``i >= 227``, and the old/new split at ``i`` is the same in both orders.)

It exists for :mod:`runtime.accel`: compiled (``mt.pxd`` types the state and
makes ``random`` a C call), seeding and drawing cost a fraction of a Python
call; interpreted it is slow, so the pure build keeps ``random.Random``
(``seeded_rng`` chooses). ``tests/runtime/simulator/test_speed_paths.py``
checks this class against ``random.Random`` in both builds.
"""

from __future__ import annotations

from array import array
from random import Random as _Random

N = 624
"""Words of state."""
_MASK = 0xFFFFFFFF
_UPPER = 0x80000000
"""The most significant bit of a word."""
_LOWER = 0x7FFFFFFF
_MATRIX_A = 0x9908B0DF
_TEMPER_B = 0x9D2C5680
_TEMPER_C = 0xEFC60000


def _genrand_state(s: int) -> array:
    """``init_genrand(s)``: the state every ``init_by_array`` starts from (for ``s = 19650218``)."""
    mt = array("I", bytes(4 * N))
    mt[0] = s & _MASK
    for i in range(1, N):
        mt[i] = (1812433253 * (mt[i - 1] ^ (mt[i - 1] >> 30)) + i) & _MASK
    return mt


_START = _genrand_state(19650218)


def _key(seed: int) -> array:
    """``init_by_array``'s key for an int seed: ``|seed|`` in 32-bit words, least significant first."""
    n = abs(seed)
    words = array("I", [n & _MASK])
    n >>= 32
    while n:
        words.append(n & _MASK)
        n >>= 32
    return words


class MersenneTwister:
    """``random.Random(seed)`` for an int ``seed``: the same ``random()`` values and, through
    ``random.Random``'s own code on this ``random()``, the same ``gammavariate`` (see module docstring)."""

    __slots__ = ("mt", "index")

    def __init__(self, seed: int):
        self.mt = _START[:]  # a copy (of one C array into another when compiled)
        k = seed if seed >= 0 else -seed
        if k <= _MASK:  # a one-word key, |seed| (every run's): no key array built
            self._seed_word(k)
        else:
            self._seed(_key(seed))
        self.index = N
        """Next word to draw; ``N``: twist from word 0 (as CPython after seeding)."""

    def _seed(self, key) -> None:
        """``init_by_array(key)`` on the state, which holds ``init_genrand(19650218)`` (reference
        algorithm; ``prev`` is the word just written, kept in a register when compiled)."""
        # Each loop runs in passes over words i .. N-1 (or fewer, where its count ends first), the
        # wrap to word 1 (word 0 taking the last value) between passes: the reference's order of
        # writes, without a wrap test per word (the compiled inner loops are a few instructions).
        n = len(key)
        if n == 1:
            self._seed_word(key[0])
            return
        i, j = 1, 0
        prev = self.mt[0]
        left = N if N > n else n
        while left > 0:
            stop = i + left if i + left < N else N
            left -= stop - i
            while i < stop:
                prev = ((self.mt[i] ^ ((prev ^ (prev >> 30)) * 1664525)) + key[j] + j) & _MASK
                self.mt[i] = prev
                i += 1
                j += 1
                if j >= n:
                    j = 0
            if i >= N:
                self.mt[0] = prev
                i = 1
        self._seed_finish(prev, i)

    def _seed_word(self, k0: int) -> None:
        """:meth:`_seed` for the one-word key ``[k0]`` (every run's: a seed below ``2**32``), given
        as the word itself: ``j`` stays 0, so the first pass writes words 1 .. N-1, then 1 again."""
        prev = self.mt[0]
        for i in range(1, N):
            prev = ((self.mt[i] ^ ((prev ^ (prev >> 30)) * 1664525)) + k0) & _MASK
            self.mt[i] = prev
        self.mt[0] = prev
        prev = ((self.mt[1] ^ ((prev ^ (prev >> 30)) * 1664525)) + k0) & _MASK
        self.mt[1] = prev
        self._seed_finish(prev, 2)

    def _seed_finish(self, prev: int, i: int) -> None:
        """``init_by_array``'s second pass (N - 1 words from word ``i``; ``prev`` the word just written)."""
        left = N - 1
        while left > 0:
            stop = i + left if i + left < N else N
            left -= stop - i
            while i < stop:
                prev = ((self.mt[i] ^ ((prev ^ (prev >> 30)) * 1566083941)) - i) & _MASK
                self.mt[i] = prev
                i += 1
            if i >= N:
                self.mt[0] = prev
                i = 1
        self.mt[0] = _UPPER  # MSB is 1, assuring a non-zero initial state

    def _word(self) -> int:
        """The next 32-bit output: twist state word ``index`` (module docstring), temper it."""
        i = self.index
        if i >= N:
            i = 0
        y = (self.mt[i] & _UPPER) | (self.mt[i + 1 if i < N - 1 else 0] & _LOWER)
        v = self.mt[i + 397 if i < N - 397 else i + 397 - N] ^ (y >> 1)
        if y & 1:
            v ^= _MATRIX_A
        self.mt[i] = v
        self.index = i + 1
        v ^= v >> 11
        v ^= (v << 7) & _TEMPER_B
        v ^= (v << 15) & _TEMPER_C
        return v ^ (v >> 18)

    def random(self) -> float:
        """The next float in [0, 1): CPython's ``genrand_res53``."""
        a = self._word() >> 5
        b = self._word() >> 6
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)

    gammavariate = _Random.gammavariate
    """``random.Random``'s gamma draw (its code, on this generator's ``random``)."""
