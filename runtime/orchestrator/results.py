"""Stage results as prompts and tools see them, and the records a run leaves behind.

Result shapes in the run context (what templates and tools read, by stage name):

* LLM, ``output = text``: ``{"text": ...}``;
* LLM, ``output = json``: the parsed object (its keys are the fields branches test);
  output that is not a JSON object is the stage's ``error`` outcome;
* SQL: ``{"statement", "columns", "rows", "row_count", "truncated", "error", "text", "cached"}``,
  ``text`` being a compact table for prompts;
* tool: the dict it returned (anything else is wrapped as ``{"value": ...}``);
* fan-out: ``{"branches": [{stage: result, ...}, ...]}``, plus ``winner`` (branch
  index) for ``first``, ``vote`` and ``best`` joins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.sql.executor import SQLResult

RunStatus = Literal["queued", "running", "done", "fail", "error", "timeout", "cancelled"]
"""``done``/``fail``: the run reached that terminal; ``error``: the runtime could not go on (no healthy
replica, a broken tool import, ...); ``timeout``: its deadline passed; ``cancelled``: a caller cancelled it."""

FINISHED: frozenset[str] = frozenset({"done", "fail", "error", "timeout", "cancelled"})
NO_ROWS = "the query returned no rows"

_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in model output (fenced or bare); ValueError when there is none."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        start = chunk.find("{")
        while start >= 0:
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                start = chunk.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = chunk.find("{", start + 1)
    raise ValueError("the output holds no JSON object")


def sql_value(result: SQLResult, max_rows_in_text: int = 20) -> dict[str, Any]:
    """The SQL result shape of the run context (see module docstring)."""
    return {
        "statement": result.statement, "columns": list(result.columns), "rows": [list(r) for r in result.rows],
        "row_count": len(result.rows), "truncated": result.truncated, "error": result.error,
        "text": sql_table_text(result, max_rows_in_text), "cached": result.cached,
    }


def sql_table_text(result: SQLResult, max_rows: int = 20) -> str:
    """Rows as ``col | col`` lines, at most ``max_rows`` of them."""
    if result.outcome == "error":
        return f"error: {result.error}"
    lines = [" | ".join(result.columns)]
    lines += [" | ".join("" if v is None else str(v) for v in row) for row in result.rows[:max_rows]]
    if len(result.rows) > max_rows or result.truncated:
        lines.append(f"... ({len(result.rows)}{'+' if result.truncated else ''} rows)")
    return "\n".join(lines)


def tool_value(value: Any) -> dict[str, Any]:
    """A tool's return value as a JSON-safe dict (non-dicts wrapped as ``{"value": ...}``)."""
    if not isinstance(value, dict):
        value = {"value": value}
    return json.loads(json.dumps(value, default=str))


@dataclass(slots=True)
class StageOutcome:
    """What executing one node produced (internal to the orchestrator)."""

    outcome: str
    value: Any
    error: str | None = None
    statement: str | None = None
    record: "CallRecord | None" = None


class CallRecord(BaseModel):
    """One executed stage of a run, for status pages, events and summaries."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    kind: Literal["llm", "sql", "tool", "fanout"]
    outcome: str
    started_s: float = Field(description="Seconds since the run arrived.")
    latency_s: float
    queue_s: float = 0.0
    attempt: int = 1
    replica: str | None = None
    engine: str | None = Field(default=None, description="Engine label ('simulated' for the model).")
    model: str | None = None
    cached: bool = False
    candidates: int = Field(default=1, description="Hedged candidates launched (1 = no hedge).")
    borrowed: bool = False
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    branch: int | None = None
    seq: int = Field(default=0, description="Position of this record in the run's ``calls`` (0-based).")
    after: int | None = Field(
        default=None, description="``seq`` of the record whose outcome led here (the node before it in the walk, "
                                  "or before its fan-out for a branch's first call); None for the run's first node.")
    engine_queue_s: float | None = Field(
        default=None, description="Seconds inside the engine before it first scheduled the request (where reported).")
    ttft_s: float | None = Field(default=None, description="Seconds from dispatch to the engine to the first token.")
    engine_s: float | None = Field(default=None, description="Seconds from dispatch to the engine to its result.")
    engine_prefill_s: float | None = Field(
        default=None, description="The engine's own clock: seconds from first scheduling to the first token (where reported).")
    engine_decode_s: float | None = Field(
        default=None, description="The engine's own clock: seconds from the first token to the last (where reported).")
    cached_tokens: int | None = Field(default=None, description="Prompt tokens served from the prefix cache.")
    finish_reason: str | None = Field(default=None, description="The engine's: stop, length (max_tokens) or abort.")

    @property
    def service_s(self) -> float:
        """The call's time after Cortex's queue: prompt rendering, engine queue, prefill and decode."""
        return max(self.latency_s - self.queue_s, 0.0)


class RunInfo(BaseModel):
    """A run's status and, once finished, its result."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    workflow: str
    version: int
    status: RunStatus
    inputs: dict[str, Any]
    arrival_s: float = Field(description="Orchestrator clock (monotonic seconds) at arrival.")
    latency_s: float | None = None
    slo_latency_s: float | None = None
    slo_met: bool | None = Field(default=None, description="Finished at a terminal within the SLO latency.")
    node: str | None = Field(default=None, description="Where the run is now (or ended).")
    output: Any = Field(default=None, description="Result of the last stage before the terminal.")
    error: str | None = None
    loops: dict[str, int] = Field(default_factory=dict, description="Iterations taken per loop.")
    retries: int = Field(default=0, description="Loop iterations taken in all.")
    pruned: int = Field(default=0, description="Retries the policy pruned under SLO pressure.")
    calls: list[CallRecord] = Field(default_factory=list)
    engines: list[str] = Field(default_factory=list, description="Engine labels that served it.")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def simulated(self) -> bool:
        return "simulated" in self.engines


@dataclass(slots=True)
class RunEvent:
    """One event of a run's event stream (serialised as an SSE ``data:`` line)."""

    run_id: str
    kind: str
    t_s: float
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "event": self.kind, "t_s": round(self.t_s, 6), **self.data}
