# cython: boundscheck=False, wraparound=False
"""The simulator's event heap: ``heapq``'s push and pop on ``(t, seq, ...)`` tuples.

Every simulated event (an arrival, an engine's iteration boundary, an executor
finishing) is a tuple ``(t, seq, handler, arg)`` on one list kept as a binary
heap; ``seq`` is unique and increasing (``Simulator._seq``), so no two events
compare equal and the pop order is the total order of ``(t, seq)``. An engine's
finish heap is the same shape, ``(finish step, call seq, call)``: two entries
equal in ``(step, seq)`` hold the same call (re-admitted), which a tuple
comparison finds equal too.

Interpreted, :func:`push_event` and :func:`pop_event` *are* ``heapq.heappush``
and ``heapq.heappop`` (bound at the bottom). The functions written out below
are ``heapq``'s algorithms (``_siftdown``; ``heappop``'s bottom-up
``_siftup``), line for line, with the tuple comparison ``a < b`` spelled as
the comparison of ``(t, seq)`` that it is for these tuples. They exist for
:mod:`runtime.accel`: compiled, ``events.pxd`` reads ``t`` as a C double and
``seq`` as a C integer, so a comparison is two C compares instead of a generic
tuple comparison (two Python rich comparisons); the heap holds the same tuples
in the same places either way. ``tests/runtime/simulator/test_speed_paths.py``
checks them against ``heapq``.
"""

from __future__ import annotations

from heapq import heappop, heappush

try:
    import cython  # Cython's shadow module when interpreted: ``compiled`` is False
    _COMPILED = cython.compiled
except ImportError:  # no Cython, so no compiled build
    _COMPILED = False


def _key(x: float | int) -> float | int:
    """A heap entry's first element, compared as a float when compiled: an event time is one; an
    engine's finish step is an int far below 2**53, so the double is exact. Compiled, an int goes
    through a C integer (``events.pxd``), not a temporary float object as a generic conversion does
    (half the comparisons are on finish heaps); interpreted, the value itself."""
    if type(x) is int:
        n = x
        return n
    return x


def _before(a: tuple, b: tuple) -> bool:
    """``a < b`` for two events: the earlier time, or the earlier ``seq`` at the same time."""
    ta, tb = _key(a[0]), _key(b[0])
    if ta < tb:
        return True
    if ta == tb:  # times are never NaN; equal (t, seq) only for the same entry's object
        sa, sb = a[1], b[1]
        return sa < sb
    return False


def _rise(events: list, pos: int, item: tuple) -> None:
    """Put ``item`` at ``pos`` or above it, moving later parents down (``heapq._siftdown(events, 0, pos)``
    for ``item`` at ``pos``)."""
    t, s = _key(item[0]), item[1]  # item's key, read once (_before(item, parent) written out below)
    while pos > 0:
        parentpos = (pos - 1) >> 1
        parent = events[parentpos]
        pt = _key(parent[0])
        if t < pt or (t == pt and s < parent[1]):
            events[pos] = parent
            pos = parentpos
            continue
        break
    events[pos] = item


def push_event(events: list, item: tuple) -> None:
    """``heapq.heappush(events, item)``: append, then sift up."""
    events.append(item)
    _rise(events, len(events) - 1, item)


def pop_event(events: list) -> tuple:
    """``heapq.heappop(events)``: the least event; the last one moves to the root and sinks to a
    leaf along the smaller children, then rises to its place (``heapq._siftup``)."""
    last = events.pop()  # IndexError on an empty heap, as heapq's
    if not events:
        return last
    top = events[0]
    endpos = len(events)
    pos = 0
    childpos = 1
    while childpos < endpos:
        rightpos = childpos + 1
        child = events[childpos]
        if rightpos < endpos:
            right = events[rightpos]
            if not _before(child, right):
                childpos = rightpos
                child = right
        events[pos] = child
        pos = childpos
        childpos = 2 * pos + 1
    _rise(events, pos, last)
    return top


class SimClock:
    """The part of the simulator its replicas (engines, executor groups) call back into: the
    simulated clock ``now``, the event heap ``_events`` with its sequence counter ``_seq``,
    :meth:`at` and :meth:`call_finished`. :class:`~runtime.simulator.sim.Simulator` is one; a test
    drives an engine on a bare subclass. Here, beside the heap, so that the compiled build types a
    replica's ``sim`` as this class (events.pxd): C field reads and C calls, without the engine
    and executor modules importing the simulator's."""

    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple] = []
        self._seq = 0

    def at(self, t: float, handler, arg: object = None) -> None:
        """Call ``handler(arg)`` at simulated time ``t``. Events are ``(t, seq, handler, arg)``
        tuples: ``seq`` (unique, increasing) breaks time ties in scheduling order, so the heap never
        compares handlers, and the loop calls the handler directly (no dispatch on an event kind)."""
        self._seq += 1
        push_event(self._events, (t, self._seq, handler, arg))

    def call_finished(self, call) -> None:
        """A replica finished ``call`` (at ``now``)."""
        raise NotImplementedError


if not _COMPILED:  # interpreted: heapq's C functions (the same heap, faster than the code above there)
    written_out = (push_event, pop_event)
    """The functions above, kept for the tests (compiled, they are ``push_event`` and ``pop_event``)."""
    push_event = heappush  # noqa: F811
    pop_event = heappop  # noqa: F811
