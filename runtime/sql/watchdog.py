"""Deadlines enforced from outside a running statement.

A statement's own checks (SQLite's progress handler, PostgreSQL's
``statement_timeout``) cannot stop everything: one SQLite function call, or
the client-side fetch loop across several round trips. :class:`Watchdog` is
one daemon thread per executor that, when a deadline passes, calls the
cancel function the statement registered (``sqlite3.Connection.interrupt``,
``psycopg.Connection.cancel_safe``).

Contract of :meth:`Watchdog.guard`: ``cancel`` runs at most once, only while
the ``with`` block is open (never after it has exited, so a late cancel cannot
hit the next statement on a pooled connection), and ``Deadline.fired`` tells
the block whether it ran.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Deadline:
    """One guarded statement: when it expires, what cancels it, and whether it did."""

    def __init__(self, at: float, cancel: Callable[[], None]) -> None:
        self.at = at
        self.fired = False
        self._cancel = cancel
        self._done = False
        self._lock = threading.Lock()

    def fire(self) -> None:
        with self._lock:  # held while cancelling: the guarded block cannot exit mid-cancel
            if self._done:
                return
            self.fired = True
            try:
                self._cancel()
            except Exception:  # a failed cancel leaves the server-side timeout as the backstop
                log.warning("cancelling a statement past its deadline failed", exc_info=True)

    def finish(self) -> None:
        with self._lock:
            self._done = True


class Watchdog:
    """A daemon thread firing :class:`Deadline` s; started on first use, stopped by :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def guard(self, timeout_s: float, cancel: Callable[[], None]) -> Iterator[Deadline]:
        """Call ``cancel`` if the block is still running ``timeout_s`` from now (see module docstring)."""
        deadline = Deadline(time.monotonic() + timeout_s, cancel)
        with self._wake:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name=f"watchdog:{self.name}", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            self._wake.notify()
        try:
            yield deadline
        finally:
            deadline.finish()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                _, _, due = heapq.heappop(self._heap)
            due.fire()  # outside the heap lock: a slow cancel does not hold up new guards
