"""Workflow runs: how one request walks its call graph.

Two drivers share the :class:`Run` interface the simulator uses:

* :class:`IRRun` walks a :class:`~cortexlang.ir.Workflow` by the rules of
  :mod:`cortexlang.semantics` (the same rules the planner and the orchestrator
  use): one out-edge per node visit drawn by the edges' probabilities, loop
  budgets (the simulated plan's knobs) and nested resets, fan-out branches run
  in parallel and joined (``first`` finishes with the first branch and cancels
  the rest; the other joins wait for every branch).
* :class:`~runtime.simulator.trace.TraceRun` replays a recorded request.

Sampling is *scripted*: every random quantity of a run (tokens, service times,
edge choices) is drawn once per visit key ``(node, visit)`` -- or
``(fan-out, visit, branch, position)`` -- from the run's own RNG and kept, so the
run's path and sizes are the same under every policy (same seed = same
workload). A dry walk at arrival computes the run's *standalone latency* (its
own path on an idle, warm cluster -- shared prefixes resident -- on the fastest
device per model), which defines
its SLO deadline. Policy actions (pruning a retry, swapping the model) change
what happens next, never the script.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable

from cortexlang.ir import Edge, LLMStage
from cortexlang.semantics import join_waits_for_all
from runtime.simulator.calls import Call
from runtime.simulator.distributions import NV_MAGICCONST, sample
from runtime.simulator.graph import WorkflowGraph, llm_standalone_s

def _draw_params(g: WorkflowGraph, token_cv: float, family: str) -> dict[str, tuple]:
    """Per-stage sampling parameters shared by every run of ``g`` with these knobs (filled lazily)."""
    return g.draw_cache.setdefault((token_cv, family), {})


def _stage_draw(g: WorkflowGraph, s, token_cv: float, family: str) -> tuple:
    """How one stage's scripted sizes are drawn and timed, and its calls' static fields:
    ``(True, input params, output params, reference profile, prefix tokens, (model, prefix key,
    expected s, remaining critical path s, its std))`` for LLM stages (see :func:`_tokens`; the
    profile and prefix tokens give the standalone time), ``(False, mean, cv, (kind, expected s,
    remaining s, its std))`` for SQL/tool service times. Cached per stage: every call of the
    stage would otherwise look these up again."""
    remaining, std = g.remaining.get(s.name, 0.0), g.remaining_std.get(s.name, 0.0)
    if isinstance(s, LLMStage):
        model = s.models[0].model
        pkey = f"{g.workflow.name}/{s.name}@{model}" if s.prefix_tokens else None
        return (True, _token_params(s.input_tokens, token_cv * 0.5, s.prefix_tokens + 1, None),
                _token_params(s.output_tokens, token_cv, 1, s.max_tokens.preferred),
                g.profile_for(model), s.prefix_tokens, (model, pkey, g.stage_time[s.name], remaining, std))
    return (False, s.service_s, s.service_cv, (s.kind, s.service_s, remaining, std))


def _token_params(mean: int, cv: float, low: int, high: int | None) -> tuple:
    """Precomputed :func:`sample_tokens` arguments: (mu, sigma or None for a constant, low, high)."""
    if mean <= 0:
        return (0.0, -1.0, low, high)
    if cv <= 0.0:
        return (float(mean), None, low, high)
    s2 = math.log1p(cv * cv)
    return (math.log(float(mean)) - s2 / 2.0, math.sqrt(s2), low, high)


_log, _exp = math.log, math.exp


def _tokens(rng: random.Random, params: tuple) -> int:
    """Exactly :func:`runtime.simulator.distributions.sample_tokens` (same draws, same value), with
    the lognormal's parameters precomputed."""
    mu, sigma, low, high = params
    if sigma is None:
        value = mu
    elif sigma < 0.0:
        value = 0.0
    else:
        # ``math.exp(distributions.normal(rng, mu, sigma))`` (CPython's normalvariate) inlined:
        # same draws, same value, no call per draw.
        rand = rng.random
        while True:
            u1 = rand()
            u2 = 1.0 - rand()
            z = NV_MAGICCONST * (u1 - 0.5) / u2
            if z * z / 4.0 <= -_log(u2):
                break
        value = _exp(mu + z * sigma)
    # max/min on ints without the builtins (hot path: several draws per run).
    n = int(round(value))
    if n < low:
        n = low
    return high if high is not None and n > high else n


PruneHook = Callable[["IRRun", Call, str, int], bool]
"""(run, finished call, loop name, iteration about to start) -> prune?"""


class Run:
    """State common to every run driver."""

    __slots__ = ("run_id", "workflow", "arrival_s", "deadline_s", "standalone_s", "status", "end_s",
                 "attained_s", "outstanding", "last_replica", "pruned", "ncalls", "rejected_reason", "lighter")

    def __init__(self, run_id: int, workflow: str, arrival_s: float):
        self.run_id = run_id
        self.workflow = workflow
        self.arrival_s = arrival_s
        self.deadline_s: float | None = None
        self.standalone_s = 0.0
        self.status: str | None = None  # 'done' | 'fail' | 'rejected'
        self.end_s = -1.0
        self.attained_s = 0.0
        self.outstanding = 0
        self.last_replica: dict[str, str] = {}
        self.pruned = 0
        self.ncalls = 0
        self.rejected_reason: str | None = None
        self.lighter: dict[str, float] | None = None
        """Stages whose calls ran on a lighter declared model option, with that option's quality
        (None until one does: the common case costs nothing)."""

    def degrade(self, stage: str, quality: float) -> None:
        """Record that a call of ``stage`` ran on a model option of declared ``quality``."""
        if quality < 1.0:
            if self.lighter is None:
                self.lighter = {}
            self.lighter[stage] = min(quality, self.lighter.get(stage, 1.0))

    @property
    def quality(self) -> float:
        """Declared quality of the run's answer: the product, over stages, of the lowest quality
        option any of the stage's calls ran on (the planner's per-stage quality arithmetic)."""
        q = 1.0
        for v in (self.lighter or {}).values():
            q *= v
        return q

    def first_calls(self) -> list[Call]:
        raise NotImplementedError

    def on_done(self, call: Call, prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        """Calls to start and calls to cancel after ``call`` finished."""
        raise NotImplementedError


class _Fan:
    """One in-flight fan-out instance."""

    __slots__ = ("node", "visit", "chains", "open", "cp", "done")

    def __init__(self, node: str, visit: int, chains: tuple[tuple[str, ...], ...]):
        self.node = node
        self.visit = visit
        self.chains = chains
        self.open: dict[int, Call] = {}
        self.cp = 0.0
        self.done = False


class IRRun(Run):
    """A run walking an IR workflow (see module docstring)."""

    __slots__ = ("g", "sem", "rng", "script", "visits", "counters", "token_cv", "fans", "_family", "_draws",
                 "_standalone")

    def __init__(self, g: WorkflowGraph, run_id: int, arrival_s: float, rng: random.Random,
                 token_cv: float = 0.3, service_family: str = "lognormal"):
        super().__init__(run_id, g.workflow.name, arrival_s)
        self.g = g
        self.sem = g.semantics
        self.rng = rng
        self.token_cv = token_cv
        self.script: dict[tuple, tuple] = {}
        self._family = service_family
        self.visits: dict[str, int] = {}
        self.counters = self.sem.initial_counters()
        self.fans: dict[str, _Fan] = {}
        self._draws = _draw_params(g, token_cv, service_family)
        self._standalone: dict[tuple, float] = {}
        self.standalone_s = self._dry_walk()
        self.visits.clear()
        self.counters = self.sem.initial_counters()


    # -- scripted samples ----------------------------------------------------
    def _sizes(self, key: tuple, stage: str) -> tuple:
        got = self.script.get(key)
        if got is None:
            rng = self.rng
            draw = self._draws.get(stage)
            if draw is None:
                draw = self._draws[stage] = _stage_draw(self.g, self.g.stages[stage], self.token_cv,
                                                        self._family)
            if draw[0]:
                got = (_tokens(rng, draw[1]), _tokens(rng, draw[2]), rng.random())
            else:
                got = (sample(rng, draw[1], draw[2], self._family), 0, rng.random())
            self.script[key] = got
        return got

    def _edge_u(self, key: tuple) -> float:
        got = self.script.get(key)
        if got is None:
            got = (self.rng.random(),)
            self.script[key] = got
        return got[-1]

    def _call_time(self, key: tuple, stage: str) -> float:
        """Standalone time of the scripted call at ``key`` (cached: the walk and the call both need it)."""
        t = self._standalone.get(key)
        if t is None:
            a, b, _ = self._sizes(key, stage)
            draw = self._draws[stage]  # filled by _sizes
            t = llm_standalone_s(draw[3], a, b, draw[4]) if draw[0] else a
            self._standalone[key] = t
        return t

    # -- the walk ------------------------------------------------------------
    def _follow(self, node: str, u: float) -> Edge:
        """The out-edge ``node`` takes for draw ``u`` (:meth:`Semantics.draw_edge`, inlined: several
        times per run)."""
        cum = self.g.cum[node]
        i = bisect_right(cum, u)
        return self.g.edges[node][i if i < len(cum) else len(cum) - 1]

    def _visit(self, node: str) -> int:
        v = self.visits.get(node, 0)
        self.visits[node] = v + 1
        return v

    def _dry_walk(self) -> float:
        """Standalone latency of this run's scripted path (idle cluster, fastest devices)."""
        # The hot part of every arrival: _visit, _sizes, _call_time and _follow are written out for
        # stage nodes (same draws in the same order: input tokens, output tokens, edge).
        g = self.g
        fanouts, visits, script, standalone = g.fanouts, self.visits, self.script, self._standalone
        rng, draws, cums, edges = self.rng, self._draws, g.cum, g.edges
        t, node = 0.0, g.workflow.entry
        for _ in range(100_000):
            if node == "done" or node == "fail":
                return t
            v = visits.get(node, 0)
            visits[node] = v + 1
            if node in fanouts:
                fo = fanouts[node]
                chains = [sum(self._call_time((node, v, b, i), s) for i, s in enumerate(chain))
                          for b, chain in enumerate(g.branch_chains(fo))]
                t += max(chains) if join_waits_for_all(fo.join) else min(chains)
                u = self._edge_u((node, v, "edge"))
            else:
                key = (node, v)  # a first visit of this key: the script has no entry yet
                draw = draws.get(node)
                if draw is None:
                    draw = draws[node] = _stage_draw(g, g.stages[node], self.token_cv, self._family)
                if draw[0]:
                    a, b = _tokens(rng, draw[1]), _tokens(rng, draw[2])
                    u = rng.random()
                    ct = llm_standalone_s(draw[3], a, b, draw[4])
                else:
                    a, b = sample(rng, draw[1], draw[2], self._family), 0
                    u = rng.random()
                    ct = a
                script[key] = (a, b, u)
                standalone[key] = ct
                t += ct
            cum = cums[node]
            i = bisect_right(cum, u)
            e = edges[node][i if i < len(cum) else len(cum) - 1]
            if e.loop is None:
                node = e.target
                continue
            step = self.sem.take(self.counters, e)
            node, self.counters = step.target, step.counters
        raise RuntimeError(f"workflow {self.workflow!r}: walk did not terminate")

    def _make_call(self, key: tuple, stage: str, cp: float, group: object = None) -> Call:
        sizes = self.script.get(key)  # usually drawn by the dry walk already
        a, b, _ = sizes if sizes is not None else self._sizes(key, stage)
        draw = self._draws[stage]  # filled by the first draw of this stage
        self.ncalls += 1
        attempt = sum(self.counters)
        if draw[0]:
            model, pkey, expected, remaining, std = draw[5]
            t = self._standalone.get(key)
            return Call(self, key, stage, "llm", model, a, b, pkey, draw[4], 0.0,
                        t if t is not None else self._call_time(key, stage), expected, remaining, std,
                        group, attempt, cp)
        kind, expected, remaining, std = draw[3]
        return Call(self, key, stage, kind, None, 0, 0, None, 0, a, a, expected, remaining, std, group, attempt, cp)

    def _enter(self, node: str, cp: float) -> list[Call]:
        if node == "done" or node == "fail":
            self.status = node
            return []
        visits = self.visits  # _visit inlined
        v = visits.get(node, 0)
        visits[node] = v + 1
        if node in self.g.fanouts:
            fo = self.g.fanouts[node]
            fan = _Fan(node, v, self.g.branch_chains(fo))
            fan.cp = cp
            self.fans[node] = fan
            calls = []
            for b, chain in enumerate(fan.chains):
                c = self._make_call((node, v, b, 0), chain[0], cp, (node, b, 0))
                fan.open[b] = c
                calls.append(c)
            return calls
        return [self._make_call((node, v), node, cp)]

    def first_calls(self) -> list[Call]:
        return self._enter(self.g.workflow.entry, 0.0)

    def on_done(self, call: Call, prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        cp = call.cp_service_s + (call.t_end - call.t_start)
        if call.group is not None:
            return self._branch_done(call, cp, prune)
        u = self.script[call.key][2]  # drawn when the call was made
        return self._leave(call.stage, call, u, cp, prune), []

    def _leave(self, node: str, call: Call, u: float, cp: float, prune: PruneHook | None) -> list[Call]:
        e = self._follow(node, u)
        if e.loop is None:
            return self._enter(e.target, cp)
        step = self.sem.take(self.counters, e)
        if step.loop is not None and prune is not None and prune(self, call, step.loop, step.iteration):
            self.pruned += 1
            step = self.sem.exhaust(self.counters, e)
        self.counters = step.counters
        return self._enter(step.target, cp)

    def _branch_done(self, call: Call, cp: float, prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        node, b, pos = call.group
        fan = self.fans[node]
        if fan.done:
            return [], []
        fan.cp = max(fan.cp, cp)
        chain = fan.chains[b]
        if pos + 1 < len(chain):
            c = self._make_call((node, fan.visit, b, pos + 1), chain[pos + 1], cp, (node, b, pos + 1))
            fan.open[b] = c
            return [c], []
        del fan.open[b]
        cancel: list[Call] = []
        if not join_waits_for_all(self.g.fanouts[node].join):
            cancel = list(fan.open.values())
            fan.open.clear()
        if fan.open:
            return [], []
        fan.done = True
        u = self._edge_u((node, fan.visit, "edge"))
        return self._leave(node, call, u, fan.cp, prune), cancel
