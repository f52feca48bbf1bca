"""CPU engines that share one machine, and how busy the others are (the contention model's input).

Two CPU engines pinned to disjoint cores of one machine still slow each other down when both
compute (shared caches and memory bandwidth; on a VM, vCPUs that are SMT siblings on the host).
:class:`planner.profiles.LatencyProfile` models that as a slowdown of ``1 + contention * x`` per
iteration, where ``x`` is the fraction of the *other* engines' cores that are busy. This module
keeps ``x``: the simulated runtime engine (:mod:`runtime.engines.simulated`) and the discrete-event
simulator's engine (:mod:`runtime.simulator.engine`) register here and say when they start and stop
computing. GPU engines own their devices and never join one.
"""

from __future__ import annotations

from typing import Hashable


class SharedCores:
    """The CPU engines of one machine: each one's width (cores) and whether it is busy now."""

    def __init__(self) -> None:
        self.widths: dict[Hashable, int] = {}
        self.busy: set[Hashable] = set()
        self.total = 0

    def join(self, member: Hashable, width: int) -> None:
        """Register ``member``, an engine pinned to ``width`` cores (idle until :meth:`set_busy`)."""
        if member not in self.widths:
            self.widths[member] = max(int(width), 1)
            self.total += self.widths[member]

    def leave(self, member: Hashable) -> None:
        """Unregister ``member`` (a stopped engine no longer shares the machine)."""
        width = self.widths.pop(member, None)
        if width is not None:
            self.total -= width
            self.busy.discard(member)

    def set_busy(self, member: Hashable, busy: bool) -> bool:
        """Record that ``member`` starts (``busy``) or stops computing; True when that changed anything
        (never for a member that is not registered)."""
        if member not in self.widths or busy == (member in self.busy):
            return False
        if busy:
            self.busy.add(member)
        else:
            self.busy.discard(member)
        return True

    def others(self, member: Hashable) -> list[Hashable]:
        """The other registered members (whose pace changes when ``member`` starts or stops)."""
        return [m for m in self.widths if m is not member]

    def busy_others(self, member: Hashable) -> float:
        """Fraction (0..1) of the other members' cores that are busy now; 0 with no other member."""
        others = self.total - self.widths.get(member, 0)
        if others <= 0:
            return 0.0
        busy = sum(self.widths[m] for m in self.busy if m != member)
        return busy / others
