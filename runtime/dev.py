"""``cortex dev``: serve a workflow and hot-reload it when its files are saved.

The runtime never imports the compiler: the CLI injects ``compile_fn(path) ->
(RuntimeSpec | None, diagnostics text | None)``. On every save of the
``.cortex`` file, of a file it may embed (prompt templates, text files) or of a
tool's Python module in its directory tree:

* the file is recompiled (in a worker thread, so serving goes on);
* with errors, the diagnostics are printed and the last good version keeps
  serving;
* on success the new spec is deployed with
  :meth:`runtime.orchestrator.Orchestrator.deploy`: new runs start on the new
  version, runs in flight finish on the version they started with (they hold
  it), and engines whose pool spec did not change are reused, so editing a
  prompt restarts nothing. No run is dropped. Edited tool modules (and the
  project's helper modules they import) are loaded afresh for the new version
  (:func:`runtime.orchestrator.versions.reload_changed_project_modules`); runs
  in flight keep their version's tools.

Saves that arrive while a reload is running are coalesced into one more reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.build.spec import RuntimeSpec
from runtime.orchestrator import Orchestrator
from runtime.orchestrator.engines import EngineFactory

CompileFn = Callable[[Path], tuple[RuntimeSpec | None, str | None]]
WATCHED_SUFFIXES = frozenset({".cortex", ".j2", ".jinja", ".jinja2", ".txt", ".sql", ".md", ".py"})


class DevServer:
    """An orchestrator plus a file watcher that redeploys on save (see module docstring)."""

    def __init__(self, path: Path, spec: RuntimeSpec, factory: EngineFactory, *, compile_fn: CompileFn,
                 report: Callable[[str], None] = print, orchestrator: Orchestrator | None = None) -> None:
        self.path = Path(path).resolve()
        self.compile_fn = compile_fn
        self.report = report
        self.orchestrator = orchestrator or Orchestrator(spec, factory)
        self.reloads = 0
        self.failed_reloads = 0
        self._watch_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    # ------------------------------------------------------------------ reloading
    async def reload(self) -> bool:
        """Recompile and, when it succeeds, deploy; True when a new version is live."""
        async with self._reload_lock:
            spec, diagnostics = await asyncio.to_thread(self.compile_fn, self.path)
            if diagnostics:
                self.report(diagnostics)
            if spec is None:
                self.failed_reloads += 1
                current = self.orchestrator.versions
                live = ", ".join(f"{n} v{v.number}" for n, v in current.items()) or "nothing"
                self.report(f"{self.path.name} has errors: still serving the last good version ({live})")
                return False
            try:
                version = await self.orchestrator.deploy(spec)
            except Exception as exc:  # e.g. a new pool's engine failed to start: keep the old version
                self.failed_reloads += 1
                self.report(f"reload failed, still serving the last good version: {type(exc).__name__}: {exc}")
                return False
            self.reloads += 1
            self.report(f"reloaded {self.path.name}: {version.name} is now version {version.number} "
                        f"(runs in flight finish on the version they started with)")
            return True

    def _relevant(self, changed: str) -> bool:
        p = Path(changed)
        return p.resolve() == self.path or p.suffix in WATCHED_SUFFIXES

    async def watch(self) -> None:
        """Reload on every relevant change under the file's directory until :meth:`stop_watching`."""
        from watchfiles import awatch

        async for changes in awatch(self.path.parent, stop_event=self._stop, debounce=200, recursive=True):
            if any(self._relevant(path) for _, path in changes):
                await self.reload()

    def start_watching(self) -> None:
        self._stop.clear()
        self._watch_task = asyncio.create_task(self.watch(), name="cortex-dev-watch")

    async def stop_watching(self) -> None:
        self._stop.set()
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
            self._watch_task = None

    # ------------------------------------------------------------------ serving
    def app(self, token: str | None = None) -> Any:
        """The HTTP API (:func:`runtime.serve.create_app`) with the watcher running alongside."""
        from runtime.serve import create_app

        async def started() -> None:
            self.start_watching()

        return create_app(self.orchestrator, token=token, on_startup=started, on_shutdown=self.stop_watching)
