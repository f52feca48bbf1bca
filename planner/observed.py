"""Learning a workflow's planning parameters from recorded runs (``cortexc plan --observed TRACE``).

A trace (``cortex run|serve --record``, docs/trace-format.md; parsed here from
its documented JSON, never through the runtime) says what the workflow really
did. :func:`observe` estimates from it, per workflow:

* **branch probabilities**, per out-edge of every stage: the share of the
  stage's recorded calls that took it. Outcome conditions are matched on the
  call's outcome; a result-field condition (``on think.action``) by where the
  run went next (the stage of the calls that have this one as parent, or the
  run's terminal when none does). Estimates are shrunk towards the declared
  value by ``PRIOR_WEIGHT`` pseudo-calls, so a handful of runs moves the plan
  only as far as they justify: ``p = (k + w p_declared) / (n + w)``;
* **token counts** of LLM stages: mean prompt tokens per call; the output-length
  law (``runaway``: the share of calls cut at ``max_tokens``; ``output_tokens`` and
  ``output_cv``: mean and CV of the lengths of the calls that stopped on their own,
  see :func:`_output_lengths`); the prefix-cache hits are reported;
* **how alike one run's output lengths are** (LLM stages' ``output_correlation``): from the
  correlations, over the pairs of LLM calls of the same run, of their output lengths' normal
  scores (each call's length ranked among its stage's calls, midranks for ties, mapped through
  ``Phi^-1((rank - 1/2) / n)``); see :func:`_output_correlation` (clipped to [0, 0.99]; a
  negative estimate is no likeness);
* **service times** of SQL/tool stages: mean and coefficient of variation of
  ``duration_s``; for LLM stages the measured service, TTFT and decode rate are
  shown beside the standalone time the latency profile predicts for the
  observed tokens (a large gap says: calibrate this machine);
* **the arrival process**: rate ``(n - 1) / span`` of the runs' arrivals and the
  coefficient of variation of their gaps (``load.pattern``/``burstiness``);
  runs that all arrived within ``BURST_S`` are a burst with no rate to learn.

Estimates resting on fewer than ``MIN_CALLS`` calls are shown but not applied.
:attr:`Observed.program` is the program with the applied estimates, to plan with.
"""

from __future__ import annotations

import json
import math
import statistics
from statistics import NormalDist
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cortexlang.ir import MAX_OUTPUT_CV, MIN_RATE_PER_S, TERMINALS, Edge, Graph, LLMStage, Program, Workflow
from planner.candidates import OUTPUT_CV

MIN_CALLS = 5
FINISH_REASONS = ("stop", "length", "abort")
"""The ``finish_reason`` values the output-length law reads (docs/trace-format.md); others (an engine's own)
are ignored."""
PRIOR_WEIGHT = 2.0
BURST_S = 1.0
MAX_ARRIVAL_S = 1e12
"""Largest ``|arrival_s|`` (as runtime/simulator/trace.py): epoch seconds fit; beyond, gaps are rounding."""
FLAG_PROBABILITY = 0.10
"""Absolute difference of a branch probability that is flagged."""
FLAG_RELATIVE = 0.25
"""Relative difference of a token count, service time or rate that is flagged."""


class TraceFormatError(ValueError):
    """A trace line the estimator cannot read; the message names ``FILE:LINE``."""


@dataclass(frozen=True)
class Estimate:
    """One planning parameter: declared in the program, observed in the trace."""

    what: str
    declared: float | None
    observed: float | None
    samples: int
    unit: str = ""
    applied: bool = False
    note: str = ""

    @property
    def flagged(self) -> bool:
        if self.declared is None or self.observed is None:
            return False
        if self.unit == "%":
            return abs(self.observed - self.declared) > FLAG_PROBABILITY
        return abs(self.observed - self.declared) > FLAG_RELATIVE * max(abs(self.declared), 1e-12)


@dataclass
class Observed:
    """What a trace says about one workflow, and the program to plan with."""

    workflow: str
    runs: int
    estimates: list[Estimate]
    program: Program
    measured: dict[str, float] = field(default_factory=dict)
    """End-to-end figures of the recorded runs: p50_s, p99_s, slo_attainment (where recorded)."""
    ignored: dict[str, int] = field(default_factory=dict)
    """Calls per stage name the workflow does not have (a trace of another version of it): not used."""


def read_trace(lines: Iterable[str], source: str = "trace") -> list[dict[str, Any]]:
    """The trace's runs as dicts (blank lines skipped); :class:`TraceFormatError` on malformed lines."""
    runs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{source}:{n}: not JSON ({exc.msg})") from None
        except RecursionError:  # `[[[[...` 100k deep: the decoder recurses once per level
            raise TraceFormatError(f"{source}:{n}: not JSON (nested too deeply)") from None
        except ValueError:  # int() refused a number of more than 4,300 digits (JSONDecodeError is caught above)
            raise TraceFormatError(f"{source}:{n}: not JSON (an integer of more than 4,300 digits)") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("calls"), list):
            raise TraceFormatError(f"{source}:{n}: expected an object with a 'calls' list")
        arrival = raw.get("arrival_s")
        if not isinstance(arrival, (int, float)) or isinstance(arrival, bool) or not abs(arrival) <= MAX_ARRIVAL_S:
            raise TraceFormatError(f"{source}:{n}: missing or invalid 'arrival_s' (a finite number of seconds, "
                                   f"|x| <= {MAX_ARRIVAL_S:g})")
        for key in ("workflow", "status"):
            if key in raw and not isinstance(raw[key], str):
                raise TraceFormatError(f"{source}:{n}: {key!r} must be a string")
        for i, call in enumerate(raw["calls"]):
            _check_call(call, f"{source}:{n}: call {i}")
        runs.append(raw)
    if not runs:
        raise TraceFormatError(f"{source}: the trace holds no runs")
    return runs


NUMBERS = {"input_tokens": 1e8, "output_tokens": 1e8, "prefix_tokens": 1e8, "cached_tokens": 1e8,
           "duration_s": 1e6, "service_s": 1e6, "ttft_s": 1e6, "latency_s": 1e6}
"""The numeric fields the estimates read, each with its largest credible value (tokens: beyond any
context; seconds: 11 days): a larger, negative or non-finite one is a malformed trace, not data."""


def _is_id(value: object) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _check_call(call: object, where: str) -> None:
    """:class:`TraceFormatError` unless ``call`` has an id, a stage, a list of parent ids and sane numbers."""
    if not isinstance(call, dict) or not isinstance(call.get("stage"), str) or not _is_id(call.get("id")):
        raise TraceFormatError(f"{where} needs 'id' and 'stage'")
    parents = call.get("parents", [])
    if parents is not None and not (isinstance(parents, list) and all(_is_id(p) for p in parents)):
        raise TraceFormatError(f"{where}: 'parents' must be a list of call ids")
    reason = call.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise TraceFormatError(f"{where}: 'finish_reason' must be a string or null, not "
                               f"{json.dumps(reason, allow_nan=True)[:40]}")
    for key, top in NUMBERS.items():
        v = call.get(key)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= top:
            raise TraceFormatError(f"{where}: {key!r} must be a number from 0 to {top:g}, not "
                                   f"{json.dumps(v, allow_nan=True)[:40]}")


def _num(call: dict, key: str) -> float | None:
    v = call.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _graphs(workflow: Workflow) -> list[tuple[tuple, Graph]]:
    """The workflow's graph and every fan-out branch's sub-flow, with a path into the dumped IR."""
    out: list[tuple[tuple, Graph]] = [((), workflow)]
    for i, fo in enumerate(workflow.fanouts):
        for j, branch in enumerate(fo.branches):
            out.append((("fanouts", i, "branches", j), branch))
    return out


def _selected(edges: tuple[Edge, ...], call: dict, next_stages: set[str], status: str) -> Edge | None:
    """The out-edge a recorded call took (None when the trace cannot tell)."""
    if any(e.condition.kind == "field" for e in edges):
        targets = next_stages or ({status} if status in TERMINALS else set())
        matches = [e for e in edges if e.target in targets]
        return matches[0] if len({e.target for e in matches}) == 1 else None
    fallback = None
    for e in edges:
        if e.condition.kind == "always":
            return e
        if e.condition.kind == "outcome" and call.get("outcome", "ok") in e.condition.values:
            return e
        if e.condition.kind == "else":
            fallback = e
    return fallback


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def observe(program: Program, runs: list[dict[str, Any]], workflow: str | None = None) -> Observed:
    """Estimate ``workflow``'s planning parameters from ``runs`` (:func:`read_trace`); see module docstring.

    Raises :class:`TraceFormatError` when the trace has no run of the workflow.
    """
    wf = program.workflow(workflow)
    mine = [r for r in runs if r.get("workflow", "trace") == wf.name]
    if not mine:
        names = sorted({str(r.get("workflow", "trace")) for r in runs})
        raise TraceFormatError(f"the trace has no run of workflow {wf.name!r} (it has: {', '.join(names)})")
    dump = wf.model_dump()
    estimates: list[Estimate] = []
    calls_by_stage: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    children_of: dict[int, dict[object, set[str]]] = {}  # per run (by object id): call id -> its children's stages
    for run in mine:
        kids: dict[object, set[str]] = defaultdict(set)
        for call in run["calls"]:
            calls_by_stage[call["stage"]].append((call, run))
            for parent in call.get("parents") or ():
                kids[parent].add(call["stage"])
        children_of[id(run)] = kids

    # Branch probabilities, per out-edge of every stage.
    for path, graph in _graphs(wf):
        target = dump
        for key in path:
            target = target[key]
        sources = dict.fromkeys(e.source for e in graph.edges)
        for source in sources:
            edges = graph.out_edges(source)
            if len(edges) < 2 or source not in calls_by_stage:
                continue
            taken: Counter[int] = Counter()
            for call, run in calls_by_stage[source]:
                children = children_of[id(run)].get(call["id"], set())
                edge = _selected(edges, call, children, str(run.get("status", "done")))
                if edge is not None:
                    taken[edges.index(edge)] += 1
            n = sum(taken.values())
            total = sum(e.probability for e in edges) or 1.0
            apply = n >= MIN_CALLS
            for k, e in enumerate(edges):
                declared = e.probability / total
                observed = taken[k] / n if n else None
                if apply:
                    shrunk = (taken[k] + PRIOR_WEIGHT * declared) / (n + PRIOR_WEIGHT)
                    index = graph.edges.index(e)
                    target["edges"][index]["probability"] = shrunk
                label = ", ".join(e.condition.values) or e.condition.kind
                estimates.append(Estimate(f"{source} -> {e.target} ({label})", declared, observed, n, "%", apply,
                                          "" if apply else f"fewer than {MIN_CALLS} calls"))

    # Stages: tokens of LLM calls, service times of SQL/tool calls.
    for i, stage in enumerate(wf.stages):
        calls = [c for c, _ in calls_by_stage.get(stage.name, ())]
        if not calls:
            continue
        sd = dump["stages"][i]
        if isinstance(stage, LLMStage):
            ins = [v for c in calls if (v := _num(c, "input_tokens")) and v > 0]
            outs = [v for c in calls if (v := _num(c, "output_tokens")) and v > 0]
            if ins:
                apply = len(ins) >= MIN_CALLS
                mean = statistics.fmean(ins)
                if apply:
                    sd["input_tokens"] = max(int(round(mean)), 1)
                estimates.append(Estimate(f"{stage.name}: input tokens per call", stage.input_tokens, mean, len(ins),
                                          "tokens", apply))
            sd["prefix_tokens"] = min(sd["prefix_tokens"], sd["input_tokens"])  # a prefix is part of the prompt
            estimates.extend(_output_lengths(stage, calls, sd))
            cached = [v for c in calls if (v := _num(c, "cached_tokens")) is not None]
            if cached:
                estimates.append(Estimate(f"{stage.name}: prompt tokens from the prefix cache", stage.prefix_tokens,
                                          statistics.fmean(cached), len(cached), "tokens",
                                          note="declared = prefix_tokens; informational"))
            estimates.extend(_llm_service(program, stage, calls, ins, outs))
        else:
            xs = [v for c in calls if (v := _num(c, "duration_s")) and v > 0]
            if not xs:
                continue
            apply = len(xs) >= MIN_CALLS
            mean = statistics.fmean(xs)
            cv = statistics.pstdev(xs) / mean if len(xs) > 1 and mean > 0 else 0.0
            if apply:
                sd["service_s"], sd["service_cv"] = mean, cv
            estimates.append(Estimate(f"{stage.name}: service time", stage.service_s, mean, len(xs), "s", apply))
            estimates.append(Estimate(f"{stage.name}: service time CV", stage.service_cv, cv, len(xs), "", apply))

    # Visits per run (what the probabilities above produce; informational).
    for stage in wf.stages:
        if isinstance(stage, LLMStage) and stage.name in calls_by_stage:
            estimates.append(Estimate(f"{stage.name}: calls per run", None,
                                      len(calls_by_stage[stage.name]) / len(mine), len(mine), "",
                                      note="result of the branch probabilities"))

    estimates.extend(_output_correlation(wf, mine, dump))
    estimates.extend(_arrivals(wf, mine, dump))
    observed_program = Program.model_validate(
        program.model_dump() | {"workflows": [Workflow.model_validate(dump) if w.name == wf.name else w
                                              for w in program.workflows]})
    known = {stage.name for stage in wf.stages}
    ignored = {name: len(calls) for name, calls in sorted(calls_by_stage.items()) if name not in known}
    return Observed(wf.name, len(mine), estimates, observed_program, _measured(mine), ignored)


def _output_lengths(stage: LLMStage, calls: list[dict], sd: dict) -> list[Estimate]:
    """An LLM stage's output-length law (``runaway``, ``output_tokens``, ``output_cv``; module docstring),
    written into its dump ``sd`` where enough calls back it. Calls with a known ``finish_reason``
    (:data:`FINISH_REASONS`) split into runaways (``length``: cut at max_tokens) and calls that stopped on
    their own (``stop``); the runaway share is the first's share of them (whether or not a call reports its
    length), the mean and CV are those of the second's positive lengths (a cut call's own length is the cap,
    an aborted one's where it was cut off). A trace without known finish reasons gives the mean and CV of
    every call's length, applied only where the stage declares no runaways (its lengths would hold them). A
    CV beyond :data:`~cortexlang.ir.MAX_OUTPUT_CV` (the language's bound) is capped there."""
    finished = [c for c in calls if c.get("finish_reason") in FINISH_REASONS]
    estimates = []
    if finished:
        share = sum(c.get("finish_reason") == "length" for c in finished) / len(finished)
        apply = len(finished) >= MIN_CALLS
        if apply:
            sd["runaway"] = share
        estimates.append(Estimate(f"{stage.name}: runaway calls (cut at max_tokens {stage.max_tokens.preferred})",
                                  stage.runaway, share, len(finished), "%", apply,
                                  "a stop string makes them rarer; a higher max_tokens makes them longer"
                                  if share > 0.1 else ""))
    # an aborted call's length is where it was cut off, not where it would have stopped
    own = [c for c in finished if c.get("finish_reason") == "stop"] if finished else calls
    stopped = [v for c in own if (v := _num(c, "output_tokens")) and v > 0]
    if stopped:
        # without finish reasons the lengths hold the declared runaways too: not the stopped calls' law
        blind = not finished and stage.runaway > 0.0
        apply = len(stopped) >= MIN_CALLS and not blind
        mean = statistics.fmean(stopped)
        cv = statistics.pstdev(stopped) / mean if len(stopped) > 1 else 0.0
        declared_cv = OUTPUT_CV if stage.output_cv is None else stage.output_cv
        if apply:
            sd["output_tokens"], sd["output_cv"] = max(int(round(mean)), 1), min(cv, MAX_OUTPUT_CV)
        which = "call that stopped" if finished else "call"
        estimates.append(Estimate(f"{stage.name}: output tokens per {which}", stage.output_tokens, mean,
                                  len(stopped), "tokens", apply))
        note = f"capped at {MAX_OUTPUT_CV:g} in the plan" if cv > MAX_OUTPUT_CV else ""
        if blind:
            note = "no finish reasons: cannot tell the declared runaways apart; not applied"
        estimates.append(Estimate(f"{stage.name}: output length CV", declared_cv, cv, len(stopped), "", apply, note))
    return estimates


def _normal_scores(values: list[float]) -> list[float]:
    """``Phi^-1((rank - 1/2) / n)`` of each value, with midranks for ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n = len(values)
    return [NormalDist().inv_cdf((r - 0.5) / n) for r in ranks]


@dataclass
class _PairSums:
    """Pearson's sums over ordered pairs ``(x, y)`` of normal scores, added a run at a time without listing
    the pairs (a run of ``k`` calls has ``k^2``: a 20,000-call run would be 4e8 tuples), and up to two
    distinct values of each side (a constant side has no correlation)."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0
    xs: set[float] = field(default_factory=set)
    ys: set[float] = field(default_factory=set)

    def add(self, a: list[float], b: list[float] | None = None) -> None:
        """Every pair ``(a_i, b_j)``; with ``b`` None every pair ``(a_i, a_j)``, ``i != j``: then
        ``sum x = sum y = (k - 1) sum a``, ``sum xy = (sum a)^2 - sum a^2`` over ``k (k - 1)`` pairs."""
        sa, saa = math.fsum(a), math.fsum(v * v for v in a)
        if b is None:
            k = len(a)
            if k < 2:
                return
            self.n += k * (k - 1)
            self.sx += (k - 1) * sa
            self.sy += (k - 1) * sa
            self.sxx += (k - 1) * saa
            self.syy += (k - 1) * saa
            self.sxy += sa * sa - saa
            b = a
        else:
            if not a or not b:
                return
            sb, sbb = math.fsum(b), math.fsum(v * v for v in b)
            self.n += len(a) * len(b)
            self.sx += len(b) * sa
            self.sy += len(a) * sb
            self.sxx += len(b) * saa
            self.syy += len(a) * sbb
            self.sxy += sa * sb
        _distinct(self.xs, a)
        _distinct(self.ys, b)

    def merge(self, other: _PairSums) -> None:
        self.n += other.n
        self.sx += other.sx
        self.sy += other.sy
        self.sxx += other.sxx
        self.syy += other.syy
        self.sxy += other.sxy
        _distinct(self.xs, other.xs)
        _distinct(self.ys, other.ys)

    def correlation(self) -> float | None:
        """Pearson's ``r`` of the pairs; None when either side is constant (or there are none)."""
        if len(self.xs) < 2 or len(self.ys) < 2:
            return None
        vx = self.n * self.sxx - self.sx * self.sx
        vy = self.n * self.syy - self.sy * self.sy
        if vx <= 0.0 or vy <= 0.0:
            return None
        return max(-1.0, min(1.0, (self.n * self.sxy - self.sx * self.sy) / math.sqrt(vx * vy)))


def _distinct(seen: set[float], values: Iterable[float]) -> None:
    """Add ``values`` to ``seen`` until it holds two (all that constancy needs)."""
    for v in values:
        if len(seen) >= 2:
            return
        seen.add(v)


def _output_correlation(wf: Workflow, runs: list[dict], dump: dict) -> list[Estimate]:
    """Each LLM stage's ``output_correlation`` ``r_s`` from the within-run pairs of calls (module docstring).

    Under the model, two calls of stage ``s`` correlate by ``r_s`` and calls of ``s`` and ``t`` by
    ``sqrt(r_s r_t)`` (normal scores). A stage called twice in ``MIN_CALLS`` runs (a retry loop) gets
    ``r_s`` from its own pairs; another then gets ``c^2 / r`` from its pairs ``c`` with those stages
    (``r`` their mean); without such stages every stage gets the pooled correlation of all pairs."""
    llm = {s.name for s in wf.stages if isinstance(s, LLMStage)}
    by_stage: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for k, run in enumerate(runs):
        for call in run["calls"]:
            if call.get("stage") in llm and (v := _num(call, "output_tokens")) is not None and v > 0:
                by_stage[call["stage"]].append((k, v))
    if not by_stage:
        return []
    scores: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for stage, calls in by_stage.items():
        for (k, _), z in zip(calls, _normal_scores([v for _, v in calls])):
            scores[k].append((stage, z))
    pairs: dict[tuple[str, str], _PairSums] = defaultdict(_PairSums)
    runs_with: Counter[tuple[str, str]] = Counter()
    for calls in scores.values():
        of: dict[str, list[float]] = defaultdict(list)
        for s, z in calls:
            of[s].append(z)
        for s, a in of.items():
            for t, b in of.items():
                if s != t or len(a) > 1:
                    pairs[(s, t)].add(a, b if s != t else None)
                    runs_with[(s, t)] += 1
    r: dict[str, float] = {}
    for s in by_stage:  # a stage's own pairs
        c = pairs[(s, s)].correlation() if runs_with[(s, s)] >= MIN_CALLS else None
        if c is not None:
            r[s] = min(max(c, 0.0), 0.99)
    own = dict(r)
    for t in by_stage:
        if t in r:
            continue
        partners = [s for s in own if runs_with[(t, s)] >= MIN_CALLS]
        pooled = _PairSums()
        for s in partners:
            pooled.merge(pairs[(t, s)])
        c = pooled.correlation() if partners else None
        mean = statistics.fmean(own[s] for s in partners) if partners else 0.0
        if c is not None and mean > 0.0:
            r[t] = min(max(c, 0.0) ** 2 / mean, 0.99)
    if not r:  # no stage repeats within a run: one likeness for every pair
        every = _PairSums()
        for ps in pairs.values():
            every.merge(ps)
        c = every.correlation()
        if c is not None and sum(len(zs) > 1 for zs in scores.values()) >= MIN_CALLS:
            r = {s: min(max(c, 0.0), 0.99) for s in by_stage}
    out = []
    for sd in dump["stages"]:
        name = sd["name"]
        if name not in by_stage:
            continue
        declared = wf.stage(name).output_correlation
        if name in r:
            sd["output_correlation"] = r[name]
            out.append(Estimate(f"{name}: output length correlation within a run", declared, r[name],
                                len(by_stage[name]), "", True))
        else:
            out.append(Estimate(f"{name}: output length correlation within a run", declared, None,
                                len(by_stage[name]), "", note=f"fewer than {MIN_CALLS} runs with a pair of calls"))
    return out


def _llm_service(program: Program, stage: LLMStage, calls: list[dict], ins: list[float],
                 outs: list[float]) -> list[Estimate]:
    """Measured service / TTFT / decode rate beside what the latency profile predicts (not applied:
    LLM service follows from the profile; a gap says the profile is not this machine's)."""
    from planner.profiles import profiles_for

    service = [v for c in calls if (v := _num(c, "service_s")) is not None]
    if not service:
        return []
    model = program.model(stage.models[0].model)
    profs = profiles_for(model.profile) if model.profile else ()
    predicted = None
    note = "no profile"
    if profs and ins and outs:
        prof = profs[0]
        predicted = prof.request_s(int(statistics.fmean(ins)), int(statistics.fmean(outs)))
        note = f"profile {prof.model} on {prof.device} alone" + (" (calibrated)" if prof.path and
                                                               "profile_data" not in prof.path else " (shipped)")
    out = [Estimate(f"{stage.name}: service p50 (LLM)", predicted, statistics.median(service), len(service), "s",
                    note=note)]
    ttft = [v for c in calls if (v := _num(c, "ttft_s")) is not None]
    if ttft:
        out.append(Estimate(f"{stage.name}: time to first token p50", None, statistics.median(ttft), len(ttft), "s"))
    return out


def _arrivals(wf: Workflow, runs: list[dict], dump: dict) -> list[Estimate]:
    arrivals = sorted(float(r["arrival_s"]) for r in runs)
    declared = wf.load.rate_per_s if wf.load else None
    span = arrivals[-1] - arrivals[0]
    if len(arrivals) < 3 or span < BURST_S:
        return [Estimate("arrival rate", declared, None, len(arrivals), "/s",
                         note=f"all {len(arrivals)} runs arrived within {span:.2f} s: a burst, no rate to learn"
                         if len(arrivals) >= 3 else "fewer than 3 runs")]
    rate = (len(arrivals) - 1) / span
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    mean_gap = statistics.fmean(gaps)
    cv = statistics.pstdev(gaps) / mean_gap if mean_gap > 0 else 0.0
    apply = len(arrivals) >= MIN_CALLS and rate >= MIN_RATE_PER_S  # slower: no plan is made for it (ir.Load)
    if apply:
        pattern = "constant" if cv < 0.3 else ("poisson" if cv <= 1.3 else "bursty")
        dump["load"] = {"rate_per_s": rate, "pattern": pattern, "burstiness": max(cv, 1e-3)}
    return [Estimate("arrival rate", declared, rate, len(arrivals), "/s", apply),
            Estimate("inter-arrival CV", wf.load.burstiness if wf.load else None, cv, len(gaps), "", apply)]


def _measured(runs: list[dict]) -> dict[str, float]:
    lat = [v for r in runs if (v := _num(r, "latency_s")) is not None]
    out: dict[str, float] = {}
    if lat:
        out = {"p50_s": _pct(lat, 0.5), "p99_s": _pct(lat, 0.99)}
    met = [r["slo_met"] for r in runs if isinstance(r.get("slo_met"), bool)]
    if met:
        out["slo_attainment"] = sum(met) / len(met)
    return out


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "%":
        return f"{100 * x:.1f}%"
    if unit == "s":
        return f"{x * 1e3:.0f}ms" if x < 1 else f"{x:.2f}s"
    if unit == "/s":
        return f"{x:.4g}/s"
    if unit == "tokens":
        return f"{x:.0f}"
    return f"{x:.2f}"


def render(observed: Observed) -> str:
    """Declared beside observed, differences flagged (``!``), applied estimates marked (``*``)."""
    lines = [f"Observed: {observed.runs} recorded runs of workflow {observed.workflow}"
             + ("; measured end-to-end p50 {}, p99 {}".format(_fmt(observed.measured["p50_s"], "s"),
                                                             _fmt(observed.measured["p99_s"], "s"))
                if "p50_s" in observed.measured else "")
             + (f", SLO attainment {100 * observed.measured['slo_attainment']:.1f}%"
                if "slo_attainment" in observed.measured else "")]
    width = max(len(e.what) for e in observed.estimates) if observed.estimates else 10
    lines.append(f"  {'':2s}{'parameter':{width}s}  {'declared':>10s}  {'observed':>10s}  {'n':>5s}")
    for e in observed.estimates:
        mark = ("!" if e.flagged else " ") + ("*" if e.applied else " ")
        note = f"  {e.note}" if e.note else ""
        lines.append(f"  {mark}{e.what:{width}s}  {_fmt(e.declared, e.unit):>10s}  {_fmt(e.observed, e.unit):>10s}  "
                     f"{e.samples:5d}{note}")
    if observed.ignored:
        lines.append(f"  ! calls of stages {observed.workflow} does not have, not used: "
                     + ", ".join(f"{name} ({n})" for name, n in observed.ignored.items()))
    lines.append(f"  ! differs from the declared value (probabilities by > {100 * FLAG_PROBABILITY:.0f} points, "
                 f"the rest by > {100 * FLAG_RELATIVE:.0f}%); * used for this plan (probabilities shrunk towards "
                 f"the declared value by {PRIOR_WEIGHT:g} calls)")
    return "\n".join(lines) + "\n"
