"""A deployed version of a workflow: its IR, knobs, prompts, tools and the pools it runs on.

Runs pin the version they started on (hot reload swaps the *current* version;
in-flight runs finish on theirs). Pools, engines and SQL executors are shared
between versions when their specs are equal, so a reload that only edits a
prompt restarts nothing; a pool whose spec changed gets new engines, and the
old ones stop once no version that uses them has runs left.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cortexlang.ir import LLMStage, ToolStage, Workflow
from planner.profiles import LatencyProfile, ProfileNotFound, get_profile
from runtime.build.spec import ExecutorPoolSpec, LLMPoolSpec, RuntimeSpec
from runtime.orchestrator.graph import ExecGraph
from runtime.orchestrator.pools import Pool
from runtime.orchestrator.templates import PromptRenderer
from runtime.sql.executor import SQLExecutor


class ToolImportError(RuntimeError):
    """A tool entry point cannot be imported (message names the stage and the entry)."""


def import_tool(entry: str, base_dir: Path) -> Callable[..., Any]:
    """``module:function``, importable relative to ``base_dir`` (the .cortex file's directory)."""
    module_name, _, func_name = entry.partition(":")
    root = str(base_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ToolImportError(f"cannot import tool module {module_name!r} (from {root}): "
                              f"{type(exc).__name__}: {exc}") from exc
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
                 tools: dict[str, Tool]) -> None:
        self.number = number
        self.spec = spec
        self.program = spec.program
        self.workflow: Workflow = spec.program.workflow(spec.workflow)
        self.knobs = spec.knobs
        self.graph = ExecGraph(self.program, self.workflow, profiles_of(spec))
        self.renderer = PromptRenderer(self.workflow)
        self.pools = pools
        """Stage name -> its pool (several stages share one pool in the shared layout)."""
        self.sql = sql
        self.tools = tools
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
