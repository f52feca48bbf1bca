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
import zlib
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence
from statistics import NormalDist

from cortexlang.ir import LLMStage
from cortexlang.laws import log_params
from cortexlang.semantics import Semantics, join_waits_for_all
from runtime.simulator.calls import OVERLONG, Call, new_call
from runtime.simulator.distributions import _COMPILED, NV_MAGICCONST, run_rng, sample
from runtime.simulator.graph import StandaloneTime, WorkflowGraph
from runtime.simulator.mt import MersenneTwister

Generator = random.Random | MersenneTwister
"""A run's generator (:func:`runtime.simulator.distributions.run_rng`): only ``random()`` and
``gammavariate`` are drawn."""


def _draw_params(g: WorkflowGraph, token_cv: float, family: str) -> dict[str, tuple]:
    """Per-stage sampling parameters shared by every run of ``g`` with these knobs (filled lazily)."""
    return g.draw_cache.setdefault((token_cv, family), {})


def _stage_draw(g: WorkflowGraph, s, token_cv: float, family: str) -> tuple:
    """How one stage's scripted sizes are drawn and timed, and its calls' static fields:
    ``(True, input params, output params, reference profile's StandaloneTime, prefix tokens, (model, prefix key,
    expected s, remaining critical path s, its std), longest prompt every model option accepts, the stage's
    ``output_correlation``)`` for LLM stages (see :func:`_tokens`, :func:`_alike_tokens`; the
    profile and prefix tokens give the standalone time), ``(False, mean, cv, (kind, expected s,
    remaining s, its std), extra)`` for SQL/tool service times (``extra``: None, or a uniform
    range and the cumulative attempts distribution and backoff of retries; see :func:`_service`). Cached per stage: every call of the
    stage would otherwise look these up again."""
    remaining, std = g.remaining.get(s.name, 0.0), g.remaining_std.get(s.name, 0.0)
    if isinstance(s, LLMStage):
        model = g.model[s.name]
        pkey = f"{g.workflow.name}/{s.name}@{model}" if s.prefix_tokens else None
        longest = min(g.input_limits[s.name].values())
        out_cv = token_cv if s.output_cv is None else s.output_cv
        return (True, _token_params(s.input_tokens, token_cv * 0.5, s.prefix_tokens + 1, None),
                _token_params(s.output_tokens, out_cv, 1, g.max_tokens[s.name], s.runaway),
                StandaloneTime(g.profile_for(model)), s.prefix_tokens, (model, pkey, g.stage_time[s.name], remaining, std),
                longest, float(s.output_correlation))
    extra = None
    retry = getattr(s, "retry", None)
    if s.service_range_s is not None or retry is not None:
        cum = None
        if retry is not None:
            acc, cum = 0.0, []
            for _, p in g.semantics.holder(s.name).attempts_pmf(s.name):
                acc += p
                cum.append(acc)
            cum[-1] = 1.0
        extra = (s.service_range_s, cum, retry.backoff_s if retry is not None else 0.0)
    return (False, s.service_s, s.service_cv, (s.kind, g.stage_time[s.name], remaining, std), extra)


def _service(rng: Generator, draw: tuple, family: str) -> float:
    """One scripted SQL/tool call's service time: one draw, or (a range, retries) the attempts'
    draws (uniform on the range, else from ``family``) plus the backoffs between them."""
    extra = draw[4]
    if extra is None:
        return _sample(rng, draw[1], draw[2], family)
    span, cum, backoff = extra
    attempts = 1
    if cum is not None:
        u = rng.random()
        attempts = len(cum)
        for k, c in enumerate(cum):
            if u < c:
                attempts = k + 1
                break
    total = 0.0
    for i in range(attempts):
        total += span[0] + (span[1] - span[0]) * rng.random() if span is not None else _sample(
            rng, draw[1], draw[2], family)
        if i:
            total += backoff * 2 ** (i - 1)
    return total


def _token_params(mean: int, cv: float, low: int, high: int | None, runaway: float = 0.0) -> tuple:
    """Precomputed :func:`sample_tokens` arguments: (mu, sigma or None for a constant, low, high, the
    runaway share: the probability of ``high`` outright, an LLM stage's ``runaway``)."""
    if mean <= 0:
        return (0.0, -1.0, low, high, runaway)
    if cv <= 0.0:
        return (float(mean), None, low, high, runaway)
    mu, sigma = log_params(float(mean), cv)  # the declared laws' family (cortexlang.laws), once per stage
    return (mu, sigma, low, high, runaway)


_STD_NORMAL = NormalDist()
_NV = NV_MAGICCONST  # a C double in the compiled build (runs.pxd), where math.* below is libm's (C calls)


def _tokens(rng: Generator, params: tuple) -> int:
    """Exactly :func:`runtime.simulator.distributions.sample_tokens` (same draws, same value), with
    the lognormal's parameters precomputed; with a runaway share ``p > 0`` one uniform draw first makes
    the call run to ``high`` with probability ``p`` (no draw when ``p = 0``: every other draw stays put)."""
    mu, sigma, low, high, runaway = params
    if runaway > 0.0 and rng.random() < runaway:
        return high
    if sigma is None:
        value = mu
    elif sigma < 0.0:
        value = 0.0
    else:
        value = _lognormal(rng, mu, sigma)
    return _rounded(value, low, high)


def _rounded(value: float, low: int, high: int | None) -> int:
    """``min(max(int(round(value)), low), high)`` without the builtin calls (hot path: several draws per
    run): ties to even, decided on value - floor(value), which is exact for the finite value >= 0 drawn
    here (Sterbenz)."""
    f = math.floor(value)
    n = int(f)
    d = value - f
    if d > 0.5 or (d == 0.5 and n % 2 == 1):
        n += 1
    if n < low:
        n = low
    return high if high is not None and n > high else n


def _alike_tokens(rng: Generator, params: tuple, latent: float, r: float) -> int:
    """An output length drawn alike the run's others (an LLM stage's ``output_correlation`` ``r > 0``):
    :func:`_tokens` with its lognormal's standard normal replaced by ``sqrt(r) latent + sqrt(1 - r) z``,
    ``latent`` the run's own (:attr:`IRRun.latent`), ``z`` this call's; the planner draws the same Gaussian
    copula (``planner/latency.py``). A constant or empty length has nothing to correlate. With a runaway
    share ``p`` the copula's level ``Phi(w)`` picks the mixture's quantile: ``high`` at or above ``1 - p``,
    else the lognormal's at ``Phi(w) / (1 - p)`` (so runaways, too, are alike within a run)."""
    mu, sigma, low, high, runaway = params
    if sigma is None and runaway > 0.0:  # a constant length, but the runaways still alike within the run
        if _STD_NORMAL.cdf(math.sqrt(r) * latent + math.sqrt(1.0 - r) * _normal(rng)) >= 1.0 - runaway:
            return high
        return _rounded(mu, low, high)
    if sigma is None or sigma < 0.0:
        return _tokens(rng, params)
    w = math.sqrt(r) * latent + math.sqrt(1.0 - r) * _normal(rng)
    if runaway > 0.0:
        level = _STD_NORMAL.cdf(w)
        if level >= 1.0 - runaway:
            return high
        w = _STD_NORMAL.inv_cdf(max(level / (1.0 - runaway), 1e-300))
    return _rounded(math.exp(mu + w * sigma), low, high)


def _normal(rng: Generator) -> float:
    """A standard normal draw: :func:`_lognormal`'s ``z`` (CPython's normalvariate, Kinderman-Monahan)."""
    while True:
        u1 = rng.random()
        u2 = 1.0 - rng.random()
        z = _NV * (u1 - 0.5) / u2
        if z * z / 4.0 <= -math.log(u2):
            return z


def _run_latent(g: WorkflowGraph, rng: Generator) -> float:
    """The run's standard normal shared by its alike calls' output lengths (:func:`_alike_tokens`), drawn
    first from the run's generator when some LLM stage of ``g`` sets ``output_correlation``; 0.0 (and no
    draw, so every other draw stays where it was) otherwise."""
    return _normal(rng) if g.alike else 0.0


def _lognormal(rng: Generator, mu: float, sigma: float) -> float:
    """``math.exp(distributions.normal(rng, mu, sigma))`` (CPython's normalvariate) written out:
    the same draws and the same value, without a Python call per draw (a C call on the run's
    generator in the compiled build: runs.pxd types it)."""
    return math.exp(mu + _normal(rng) * sigma)


def _sample(rng: Generator, mean: float, cv: float, family: str) -> float:
    """:func:`~runtime.simulator.distributions.sample` on a run's generator, its lognormal case
    (``exp(normal(log(mean) - s2 / 2, sqrt(s2)))``, ``s2 = log1p(cv^2)``) written out: the same
    operations in the same order as :func:`cortexlang.laws.log_params`, so the same value (a service
    draw is on the walk's hot path: no Python call per draw; ``tests/cortexlang/test_laws.py``)."""
    if family == "lognormal" and mean > 0.0 and cv > 0.0:
        s2 = math.log1p(cv * cv)
        return _lognormal(rng, math.log(mean) - s2 / 2.0, math.sqrt(s2))
    return sample(rng, mean, cv, family)


def _edge_index(cum: list, u: float) -> int:
    """The out-edge a uniform draw ``u`` picks given the edges' cumulative probabilities ``cum``:
    ``bisect_right(cum, u)``, the last edge where ``u`` reaches past the end (the walk's hot path)."""
    n = len(cum)
    if not _COMPILED:  # interpreted: the C bisect
        i = bisect_right(cum, u)
        return i if i < n else n - 1
    # bisect_right written out on C doubles (cum holds Python floats, u is one): the same index
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        c = cum[mid]
        if u < c:
            hi = mid
        else:
            lo = mid + 1
    return lo if lo < n else n - 1


def fanout_width(sem: Semantics, node: str, fanouts: Collection[str], widths: dict[str, int],
                 draw: Callable[[], float]) -> int:
    """Branches of a visit of fan-out ``node``, recorded in ``widths`` (fan-out -> its latest width):
    fixed; or the latest width of the fan-out it maps ``over``, capped by its own ``width``; or, for a
    map with a planning distribution, the first width whose cumulative probability exceeds ``draw()``
    (called only then, so a fixed width consumes no draw). The one rule for the simulator's walks and
    anything that re-walks a run's script."""
    fo = sem.fanout(node)
    if fo.over is not None and fo.over in fanouts:
        width = widths.get(fo.over, 0)
        cap = sem.width.get(node)
        width = width if cap is None else min(width, cap)
    else:
        pmf = sem.width_pmf(node)
        if len(pmf) == 1:
            width = pmf[0][0]
        else:
            u, acc, width = draw(), 0.0, pmf[-1][0]
            for w, p in pmf:
                acc += p
                if u < acc:
                    width = w
                    break
    widths[node] = width
    return width


def _count_sum(counters: tuple) -> int:
    """``sum(counters)`` for loop counters (small ints), without the builtin's call (every call made)."""
    total = 0
    for c in counters:
        total += c
    return total


def _take(g: WorkflowGraph, node: str, i: int, counters: tuple):
    """``g.semantics.take(counters, g.edges[node][i])``, memoised in ``g.steps``."""
    key = (node, i, counters)
    steps = g.steps
    step = steps.get(key)
    if step is None:
        step = steps[key] = g.semantics.take(counters, g.edges[node][i])
    return step


PruneHook = Callable[["IRRun", Call, str, int], bool]
"""(run, finished call, loop name, iteration about to start) -> prune?"""


_ENDS = frozenset(("done", "fail"))
"""The terminal nodes. ``node in _ENDS`` is ``node == "done" or node == "fail"`` for a node name
(a str: hash, then equality), tested at every step of every walk: one set probe instead of two
string comparisons (each a full ``PyUnicode_Compare`` when compiled)."""

class Run:
    """State common to every run driver."""

    __slots__ = ("run_id", "workflow", "arrival_s", "deadline_s", "standalone_s", "status", "end_s",
                 "attained_s", "outstanding", "last_replica", "pruned", "ncalls", "rejected_reason", "lighter")

    def __init__(self, run_id: int, workflow: str, arrival_s: float):
        self._init(run_id, workflow, arrival_s)

    def _init(self, run_id: int, workflow: str, arrival_s: float) -> None:
        """Set every field: ``__init__``'s body, which :class:`IRRun` runs as a C call when compiled
        (``Run.__init__(self, ...)`` from a subclass is a Python call with an argument tuple)."""
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

    def in_flight(self) -> list[Call]:
        """The run's calls started and not finished (to cancel them when the run ends early)."""
        return []

    def on_done(self, call: Call, prune: PruneHook | None) -> tuple[list[Call], Sequence[Call]]:
        """Calls to start and calls to cancel after ``call`` finished (read only: the cancels are often the
        shared empty tuple, which costs no allocation per call)."""
        raise NotImplementedError


class _Walk:
    """One walk through a call graph: the run's own, or one branch run of a fan-out visit.

    ``prefix`` starts the script keys of its visits (``()`` for the run's own walk,
    ``fan.key + (branch,)`` for a branch), so every visit of a run has its own key.
    """

    __slots__ = ("sem", "prefix", "counters", "visits", "fan", "branch", "current", "child")

    def __init__(self, sem: Semantics, prefix: tuple, fan: "_Fan | None" = None, branch: int = 0,
                 counters: tuple | None = None):
        """``counters``: the walk's starting loop counters, ``sem.initial_counters()`` when None (a run's
        own walk passes its graph's ``start_counters``, the same value)."""
        self.sem = sem
        self.prefix = prefix
        self.counters = sem.initial_counters() if counters is None else counters
        self.visits: dict[str, int] = {}
        self.fan = fan
        self.branch = branch
        self.current: Call | None = None
        self.child: _Fan | None = None

    def in_flight(self) -> list[Call]:
        """The calls this walk has running, its nested fan-outs' included (to cancel them)."""
        if self.current is not None:
            return [self.current]
        if self.child is None:
            return []
        return [c for w in self.child.open.values() for c in w.in_flight()]


class _Fan:
    """One in-flight fan-out visit: its branch walks still running."""

    __slots__ = ("node", "key", "walk", "open", "cp", "done")

    def __init__(self, node: str, key: tuple, walk: _Walk, cp: float):
        self.node = node
        self.key = key
        self.walk = walk
        self.open: dict[int, _Walk] = {}
        self.cp = cp
        self.done = False


class IRRun(Run):
    """A run walking an IR workflow (see module docstring)."""

    __slots__ = ("g", "sem", "rng", "latent", "script", "top", "token_cv", "widths", "_family", "_draws",
                 "_cum", "_plain_next", "_fanouts")

    def __init__(self, g: WorkflowGraph, run_id: int, arrival_s: float, rng: Generator,
                 token_cv: float = 0.3, service_family: str = "lognormal"):
        """``rng``: the run's own generator, from :func:`~runtime.simulator.distributions.run_rng`
        (the compiled build accepts only that)."""
        self._start(g, run_id, arrival_s, rng, token_cv, service_family)

    def _start(self, g: WorkflowGraph, run_id: int, arrival_s: float, rng: Generator, token_cv: float,
               service_family: str) -> None:
        """``__init__``'s body: a C call when compiled, reading the graph's fields as C fields (runs.pxd
        types ``g``)."""
        self._init(run_id, g.workflow.name, arrival_s)  # Run.__init__'s body (a C call when compiled)
        self.g = g
        self.sem = g.semantics
        self._cum = g.cum  # the graph's edge tables, read on every step of the run's own walk
        self._plain_next = g.plain_next
        self._fanouts = g.fanouts  # read at every node the walk enters
        self.rng = rng
        self.latent = _run_latent(g, rng)
        """The run's standard normal behind its alike output lengths (:func:`_alike_tokens`)."""
        self.token_cv = token_cv
        self.script: dict[tuple, tuple] = {}
        """Visit key -> its draws: ``(input tokens, output tokens or service s, edge draw, standalone s)``
        for a call, ``(u,)`` for an edge or width draw."""
        self._family = service_family
        self.widths: dict[str, int] = {}
        """Fan-out -> branches of its latest visit (a map ``over`` another fan-out shares it)."""
        self._draws = _draw_params(g, token_cv, service_family)
        self.top = _Walk(self.sem, (), None, 0, g.start_counters)
        self.standalone_s = self._dry_walk()  # leaves self.top as it is
        self.widths.clear()

    def in_flight(self) -> list[Call]:
        return self.top.in_flight()

    @property
    def counters(self) -> tuple[int, ...]:
        """The loop counters of the run's own walk."""
        return self.top.counters

    # -- scripted samples ----------------------------------------------------
    def twin_output_tokens(self, stage: str, key: tuple, twin: int, seed: int, own: int) -> int:
        """The output length of hedge twin ``twin`` of the call at ``key`` (whose own length is ``own``), or 0
        for the call's own. A stage that samples (temperature > 0) gives each candidate its own output: a
        fresh draw from the law of the calls that stop, from a stream of the twin's own (seeded by ``seed``,
        the key and the twin), so that no scripted draw moves and every policy sees the same twin. Greedy
        candidates decode the same output, and a runaway call's candidates all run away (the prompt's, as
        the planner has it: ``planner.candidates._hedged_with_runaways``)."""
        s = self.g.stages[stage]
        if not isinstance(s, LLMStage) or s.temperature == 0.0:
            return 0
        draw = self._draws.get(stage)
        if draw is None:
            draw = self._draws[stage] = _stage_draw(self.g, s, self.token_cv, self._family)
        mu, sigma, low, high, runaway = draw[2]
        if runaway > 0.0 and own == high:
            return 0
        return _tokens(run_rng(zlib.crc32(repr((seed, key, twin)).encode())), (mu, sigma, low, high, 0.0))

    def _sizes(self, key: tuple, stage: str) -> tuple:
        got = self.script.get(key)
        if got is None:
            rng = self.rng
            draw = self._draws.get(stage)
            if draw is None:
                draw = self._draws[stage] = _stage_draw(self.g, self.g.stages[stage], self.token_cv,
                                                        self._family)
            if draw[0]:
                a = _tokens(rng, draw[1])
                b = _tokens(rng, draw[2]) if draw[7] == 0.0 else _alike_tokens(rng, draw[2], self.latent, draw[7])
                st = draw[3]  # a StandaloneTime (typed in runs.pxd: a C call)
                got = (a, b, rng.random(), st.of(a, b, draw[4]))
            else:
                a = _service(rng, draw, self._family)
                got = (a, 0, rng.random(), a)
            self.script[key] = got
        return got

    def call_draws(self) -> list[tuple[tuple, tuple]]:
        """``(visit key, draws)`` of every call scripted so far, draws being ``(input tokens, output
        tokens or service s, edge draw, standalone s)``; edge and width draws (``(u,)``) left out.
        The one reading of :attr:`script` outside this class (its entries' shape is this class's)."""
        return [(key, draws) for key, draws in self.script.items() if len(draws) > 1]

    def _edge_u(self, key: tuple) -> float:
        got = self.script.get(key)
        if got is None:
            got = (self.rng.random(),)
            self.script[key] = got
        return got[-1]

    def _call_time(self, key: tuple, stage: str) -> float:
        """Standalone time of the scripted call at ``key`` (kept in its script entry: the walk and the
        call both need it)."""
        return self._sizes(key, stage)[3]

    def _width(self, sem: Semantics, node: str, key: tuple) -> int:
        """Branches of the fan-out visit at ``key`` (:func:`fanout_width`; the draw scripted once)."""
        return fanout_width(sem, node, self.g.fanouts, self.widths, lambda: self._edge_u(key + ("width",)))

    # -- the walk ------------------------------------------------------------
    def _dry_walk(self) -> float:
        """Standalone latency of this run's scripted path (idle cluster, fastest devices)."""
        # The hot part of every arrival: visits, _sizes, _call_time and the edge draw are written out
        # for stage nodes (same draws in the same order: input tokens, output tokens, edge).
        g = self.g
        fanouts, script = g.fanouts, self.script
        rng, draws, cums, plain_next = self.rng, self._draws, self._cum, self._plain_next
        t, node, visits, counters = 0.0, g.workflow.entry, {}, self.top.counters
        for _ in range(100_000):
            if node in _ENDS:
                return t
            v = visits.get(node, 0)
            visits[node] = v + 1
            if node in fanouts:
                t += self._dry_fan(self.sem, node, (node, v))
                u = self._edge_u((node, v, "edge"))
            else:
                key = (node, v)  # a first visit of this key: the script has no entry yet
                draw = draws.get(node)
                if draw is None:
                    draw = draws[node] = _stage_draw(g, g.stages[node], self.token_cv, self._family)
                if draw[0]:
                    a = _tokens(rng, draw[1])
                    b = _tokens(rng, draw[2]) if draw[7] == 0.0 else _alike_tokens(rng, draw[2], self.latent, draw[7])
                    u = rng.random()
                    st = draw[3]  # a StandaloneTime (typed in runs.pxd: a C call)
                    ct = st.of(a, b, draw[4])
                else:
                    a, b = _service(rng, draw, self._family), 0
                    u = rng.random()
                    ct = a
                script[key] = (a, b, u, ct)
                t += ct
            i = _edge_index(cums[node], u)
            target = plain_next[node][i]
            if target is not None:  # not a loop edge
                node = target
                continue
            step = _take(g, node, i, counters)
            node, counters = step.target, step.counters
        raise RuntimeError(f"workflow {self.workflow!r}: walk did not terminate")

    def _dry_fan(self, sem: Semantics, node: str, key: tuple) -> float:
        """Standalone time of the fan-out visit at ``key``: its slowest branch run (for ``first``,
        its fastest successful one, else its slowest)."""
        width = self._width(sem, node, key)
        if width == 0:
            return 0.0
        runs = [self._dry_branch(sem.branch(node, sem.branch_index(node, b)), key + (b,)) for b in range(width)]
        if not join_waits_for_all(sem.fanout(node).join):
            ok = [t for t, reached in runs if reached]
            if ok:
                return min(ok)
        return max(t for t, _ in runs)

    def _dry_branch(self, sem: Semantics, prefix: tuple) -> tuple[float, bool]:
        """Standalone time of one branch run and whether it reaches ``done``."""
        t, node, counters, visits = 0.0, sem.graph.entry, sem.initial_counters(), {}
        for _ in range(100_000):
            if node in _ENDS:
                return t, node == "done"
            v = visits.get(node, 0)
            visits[node] = v + 1
            key = prefix + (node, v)
            if node in self.g.fanouts:
                t += self._dry_fan(sem, node, key)
                u = self._edge_u(key + ("edge",))
            else:
                t += self._call_time(key, node)
                u = self.script[key][2]
            step = sem.take(counters, sem.draw_edge(node, u))
            node, counters = step.target, step.counters
        raise RuntimeError(f"workflow {self.workflow!r}: a branch walk did not terminate")

    def _make_call(self, key: tuple, stage: str, cp: float, group: _Walk | None = None) -> Call:
        sizes = self.script.get(key)  # usually drawn by the dry walk already
        a, b, u, t = sizes if sizes is not None else self._sizes(key, stage)
        draw = self._draws[stage]  # filled by the first draw of this stage
        self.ncalls += 1
        attempt = _count_sum(self.top.counters) + (_count_sum(group.counters) if group is not None else 0)
        if draw[0]:
            model, pkey, expected, remaining, std = draw[5]
            c = new_call(self, key, stage, "llm", model, a, b, pkey, draw[4], 0.0, t, expected, remaining, std,
                         group, attempt, cp)
            if a > draw[6]:  # the engine may refuse it (context length): dispatch decides on the model used
                c.state = OVERLONG
            c.edge_u = u  # on_done reads it there rather than from the script again
            return c
        kind, expected, remaining, std = draw[3]
        c = new_call(self, key, stage, kind, None, 0, 0, None, 0, a, a, expected, remaining, std, group, attempt, cp)
        c.edge_u = u
        return c

    def _enter(self, walk: _Walk, node: str, cp: float, call: Call | None,
               prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        """Start ``node`` on ``walk``: the calls to start and the calls to cancel."""
        if node in _ENDS:
            if walk.fan is None:
                self.status = node
                return [], []
            return self._branch_end(walk, node == "done", cp, call, prune)
        visits = walk.visits
        v = visits.get(node, 0)
        visits[node] = v + 1
        key = walk.prefix + (node, v)
        if node in self._fanouts:
            return self._start_fan(walk, node, key, cp, call, prune)
        c = self._make_call(key, node, cp, walk if walk.fan is not None else None)
        walk.current = c
        return [c], ()  # nothing to cancel: the shared empty tuple (no list per call)

    def _start_fan(self, walk: _Walk, node: str, key: tuple, cp: float, call: Call | None,
                   prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        sem = walk.sem
        fan = _Fan(node, key, walk, cp)
        walk.child = fan
        width = self._width(sem, node, key)
        if width == 0:
            return self._fan_end(fan, call, prune)
        start: list[Call] = []
        cancel: list[Call] = []
        for b in range(width):
            branch = _Walk(sem.branch(node, sem.branch_index(node, b)), key + (b,), fan, b)
            fan.open[b] = branch
        for b, branch in list(fan.open.items()):
            if fan.done or b not in fan.open:  # a branch ended at once and a `first` join closed the rest
                continue
            s, c = self._enter(branch, branch.sem.graph.entry, cp, call, prune)
            start += s
            cancel += c
        return start, cancel

    def first_calls(self) -> list[Call]:
        return self._enter(self.top, self.g.workflow.entry, 0.0, None, None)[0]

    def on_done(self, call: Call, prune: PruneHook | None) -> tuple[list[Call], Sequence[Call]]:
        return self._done(call, call.group if call.group is not None else self.top, prune)

    def _done(self, call: Call, walk: _Walk, prune: PruneHook | None) -> tuple[list[Call], Sequence[Call]]:
        """:meth:`on_done` on the walk ``call`` belongs to (typed in runs.pxd: its fields and its fan-out's
        are C field reads, not generic attribute lookups)."""
        cp = call.cp_service_s + (call.t_end - call.t_start)
        fan = walk.fan
        if fan is not None and fan.done:
            return [], ()
        walk.current = None
        u = call.edge_u  # drawn when the call was made: the script's entry for its key
        if u is None:  # a call made elsewhere (a hedge's duplicate)
            u = self.script[call.key][2]
        return self._leave(walk, call.stage, call, u, cp, prune)

    def _leave(self, walk: _Walk, node: str, call: Call | None, u: float, cp: float,
               prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        sem = walk.sem
        if walk.fan is None:  # the run's own graph: the edge draw inlined, the step memoised (hot path)
            i = _edge_index(self._cum[node], u)
            target = self._plain_next[node][i]
            if target is not None:  # not a loop edge
                return self._enter(walk, target, cp, call, prune)
            e = self.g.edges[node][i]
            step = _take(self.g, node, i, walk.counters)
        else:
            e = sem.draw_edge(node, u)
            if e.loop is None:
                return self._enter(walk, e.target, cp, call, prune)
            step = sem.take(walk.counters, e)
        if (step.loop is not None and prune is not None and call is not None
                and prune(self, call, step.loop, step.iteration)):
            self.pruned += 1
            step = sem.exhaust(walk.counters, e)
        walk.counters = step.counters
        return self._enter(walk, step.target, cp, call, prune)

    def _branch_end(self, branch: _Walk, ok: bool, cp: float, call: Call | None,
                    prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        fan = branch.fan
        assert fan is not None
        if fan.done:
            return [], []
        fan.cp = max(fan.cp, cp)
        del fan.open[branch.branch]
        cancel: list[Call] = []
        if ok and not join_waits_for_all(branch.sem.fanout(fan.node).join):
            for other in fan.open.values():
                cancel += other.in_flight()
            fan.open.clear()
        if fan.open:
            return [], cancel
        start, more = self._fan_end(fan, call, prune)
        cancel += more  # ``more`` may be a tuple (list + tuple would raise; extending takes any sequence)
        return start, cancel

    def _fan_end(self, fan: _Fan, call: Call | None, prune: PruneHook | None) -> tuple[list[Call], list[Call]]:
        fan.done = True
        fan.walk.child = None
        u = self._edge_u(fan.key + ("edge",))
        return self._leave(fan.walk, fan.node, call, u, fan.cp, prune)
