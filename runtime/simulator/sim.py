"""The discrete-event simulator (simulated time; every output is labelled simulated).

One :class:`Simulator` replays one workload on one cluster layout under one
policy. It is deterministic for a given seed: arrivals come from one RNG, and
each run's sizes and branch outcomes from its own RNG seeded by
``(seed, run_id)`` (see :mod:`runtime.simulator.runs`), so two policies run with
the same seed see exactly the same requests.

The executor loop (per call): build a :class:`~runtime.policies.base.CallView`,
ask the policy to :meth:`adapt` (model swap, hedging), :meth:`route` among the
eligible replicas (dedicated to the stage, or generic; plus idle replicas of
other stages when the policy borrows), and :meth:`priority`, then queue it on
the chosen engine or executor group. Runs are admitted (or rejected, counted as
SLO misses) by :meth:`Policy.admit` on arrival.
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cortexlang.ir import LLMStage, Program
from cortexlang.laws import FAMILY
from planner.profiles import LatencyProfile
from runtime.policies.base import (
    Adaptation, CallView, Policy, ReplicaView, StageLoad, least_backlog_route, uses_method,
)
from runtime.simulator.calls import CANCELLED, CREATED, DONE, FULL, OVERLONG, QUEUED, Call
from runtime.simulator.calls import TRANSFER as TRANSFERRING
from runtime.simulator.cluster import LayoutError, ReplicaSpec, model_profile
from runtime.simulator.distributions import _COMPILED, interarrival, run_rng
from runtime.engines.shared_cores import SharedCores
from runtime.simulator.engine import LLMEngine
from runtime.simulator.events import SimClock, pop_event
from runtime.simulator.executor import ExecutorGroup
from runtime.simulator.graph import KnobChoices, WorkflowGraph
from runtime.simulator.records import SimResult
from runtime.simulator.runs import IRRun, Run
from runtime.simulator.trace import RemainingPathStats, TraceRequest, TraceRun

_INF = math.inf  # a C double in the compiled build (sim.pxd): no module lookup per stage_load
_NO_LENDERS: list = []
"""Dispatch's lenders where none is offered: shared, never written (no list made per dispatch)."""

SPEED_PROBE = (512, 128)
"""Request (input, output tokens) whose standalone time defines a replica's relative speed."""


@dataclass(frozen=True)
class Stream:
    """Arrivals of one workflow: ``rate_per_s`` with a pattern (poisson, bursty, constant)."""

    workflow: str
    rate_per_s: float
    pattern: str = "poisson"
    burstiness: float = 1.0


@dataclass
class SimConfig:
    """Knobs of one simulation."""

    seed: int = 0
    runs: int = 2000
    """Arrivals to generate (IR workloads); the simulation then drains."""
    slo_scale: float | None = None
    """Deadline = arrival + slo_scale x the run's standalone latency (None: the IR's SLO, if any)."""
    warmup_fraction: float = 0.1
    token_cv: float = 0.3
    service_family: str = FAMILY
    """SQL/tool service times' family: the declared laws' (:mod:`cortexlang.laws`, lognormal), or "gamma"."""
    block_tokens: int = 16
    max_batched_tokens: int = 8192
    kv_sample_s: float | None = None
    record_calls: bool = False


class SimulationStalled(LayoutError):
    """Runs were left unfinished with nothing pending: calls no replica of the layout can ever admit."""


class Simulator(SimClock):
    """Runs one workload on one layout under one policy; see module docstring."""

    def __init__(self, program: Program, layout: Sequence[ReplicaSpec], policy: Policy,
                 streams: Sequence[Stream] = (), config: SimConfig | None = None,
                 trace: Sequence[TraceRequest] | None = None, knobs: Mapping[str, KnobChoices] | None = None):
        self.program = program
        self.policy = policy
        self.cfg = config or SimConfig()
        self.streams = tuple(streams)
        self.trace = list(trace) if trace is not None else None
        SimClock.__init__(self)  # now = 0.0, no events
        self.engines: list[LLMEngine] = []
        self.executors: list[ExecutorGroup] = []
        self.replicas: dict[str, LLMEngine | ExecutorGroup] = {}
        self._build(layout)
        self.graphs = {w.name: WorkflowGraph(program, w, self.ref_profiles, (knobs or {}).get(w.name))
                       for w in program.workflows if any(s.workflow == w.name for s in self.streams)}
        """Per workflow: its graph under the knobs simulated (``knobs``: workflow -> a plan's knob
        settings; a workflow not named runs every knob at its preferred value)."""
        self._hedge_width = {(name, stage): h for name, g in self.graphs.items() for stage, h in g.hedge.items()
                             if h > 1}
        """(workflow, LLM stage) -> candidates per call where above one: the runtime's executor sends that many
        and takes the first to finish (:meth:`_hedge`); a policy's ``adapt`` may only widen it."""
        self._hedged = bool(self._hedge_width)
        # stage -> model -> replicas (nested: string lookups cost less than hashing a tuple key)
        self._candidates: dict[str, dict[str | None, list]] = {}
        self._stage_load_parts: dict[str, dict[str | None, tuple[list, tuple[str, ...], dict]]] = {}
        self._stage_list: dict[str, list[tuple[str, tuple]]] = {}  # workflow -> (stage, _stage_parts)
        self._lenders: dict[str, dict[str | None, list[LLMEngine]]] = {}  # stage -> model -> lenders
        self._overrides = {m: getattr(type(policy), m) is not getattr(Policy, m)
                           for m in ("admit", "adapt", "prune_retry")}
        self._prune_hook = self._prune if self._overrides["prune_retry"] else None
        self._input_limits = {name: lim for g in self.graphs.values() for name, lim in g.input_limits.items()}
        """Stage -> model -> the longest prompt a call may send (``WorkflowGraph.input_limits``)."""
        self.run_records: list[tuple] = []
        self.call_records: list[tuple] = []
        self.kv_samples: list[tuple[float, str, int]] = []
        self.llm_calls = 0
        self.active_runs = 0

    # -- setup ---------------------------------------------------------------
    def _build(self, layout: Sequence[ReplicaSpec]) -> None:
        profiles: dict[str, LatencyProfile] = {}
        for spec in layout:
            if spec.kind == "llm":
                if spec.model is None:
                    raise LayoutError(f"LLM replica {spec.name!r} names no model")
                p = model_profile(self.program, spec.model, spec.device, spec.tp)
                best = profiles.get(spec.model)
                if best is None or p.request_s(*SPEED_PROBE) < best.request_s(*SPEED_PROBE):
                    profiles[spec.model] = p
        self.ref_profiles = profiles
        for spec in layout:
            if spec.name in self.replicas:
                raise LayoutError(f"duplicate replica name {spec.name!r}")
            if spec.kind == "llm":
                mspec = self.program.model(spec.model or "")
                p = model_profile(self.program, spec.model or "", spec.device, spec.tp)
                cap = spec.kv_capacity_tokens or p.kv_capacity_tokens(mspec.weight_bytes, mspec.kv_bytes_per_token)
                if cap <= 0:
                    raise LayoutError(f"{spec.name}: {spec.model} does not fit on {spec.tp}x{spec.device}")
                speed = profiles[spec.model].request_s(*SPEED_PROBE) / p.request_s(*SPEED_PROBE)
                eng = LLMEngine(self, spec, p, mspec.kv_bytes_per_token, cap, speed=speed,
                                block_tokens=self.cfg.block_tokens,
                                max_batched_tokens=self.cfg.max_batched_tokens,
                                preemptive=self.policy.preemptive, preempts=self.policy.preempts)
                for wf in self.program.workflows:  # prewarmed prefixes: keyed as the calls will look them up
                    for stage in wf.stages:
                        if stage.name in spec.prewarm and isinstance(stage, LLMStage) and stage.prefix_tokens > 0:
                            eng.warm(f"{wf.name}/{stage.name}@{spec.model}", stage.prefix_tokens)
                self.engines.append(eng)
                self.replicas[spec.name] = eng
            else:
                ex = ExecutorGroup(self, spec)
                self.executors.append(ex)
                self.replicas[spec.name] = ex
        cpu = [e for e in self.engines if e.spec.device.upper() == "CPU"]
        if len(cpu) > 1 and any(e.p.contention_prefill or e.p.contention_decode for e in cpu):
            cores = SharedCores()  # one machine: its CPU engines slow each other while both compute
            for e in cpu:
                e.share_cores(cores)

    def candidates(self, stage: str, kind: str, model: str | None) -> list:
        """Replicas eligible for ``stage`` (dedicated or generic), cached."""
        by_model = self._candidates.setdefault(stage, {})
        got = by_model.get(model)
        if got is None:
            pool = self.engines if kind == "llm" else self.executors
            got = [r for r in pool if (kind != "llm" or r.spec.model == model)
                   and (r.spec.stages is None or stage in r.spec.stages)]
            by_model[model] = got
        return got

    def lenders(self, stage: str, model: str | None) -> list[LLMEngine]:
        """Replicas of ``model`` dedicated to other stages' pools (borrowing candidates), cached. Never a
        prefill or decode replica: it runs one phase of its own pool's calls (a borrowed prefill replica
        would have no decode replica to ship the KV to)."""
        by_model = self._lenders.setdefault(stage, {})
        got = by_model.get(model)
        if got is None:
            got = by_model[model] = [r for r in self.engines if r.spec.model == model and r.spec.stages is not None
                                        and stage not in r.spec.stages and r.role == "mixed"]
        return got

    # -- events (SimClock.at schedules one) ---------------------------------
    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        self._arrival_rng = random.Random(self.cfg.seed)
        self._next_id = 0
        # Policy settings read on every dispatch, bound once per simulation.
        self._adapts = self._overrides["adapt"]
        self._borrow = self.policy.borrow_idle
        self._borrow_spare = self.policy.borrow_spare
        self._record_calls = self.cfg.record_calls
        # The policy's decisions, looked up once rather than on every call: admission, the
        # per-dispatch ones and pruning as one Decisions object (C calls in the compiled build).
        self._dec = self.policy.decisions()
        # Run settings read on every arrival, bound once.
        self._admits = self._overrides["admit"]
        self._slo_scale = self.cfg.slo_scale
        self._run_seed0 = self.cfg.seed * 1_000_003
        self._token_cv = self.cfg.token_cv
        self._service_family = self.cfg.service_family
        # Policy.route not overridden, no borrowing and no prefill/decode replica: the route is the
        # least-backlogged candidate (least_backlog_route), picked without the policy call and the
        # Route object.
        self._plain_route = (uses_method(self.policy, "route", Policy) and not self._borrow
                             and all(e.role == "mixed" for e in self.engines))
        # If, besides, the policy keeps the base priority (enqueue time) and neither adapts nor
        # re-keys, no decision reads a CallView: dispatch builds none.
        self._no_views = (self._plain_route and uses_method(self.policy, "priority", Policy) and not self._adapts
                          and not self.policy.requeue_interval_s)
        if self.trace is not None:
            learnt = RemainingPathStats(self.trace, self.ref_profiles)  # what follows a call, on average
            for i, req in enumerate(self.trace):
                self.at(req.arrival_s, self._arrive, TraceRun(req, i, self.ref_profiles, learnt))
        else:
            if not self.streams:
                raise ValueError("nothing to simulate: no arrival stream and no trace")
            total = sum(s.rate_per_s for s in self.streams)
            self._mix = [(s.rate_per_s / total, self.graphs[s.workflow]) for s in self.streams]
            self._total_rate = total
            self._arrivals_left = self.cfg.runs
            self._pattern, self._burstiness = self.streams[0].pattern, self.streams[0].burstiness
            self._arrive_cb = self._arrive  # bound once: every arrival schedules the next
            self.at(0.0, self._arrive_cb, None)
        # The periodic events, bound once: they re-arm only while something else can still happen.
        self._timers = (self._sample_kv, self._requeue)
        if self.cfg.kv_sample_s:
            self.at(0.0, self._timers[0], None)
        if self.policy.requeue_interval_s:
            self.at(self.policy.requeue_interval_s, self._timers[1], None)
        events = self._events
        # The event loop allocates millions of short-lived objects and frees them by reference
        # counting; the cyclic collector would only rescan the live ones over and over.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._loop(events)
        finally:
            if gc_was_enabled:
                gc.enable()
        if self.active_runs:
            raise SimulationStalled(self._stall_reason())
        wall = time.perf_counter() - wall0
        return SimResult.build(self, wall)

    def _loop(self, events: list[tuple]) -> None:
        while events:
            t, _, handler, arg = pop_event(events)
            self.now = t
            handler(arg)

    def _more_work(self) -> bool:
        """Whether a periodic event should re-arm: runs are in flight or to come, and something other
        than the periodic events themselves is pending (else no run can ever move again: a call that
        no replica can admit; :class:`SimulationStalled` reports it once the loop ends)."""
        if not (self.active_runs > 0 or (self.trace is None and self._arrivals_left > 0)):
            return False
        timers = self._timers
        return any(ev[2] not in timers for ev in self._events)

    def _sample_kv(self, _: None = None) -> None:
        for e in self.engines:
            self.kv_samples.append((self.now, e.name, e.kv_used_at(self.now)))
        if self._more_work():
            self.at(self.now + (self.cfg.kv_sample_s or 1.0), self._timers[0], None)

    def _requeue(self, _: None = None) -> None:
        key_of = self._requeue_key
        for r in self.replicas.values():
            if r.nwaiting:
                r.requeue_all(key_of)
        if self._more_work():
            self.at(self.now + (self.policy.requeue_interval_s or 1.0), self._timers[1], None)

    def _stall_reason(self) -> str:
        """Why runs are left with nothing pending: the waiting calls no replica can admit."""
        stuck = [(e, c) for e in self.engines for _, _, c in e.waiting if c.state == QUEUED]
        head = f"the simulation stalled at {self.now:.3f} s with {self.active_runs} run(s) unfinished"
        if not stuck:
            return head + ": nothing is pending and no call waits (a defect)"
        e, c = stuck[0]
        return (f"{head}: {len(stuck)} call(s) wait for a replica that can never admit them, e.g. a "
                f"{c.stage} call of {c.input_tokens + c.output_tokens} tokens on {e.name} ({e.spec.model}, "
                f"{e.spec.tp}x{e.spec.device}), whose KV cache holds {e.cap} tokens (vLLM would refuse to start "
                f"such an engine: its max_model_len would not fit)")

    def _requeue_key(self, call: Call) -> tuple:
        v = call.view
        v.now_s = self.now
        v.attained_service_s = call.run.attained_s
        return self.policy.priority(v)

    # -- runs ----------------------------------------------------------------
    def _arrive(self, run: Run | None) -> None:
        if run is None:  # IR stream: make the run, schedule the next arrival
            rng = self._arrival_rng
            u, acc, graph = rng.random(), 0.0, self._mix[-1][1]
            for share, g in self._mix:  # the stream's workflow graph
                acc += share
                if u < acc:
                    graph = g
                    break
            run_id = self._next_id
            self._next_id += 1
            run = IRRun(graph, run_id, self.now, run_rng(self._run_seed0 + run_id), self._token_cv,
                        self._service_family)
            self._arrivals_left -= 1
            if self._arrivals_left > 0:
                self.at(self.now + interarrival(rng, self._total_rate, self._pattern, self._burstiness),
                        self._arrive_cb, None)
        self._deadline(run)
        calls = run.first_calls()
        if self._admits and calls:
            view = self.call_view(calls[0])
            verdict = self._dec.admit_without_load(view)  # the stage loads only when they matter
            if verdict is None:
                verdict = self._dec.admit_without_queue(view)
                if verdict is None or self._standing_queue(run):
                    verdict = self._dec.admit(view, self.stage_loads(run))
            if not verdict.admit:
                run.status = "rejected"
                run.rejected_reason = verdict.reason
                run.end_s = self.now
                self._record_run(run)
                return
            first = calls[0]
            first.view = view  # dispatch's view of it, made at the same time: dispatch takes it
        self.active_runs += 1
        run.outstanding = len(calls)
        for c in calls:
            self.dispatch(c)
            if run.rejected_reason is not None:  # refused (context length): the run has ended
                return

    def _deadline(self, run: Run) -> None:
        if self._slo_scale is not None:  # cfg.slo_scale, bound by run()
            run.deadline_s = run.arrival_s + self._slo_scale * run.standalone_s
            return
        for wf in self.program.workflows:  # the first of the run's name
            if wf.name == run.workflow:
                if wf.slo is not None:
                    run.deadline_s = run.arrival_s + wf.slo.latency_s
                return

    def call_view(self, call: Call) -> CallView:
        run = call.run
        # Every field set here, so no __init__ call (the compiled build's CallView is a C struct:
        # a bare allocation and C field stores instead of parsing twenty arguments).
        v = CallView.__new__(CallView)
        now = self.now  # one float for both times (a C double boxed once in the compiled build)
        v.run_id = run.run_id
        v.workflow = run.workflow
        v.stage = call.stage
        v.kind = call.kind
        v.model = call.model
        v.run_arrival_s = run.arrival_s
        v.now_s = now
        v.deadline_s = run.deadline_s
        v.stage_expected_s = call.expected_s
        v.remaining_critical_path_s = call.remaining_cp_s
        v.remaining_std_s = call.remaining_std_s
        v.attained_service_s = run.attained_s
        v.critical_path_service_s = call.cp_service_s
        v.prefix_key = call.prefix_key
        v.input_tokens = call.input_tokens
        v.output_tokens = call.output_tokens
        v.attempt = call.attempt
        v.enqueued_s = now
        v.last_replica_id = run.last_replica.get(call.model or "") if call.model else None
        v.prefix_tokens = call.prefix_tokens
        return v

    def _stage_parts(self, stage: str, kind: str, model: str | None) -> tuple:
        """``(replicas, models, made)`` of ``stage`` on ``model``, cached: its candidates, the
        models with replicas among its declared options (:attr:`StageLoad.models`) and the
        interpreted build's cache of equal loads (:meth:`stage_load`)."""
        # Keyed stage -> model (a stage has one kind, as in candidates()): two lookups of the same
        # string objects, which cost less than hashing and comparing a tuple key (every dispatch,
        # every stage at every arrival).
        by_model = self._stage_load_parts.get(stage)
        if by_model is None:
            by_model = self._stage_load_parts[stage] = {}
        got = by_model.get(model)
        if got is None:
            models: tuple[str, ...] = ()
            if kind == "llm":
                wf_stage = self._stage_spec(stage)
                if isinstance(wf_stage, LLMStage):
                    models = tuple([o.model for o in wf_stage.models if self.candidates(stage, kind, o.model)])
            got = by_model[model] = (self.candidates(stage, kind, model), models, {})
        return got

    def _adapt(self, view: CallView, stage: str, parts: tuple) -> Adaptation:
        """The policy's adaptation of the call ``view`` shows, on ``stage`` (its
        :meth:`_stage_parts` on the call's model): the stage's load is measured only when the
        answer may depend on it (:meth:`~runtime.policies.base.Decisions.adapt_without_load`)."""
        ad = self._dec.adapt_without_load(view, parts[1])
        if ad is None:
            ad = self._dec.adapt(view, self._load(stage, parts))
        return ad

    def stage_load(self, stage: str, kind: str, model: str | None) -> StageLoad:
        return self._load(stage, self._stage_parts(stage, kind, model))

    def _load(self, stage: str, parts: tuple) -> StageLoad:
        """The load on ``stage`` now, given its :meth:`_stage_parts`."""
        reps, models, made = parts
        queued = running = 0
        wait = _INF
        for r in reps:
            v = _fresh_view(r)
            q, n = v.queue_len, v.running
            queued += q
            running += n
            # A call waits only when the queued calls ahead of it leave no free batch slot.
            w = 0.0 if q + n < v.slots else v.backlog_s
            if w < wait:
                wait = w
        if not reps:
            wait = 0.0
        if _COMPILED:
            # A C struct: building one costs less than looking a shared one up, and filling a bare
            # one costs less than the dataclass constructor's argument parsing (frozen means
            # read-only for Python code; C code sets the fields once, here, before anyone sees it).
            sl = StageLoad.__new__(StageLoad)
            sl.stage = stage
            sl.queued = queued
            sl.running = running
            sl.replicas = len(reps)
            sl.expected_wait_s = wait
            sl.models = models
            return sl
        # StageLoad is frozen, and building one is slow when interpreted (object.__setattr__ per
        # field), so equal loads share one object; the same few (queued, running, 0.0) values
        # recur all the time. Bounded: a varying wait makes keys unique.
        sl = made.get((queued, running, wait))
        if sl is None:
            if len(made) >= 4096:
                made.clear()
            sl = made[(queued, running, wait)] = StageLoad(stage, queued, running, len(reps), wait, models)
        return sl

    def _option_quality(self, stage: str, model: str) -> float:
        """Declared quality of ``model`` as an option of ``stage`` (1.0 when not declared)."""
        spec = self._stage_spec(stage)
        return next((o.quality for o in getattr(spec, "models", ()) if o.model == model), 1.0)

    def _stage_spec(self, stage: str):
        for g in self.graphs.values():
            if stage in g.stages:
                return g.stages[stage]
        return None

    def stage_loads(self, run: Run) -> dict[str, StageLoad]:
        stages = self._stage_list.get(run.workflow)
        if stages is None:
            g = self.graphs.get(run.workflow)
            if g is None:
                return {}
            stages = self._stage_list[run.workflow] = [
                (name, self._stage_parts(name, s.kind, g.model.get(name))) for name, s in g.stages.items()]
        return {name: self._load(name, parts) for name, parts in stages}

    def _standing_queue(self, run: Run) -> bool:
        """Whether some stage of ``run``'s workflow may have a standing queue (waiting calls
        ``>= max(replicas, 1)``, as :meth:`_load` counts them); True when its stages are not listed
        yet (:meth:`stage_loads` lists them). Refreshes the views :meth:`stage_loads` would, in the
        same order (a refresh depends only on the replica's state), so skipping the loads after a
        False changes nothing that follows."""
        stages = self._stage_list.get(run.workflow)
        if stages is None:
            return True
        for _, parts in stages:
            reps = parts[0]
            queued = 0
            for r in reps:
                queued += _fresh_view(r).queue_len
            if queued >= (len(reps) if len(reps) > 1 else 1):
                return True
        return False

    def dispatch(self, call: Call, exclude: frozenset[str] = frozenset()) -> None:
        """Adapt, route and queue a new call (see module docstring)."""
        self._seq += 1
        call.seq = self._seq
        run = call.run
        now = self.now
        # One view per call, unless no decision reads it (FCFS); a run's first call has the one its
        # admission read (the same fields: made at this simulated time, before anything changed).
        view = None if self._no_views else call.view if call.view is not None else self.call_view(call)
        call.view = view
        hedge = 1
        kind = call.kind
        llm = kind == "llm"  # (tested once: compiled, a string comparison costs a PyUnicode_Compare when unequal)
        excluding = len(exclude) > 0  # a hedge's duplicate avoids replicas (read once: a C flag when compiled)
        # The stage's candidates and adapt's models (_stage_parts, its cache read inline: a method
        # call per dispatch costs the interpreted build more than the two lookups).
        by_model = self._stage_load_parts.get(call.stage)
        parts = by_model.get(call.model) if by_model is not None else None
        if parts is None:
            parts = self._stage_parts(call.stage, kind, call.model)
        if llm:
            self.llm_calls += 1
            if self._hedged and not excluding:  # the plan's hedge width (else the stage's preferred one)
                hedge = self._hedge_width.get((run.workflow, call.stage), 1)
            if self._adapts and not excluding:
                ad = self._adapt(view, call.stage, parts)
                if ad.model and ad.model != call.model and self.candidates(call.stage, "llm", ad.model):
                    run.degrade(call.stage, self._option_quality(call.stage, ad.model))
                    call.model = ad.model
                    if call.prefix_key:
                        call.prefix_key = f"{run.workflow}/{call.stage}@{ad.model}"
                    view.model = ad.model
                    view.prefix_key = call.prefix_key
                    parts = self._stage_parts(call.stage, kind, call.model)
                if ad.hedge > hedge:  # a policy may hedge wider than planned, never narrower
                    hedge = ad.hedge
        elif self._adapts and not excluding:
            ad = self._adapt(view, call.stage, parts)
            hedge = ad.hedge
        cands = parts[0]
        if not cands and llm:
            # The layout serves a declared alternative (e.g. a planner chose a lighter option).
            spec = self._stage_spec(call.stage)
            for opt in getattr(spec, "models", ()):
                if self.candidates(call.stage, "llm", opt.model):
                    run.degrade(call.stage, opt.quality)
                    call.model = opt.model
                    if view is not None:
                        view.model = opt.model
                    cands = self.candidates(call.stage, "llm", opt.model)
                    break
        if not cands:
            raise LayoutError(f"no replica serves stage {call.stage!r}"
                              + (f" with model {call.model!r}" if call.model else ""))
        if call.state == OVERLONG:  # its prompt exceeds some option's context: check the model it runs on
            limits = self._input_limits.get(call.stage)
            if limits is not None and call.input_tokens > limits.get(call.model, call.input_tokens):
                self._refuse(call, f"stage {call.stage!r}: {call.input_tokens} prompt tokens + max_tokens exceed "
                                   f"{call.model}'s context")
                return
            call.state = CREATED
        if self._plain_route and not excluding:
            replica = _least_backlog_replica(cands)
            call.t_enqueue = now
            # Without a view, the key is Policy.priority's: (enqueued_s,).
            _enqueue(replica, call, (now,) if view is None else self._dec.priority(view))
            if hedge > 1:
                self._hedge(call, hedge, exclude, replica)
            return
        if excluding:
            views = [r.refresh_view() for r in cands if r.name not in exclude]
        else:
            views = [_fresh_view(r) for r in cands]
        n_own = len(views)  # the borrowed views follow the own pool's
        lent = lent_views = _NO_LENDERS  # the lenders offered and their views (unflagged)
        if self._borrow and llm:
            spare = self._borrow_spare
            by_model = self._lenders.get(call.stage)
            lenders = by_model.get(call.model) if by_model is not None else None
            if lenders is None:
                lenders = self.lenders(call.stage, call.model)
            # Idle replicas, or (borrow_spare) ones with a free batch slot and no queue.
            for e in lenders:  # engines (typed in sim.pxd: C field reads)
                if not e.nwaiting and (not e.running or (spare and len(e.running) < e.max_batch)) and (
                        not excluding or e.name not in exclude):
                    if lent is _NO_LENDERS:
                        lent, lent_views = [], []
                    lent.append(e)
                    lent_views.append(e.refresh_view() if e.dirty else e.view)
        if view is not None and n_own and not excluding:
            # The policy's pick among the own views and the lenders' as an index (Decisions.pick): no
            # borrowed flags, no joined list, no Route (a colocated pool: the replica runs both phases).
            i = self._dec.pick(view, views, lent_views)
            replica = None if i < 0 else cands[i] if i < n_own else lent[i - n_own]
            e = replica if type(replica) is LLMEngine else None
            if replica is not None and (e is None or e.role == "mixed"):  # else route() below: the same pick
                call.t_enqueue = now
                _enqueue(replica, call, self._dec.priority(view))
                if hedge > 1:
                    self._hedge(call, hedge, exclude, replica)
                return
        for v in lent_views:  # route() reads the lenders flagged, after the own views
            v.borrowed = True
            views.append(v)
        if not views:
            return
        # (no view: a policy that reads none, its hedge twins routed here: the least backlog, as it routes)
        route = (self._dec.route(view, views) if view is not None else None) or least_backlog_route(views)
        for v in lent_views:
            v.borrowed = False
        replica = self.replicas[route.replica_id]
        e = replica if type(replica) is LLMEngine else None  # typed in sim.pxd: C field reads
        if e is not None and e.role == "prefill":
            call.phase = "prefill"
            dec = route.decode_replica_id
            call.decode_replica = self.replicas[dec] if dec else None
            if call.decode_replica is None:
                raise LayoutError(f"{replica.name} is a prefill replica but the route names no decode replica")
        call.t_enqueue = now
        _enqueue(replica, call, (now,) if view is None else self._dec.priority(view))
        if hedge > 1:
            self._hedge(call, hedge, exclude, replica)

    def _hedge(self, call: Call, hedge: int, exclude: frozenset[str], replica) -> None:
        """Dispatch ``hedge - 1`` duplicates of ``call`` (queued on ``replica``) elsewhere: the same prompt, and
        the same output unless the stage samples (:meth:`IRRun.twin_output_tokens`)."""
        run = call.run
        peers = [call]
        used = set(exclude) | {replica.name}
        for i in range(hedge - 1):
            out = (run.twin_output_tokens(call.stage, call.key, i, self._run_seed0 + run.run_id, call.output_tokens)
                   if isinstance(run, IRRun) else 0)
            twin = Call(run, call.key, call.stage, call.kind, call.model, call.input_tokens,
                        out or call.output_tokens, call.prefix_key, call.prefix_tokens, call.service_s,
                        call.standalone_s, call.expected_s, call.remaining_cp_s, call.remaining_std_s,
                        call.group, call.attempt, call.cp_service_s)
            twin.hedge_peers = peers
            peers.append(twin)
            self.dispatch(twin, frozenset(used))
            if twin.replica is not None:
                used.add(twin.replica.name)
        call.hedge_peers = peers

    # -- callbacks from engines ----------------------------------------------
    def call_finished(self, call: Call) -> None:
        if call.phase is not FULL and call.phase == "prefill":  # (calls.FULL: the identity test first)
            self._ship_kv(call)
            return
        call.state = DONE
        run = call.run
        if call.hedge_peers:
            for peer in call.hedge_peers:
                if peer is not call and peer.state not in (DONE, CANCELLED) and peer.replica is not None:
                    peer.replica.cancel(peer)
                    peer.state = CANCELLED
        if self._record_calls:
            self.call_records.append((run.run_id, run.workflow, call.stage, call.kind, call.replica.name,
                                      call.t_enqueue, call.t_start, call.t_end, call.input_tokens,
                                      call.output_tokens))
        run.attained_s += call.t_end - call.t_start
        if call.model:
            run.last_replica[call.model] = _name(call.replica)
        run.outstanding -= 1
        new, cancel = run.on_done(call, self._prune_hook)
        if cancel:
            for c in cancel:
                for peer in c.hedge_peers or (c,):
                    if peer.replica is not None and peer.state not in (DONE, CANCELLED):
                        peer.replica.cancel(peer)
                    peer.state = CANCELLED
                run.outstanding -= 1
        run.outstanding += len(new)
        for c in new:
            self.dispatch(c)
            if run.rejected_reason is not None:  # refused (context length): the run has ended
                return
        if run.outstanding == 0 and run.status is not None:
            run.end_s = self.now
            self.active_runs -= 1
            self._record_run(run)

    def _refuse(self, call: Call, reason: str) -> None:
        """The engine refuses ``call`` as vLLM does a prompt that, with the stage's ``max_tokens``,
        exceeds the model's context: the runtime's orchestrator then ends the run with an error, so
        here the run ends at once as ``rejected`` (a miss), its other calls in flight cancelled."""
        run = call.run
        call.state = CANCELLED
        for c in run.in_flight():
            for peer in c.hedge_peers or (c,):
                if peer is not call and peer.state not in (DONE, CANCELLED):
                    if peer.replica is not None:
                        peer.replica.cancel(peer)
                    peer.state = CANCELLED
        run.status = "rejected"
        run.rejected_reason = reason
        run.outstanding = 0
        run.end_s = self.now
        self.active_runs -= 1
        self._record_run(run)

    def _prune(self, run: IRRun, call: Call, loop: str, iteration: int) -> bool:
        view = self.call_view(call)
        view.attempt = iteration
        verdict = self._dec.prune_without_load(view)  # the stage's load only when it matters
        if verdict is None:
            verdict = self._dec.prune_retry(view, loop, iteration, self.stage_load(call.stage, call.kind, call.model))
        return verdict

    def _ship_kv(self, call: Call) -> None:
        """Prefill side finished: transfer the KV to the decode replica, unless the call is done."""
        call.remaining -= 1
        src = call.replica
        if call.remaining <= 0:
            call.phase = FULL
            self.call_finished(call)
            return
        dec: LLMEngine = call.decode_replica
        bw = min(src.spec.link_bytes_per_s, dec.spec.link_bytes_per_s)
        call.phase = "decode"
        call.state = TRANSFERRING
        call.ctx += 1
        call.replica = None
        self.at(self.now + call.ctx * dec.view.kv_bytes_per_token / bw, self._transfer_done, call)

    def _transfer_done(self, call: Call) -> None:
        if call.state == CANCELLED:
            return
        call.decode_replica.enqueue(call, call.prio)

    def _record_run(self, run: Run) -> None:
        self.run_records.append((run.run_id, run.workflow, run.arrival_s, run.end_s, run.standalone_s,
                                 run.deadline_s, run.status, run.ncalls, run.pruned,
                                 run.quality if run.lighter else 1.0))


def _least_backlog_replica(replicas: Sequence[LLMEngine | ExecutorGroup]) -> LLMEngine | ExecutorGroup:
    """The replica :func:`least_backlog_route` picks among ``replicas`` when all of them run both
    phases: the least ``(backlog_s, queue_len + running, replica_id)`` of their views, the first
    on a full tie (``runtime.policies.base._least_backlog``'s rule). Fused with the views' refresh
    into one pass (every dispatch of a least-backlog policy), with no view list and no Route."""
    best = replicas[0]
    bv = _fresh_view(best)
    bb = bv.backlog_s
    for r in replicas:
        if type(r) is LLMEngine:  # _fresh_view(r) written out for an engine (typed e: no call per candidate)
            e = r
            v = e.refresh_view() if e.dirty else e.view
        else:
            v = _fresh_view(r)
        b = v.backlog_s
        if b > bb or v is bv:  # cannot win (most replicas), or the first one itself
            continue
        if b < bb or (v.queue_len + v.running, v.replica_id) < (bv.queue_len + bv.running, bv.replica_id):
            best, bv, bb = r, v, b
    return best


def _name(replica: LLMEngine | ExecutorGroup) -> str:
    """``replica.name``; compiled, a C field read on either kind of replica (sim.pxd types ``e``
    and ``x``) instead of a generic attribute lookup."""
    if type(replica) is LLMEngine:
        e = replica
        return e.name
    x = replica
    return x.name


def _enqueue(replica: LLMEngine | ExecutorGroup, call: Call, prio: tuple) -> None:
    """``replica.enqueue(call, prio)``; the compiled build makes it a C call on either kind of
    replica (sim.pxd types ``e`` and ``x``) instead of a method lookup and a Python call."""
    if type(replica) is LLMEngine:
        e = replica
        e.enqueue(call, prio)
    else:
        x = replica  # the other kind of replica: an ExecutorGroup
        x.enqueue(call, prio)


def _fresh_view(r: LLMEngine | ExecutorGroup) -> ReplicaView:
    """``r``'s view, refreshed first if ``r`` changed since it was last refreshed (an executor
    group's always is). Hot path (every candidate of every dispatch): the compiled build reads
    the flag and the view as C fields and refreshes by a C call (sim.pxd types ``e`` and ``x``)."""
    if type(r) is LLMEngine:
        e = r
        return e.refresh_view() if e.dirty else e.view
    x = r  # the other kind of replica: an ExecutorGroup
    return x.refresh_view() if x.dirty else x.view
