"""The state of one run: where it is in the call graph, what its stages produced, its events.

A :class:`Run` is owned by the orchestrator's event loop (no locks). Its
:class:`~runtime.orchestrator.results.RunInfo` is the public view; the rest is
what the walker needs: stage results for templates and tools, loop counters,
the run's service so far (for the policies' PLAS/ATLAS keys) and the replica
that served its previous call of each model (program locality).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from runtime.orchestrator.results import NO_ROWS, RunEvent, RunInfo, StageOutcome
from runtime.orchestrator.versions import WorkflowVersion

if TYPE_CHECKING:
    from runtime.orchestrator.executor import BranchScope

MAX_EVENTS = 2_000
"""Events kept per run (the oldest are dropped first); subscribers see every event live."""


class Run:
    """One workflow run in flight or finished (see module docstring)."""

    __slots__ = ("run_id", "version", "info", "arrival", "slo_deadline", "timeout_at", "results", "history", "loops",
                 "last_replica", "attained_s", "critical_s", "events", "subscribers", "task", "finished",
                 "last_sql", "requests", "clock", "number", "external", "last_active", "calls_in_flight",
                 "idle_timer")

    def __init__(self, run_id: str, version: WorkflowVersion, inputs: dict[str, Any], arrival: float,
                 slo_deadline: float | None, timeout_at: float | None, clock: Any, number: int = 0) -> None:
        self.run_id = run_id
        self.version = version
        self.arrival = arrival
        self.slo_deadline = slo_deadline
        self.timeout_at = timeout_at
        slo = version.workflow.slo
        self.info = RunInfo(run_id=run_id, workflow=version.name, version=version.number, status="queued",
                            inputs=inputs, arrival_s=arrival, slo_latency_s=slo.latency_s if slo else None)
        self.results: dict[str, Any] = {}
        self.history: dict[str, list[Any]] = {}
        """Stage -> its results in this run, oldest first (the ``history`` template builtin)."""
        self.loops: dict[str, int] = {}
        self.last_replica: dict[str, str] = {}
        self.attained_s = 0.0
        self.critical_s = 0.0
        self.events: deque[RunEvent] = deque(maxlen=MAX_EVENTS)
        self.subscribers: list[asyncio.Queue[RunEvent | None]] = []
        self.task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()
        self.last_sql = ""
        self.requests = 0
        self.clock = clock
        self.number = number
        self.external = False
        """Started by an external agent's chat call (``X-Cortex-Run``), not by a walk of the call graph:
        it ends when it has been idle for the orchestrator's ``external_run_idle_s``."""
        self.last_active = arrival
        """When its last external call ended (or it started)."""
        self.calls_in_flight = 0
        """External calls of this run now queued or running (an external run never ends while any is)."""
        self.idle_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, **data: Any) -> None:
        event = RunEvent(self.run_id, kind, self.clock() - self.arrival, data)
        self.events.append(event)
        for queue in self.subscribers:
            queue.put_nowait(event)

    def close_streams(self) -> None:
        for queue in self.subscribers:
            queue.put_nowait(None)

    # ------------------------------------------------------------------ context
    def remember(self, node: str, value: Any) -> None:
        """Keep ``node``'s result for the ``history`` builtin (every visit, oldest first)."""
        self.history.setdefault(node, []).append(value)

    def context(self, prev: StageOutcome | None, attempt: int, scope: "BranchScope | None" = None) -> dict[str, Any]:
        """What a template or tool sees (see :mod:`runtime.orchestrator.templates`)."""
        ctx: dict[str, Any] = dict(self.version.workflow.vars)
        ctx.update(self.info.inputs)
        ctx.update(self.results)
        if scope is not None:
            ctx.update(scope.results)
        ctx["branch"] = scope.index if scope is not None else None
        ctx["item"] = scope.item if scope is not None else None
        ctx["history"] = {stage: list(values) for stage, values in self.history.items()}
        ctx["previous"] = prev.value if prev is not None else None
        ctx["attempt"] = attempt
        ctx["error"] = _error_text(prev)
        ctx["sql"] = self.last_sql
        return ctx

    def next_request_id(self, stage: str) -> str:
        self.requests += 1
        return f"{self.run_id}.{stage}.{self.requests}"


def _error_text(prev: StageOutcome | None) -> str:
    if prev is None:
        return ""
    if prev.outcome == "error":
        return prev.error or "the stage failed"
    if prev.outcome == "empty":
        return NO_ROWS
    return ""
