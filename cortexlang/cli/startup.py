"""Start-up and exit of the ``cortexc`` process: the compiler should answer like a linter (issue 13).

Two costs that are not the compiler's own work (benchmarks/startup_bench.py):

* **Garbage collection while importing.** Importing the CLI and the compiler builds
  a few hundred thousand objects (pydantic schemas, Lark tables, jinja2) and frees
  almost none, so the young-generation collections that run meanwhile find nothing
  (~20 ms). :func:`importing` raises the threshold for that time only.
* **Interpreter teardown.** After ``check``, every module and object is freed one
  by one (~45 ms). :func:`quick_exit_app` makes an app end the process right after
  the commands that leave nothing to clean up (no threads, files closed, no atexit
  work), with its output flushed and its exit status kept.

This module imports nothing heavy, so that it can come first.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

QUICK_EXIT_COMMANDS = frozenset({"check", "fmt", "graph", "compile", "--version", "--help"})
_IMPORT_THRESHOLD = (100_000, 50, 50)  # gen-0 collections every 100,000 allocations instead of 700


@contextmanager
def importing() -> Iterator[None]:
    """Fewer garbage collections for the duration: for a block that only allocates."""
    before = gc.get_threshold()
    gc.set_threshold(*_IMPORT_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def exit_status(code: Any) -> int:
    """The status ``sys.exit(code)`` would give; a message is printed to stderr, as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def quick_exit_app(base: type[typer.Typer]) -> type[typer.Typer]:
    """A subclass of ``base`` whose :data:`QUICK_EXIT_COMMANDS` end the process without teardown.

    Only when the app runs as a program (``app()``); Click's test runner and other callers
    of the underlying command are unaffected.
    """

    class QuickExitTyper(base):  # type: ignore[valid-type, misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if len(sys.argv) < 2 or sys.argv[1] not in QUICK_EXIT_COMMANDS:
                return super().__call__(*args, **kwargs)
            try:
                with importing():  # the command imports the compiler lazily
                    super().__call__(*args, **kwargs)
                status = 0
            except SystemExit as done:
                status = exit_status(done.code)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):  # a closed pipe: nothing more can be said
                    status = status or 1
            os._exit(status)

    return QuickExitTyper
