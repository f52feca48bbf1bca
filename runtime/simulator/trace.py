"""Replaying recorded requests: the JSONL trace format (see docs/trace-format.md).

One workflow request per line::

    {"run_id": "r17", "workflow": "nl2sql", "arrival_s": 12.5, "status": "done",
     "calls": [
       {"id": "c1", "stage": "generate", "kind": "llm", "model": "llama8b",
        "input_tokens": 1700, "output_tokens": 110, "prefix_tokens": 1200, "parents": [], "outcome": "ok"},
       {"id": "c2", "stage": "execute", "kind": "sql", "duration_s": 0.041, "parents": ["c1"],
        "outcome": "error"}]}

A call starts when all its ``parents`` have finished (a DAG; calls without
parents start at arrival). LLM calls need ``model``, ``input_tokens`` and
``output_tokens``; SQL and tool calls need ``duration_s``. Outcomes are kept
for the record; the replay follows the recorded calls, whatever the outcomes.
The run's standalone latency is the DAG's longest path with LLM calls timed on
the cluster's fastest device for their model.

A replayed call knows its own size but not its run's future. Deadline-aware
policies get, as its remaining critical path, its own standalone time plus what
*the trace's statistics* say follows a call of that stage at that visit
(:class:`RemainingPathStats`), never the recorded future of its own run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from cortexlang.ir import ModelSpec
from planner.profiles import LatencyProfile
from runtime.simulator.calls import Call
from runtime.simulator.graph import llm_standalone_s
from runtime.simulator.runs import PruneHook, Run
from runtime.simulator.workloads import LLAMA8B, LLAMA70B

KNOWN_MODELS: dict[str, ModelSpec] = {
    "llama8b": LLAMA8B, "llama-3-8b": LLAMA8B.model_copy(update={"name": "llama-3-8b"}),
    "llama70b": LLAMA70B, "llama-3-70b": LLAMA70B.model_copy(update={"name": "llama-3-70b"}),
}
"""Model names a trace may use without a program that declares them."""


MAX_DURATION_S = 86_400.0
"""Longest SQL/tool call a trace may record (a day): beyond it a value is a unit error, and 1e308 s
would overflow the simulated clock."""
MAX_ARRIVAL_S = 1e12
"""Largest ``|arrival_s|`` (about 30,000 years: epoch seconds fit; beyond, the gaps between arrivals
are lost to rounding)."""


class TraceError(ValueError):
    """A malformed trace line; the message names the line and the field."""


@dataclass(frozen=True)
class TraceCall:
    id: str
    stage: str
    kind: str
    parents: tuple[str, ...]
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    prefix_tokens: int = 0
    duration_s: float = 0.0
    outcome: str = "ok"


@dataclass(frozen=True)
class TraceRequest:
    run_id: str
    workflow: str
    arrival_s: float
    calls: tuple[TraceCall, ...]
    status: str = "done"


def _number(raw: dict, key: str, default: float, where: str, *, integer: bool = False) -> float:
    """``raw[key]`` (``default`` when absent): a finite JSON number (an integer when ``integer``);
    :class:`TraceError` naming the field otherwise (NaN, Infinity, strings, booleans, 1e999)."""
    value = raw.get(key, default)
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or (integer and value != int(value))):
        kind = "an integer" if integer else "a finite number"
        raise TraceError(f"{where}: {key!r} must be {kind}, not {json.dumps(value, allow_nan=True)[:40]}")
    return int(value) if integer else float(value)


def _parse_call(raw: object, where: str) -> TraceCall:
    if not isinstance(raw, dict):
        raise TraceError(f"{where}: a call must be a JSON object")
    kind = raw.get("kind", "llm")
    if kind not in ("llm", "sql", "tool"):
        raise TraceError(f"{where}: kind must be llm, sql or tool, not {json.dumps(kind)[:40]}")
    for key in ("id", "stage"):
        if key not in raw:
            raise TraceError(f"{where}: missing field {key!r}")
        if not isinstance(raw[key], (str, int)) or isinstance(raw[key], bool):
            raise TraceError(f"{where}: {key!r} must be a string")
    parents = raw.get("parents", [])
    if not isinstance(parents, list) or not all(isinstance(p, (str, int)) and not isinstance(p, bool)
                                                for p in parents):
        raise TraceError(f"{where}: 'parents' must be a list of call ids")
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        raise TraceError(f"{where}: 'model' must be a string")
    call = TraceCall(
        id=str(raw["id"]), stage=str(raw["stage"]), kind=kind, parents=tuple(str(p) for p in parents), model=model,
        input_tokens=_number(raw, "input_tokens", 0, where, integer=True),
        output_tokens=_number(raw, "output_tokens", 0, where, integer=True),
        prefix_tokens=_number(raw, "prefix_tokens", 0, where, integer=True),
        duration_s=_number(raw, "duration_s", 0.0, where), outcome=str(raw.get("outcome", "ok")),
    )
    if kind == "llm" and (not call.model or call.input_tokens <= 0 or call.output_tokens <= 0):
        raise TraceError(f"{where}: an llm call needs model, input_tokens > 0 and output_tokens > 0")
    if not 0 <= call.prefix_tokens <= max(call.input_tokens, 0):
        raise TraceError(f"{where}: prefix_tokens must be between 0 and input_tokens ({call.input_tokens})")
    if kind != "llm" and not 0 < call.duration_s <= MAX_DURATION_S:
        raise TraceError(f"{where}: a {kind} call needs 0 < duration_s <= {MAX_DURATION_S:g}")
    return call


def parse_trace(lines: Iterable[str], source: str = "trace") -> list[TraceRequest]:
    """Parse and validate JSONL trace lines (blank lines are skipped)."""
    out: list[TraceRequest] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise TraceError(f"{where}: not JSON ({e.msg})") from None
        except RecursionError:  # `[[[[...` 100k deep: the decoder recurses once per level
            raise TraceError(f"{where}: not JSON (nested too deeply)") from None
        except ValueError:  # int() refused a number of more than 4,300 digits (JSONDecodeError is caught above)
            raise TraceError(f"{where}: not JSON (an integer of more than 4,300 digits)") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("calls"), list) or not raw["calls"]:
            raise TraceError(f"{where}: expected an object with a non-empty 'calls' list")
        calls = tuple(_parse_call(c, f"{where} call {i}") for i, c in enumerate(raw["calls"]))
        ids = {c.id for c in calls}
        if len(ids) != len(calls):
            raise TraceError(f"{where}: duplicate call ids")
        for c in calls:
            missing = [p for p in c.parents if p not in ids]
            if missing:
                raise TraceError(f"{where}: call {c.id!r} has unknown parents {missing}")
        arrival = raw.get("arrival_s")
        if (not isinstance(arrival, (int, float)) or isinstance(arrival, bool) or not math.isfinite(arrival)
                or abs(arrival) > MAX_ARRIVAL_S):
            raise TraceError(f"{where}: missing or invalid 'arrival_s' (a finite number of seconds, |x| <= "
                             f"{MAX_ARRIVAL_S:g})")
        arrival = float(arrival)
        req = TraceRequest(str(raw.get("run_id", n)), str(raw.get("workflow", "trace")), arrival, calls,
                           str(raw.get("status", "done")))
        _topological(req, where)
        out.append(req)
    if not out:
        raise TraceError(f"{source}: the trace holds no runs")
    out.sort(key=lambda r: r.arrival_s)
    return out


def load_trace(path: str | Path) -> list[TraceRequest]:
    """:func:`parse_trace` of the file ``path``; :class:`TraceError` when it cannot be read as UTF-8 text."""
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"{path}: no such trace file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(f"{path}:{line}: not UTF-8 text") from None
    return parse_trace(text.splitlines(), str(path))


def dump_trace(requests: Iterable[TraceRequest]) -> str:
    """The JSONL text of ``requests`` (inverse of :func:`parse_trace`)."""
    lines = []
    for r in requests:
        calls = []
        for c in r.calls:
            d = {"id": c.id, "stage": c.stage, "kind": c.kind, "parents": list(c.parents), "outcome": c.outcome}
            if c.kind == "llm":
                d.update(model=c.model, input_tokens=c.input_tokens, output_tokens=c.output_tokens,
                         prefix_tokens=c.prefix_tokens)
            else:
                d["duration_s"] = c.duration_s
            calls.append(d)
        lines.append(json.dumps({"run_id": r.run_id, "workflow": r.workflow, "arrival_s": r.arrival_s,
                                 "status": r.status, "calls": calls}))
    return "\n".join(lines) + "\n"


def _topological(req: TraceRequest, where: str) -> list[str]:
    order, state = [], {}
    parents = {c.id: c.parents for c in req.calls}

    def visit(i: str) -> None:
        if state.get(i) == 1:
            raise TraceError(f"{where}: the calls' parents form a cycle through {i!r}")
        if state.get(i) == 2:
            return
        state[i] = 1
        for p in parents[i]:
            visit(p)
        state[i] = 2
        order.append(i)

    for c in req.calls:
        visit(c.id)
    return order


def _call_standalone_s(c: TraceCall, ref: dict[str, LatencyProfile]) -> float:
    """A call's standalone time: its recorded duration, or its LLM time alone on the reference profile."""
    if c.kind != "llm":
        return c.duration_s
    if c.model not in ref:
        raise TraceError(f"trace model {c.model!r} has no replica in the cluster")
    return llm_standalone_s(ref[c.model], c.input_tokens, c.output_tokens, c.prefix_tokens)


def _visit_keys(req: TraceRequest) -> dict[str, tuple[str, str, int]]:
    """Each call's ``(workflow, stage, visit)``: ``visit`` counts the run's earlier calls of that stage
    in topological order (the first ``generate`` is visit 0, a retry loop's next one visit 1, ...)."""
    seen: dict[str, int] = defaultdict(int)
    keys = {}
    stage_of = {c.id: c.stage for c in req.calls}  # ids are unique (parse_trace); a scan per call was quadratic
    for cid in _topological(req, req.run_id):
        stage = stage_of[cid]
        keys[cid] = (req.workflow, stage, seen[stage])
        seen[stage] += 1
    return keys


class RemainingPathStats:
    """What follows a call, learnt from a whole trace: per ``(workflow, stage, visit)`` the mean and the
    standard deviation of the standalone time of the longest path from the call's end to its run's end.

    For a call ``c`` of run ``r``: ``tail(c) = t(c) + max(tail(child) for child in children(c))``
    (0 without children) and ``after(c) = tail(c) - t(c)``; the statistics are taken over every
    call of the trace with that key. A key the trace never saw falls back to ``(workflow, stage)``
    over all visits, then to 0 (nothing known to follow).
    """

    def __init__(self, requests: Iterable[TraceRequest], ref_profiles: dict[str, LatencyProfile]):
        samples: dict[tuple, list[float]] = defaultdict(list)
        for req in requests:
            t = {c.id: _call_standalone_s(c, ref_profiles) for c in req.calls}
            children: dict[str, list[str]] = {c.id: [] for c in req.calls}
            for c in req.calls:
                for p in c.parents:
                    children[p].append(c.id)
            tail: dict[str, float] = {}
            for cid in reversed(_topological(req, req.run_id)):
                tail[cid] = t[cid] + max((tail[k] for k in children[cid]), default=0.0)
            for cid, key in _visit_keys(req).items():
                after = tail[cid] - t[cid]
                samples[key].append(after)
                samples[key[:2]].append(after)
        self._stats = {key: _mean_std(v) for key, v in samples.items()}

    def after(self, workflow: str, stage: str, visit: int) -> tuple[float, float]:
        """``(mean, std)`` seconds of standalone work expected after a call with this key."""
        return self._stats.get((workflow, stage, visit)) or self._stats.get((workflow, stage)) or (0.0, 0.0)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


class TraceRun(Run):
    """A recorded request replayed as a DAG of calls.

    With ``stats`` (learnt from the whole trace), a call's remaining critical path is its own
    standalone time plus the learnt mean of what follows calls like it, with that spread; without,
    it is its own time alone (nothing known about the rest of the run).
    """

    __slots__ = ("req", "calls", "children", "waiting_on", "done_cp", "_ref", "_visit", "_stats")

    def __init__(self, req: TraceRequest, run_id: int, ref_profiles: dict[str, LatencyProfile],
                 stats: RemainingPathStats | None = None):
        super().__init__(run_id, req.workflow, req.arrival_s)
        self.req = req
        self._stats = stats
        self._visit = {cid: key[2] for cid, key in _visit_keys(req).items()} if stats is not None else {}
        self.calls = {c.id: c for c in req.calls}
        self.children: dict[str, list[str]] = {c.id: [] for c in req.calls}
        for c in req.calls:
            for p in c.parents:
                self.children[p].append(c.id)
        self.waiting_on = {c.id: len(c.parents) for c in req.calls}
        self.done_cp: dict[str, float] = {}
        times = {c.id: _call_standalone_s(c, ref_profiles) for c in req.calls}
        finish: dict[str, float] = {}
        for cid in _topological(req, req.run_id):
            c = self.calls[cid]
            finish[cid] = max((finish[p] for p in c.parents), default=0.0) + times[cid]
        self.standalone_s = max(finish.values())
        self._ref = ref_profiles

    def _make(self, cid: str, cp: float) -> Call:
        c = self.calls[cid]
        self.ncalls += 1
        t = _call_standalone_s(c, self._ref)
        after, spread = (self._stats.after(self.workflow, c.stage, self._visit[cid]) if self._stats is not None
                         else (0.0, 0.0))
        pkey = f"{self.workflow}/{c.stage}@{c.model}" if c.kind == "llm" and c.prefix_tokens else None
        return Call(self, cid, c.stage, c.kind, c.model if c.kind == "llm" else None, c.input_tokens,
                    c.output_tokens, pkey, c.prefix_tokens, c.duration_s, t, t, t + after, spread, None, 0, cp)

    def first_calls(self) -> list[Call]:
        return [self._make(c.id, 0.0) for c in self.req.calls if not c.parents]

    def on_done(self, call: Call, prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        cp = call.cp_service_s + (call.t_end - call.t_start)
        self.done_cp[call.key] = cp
        new = []
        for child in self.children[call.key]:
            self.waiting_on[child] -= 1
            if self.waiting_on[child] == 0:
                parents = self.calls[child].parents
                new.append(self._make(child, max(self.done_cp[p] for p in parents)))
        if len(self.done_cp) == len(self.calls):
            self.status = self.req.status if self.req.status in ("done", "fail") else "done"
        return new, []


def trace_models(requests: Iterable[TraceRequest]) -> tuple[ModelSpec, ...]:
    """Model declarations for the models a trace names (from :data:`KNOWN_MODELS`)."""
    names = sorted({c.model for r in requests for c in r.calls if c.kind == "llm" and c.model})
    unknown = [n for n in names if n not in KNOWN_MODELS]
    if unknown:
        raise TraceError(f"unknown models in trace: {unknown}; known: {sorted(KNOWN_MODELS)}")
    for r in requests:  # vLLM refuses a request longer than the model's context: so does the replay
        for c in r.calls:
            if c.kind == "llm" and c.model:
                limit = KNOWN_MODELS[c.model].max_context
                if c.input_tokens + c.output_tokens > limit:
                    raise TraceError(f"run {r.run_id!r}, call {c.id!r}: {c.input_tokens} prompt + "
                                     f"{c.output_tokens} output tokens exceed {c.model}'s context of {limit}")
    return tuple(KNOWN_MODELS[n] for n in names)
