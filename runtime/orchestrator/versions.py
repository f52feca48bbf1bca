"""A deployed version of a workflow: its IR, knobs, prompts, tools and the pools it runs on.

Runs pin the version they started on (hot reload swaps the *current* version;
in-flight runs finish on theirs). Pools, engines and SQL executors are shared
between versions when their specs are equal, so a reload that only edits a
prompt restarts nothing; a pool whose spec changed gets new engines, and the
old ones stop once no version that uses them has runs left.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from cortexlang.ir import LLMStage, ToolStage, Workflow
from planner.profiles import LatencyProfile, ProfileNotFound, get_profile
from runtime.build.spec import ExecutorPoolSpec, LLMPoolSpec, RuntimeSpec
from runtime.engines.base import DecodingConstraint
from runtime.orchestrator.graph import ExecGraph
from runtime.orchestrator.pools import Pool
from runtime.orchestrator.templates import PromptRenderer
from runtime.sql.executor import SQLExecutor


class ToolImportError(RuntimeError):
    """A tool entry point cannot be imported (message names the stage and the entry)."""


CORTEX_PACKAGES = frozenset({"cortexlang", "planner", "runtime", "grammar"})
"""Never reloaded as project code, even when a project lives beside them."""

_loaded_stamps: dict[str, tuple[int, int]] = {}
"""Module name -> (mtime_ns, size) of the source file it was last (re)loaded from."""


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _project_modules(base_dir: Path) -> list[tuple[str, ModuleType, str]]:
    """Loaded modules whose source lies under ``base_dir`` (the project's tools and their helpers),
    in ``sys.modules`` order, without Cortex's own packages, ``__main__`` or installed code."""
    # Plain prefix tests (no realpath: sys.modules holds thousands of modules once vLLM is loaded);
    # tool modules are found through ``base_dir`` itself on sys.path, so their paths start with it.
    root = os.path.join(os.path.abspath(base_dir), "")
    # Installed code is never the project's, even when the virtual environment lives in its folder.
    venv = (os.path.join(os.path.abspath(sys.prefix), ""),) if sys.prefix != sys.base_prefix else ()
    out = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or name == "__main__" or name.partition(".")[0] in CORTEX_PACKAGES:
            continue
        path = os.path.abspath(path)
        if (path.startswith(root) and not path.startswith(venv)
                and f"{os.sep}site-packages{os.sep}" not in path and f"{os.sep}dist-packages{os.sep}" not in path):
            out.append((name, module, path))
    return out


def reload_changed_project_modules(base_dir: Path) -> list[str]:
    """Load the project's modules (:func:`_project_modules`) afresh when any of their source files
    changed since they were loaded; return the names reloaded.

    Each module is executed into a *new* module object that replaces the old one in
    ``sys.modules`` (and on its parent package) only when every module of the batch loaded: the
    functions a deployed version already holds keep their own globals, so runs in flight finish on
    the code they started with, and a module that fails to load (any exception, not only a syntax
    error) leaves every module as it was and raises :class:`ToolImportError`. All project modules
    are reloaded, in the order their first imports completed (the import system moves a module to
    the end of ``sys.modules`` once its body has run, so helpers come before the modules that bind
    their names), so an edit to a helper reaches the tool that imported from it. A module whose
    file is gone is dropped, so a later import reports it missing."""
    modules = _project_modules(base_dir)
    for name, module, path in modules:
        if not os.path.exists(path):
            sys.modules.pop(name, None)
            _loaded_stamps.pop(name, None)
    modules = [(n, m, p) for n, m, p in modules if os.path.exists(p)]
    changed = [name for name, _, path in modules if _loaded_stamps.get(name, _stamp(path)) != _stamp(path)]
    if not changed:
        for name, _, path in modules:
            _loaded_stamps.setdefault(name, _stamp(path) or (0, 0))
        return []
    swapped: list[tuple[str, ModuleType]] = []  # (name, old module), to undo on failure
    try:
        for name, old, path in modules:
            spec = importlib.util.spec_from_file_location(
                name, path, submodule_search_locations=getattr(old, "__path__", None))
            if spec is None or spec.loader is None:
                raise ImportError(f"no loader for {path}")
            _drop_bytecode(path)
            fresh = importlib.util.module_from_spec(spec)
            sys.modules[name] = fresh  # visible to the modules it imports while it runs
            swapped.append((name, old))
            spec.loader.exec_module(fresh)
    except Exception as exc:
        for name, old in reversed(swapped):
            sys.modules[name] = old
        failed = swapped[-1][0] if swapped else "?"
        raise ToolImportError(f"cannot reload {failed!r}: {type(exc).__name__}: {exc}") from exc
    for name, _ in swapped:
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, sys.modules[name])
        _loaded_stamps[name] = _stamp(sys.modules[name].__file__) or (0, 0)
    return [name for name, _ in swapped]


def _drop_bytecode(path: str) -> None:
    """Delete ``path``'s cached bytecode: it is validated by whole-second mtime and size, so an
    edit within the same second that keeps the size would otherwise load the old code."""
    if path.endswith(".py"):
        with contextlib.suppress(OSError, ValueError, NotImplementedError):
            os.unlink(importlib.util.cache_from_source(path))


def import_tool(entry: str, base_dir: Path) -> Callable[..., Any]:
    """``module:function``, importable relative to ``base_dir`` (the .cortex file's directory).
    Project modules edited since they were loaded are reloaded first
    (:func:`reload_changed_project_modules`), so a redeploy picks up edited tools."""
    module_name, _, func_name = entry.partition(":")
    root = str(base_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    reload_changed_project_modules(base_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ToolImportError(f"cannot import tool module {module_name!r} (from {root}): "
                              f"{type(exc).__name__}: {exc}") from exc
    for name, _, path in _project_modules(base_dir):  # newly imported: remember what they were loaded from
        _loaded_stamps.setdefault(name, _stamp(path) or (0, 0))
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ToolImportError(f"tool entry {entry!r}: module {module_name!r} has no function {func_name!r}")
    return func


def profiles_of(spec: RuntimeSpec) -> dict[str, LatencyProfile]:
    """Model -> latency profile of its first replica (for the graph's estimates)."""
    out: dict[str, LatencyProfile] = {}
    for pool in spec.llm_pools:
        rep = pool.replicas[0]
        try:
            out.setdefault(pool.model, get_profile(rep.profile, rep.device, rep.tp))
        except ProfileNotFound:
            continue
    return out


class Tool:
    """An imported tool with its own worker threads (one per slot)."""

    def __init__(self, stage: ToolStage, func: Callable[..., Any], slots: int) -> None:
        self.stage = stage
        self.func = func
        self.is_async = inspect.iscoroutinefunction(func)
        self.threads = None if self.is_async else ThreadPoolExecutor(max_workers=slots,
                                                                    thread_name_prefix=f"tool:{stage.name}")

    def close(self) -> None:
        if self.threads is not None:
            self.threads.shutdown(wait=False, cancel_futures=True)


class WorkflowVersion:
    """Everything one version of a workflow needs to execute runs (see module docstring)."""

    def __init__(self, number: int, spec: RuntimeSpec, pools: dict[str, Pool], sql: dict[str, SQLExecutor],
                 tools: dict[str, Tool], constraints: dict[str, DecodingConstraint] | None = None) -> None:
        self.number = number
        self.spec = spec
        self.program = spec.program
        self.workflow: Workflow = spec.program.workflow(spec.workflow)
        self.knobs = spec.knobs
        self.graph = ExecGraph(self.program, self.workflow, profiles_of(spec), self.knobs)
        self.renderer = PromptRenderer(self.workflow)
        self.pools = pools
        """Stage name -> its pool (several stages share one pool in the shared layout)."""
        self.sql = sql
        self.tools = tools
        self.constraints = constraints or {}
        """LLM stage -> the output constraint its every call carries (see runtime.orchestrator.constraints)."""
        self.active_runs = 0
        self.base_dir = Path(spec.base_dir)
        self.lighter_models = {
            s.name: tuple(o.model for o in s.models) for s in self.workflow.stages if isinstance(s, LLMStage)
        }

    @property
    def name(self) -> str:
        return self.workflow.name

    def pool(self, stage: str) -> Pool:
        return self.pools[stage]


def llm_pool_key(pool: LLMPoolSpec) -> str:
    """Identity of an LLM pool's engines: equal keys may share engines across versions."""
    return pool.model_dump_json()


def executor_pool_key(pool: ExecutorPoolSpec) -> str:
    return pool.model_dump_json()
