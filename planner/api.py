"""Entry point: plan a compiled program on an inventory.

``plan_program(program, inventory, rate, mode, profiles)`` returns a
:class:`planner.plan.Plan` or, when no plan exists, a
:class:`planner.plan.Infeasible` that says what binds and the closest
feasible alternative. The steps:

1. Per workflow, the *knob scenarios*: every combination of loop budgets and
   fan-out widths, best declared quality first (malleable knobs leave their
   preferred value only under pressure).
2. Per scenario: the expanded visit chain (:mod:`planner.visits`), expected
   visits and stage arrival rates, sampled paths (:mod:`planner.latency`) and
   per-stage candidates with latency tables (:mod:`planner.candidates`).
3. The joint CP-SAT solve with latency cuts (:mod:`planner.solver`): in
   ``cost`` mode once; in ``headroom`` mode by bisection on a common scale
   ``theta`` of every SLO (the smallest feasible ``theta`` on the fixed
   inventory maximises the smallest headroom ``1 - theta``), then the cheapest
   plan at that ``theta``. The bisection measures each run against its own
   standalone latency (the SLO becomes ``T / q_a(standalone)`` times each run's
   standalone latency, the SLO-scale metric): so latency-critical short stages,
   whose slowdown weighs most in short runs, get the fast devices and
   slack-rich long ones the slow devices.
4. The plan's views: pools, knobs, end-to-end prediction, the shared-pool
   comparison (:mod:`planner.shared_pool`).
"""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cortexlang.ir import MIN_RATE_PER_S, Inventory, LLMStage, Program, Workflow
from cortexlang.semantics import Semantics
from planner import explain
from planner.candidates import (
    DECODE_STRETCH, Candidate, StageCandidates, StageLoad, fanout_splits, prune_dominated, stage_candidates, stage_loads,
    standalone_table,
)
from planner.colocation import Layout, declared_blocks, group_candidates, with_layout
from planner.congestion import Congestion, congestion_for
from planner.dispersion import plan_dispersion
from planner.latency import (DEFAULT_SAMPLES, MAX_BRANCH_COPIES, PathSample, attainment, distribution, sample_paths,
                             widest_branch_copies)
from planner.plan import (
    ColocatedStage, ExecutorPool, Infeasible, KnobSettings, LLMPool, MeasuredArrivals, Mode, Objective, Plan, SolverInfo,
    StageLatency, WorkflowPlan,
)
from planner.profiles import PROFILE_DIR, ProfileNotFound, cpu_engines_busy, get_profile
from planner.service import planned_stage
from planner.shared_pool import compare
from planner.solver import TIME_LIMIT_S, SolveResult, WorkflowProblem, objective_milli, solve
from planner.verified_dispersion import StageArrivals, feedback, stage_arrivals
from planner.visits import ChainError, VisitChain, branch_multiplicity, build_chain, expected_stage_visits

MAX_RATE_PER_S = 1e9
"""Largest arrival rate planned (a billion runs per second, beyond any inventory): above it, or
NaN/infinite, the plan is :class:`Infeasible` (binding ``rate``) rather than an overflow in the sizing."""
HEADROOM_TOLERANCE = 0.005
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """One choice of the workflow-level knobs and its declared quality."""

    retry_depth: dict[str, int]
    fanout_width: dict[str, int]
    quality: float


def scenarios(workflow: Workflow) -> list[Scenario]:
    """Every combination of loop budgets and fan-out widths, best quality first (then preferred order)."""
    axes = [("loop", lp.name, lp.max_iterations.options) for lp in workflow.loops]
    axes += [("fan", f.name, f.width.options) for f in workflow.fanouts if f.width is not None]
    result = []
    for rank, combo in enumerate(itertools.product(*(range(len(a[2])) for a in axes))):
        loops, widths, quality = {}, {}, 1.0
        for (kind, name, options), i in zip(axes, combo):
            (loops if kind == "loop" else widths)[name] = options[i].value
            quality *= options[i].quality
        result.append((-quality, rank, Scenario(loops, widths, quality)))
    return [s for _, _, s in sorted(result, key=lambda t: (t[0], t[1]))]


BURST_ROUNDS = 1
"""Most re-solves with the arrivals' dispersion of the previous choice (:meth:`Planner._second_pass`).
Three gave the same plans on both random sets of ``benchmarks/plan_vs_sim.py`` (seeds 0 and 30) and
took 1.6x the planning time on ``benchmarks/plan_bench.py``'s ten binding 20-stage workflows."""
CONGESTION_ROUNDS = 1
"""Most re-draws of the paths with the congestion of the previous choice (:meth:`Planner._congestion_pass`).
Two cost ``benchmarks/plan_bench.py``'s ten binding 20-stage workflows a second re-solve (+2 s CPU) for a
plan $0.10/h cheaper (of $1,139/h)."""
BURST_TOLERANCE = 0.05
"""Dispersions within this (relative, and of 1) count as equal: the pools need no resizing."""
BURST_GRID = 0.02
"""Predicted dispersions are rounded up to powers of ``1 + BURST_GRID`` (:func:`_on_grid`)."""


def _on_grid(index: float) -> float:
    """``index`` rounded up to the next power of ``1 + BURST_GRID``: at most 2% burstier (conservative).
    The candidates are memoised by their loads, dispersion included, so two rounds of
    :meth:`Planner._second_pass` that predict a stage 1.163 and 1.164 share its candidates and every shared
    block's that contains it, instead of building both (on ``benchmarks/plan_bench.py``'s ten binding
    20-stage workflows, re-predicting the first choice rebuilt 385 blocks, most for such changes)."""
    step = math.log1p(BURST_GRID)
    return float(math.exp(math.ceil(math.log(index) / step - 1e-9) * step))


def _larger(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """Per stage, the larger of two dispersions (1 if absent)."""
    return {s: max(a.get(s, 1.0), b.get(s, 1.0)) for s in set(a) | set(b)}


def _config_key(c: Candidate) -> tuple:
    """What identifies a candidate's pool across rebuilds of the candidate lists (not its tables)."""
    return (c.stage, c.kind, c.device, c.units, c.tp, c.model, c.max_tokens, c.hedge, c.prewarm, c.max_num_seqs,
            c.prefill_replicas, c.group)


def _at_least(got: Mapping[str, float], base: Mapping[str, float]) -> bool:
    """True when no stage's dispersion ``got`` is below ``base``'s by more than :data:`BURST_TOLERANCE` (1 if absent)."""
    return all(got.get(s, 1.0) >= base.get(s, 1.0) * (1.0 - BURST_TOLERANCE) for s in set(got) | set(base))


def _same_congestion(a: Congestion | None, b: Congestion | None) -> bool:
    """Whether two congestions correlate the same stages alike (their pools, shares, relaxation times
    and replicas; the clocks' node means, read off whichever paths, may differ by sampling)."""
    return ((a.stages, a.replicas) if a is not None else None) == ((b.stages, b.replicas) if b is not None else None)


def _settled(got: Mapping[str, float], used: Mapping[str, float]) -> bool:
    """True when every stage's dispersion ``got`` is within :data:`BURST_TOLERANCE` of ``used`` (1 if absent)."""
    return all(abs(got.get(s, 1.0) - used.get(s, 1.0)) <= BURST_TOLERANCE * max(got.get(s, 1.0), used.get(s, 1.0))
               for s in set(got) | set(used))


@dataclass
class WorkflowModel:
    """Everything the solver and the views need for one workflow under one scenario."""

    workflow: Workflow
    scenario: Scenario
    rate: float
    ca2: float
    chain: VisitChain
    visits: dict[str, float]
    paths: PathSample
    stages: dict[str, StageCandidates]
    loads: dict[str, StageLoad]

    @property
    def problem_stage(self) -> StageCandidates | None:
        return next((sc for sc in self.stages.values() if not sc.candidates), None)

    standalone: np.ndarray | None = None
    """Per sampled run: its standalone latency (idle pools, fastest devices), same draws."""
    congestion: Congestion | None = None
    """The pools' congestion the paths' visits share (:mod:`planner.congestion`); None: independent visits."""

    def problem(self, relative: bool = False) -> WorkflowProblem:
        """The solver's view. ``relative``: the SLO as a scale of each run's standalone latency
        (``T / q_a(standalone)``, with ``q_a`` the standalone latency at the SLO attainment), so
        plans minimise latency relative to standalone -- what the SLO-scale metric measures."""
        slo = self.workflow.slo
        cands = {s: sc.candidates for s, sc in self.stages.items()}
        if not relative or slo is None or self.standalone is None:
            return WorkflowProblem(self.workflow.name, cands, self.paths,
                                   slo.latency_s if slo else None, slo.attainment if slo else None)
        ratio = slo.latency_s / float(np.quantile(self.standalone, slo.attainment))
        return WorkflowProblem(self.workflow.name, cands, self.paths, ratio, slo.attainment,
                               run_scale=np.maximum(self.standalone, 1e-9))


def build_model(program: Program, workflow: Workflow, scenario: Scenario, rate: float, inventory: Inventory,
                samples: int, seed: int, profile_dir: Path, unbounded: bool = False,
                decode_stretch: float = DECODE_STRETCH, layout: Layout = "search",
                disaggregate: bool = False, burst: Mapping[str, float] | None = None,
                memo: dict | None = None, congestion: Congestion | None = None) -> WorkflowModel:
    """The workflow's candidates and sampled paths under ``scenario``; ``burst``: per stage, the index
    of dispersion its arrivals get from the pools upstream (:mod:`planner.dispersion`; 1 if absent);
    ``congestion``: the paths' visits to one pool share its congestion (:meth:`Planner._congestion_pass`).

    ``memo`` (one planning request's, see :meth:`Planner.model`) keeps what does not depend on
    ``burst`` -- the sampled paths, the standalone latencies -- and every stage's and shared block's
    candidates by the loads they were built for, so a rebuild with the arrivals' dispersion
    (:meth:`Planner._second_pass`) recomputes only the stages and blocks whose loads changed."""
    memo = {} if memo is None else memo
    scenario_key = (workflow.name, tuple(sorted(scenario.retry_depth.items())),
                    tuple(sorted(scenario.fanout_width.items())))
    chain = build_chain(workflow, scenario.retry_depth)
    visits = expected_stage_visits(chain, scenario.fanout_width)
    ca2 = 0.0 if workflow.load and workflow.load.pattern == "constant" else (
        workflow.load.burstiness ** 2 if workflow.load else 1.0)
    # A fan-out sends its k copies of a stage at once: batch arrivals (StageLoad.batch).
    loads = stage_loads(visits, rate, ca2, {s: k for s, (_, k) in
                                            branch_multiplicity(workflow, scenario.fanout_width).items()}, burst)
    layout_key = ("layout", scenario_key, tuple(sorted(loads.items())), unbounded, decode_stretch, disaggregate, layout)
    paths_key = ("paths", scenario_key, samples, seed) + ((congestion,) if congestion is not None else ())
    stages = memo.get(layout_key)
    if stages is not None and paths_key in memo:  # every stage's and block's candidates, laid out: nothing to rebuild
        paths, alone = memo[paths_key]
        return WorkflowModel(workflow, scenario, rate, ca2, chain, visits, paths, dict(stages), loads, alone,
                             congestion)
    sem = Semantics(workflow, chain.loop_budget, scenario.fanout_width)
    planned = {st.name: st if isinstance(st, LLMStage) else planned_stage(sem, st) for st in workflow.stages}
    if paths_key not in memo:
        paths = sample_paths(chain, samples, seed, scenario.fanout_width, congestion)
        memo[paths_key] = paths, paths.run_latency({st.name: standalone_table(program, st, inventory, profile_dir)
                                                    for st in planned.values()})
    paths, alone = memo[paths_key]
    if stages is not None:
        return WorkflowModel(workflow, scenario, rate, ca2, chain, visits, paths, dict(stages), loads, alone,
                             congestion)
    stages = {}
    for st in planned.values():
        key = ("stage", scenario_key, st.name, loads[st.name], unbounded, decode_stretch, disaggregate)
        if key not in memo:
            sc = stage_candidates(program, st, loads[st.name], inventory, unbounded, profile_dir, decode_stretch,
                                  disaggregate)
            memo[key] = StageCandidates(sc.stage, prune_dominated(sc.candidates), sc.problem, sc.needs)
        stages[st.name] = memo[key]
    if layout != "isolated" or declared_blocks(workflow):  # the file's pools hold in every layout
        dedicated = {s: sc.candidates for s, sc in stages.items()}
        groups = group_candidates(program, workflow, loads, inventory, dedicated, unbounded, profile_dir,
                                  decode_stretch, memo)
        for s, cands in with_layout(workflow, dedicated, groups, layout).items():
            stages[s] = StageCandidates(s, cands, stages[s].problem if not cands else None, stages[s].needs)
    memo[layout_key] = dict(stages)
    return WorkflowModel(workflow, scenario, rate, ca2, chain, visits, paths, stages, loads, alone, congestion)


def inventory_limits(inventory: Inventory, unbounded: bool = False) -> dict[str, int]:
    from planner.candidates import UNBOUNDED

    limits = {g.kind: (UNBOUNDED if unbounded else g.count) for g in inventory.gpus}
    if inventory.cpu is not None:
        limits["CPU"] = UNBOUNDED if unbounded else inventory.cpu.slots
    return limits


@dataclass
class PlanningCache:
    """What a planning request built that its SLO latency targets do not change -- every stage's and
    shared block's candidates (by the loads they were built for) and the sampled paths -- for a later
    :func:`plan_program` call that differs only in those targets: the verification loop's tightened
    plans (``cortexlang/cli/plan_verify.py``), which otherwise rebuild the same candidates.

    A request with any other difference (program, inventory, rates, profiles, samples, seed, layout,
    decode stretch, disaggregation) finds a different :meth:`fingerprint` and starts the cache afresh,
    so a cache passed to unrelated requests is merely useless, never wrong."""

    key: str = ""
    memo: dict = field(default_factory=dict)
    burst: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    """The arrivals' dispersion the last request's models ended with, per (workflow, scenario): where the
    next request's :meth:`Planner._second_pass` starts (a tighter target mostly picks pools that cause
    about the same bursts, so its first solve is then the last)."""
    arrivals: dict[str, dict[str, StageArrivals]] = field(default_factory=dict)
    """Per workflow of the last request's plan: each stage's analytic arrivals (read window, predicted
    index, fan-out copies), against which the verification loop judges what it measured
    (:func:`planner.verified_dispersion.raised`)."""
    hits: int = 0
    """Requests that found the cache built for them (for tests and benchmarks)."""

    @staticmethod
    def fingerprint(program: Program, inventory: Inventory, rates: Mapping[str, float], *settings: object) -> str:
        """Everything the candidates depend on: the program with its SLO latency targets blanked,
        the inventory, the rates and the request's settings."""
        blank = program.model_copy(update={"workflows": tuple(
            w.model_copy(update={"slo": w.slo.model_copy(update={"latency_s": 1.0})}) if w.slo is not None else w
            for w in program.workflows)})
        return repr((blank.model_dump_json(), inventory.model_dump_json(), sorted(rates.items()), settings))

    def memo_for(self, key: str) -> dict:
        """The memo of the request fingerprinted ``key`` (emptied when the cache held another's)."""
        if key == self.key:
            self.hits += 1
        else:
            self.key, self.memo, self.burst, self.arrivals = key, {}, {}, {}
        return self.memo


class Planner:
    """One planning request; holds the built models so explanations can reuse them."""

    def __init__(self, program: Program, inventory: Inventory, rates: dict[str, float], mode: Mode,
                 samples: int, seed: int, profile_dir: Path, progress: Progress | None,
                 decode_stretch: float = DECODE_STRETCH, time_limit_s: float = TIME_LIMIT_S,
                 layout: Layout = "search", disaggregate: bool = False, cache: PlanningCache | None = None,
                 measured: Mapping[str, Mapping[str, MeasuredArrivals]] | None = None) -> None:
        self.program, self.inventory, self.rates, self.mode = program, inventory, rates, mode
        self.measured = dict(measured or {})
        """Per workflow, per stage: its arrivals measured in a verification simulation, fed back where they
        are burstier than predicted (:mod:`planner.verified_dispersion`)."""
        self.layout = layout
        self.disaggregate = disaggregate
        self.decode_stretch = decode_stretch
        self.time_limit_s = time_limit_s
        self.samples, self.seed, self.profile_dir = samples, seed, profile_dir
        self.progress = progress or (lambda _msg: None)
        self.workflows = [w for w in program.workflows]
        self.scenarios = {w.name: scenarios(w) for w in self.workflows}
        self._models: dict[tuple[str, int, bool], WorkflowModel] = {}
        self._memo: dict = {} if cache is None else cache.memo_for(PlanningCache.fingerprint(
            program, inventory, rates, samples, seed, str(profile_dir), decode_stretch, layout, disaggregate))
        """Candidates and sampled paths already built in this request, or in an earlier one that differs only
        in its SLO latency targets (:func:`build_model`'s ``memo``, :class:`PlanningCache`)."""
        self.burst: dict[tuple[str, int], dict[str, float]] = {} if cache is None else dict(cache.burst)
        """Per (workflow, scenario): the arrivals' dispersion the candidates are built with (:meth:`_second_pass`);
        a cache's request starts from its predecessor's."""
        self.cache = cache
        self.congestion: dict[tuple[str, int], Congestion | None] = {}
        """Per (workflow, scenario): the pools' congestion its paths' visits share (:meth:`_congestion_pass`)."""
        self.iterations = 0

    def scenario_index(self, m: WorkflowModel) -> int:
        """Position of ``m``'s scenario in its workflow's scenario list."""
        return self.scenarios[m.workflow.name].index(m.scenario)

    def model(self, wf: Workflow, k: int, unbounded: bool = False) -> WorkflowModel:
        key = (wf.name, k, unbounded)
        if key not in self._models:
            self._models[key] = build_model(self.program, wf, self.scenarios[wf.name][k], self.rates[wf.name],
                                            self.inventory, self.samples, self.seed, self.profile_dir, unbounded,
                                            self.decode_stretch, self.layout, self.disaggregate,
                                            self.burst.get((wf.name, k)), self._memo,
                                            None if unbounded else self.congestion.get((wf.name, k)))
        return self._models[key]

    def solve_at(self, models: Sequence[WorkflowModel], scale: float, unbounded: bool = False,
                 max_quality_loss: int | None = None, relative: bool = False,
                 problems: Sequence[WorkflowProblem] | None = None) -> SolveResult:
        """Solve ``models`` at SLO ``scale``; ``problems``: their solver views to use (``relative`` ones,
        with whatever node latencies they memoised in earlier solves), else fresh ones."""
        if any(m.problem_stage is not None for m in models):  # a stage with no pool at all: nothing to solve
            return SolveResult(None, "infeasible", 0)
        problems = [m.problem(relative) for m in models] if problems is None else problems
        result = solve(problems, inventory_limits(self.inventory, unbounded), scale,
                       max_quality_loss=max_quality_loss, time_limit_s=self.time_limit_s)
        self.iterations += result.iterations
        return result

    def run(self) -> Plan | Infeasible:
        self.progress("building candidate pools")
        choice = {w.name: 0 for w in self.workflows}
        while True:
            models = [self.model(w, choice[w.name]) for w in self.workflows]
            stuck = [m for m in models if m.problem_stage is not None]
            if stuck:
                m = stuck[0]
                if not self._advance(choice, [m.workflow.name]):
                    return explain.no_candidates(self, m)
                continue
            self.progress("solving")
            result = self.solve_at(models, 1.0)
            if result.assignments is not None:
                break
            names = result.unreachable or [w.name for w in self.workflows]
            if not self._advance(choice, names):
                # Explain with the scenarios last tried: every stage of them has candidates (a
                # preferred scenario may not, e.g. a fan-out width the inventory cannot absorb).
                return explain.no_plan(self, models, result)
        models, result = self._second_pass(models, result, choice)
        models, result = self._congestion_pass(models, result, choice)
        if self.cache is not None:
            self.cache.burst = dict(self.burst)
        scale = 1.0
        if self.mode == "headroom":
            self.progress("maximising headroom")
            # One solver view per model for the whole search: a node's latency vector depends on the
            # candidates chosen and the sampled paths, not on the scale, so each is computed once, not
            # once per solve of the bisection (a 64-wide fan-out's plan spent two thirds of its time
            # recomputing them). Views made here and dropped after it: cost mode keeps its memory.
            problems = [m.problem(relative=True) for m in models]
            scale, result = self._min_scale(models, result, problems)
            result = self._use_spare_devices(models, result, problems)
        return self._assemble(models, result, scale)

    def _second_pass(self, models: Sequence[WorkflowModel], result: SolveResult,
                     choice: dict[str, int]) -> tuple[Sequence[WorkflowModel], SolveResult]:
        """Size the pools again with the arrivals' burstiness that the chosen LLM pools cause.

        A stage's arrival dispersion depends on the pools upstream of it (their prefill share,
        replicas and batch: :mod:`planner.dispersion`), which the solver chooses; so the first pass
        sizes every pool for the workflow's own arrivals, and from its choice each stage's dispersion
        is predicted, the candidates rebuilt with it (:class:`~planner.candidates.StageLoad`'s
        ``burst``: the executor pools' ``ca2``, the LLM pools' prefill variance and slot wait) and the
        problem solved again, until the choice causes the dispersion it was sized for (within
        :data:`BURST_TOLERANCE`), at most :data:`BURST_ROUNDS` times. When the rounds do not settle
        (the solver alternates between pools that cause bursts and pools sized for them), the last
        choice is kept and predicted with the dispersion it causes if it still meets every SLO so;
        otherwise it is solved once more with every stage's largest dispersion seen (conservative for
        whichever pools it picks). When no stage is burstier than ``1 + BURST_TOLERANCE``, or a
        re-solve finds no plan (the burstier model is stricter), the previous round stands. Before
        the first re-solve, the first pass's choice is re-predicted with the dispersion it causes: if
        it still meets every SLO it is kept (no re-solve could be cheaper; the 20-stage binding case of
        ``benchmarks/plan_bench.py`` re-solved 8 more times without it). A request given a
        :class:`PlanningCache` starts from its predecessor's dispersion instead of Poisson arrivals; its
        first choice is then kept without a re-solve only if it causes at least that dispersion
        everywhere (the same subset argument)."""
        used: dict[str, dict[str, float]] = {w.name: dict(self.burst.get((w.name, choice[w.name]), {}))
                                             for w in self.workflows}
        started = {w: dict(b) for w, b in used.items()}
        seen: dict[str, dict[str, float]] = {w.name: {} for w in self.workflows}
        for round_ in range(BURST_ROUNDS + 1):
            bursts = self._bursts(models, result)
            if all(_settled(bursts[w], used[w]) for w in bursts):
                return models, result
            seen = {w: _larger(seen[w], b) for w, b in bursts.items()}
            if round_ == BURST_ROUNDS:
                kept = self._repredict(models, result, choice, bursts, used)
                if kept is not None:
                    return kept
                bursts = seen
            again = self._rebuild(choice, bursts)
            if round_ == 0 and all(_at_least(bursts[w], started[w]) for w in bursts):
                # Burstier arrivals only lengthen every pool's latency, so the rebuilt problem's
                # feasible plans are a subset of the first pass's: when the first pass's optimum still
                # meets every SLO with the dispersion it causes, a re-solve would find nothing cheaper.
                same = self._same_choice(models, again, result)
                if same is not None:
                    return again, same
            second = self.solve_at(again, 1.0) if all(m.problem_stage is None for m in again) else None
            if second is None or second.assignments is None:
                self._restore(models, choice, used)
                return models, result
            models, result, used = again, second, bursts
        return models, result

    def _congestion_pass(self, models: Sequence[WorkflowModel], result: SolveResult,
                         choice: dict[str, int]) -> tuple[Sequence[WorkflowModel], SolveResult]:
        """Correlate each run's visits to one pool by the congestion the chosen pools have.

        Which stages share a pool, how congested it is and how far apart a run's visits come
        (:mod:`planner.congestion`) depend on the pools chosen; within a solve the paths' draws must
        not (the solver's cuts rely on a run's latency being monotone in each table for fixed draws).
        So, as for the arrivals' dispersion (:meth:`_second_pass`), the congestion is derived from the
        choice, the paths drawn again with it (every other draw the same) and the choice checked on
        them: kept if it still meets every SLO, else the problem is solved again on the correlated
        paths, at most :data:`CONGESTION_ROUNDS` times, until the choice's congestion is the one its
        paths were drawn with. If a re-solve finds no plan, the previous round stands. Whatever is
        returned, the plan's printed prediction and the SLO check the solver made use the same paths."""
        for round_ in range(CONGESTION_ROUNDS + 1):
            derived = {m.workflow.name: self._derived_congestion(m, assign)
                       for m, assign in zip(models, result.assignments)}
            if all(_same_congestion(derived[m.workflow.name], m.congestion) for m in models):
                return models, result
            if round_ == CONGESTION_ROUNDS:
                break
            before = {w.name: self.congestion.get((w.name, choice[w.name])) for w in self.workflows}
            for w in self.workflows:
                self.congestion[(w.name, choice[w.name])] = derived[w.name]
                self._models.pop((w.name, choice[w.name], False), None)
            again = [self.model(w, choice[w.name]) for w in self.workflows]
            same = self._same_choice(models, again, result)
            if same is not None:
                models, result = again, same
                continue
            second = self.solve_at(again, 1.0) if all(m.problem_stage is None for m in again) else None
            if second is None or second.assignments is None:
                for m in models:
                    name = m.workflow.name
                    self.congestion[(name, choice[name])] = before[name]
                    self._models[(name, choice[name], False)] = m
                return models, result
            models, result = again, second
        return models, result

    @staticmethod
    def _derived_congestion(m: WorkflowModel, assign: Mapping[str, int]) -> Congestion | None:
        """The congestion the pools ``assign`` picks from ``m`` cause (:func:`planner.congestion.congestion_for`)."""
        chosen = {s: m.stages[s].candidates[i] for s, i in assign.items()}
        sem = Semantics(m.workflow, m.chain.loop_budget, m.scenario.fanout_width)
        return congestion_for(m.paths, m.workflow, sem, chosen, fanout_splits(chosen))

    def _bursts(self, models: Sequence[WorkflowModel], result: SolveResult) -> dict[str, dict[str, float]]:
        """Per workflow, the stages whose arrivals the chosen pools make burstier than 1 + tolerance."""
        out = {}
        for m, assign in zip(models, result.assignments):
            chosen = {s: m.stages[s].candidates[i] for s, i in assign.items()}
            got = plan_dispersion(m.chain, chosen, m.scenario.fanout_width)
            measured = self.measured.get(m.workflow.name)
            if measured:  # where the verification measured burstier arrivals than predicted, use those
                fed = feedback(stage_arrivals(m.chain, chosen, m.scenario.fanout_width, got), measured)
                got.update({s: d.simulated for s, d in fed.items()})
            out[m.workflow.name] = {s: _on_grid(v) for s, v in got.items() if v > 1.0 + BURST_TOLERANCE}
        return out

    def _rebuild(self, choice: dict[str, int], bursts: Mapping[str, Mapping[str, float]]) -> list[WorkflowModel]:
        """The workflows' models (scenario ``choice``) rebuilt with the arrivals' dispersion ``bursts``."""
        self._set_bursts(choice, bursts)
        return [self.model(w, choice[w.name]) for w in self.workflows]

    def _set_bursts(self, choice: dict[str, int], bursts: Mapping[str, Mapping[str, float]]) -> None:
        """Make ``bursts`` the dispersion of scenario ``choice``'s models and drop the models built
        before, so that :meth:`model` rebuilds each (from the memo where its loads were seen)."""
        for w in self.workflows:
            self.burst[(w.name, choice[w.name])] = dict(bursts[w.name])
            self._models.pop((w.name, choice[w.name], False), None)

    def _restore(self, models: Sequence[WorkflowModel], choice: dict[str, int],
                 used: Mapping[str, Mapping[str, float]]) -> None:
        """Put ``models`` (built with the dispersion ``used``) back as the models of ``choice``."""
        for m in models:
            name = m.workflow.name
            self.burst[(name, choice[name])] = dict(used[name])
            self._models[(name, choice[name], False)] = m

    def _repredict(self, models: Sequence[WorkflowModel], result: SolveResult, choice: dict[str, int],
                   bursts: Mapping[str, Mapping[str, float]], used: Mapping[str, Mapping[str, float]]
                   ) -> tuple[list[WorkflowModel], SolveResult] | None:
        """``result``'s pools predicted with the dispersion ``bursts`` they cause: the models rebuilt
        with it and the same configurations picked from them; None (and ``models``, built with
        ``used``, restored) when one is no longer offered or a workflow's SLO no longer holds so.

        The workflows are rebuilt and checked one at a time, stopping at the first that fails: the
        workflows after it are never rebuilt (the outcome is the same as rebuilding all of them first,
        as the memo only caches; on ``benchmarks/plan_bench.py``'s scarce 10 x 20 case the check fails)."""
        self._set_bursts(choice, bursts)
        again, assigns = [], []
        for old, w, assign in zip(models, self.workflows, result.assignments):
            new = self.model(w, choice[w.name])
            picked = self._same_assignment(old, new, assign)
            if picked is None:
                self._restore(models, choice, used)
                return None
            again.append(new)
            assigns.append(picked)
        return again, SolveResult(assigns, result.status, result.iterations)

    @staticmethod
    def _same_choice(models: Sequence[WorkflowModel], again: Sequence[WorkflowModel],
                     result: SolveResult) -> SolveResult | None:
        """``result``'s configurations picked from the rebuilt models ``again``; None when one is no
        longer offered or a workflow's SLO no longer holds with them."""
        assigns = []
        for old, new, assign in zip(models, again, result.assignments):
            picked = Planner._same_assignment(old, new, assign)
            if picked is None:
                return None
            assigns.append(picked)
        return SolveResult(assigns, result.status, result.iterations)

    @staticmethod
    def _same_assignment(old: WorkflowModel, new: WorkflowModel, assign: Mapping[str, int]) -> dict[str, int] | None:
        """One workflow's :meth:`_same_choice`: ``assign``'s configurations (indices into ``old``'s
        candidates) picked from ``new``'s; None when one is no longer offered or the SLO no longer holds."""
        picked = {}
        for s, i in assign.items():
            key = _config_key(old.stages[s].candidates[i])
            j = next((j for j, c in enumerate(new.stages[s].candidates) if _config_key(c) == key), None)
            if j is None:
                return None
            picked[s] = j
        p = new.problem()
        if p.slo_latency_s is not None and attainment(p.run_latency(picked), p.slo_latency_s) < (
                p.slo_attainment or 0.0):
            return None
        return picked

    def _use_spare_devices(self, models: Sequence[WorkflowModel], result: SolveResult,
                           problems: Sequence[WorkflowProblem]) -> SolveResult:
        """Headroom mode: give the devices the plan leaves idle to the pools they help most.

        At the best common scale the solver's secondary objective (cost) drops
        devices whose gain falls inside the bisection tolerance; on a fixed
        inventory an idle device is pure waste. Greedily, while devices are
        spare, the LLM pool whose one-replica-larger candidate (same device,
        TP, batch cap and knobs) lowers its workflow's score the most takes
        it; the score is the SLO quantile plus the mean of each sampled run's
        latency relative to its standalone latency (so a gain in the body
        counts when the quantile is flat). Stops when no larger candidate
        exists, fits, or lowers the score.
        """
        assert result.assignments is not None
        assigns = [dict(a) for a in result.assignments]
        limits = inventory_limits(self.inventory)

        def score(k: int) -> float:
            p = problems[k]
            rel = p.normalised(p.run_latency(assigns[k]))
            return float(np.quantile(rel, p.slo_attainment or 0.99)) + float(np.mean(rel))

        def spare() -> dict[str, int]:
            used: dict[str, int] = {}
            for m, a in zip(models, assigns):
                for s, i in a.items():
                    for kind, n in m.stages[s].candidates[i].resources.items():
                        used[kind] = used.get(kind, 0) + n
            return {k: limits.get(k, 0) - used.get(k, 0) for k in limits}

        scores = [score(k) for k in range(len(models))]
        while True:
            free = spare()
            best: tuple[float, int, str, int] | None = None
            for k, m in enumerate(models):
                for s, i in sorted(assigns[k].items()):
                    c = m.stages[s].candidates[i]
                    if c.kind != "llm" or c.group is not None or free.get(c.device, 0) < c.tp:
                        continue
                    j = next((j for j, d in enumerate(m.stages[s].candidates) if d.units == c.units + 1
                              and d.group is None and _same_config(c, d)), None)
                    if j is None:
                        continue
                    assigns[k][s] = j
                    gain = scores[k] - score(k)
                    assigns[k][s] = i
                    if gain > 1e-9 and (best is None or gain > best[0]):
                        best = (gain, k, s, j)
            if best is None:
                break
            _, k, s, j = best
            assigns[k][s] = j
            scores[k] = score(k)
        return SolveResult(assigns, result.status, result.iterations, result.unreachable)

    def _advance(self, choice: dict[str, int], names: Sequence[str]) -> bool:
        moved = False
        for name in names:
            if choice[name] + 1 < len(self.scenarios[name]):
                choice[name] += 1
                moved = True
        return moved

    def _min_scale(self, models: Sequence[WorkflowModel], at_one: SolveResult,
                   problems: Sequence[WorkflowProblem]) -> tuple[float, SolveResult]:
        """Smallest common SLO scale theta that stays feasible on the inventory (bisection), with
        each run's SLO relative to its standalone latency (``problems``: the models' relative views,
        :meth:`WorkflowModel.problem`, solved at every scale tried)."""
        with_slo = [p for p in problems if p.slo_latency_s is not None]
        if not with_slo:
            return 1.0, at_one
        lo = max(float(np.quantile(p.normalised(p.run_latency({s: None for s in p.stages})), p.slo_attainment))
                 / p.slo_latency_s for p in with_slo)
        quality_loss = objective_milli(problems, at_one.assignments)[0]
        hi, best = 1.0, self.solve_at(models, 1.0, max_quality_loss=quality_loss, relative=True, problems=problems)
        while best.assignments is None and hi < 64.0:  # the relative target is not the absolute one
            lo, hi = hi, hi * 2.0
            best = self.solve_at(models, hi, max_quality_loss=quality_loss, relative=True, problems=problems)
        if best.assignments is None:
            return 1.0, at_one
        while hi - lo > HEADROOM_TOLERANCE * hi:
            mid = (lo + hi) / 2.0
            trial = self.solve_at(models, mid, max_quality_loss=quality_loss, relative=True, problems=problems)
            if trial.assignments is not None:
                hi, best = mid, trial
            else:
                lo = mid
        return hi, best

    def tightest(self, models: Sequence[WorkflowModel], unbounded: bool = False) -> tuple[float, SolveResult] | None:
        """The smallest feasible SLO scale (doubling up, then bisection), for explanations."""
        hi = 1.0
        result = self.solve_at(models, hi, unbounded)
        while result.assignments is None and hi < 1024:
            hi *= 2.0
            result = self.solve_at(models, hi, unbounded)
        if result.assignments is None:
            return None
        lo = hi / 2.0 if hi > 1.0 else 0.0
        for _ in range(8):  # 2^-8 of the bracket: enough for a message
            mid = (lo + hi) / 2.0
            trial = self.solve_at(models, mid, unbounded)
            if trial.assignments is not None:
                hi, result = mid, trial
            else:
                lo = mid
        return hi, result

    # -- assembling the plan -----------------------------------------------------------
    def _assemble(self, models: Sequence[WorkflowModel], result: SolveResult, scale: float) -> Plan:
        wplans = []
        used: dict[str, int] = {}
        profiles: set[str] = set()
        for m, assign in zip(models, result.assignments):
            chosen = {s: m.stages[s].candidates[i] for s, i in assign.items()}
            for c in chosen.values():
                for kind, n in c.resources.items():
                    used[kind] = used.get(kind, 0) + n
                if c.kind == "llm":
                    profiles.add(f"{c.profile}/{c.device}/tp{c.tp}")
            wplans.append(self._workflow_plan(m, chosen))
        cost = round(sum(w.cost_per_hour for w in wplans), 4)
        if self.mode == "cost":
            objective = Objective(mode="cost", description="minimise cost per hour subject to every SLO",
                                  value=cost, unit="$/h")
        else:
            heads = [w.headroom for w in wplans if w.headroom is not None]
            objective = Objective(mode="headroom",
                                  description="maximise the smallest SLO headroom on the fixed inventory",
                                  value=round(min(heads), 6) if heads else 0.0, unit="fraction")
        return Plan(
            mode=self.mode, objective=objective, workflows=tuple(wplans), inventory=self.inventory,
            devices_used=dict(sorted(used.items())), cost_per_hour=cost, profiles=tuple(sorted(profiles)),
            solver=SolverInfo(status="optimal" if result.status == "optimal" else "feasible",
                              iterations=self.iterations,
                              candidates=sum(len(sc.candidates) for m in models for sc in m.stages.values()),
                              samples=min((m.paths.n for m in models), default=self.samples), seed=self.seed),
        )

    def _workflow_plan(self, m: WorkflowModel, chosen: dict[str, Candidate]) -> WorkflowPlan:
        wf = m.workflow
        latency = m.paths.run_latency({s: c.table for s, c in chosen.items()}, fanout_splits(chosen))
        slo = wf.slo
        att = round(attainment(latency, slo.latency_s), 6) if slo else None
        headroom = round(1.0 - float(np.quantile(latency, slo.attainment)) / slo.latency_s, 6) if slo else None
        llm_pools, exec_pools = [], []
        for s in sorted(chosen):
            c = chosen[s]
            if c.kind == "llm":
                if c.group is not None and c.group_stages[0] != s:
                    continue  # a co-located stage: described by its lead's pool
                others = [chosen[t] for t in c.group_stages[1:]]
                llm_pools.append(LLMPool(
                    stage=s, model=c.model, profile=c.profile, device=c.device, replicas=c.units, tp=c.tp,
                    max_num_seqs=c.max_num_seqs, kv_budget_tokens=c.kv_budget_tokens, kv_gib=round(c.kv_gib, 3),
                    max_tokens=c.max_tokens, hedge=c.hedge, prewarm=c.prewarm,
                    arrival_rate_per_s=_r(c.arrival_rate_per_s), visits_per_run=_r(c.visits_per_run),
                    utilisation=round(c.utilisation, 4), latency=_stage_latency(c),
                    cost_per_hour=round(c.cost_per_hour, 4), prefill_replicas=c.prefill_replicas,
                    colocated=tuple(ColocatedStage(
                        stage=o.stage, max_tokens=o.max_tokens, hedge=o.hedge, prewarm=o.prewarm,
                        arrival_rate_per_s=_r(o.arrival_rate_per_s), visits_per_run=_r(o.visits_per_run),
                        latency=_stage_latency(o)) for o in sorted(others, key=lambda o: o.stage))))
            else:
                exec_pools.append(ExecutorPool(
                    stage=s, kind=c.kind, slots=c.units, arrival_rate_per_s=_r(c.arrival_rate_per_s),
                    visits_per_run=_r(c.visits_per_run), utilisation=round(c.utilisation, 4),
                    latency=_stage_latency(c), cost_per_hour=round(c.cost_per_hour, 4)))
        quality = m.scenario.quality * math.prod(c.quality for c in chosen.values())
        llm = {t: c for t, c in chosen.items() if c.kind == "llm"}
        knobs = KnobSettings(
            models={t: c.model for t, c in llm.items()}, max_tokens={t: c.max_tokens for t, c in llm.items()},
            hedge={t: c.hedge for t, c in llm.items()},
            retry_depth=dict(m.chain.loop_budget),
            fanout_width={f.name: f.branch_count(m.scenario.fanout_width.get(f.name))
                          for f in wf.fanouts if f.width is not None},
            quality=round(quality, 6))
        fed = {}
        if self.cache is not None or self.measured.get(wf.name):
            arrivals = stage_arrivals(m.chain, chosen, m.scenario.fanout_width,
                                      plan_dispersion(m.chain, chosen, m.scenario.fanout_width))
            fed = feedback(arrivals, self.measured.get(wf.name, {}))
            if self.cache is not None:
                self.cache.arrivals[wf.name] = arrivals
        cost = round(sum(c.cost_per_hour for c in chosen.values()), 4)
        if self.mode == "cost":
            objective = Objective(mode="cost", description=f"cost of {wf.name}", value=cost, unit="$/h")
        else:
            objective = Objective(mode="headroom", description=f"SLO headroom of {wf.name}",
                                  value=headroom if headroom is not None else 0.0, unit="fraction")
        return WorkflowPlan(
            workflow=wf.name, objective=objective, slo=slo, rate_per_s=m.rate, llm_pools=tuple(llm_pools),
            executor_pools=tuple(exec_pools), knobs=knobs, latency=distribution(latency), slo_attainment=att,
            headroom=headroom, p_done=round(m.chain.p_done(), 6),
            shared_pool=compare(self.program, wf, self.inventory, m.paths, chosen, m.ca2), cost_per_hour=cost,
            verified_dispersion=fed)


def _stage_latency(c: Candidate) -> StageLatency:
    return StageLatency(mean=_r(c.mean), p50=_r(c.quantile(0.5)), p95=_r(c.quantile(0.95)), p99=_r(c.quantile(0.99)))


def _same_config(a: Candidate, b: Candidate) -> bool:
    """Whether two LLM candidates differ at most in their replica count."""
    return (a.device, a.tp, a.model, a.max_tokens, a.hedge, a.prewarm, a.max_num_seqs, a.prefill_replicas) == \
        (b.device, b.tp, b.model, b.max_tokens, b.hedge, b.prewarm, b.max_num_seqs, b.prefill_replicas)


def _r(x: float) -> float:
    return round(float(x), 6)


def plan_program(program: Program, inventory: Inventory | None = None, rate: float | None = None,
                 mode: Mode = "cost", profiles: Path | None = None, *, workflows: Sequence[str] | None = None,
                 samples: int = DEFAULT_SAMPLES, seed: int = 0, progress: Progress | None = None,
                 decode_stretch: float = DECODE_STRETCH, time_limit_s: float = TIME_LIMIT_S,
                 layout: Layout = "search", disaggregate: bool = False,
                 cache: PlanningCache | None = None,
                 measured: Mapping[str, Mapping[str, MeasuredArrivals]] | None = None) -> Plan | Infeasible:
    """Plan ``program`` (or the named ``workflows`` of it) on ``inventory``.

    ``inventory`` defaults to the program's ``resources``; ``rate`` (runs per
    second) overrides every workflow's declared load; ``decode_stretch`` bounds each
    pool's ``max_num_seqs`` by :func:`planner.candidates.latency_cap` (``math.inf``: KV only); ``profiles`` is a
    directory of profile files (default: the shipped ``planner/profile_data``).
    ``time_limit_s`` is the wall-clock safety net of each solve's cut loop
    (:data:`planner.solver.TIME_LIMIT_S`); the loop's budget is counted in solves
    (:func:`planner.solver.solve_budget`), so a plan that ends before the net is the same
    on a busy and an idle machine.
    ``layout`` chooses the pools on offer (:data:`planner.colocation.Layout`): by default
    dedicated *and* shared pools, so the plan is never costlier than the all-isolated or the
    all-shared layout (both are in its space); ``isolated`` or ``shared`` restrict it to one.
    ``disaggregate`` also offers prefill/decode-disaggregated dedicated pools on GPUs
    (:mod:`planner.disaggregation`); off by default: the real runtime cannot serve them yet.
    ``cache`` (:class:`PlanningCache`) carries the candidates built by an earlier call that differed
    only in its SLO latency targets; it is filled for the next such call.
    ``measured`` (workflow -> stage -> :class:`~planner.plan.MeasuredArrivals`, from a verification
    simulation of an earlier plan) replaces a stage's predicted arrivals' dispersion where it measured
    them burstier (:mod:`planner.verified_dispersion`); the plan lists those stages
    (``WorkflowPlan.verified_dispersion``). Never raises on bad input: returns :class:`Infeasible` with a message.
    """
    inventory = inventory or program.inventory
    if inventory is None:
        return Infeasible(binding="input", message="No inventory: declare a `resources` block or pass --inventory.")
    if not inventory.gpus and inventory.cpu is None:
        return Infeasible(binding="input", message="The inventory is empty: it declares no GPU and no CPU slots.")
    selected = [w for w in program.workflows if workflows is None or w.name in workflows]
    if not selected:
        return Infeasible(binding="input", message="No workflow to plan." if workflows is None else
                          f"No workflow named {', '.join(workflows)}.")
    rates = {}
    for w in selected:
        r = rate if rate is not None else (w.load.rate_per_s if w.load else None)
        if r is None or r <= 0:
            return Infeasible(workflow=w.name, binding="input",
                              message=f"Workflow {w.name} declares no load; declare `load {{ rate = ... }}` or pass --rate.")
        if not MIN_RATE_PER_S <= r <= MAX_RATE_PER_S:  # NaN too: no sizing arithmetic survives such a rate
            return Infeasible(workflow=w.name, binding="rate",
                              message=f"Workflow {w.name}: a rate of {r:g} runs/s is outside what the planner sizes "
                                      f"({MIN_RATE_PER_S:g} to {MAX_RATE_PER_S:g} runs/s).")
        copies = widest_branch_copies(w)
        if copies > MAX_BRANCH_COPIES:
            return Infeasible(workflow=w.name, binding="input",
                              message=f"Workflow {w.name} runs up to {copies} fan-out branch copies per run; the "
                                      f"planner samples at most {MAX_BRANCH_COPIES} (its time grows with every copy): "
                                      f"narrow the fan-outs' `width`.")
        rates[w.name] = r
    program = program.model_copy(update={"workflows": tuple(selected)})
    if mode not in ("cost", "headroom"):
        return Infeasible(binding="input", message=f"Unknown mode {mode!r}: use cost or headroom.")
    if not decode_stretch >= 1.0:
        return Infeasible(binding="input", message=f"decode_stretch must be at least 1 (got {decode_stretch}).")
    if layout not in ("search", "isolated", "shared"):
        return Infeasible(binding="input", message=f"Unknown layout {layout!r}: use search, isolated or shared.")
    def planned(busy_others: float) -> Plan | Infeasible:
        with cpu_engines_busy(busy_others):
            return Planner(program, inventory, rates, mode, samples, seed, profiles or PROFILE_DIR, progress,
                           decode_stretch, time_limit_s, layout, disaggregate,
                           cache if busy_others == 0.0 else None, measured).run()

    try:
        with _collector_paused():
            return plan_under_contention(planned, profiles or PROFILE_DIR)
    except ChainError as exc:
        return Infeasible(binding="input", message=f"The call graph cannot be planned: {exc}.")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the duration (as it was before, after).

    Planning allocates hundreds of thousands of small containers (candidates, option dicts, keys), so
    the collector runs generation scans throughout -- over every object the process holds, in a full
    collection -- while the cycles planning leaves behind are few (about 2,000 objects on
    ``benchmarks/plan_bench.py``'s binding 20-stage chain): they are collected once the collector is
    back on. Reference counting still frees everything else at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


CONTENTION_ROUNDS = 4
"""Most re-plans of :func:`plan_under_contention` (each assumes at least the busy fraction before)."""
CONTENTION_TOLERANCE = 0.02
"""A plan is consistent when its engines' busy fraction is at most this above the one it assumed."""


def busy_replicas(pool: LLMPool) -> tuple[float, float]:
    """``(E[B], E[B (B - 1)])`` for ``B`` the replicas of ``pool`` computing at a random instant.

    The pool holds ``N`` sequences, taken Poisson with mean ``L = replicas x utilisation x max_num_seqs``
    (a batching server at low load holds few, ``P(N = 0) = e^-L``; near saturation it is always busy),
    spread over the replicas so that ``B = min(N, replicas)`` compute (the router's least-loaded choice)."""
    c = pool.replicas
    mean = c * pool.utilisation * pool.max_num_seqs
    pmf, b1, b2, below = math.exp(-mean), 0.0, 0.0, 0.0
    for n in range(c):
        b1 += n * pmf
        b2 += n * (n - 1) * pmf
        below += pmf
        pmf *= mean / (n + 1)
    tail = max(1.0 - below, 0.0)  # P(N >= c): every replica computes
    return b1 + c * tail, b2 + c * (c - 1) * tail


def cpu_busy_others(plan: Plan) -> float:
    """How busy the other CPU engines' cores are *while an engine computes*, the largest over the plan's
    CPU pools: for a replica of pool ``P`` (``w_P`` cores each),

        x_P = (w_P E[B_P (B_P - 1)] / E[B_P] + sum_{Q != P} w_Q E[B_Q]) / (W - w_P)

    with ``B`` the busy replicas of a pool (:func:`busy_replicas`) and ``W`` all CPU engines' cores. The
    first term is size-biased: given that a replica computes, its pool holds work, so its siblings are
    busier than on average; other pools are taken as independent. 0 with fewer than two CPU engines."""
    pools = [(pool.tp, pool.replicas, *busy_replicas(pool)) for wp in plan.workflows for pool in wp.llm_pools
             if pool.device.upper() == "CPU"]
    width = sum(w * c for w, c, _, _ in pools)
    busy = sum(w * b1 for w, _, b1, _ in pools)
    out = 0.0
    for w, _, b1, b2 in pools:
        if width > w and b1 > 0.0:
            out = max(out, (w * b2 / b1 + busy - w * b1) / (width - w))
    return min(out, 1.0)


def _contends(plan: Plan, profile_dir: Path) -> bool:
    """Whether the plan has several CPU engines and a CPU profile of it measured contention."""
    if sum(pool.replicas for wp in plan.workflows for pool in wp.llm_pools if pool.device.upper() == "CPU") < 2:
        return False
    for wp in plan.workflows:
        for pool in wp.llm_pools:
            if pool.device.upper() == "CPU":
                try:
                    prof = get_profile(pool.profile, pool.device, pool.tp, profile_dir)
                except ProfileNotFound:
                    continue
                if prof.contention_prefill or prof.contention_decode:
                    return True
    return False


def plan_under_contention(planned: Callable[[float], Plan | Infeasible], profile_dir: Path) -> Plan | Infeasible:
    """Plan with CPU engines that slow each other (:attr:`LatencyProfile.contention_prefill`).

    How busy the other engines are depends on the plan, so this is a fixed point: plan with none busy;
    while the plan's engines are busier (:func:`cpu_busy_others`) than it assumed, plan again assuming
    that much (``planned(busy)`` scales every CPU profile: :func:`planner.profiles.cpu_engines_busy`).
    The assumption never decreases, so the loop ends and the plan it returns assumed at least the
    contention it causes (up to :data:`CONTENTION_TOLERANCE`, or after :data:`CONTENTION_ROUNDS`).
    The plan says what it assumed (``Plan.cpu_contention``)."""
    result = planned(0.0)
    if not isinstance(result, Plan) or not _contends(result, profile_dir):
        return result
    assumed = 0.0
    for _ in range(CONTENTION_ROUNDS):
        implied = cpu_busy_others(result)
        if implied <= assumed + CONTENTION_TOLERANCE:
            break
        assumed = min(max(assumed, implied), 1.0)
        again = planned(assumed)
        if not isinstance(again, Plan):
            return again  # the contention its own engines cause makes the SLO unreachable: say so
        result = again
    return result.model_copy(update={"cpu_contention": round(assumed, 3)})


__all__ = ["plan_program", "Planner", "PlanningCache", "Scenario", "scenarios", "build_model"]
