"""Recording runs as a trace: one JSON line per finished run (docs/trace-format.md).

:func:`trace_line` turns a finished run's :class:`RunInfo` into the trace format
the simulator replays, extended with what was measured per call (Cortex queue
wait, service, the engine's queue/TTFT/total, cached tokens, replica,
borrowing, finish reason). :class:`TraceRecorder` is an orchestrator run
listener that appends those lines to a file as runs finish (``cortex run|serve
--record FILE``).

Parents come from :attr:`CallRecord.after` (the call whose outcome led to this
one). Fan-out records are not calls: a call after a fan-out gets the last calls
of its branches as parents, and a branch's first call gets the call before the
fan-out. Calls the simulator cannot replay (an LLM call that produced no
tokens: a prompt that failed to render, a request aborted before its first
token) are left out and their children re-linked to their parents.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, Any

from cortexlang.ir import LLMStage, Program
from runtime.orchestrator.results import CallRecord, RunInfo

MIN_DURATION_S = 1e-6
"""Replayed SQL/tool calls need a positive duration; a cache hit can measure as 0."""


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _replayable(rec: CallRecord) -> bool:
    if rec.kind == "fanout":
        return False
    return rec.kind != "llm" or (rec.prompt_tokens > 0 and rec.output_tokens > 0)


class _Links:
    """Parents of each replayable record, resolving fan-out records and dropped calls."""

    def __init__(self, calls: list[CallRecord]) -> None:
        self.calls = {c.seq: c for c in calls}
        self._memo: dict[int, tuple[int, ...]] = {}

    def parents(self, rec: CallRecord) -> tuple[int, ...]:
        return () if rec.after is None else self.resolve(rec.after)

    def resolve(self, seq: int) -> tuple[int, ...]:
        """The replayable calls that stand for record ``seq`` as a parent."""
        if seq in self._memo:
            return self._memo[seq]
        rec = self.calls.get(seq)
        if rec is None:
            out: tuple[int, ...] = ()
        elif rec.kind == "fanout":
            out = self._fanout_leaves(rec)
        elif not _replayable(rec):
            out = self.parents(rec)
        else:
            out = (seq,)
        self._memo[seq] = out
        return out

    def _fanout_leaves(self, fo: CallRecord) -> tuple[int, ...]:
        # The fan-out's calls: recorded before it, reached from the record before it (its branches'
        # first calls have ``after == fo.after``), started once it had started.
        inside: set[int] = set()
        frontier = {fo.after}
        while frontier:
            step = {c.seq for c in self.calls.values()
                    if c.seq < fo.seq and c.after in frontier and c.seq not in inside
                    and c.started_s >= fo.started_s - 1e-9}
            inside |= step
            frontier = step
        led = {self.calls[s].after for s in inside}
        leaves = sorted(s for s in inside if s not in led and self.calls[s].kind != "fanout")
        out: list[int] = []
        for s in leaves:
            out.extend(p for p in self.resolve(s) if p not in out)
        return tuple(out) if out else (() if fo.after is None else self.resolve(fo.after))


def trace_line(info: RunInfo, program: Program | None = None) -> dict[str, Any] | None:
    """The trace record of a finished run, or None when it made no replayable call.

    ``program`` supplies each LLM stage's declared ``prefix_tokens`` (0 without it).
    """
    prefix: dict[str, int] = {}
    if program is not None:
        try:
            workflow = program.workflow(info.workflow)
        except KeyError:
            workflow = None
        if workflow is not None:  # ``stages`` holds every stage, fan-out branches' included
            prefix = {s.name: s.prefix_tokens for s in workflow.stages if isinstance(s, LLMStage)}
    links = _Links(info.calls)
    calls = []
    for rec in info.calls:
        if not _replayable(rec):
            continue
        call: dict[str, Any] = {
            "id": f"c{rec.seq}", "stage": rec.stage, "kind": rec.kind,
            "parents": [f"c{p}" for p in links.parents(rec)], "outcome": rec.outcome,
        }
        if rec.kind == "llm":
            call.update(model=rec.model, input_tokens=rec.prompt_tokens, output_tokens=rec.output_tokens,
                        prefix_tokens=min(prefix.get(rec.stage, 0), rec.prompt_tokens))
        else:
            call["duration_s"] = round(max(rec.service_s, MIN_DURATION_S), 6)
        call.update(
            started_s=_r(rec.started_s), latency_s=_r(rec.latency_s), queue_s=_r(rec.queue_s),
            service_s=_r(rec.service_s), attempt=rec.attempt, replica=rec.replica, borrowed=rec.borrowed,
            cached=rec.cached,
        )
        if rec.kind == "llm":
            call.update(engine=rec.engine, engine_queue_s=_r(rec.engine_queue_s), ttft_s=_r(rec.ttft_s),
                        engine_s=_r(rec.engine_s), engine_prefill_s=_r(rec.engine_prefill_s),
                        engine_decode_s=_r(rec.engine_decode_s), cached_tokens=rec.cached_tokens,
                        finish_reason=rec.finish_reason, candidates=rec.candidates)
        if rec.branch is not None:
            call["branch"] = rec.branch
        if rec.error:
            call["error"] = rec.error[:200]
        calls.append(call)
    if not calls:
        return None
    return {
        "run_id": info.run_id, "workflow": info.workflow, "arrival_s": round(info.arrival_s, 6),
        "status": info.status, "latency_s": _r(info.latency_s), "slo_latency_s": info.slo_latency_s,
        "slo_met": info.slo_met, "retries": info.retries, "engines": list(info.engines), "calls": calls,
    }


class TraceRecorder:
    """Appends each finished run's :func:`trace_line` to ``path`` (truncated when opened).

    Use as an orchestrator run listener (``orchestrator.run_listeners.append(recorder)``); every
    line is flushed as it is written, so a trace survives an interrupted batch.
    """

    def __init__(self, path: str | Path, program: Program | None = None) -> None:
        self.path = Path(path)
        self.program = program
        self.written = 0
        self.skipped = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")

    def __call__(self, info: RunInfo) -> None:
        line = trace_line(info, self.program)
        with self._lock:
            if self._file is None:
                return
            if line is None:
                self.skipped += 1
                return
            self._file.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
            self._file.flush()
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> "TraceRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
