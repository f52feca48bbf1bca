"""The workflow-aware orchestrator: admission, runs, versions, external calls, metrics.

Lifecycle: ``await Orchestrator(spec, factory).start()`` builds the pools
(starting every engine and warming every SQL pool), ``await stop()`` drains or
cancels runs and stops what it started. ``async with`` does both.

Admission (:meth:`Orchestrator.submit`) refuses a run with
:class:`~runtime.orchestrator.errors.Overloaded` (retryable, with a
``retry_after_s`` hint) when ``max_active_runs`` runs are in flight, when the
entry stage's wait queue is full, or when the policy's ``admit`` refuses it
(the Cortex policy: the bottleneck stage's expected wait exceeds the run's
whole slack). Admitted runs are never dropped: each ends ``done``, ``fail``,
``error`` (with the reason), ``timeout`` or ``cancelled``.

Deadlines: a run's SLO deadline (arrival + SLO latency) drives the policies'
priorities; its *timeout* (``deadline_s`` per run, default
``run_timeout_factor x`` SLO latency) cancels the walk, which cancels the
calls in flight and aborts them in the engines.

Engine failures: a replica whose engine fails leaves rotation and a
:class:`~runtime.orchestrator.health.ReplicaProber` probes it with backoff until
it is healthy again. A request an engine *refuses* (too long for the model's
context, a parameter it rejects: :class:`~runtime.engines.base.RequestRejected`)
fails only that call, never the replica: a chat call re-raises it (HTTP 400), a
run ends ``error`` with the reason.

History: the last ``retained_runs`` runs are kept for status queries; only
finished runs are ever evicted (oldest first), and when the history is full of
runs in flight a new run is refused with :class:`Overloaded`. An *external run*
(named by an agent's chat call, ``X-Cortex-Run``) ends ``done`` once no call of
it has been queued or running for ``external_run_idle_s``, or earlier, when the
history is full and a new run needs its place (an idle external run is not in
flight: the one idle longest goes first).

Versions: :meth:`Orchestrator.deploy` swaps in a new spec of a workflow (hot
reload); runs started before finish on the version they started with (see
:mod:`runtime.orchestrator.versions`).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import math
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cortexlang.ir import Database, LLMStage, ToolStage
from planner.profiles import LatencyProfile, ProfileNotFound, get_profile
from runtime.build.spec import LLMPoolSpec, ReplicaSpec, RuntimeSpec
from runtime.cache import InProcessCache, RedisCache, StateCache
from runtime.engines.base import (ChatMessage, Engine, EngineError, GenerationRequest, GenerationResult,
                                  RequestRejected, TokenDelta, TokenSink, streaming_to)
from runtime.engines.disaggregated import DisaggregatedEngine, PrefillGroup, make_storage, with_storage
from runtime.orchestrator.engines import EngineFactory
from runtime.orchestrator.errors import (
    BadRequest, DatabaseSetupError, NoHealthyReplica, OrchestratorError, Overloaded, UnknownRun,
)
from runtime.orchestrator.constraints import ConstraintSetupError, decoding_constraints, required_capabilities
from runtime.orchestrator.executor import Executor, FlowError, engine_priority, engine_timing
from runtime.orchestrator.health import ReplicaProber
from runtime.orchestrator.metrics import PromText, RunStats
from runtime.orchestrator.prewarm import warm, warm_up_requests
from runtime.orchestrator.pools import Pool, Replica
from runtime.orchestrator.results import FINISHED, CallRecord, RunEvent, RunInfo
from runtime.orchestrator.runs import Run
from runtime.orchestrator.simulated import request_stage
from runtime.orchestrator.versions import Tool, WorkflowVersion, executor_pool_key, import_tool, llm_pool_key
from runtime.policies.base import Policy
from runtime.policies.registry import make_policy
from runtime.sql.executor import SQLConfigError, SQLExecutor

log = logging.getLogger("cortex.orchestrator")

EXTERNAL_RUN_IDLE_S = 300.0
"""An external run with no call queued or running for this long ends (see module docstring)."""
MAX_RUN_TIMEOUT_S = 86_400.0
"""The longest ``deadline_s`` a run may ask for when its workflow sets no run timeout (no SLO)."""


def _profile(rep: ReplicaSpec) -> LatencyProfile | None:
    try:
        return get_profile(rep.profile, rep.device, rep.tp)
    except ProfileNotFound:
        return None


def _token_events(run: Run, subscribers: dict[str, list[asyncio.Queue[RunEvent | None]]]) -> TokenSink:
    """A sink that sends each generated piece of a run's LLM calls as a ``token`` event to the
    run's subscribers that asked for tokens (``subscribers[run_id]``), and keeps none in its event
    history: that would hold every token of every retained run and push out its other events.
    Hedged candidates stream too; ``request_id`` tells them apart."""

    def sink(delta: TokenDelta) -> None:
        queues = subscribers.get(run.run_id)
        if queues:
            event = RunEvent(run.run_id, "token", run.clock() - run.arrival,
                             {"stage": request_stage(delta.request_id), "request_id": delta.request_id,
                              "text": delta.text})
            for queue in queues:
                queue.put_nowait(event)

    return sink


class Orchestrator:
    """Runs workflows on per-stage pools (see module docstring)."""

    def __init__(self, spec: RuntimeSpec, engine_factory: EngineFactory, *, policy: Policy | None = None,
                 cache: StateCache | None = None, clock: Callable[[], float] = time.monotonic,
                 external_run_idle_s: float = EXTERNAL_RUN_IDLE_S, prober: ReplicaProber | None = None) -> None:
        self.spec = spec
        self.config = spec.orchestrator
        self.engine_factory = engine_factory
        self.policy = policy or make_policy(self.config.policy)
        self.clock = clock
        self.cache = cache or StateCache(self._cache_backend())
        self.pools_by_name: dict[str, Pool] = {}
        self.executor = Executor(policy=self.policy, cache=self.cache, config=self.config,
                                 pools_by_name=self.pools_by_name, clock=clock)
        self.versions: dict[str, WorkflowVersion] = {}
        """Current version per workflow name."""
        self._all_versions: list[WorkflowVersion] = []
        self._pool_keys: dict[str, str] = {}
        self._pool_for_spec: dict[str, Pool] = {}
        """Pool spec name -> the pool currently serving it (a changed spec gets a new pool)."""
        self._prefill_groups: dict[str, PrefillGroup] = {}
        """Pool name -> the prefill engines of a prefill/decode-disaggregated pool."""
        self._pool_users: dict[str, int] = {}
        self._sql: dict[str, tuple[str, SQLExecutor]] = {}
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self._finished_ids: OrderedDict[str, None] = OrderedDict()
        """Ids of the finished runs in ``runs``, oldest first: the only ones eviction may drop."""
        self.external_run_idle_s = external_run_idle_s
        self.prober = prober or ReplicaProber()
        self.active = 0
        self.run_stats: dict[str, RunStats] = {}
        self.rejected_runs = 0
        self._numbers = itertools.count(1)
        self._version_numbers = itertools.count(1)
        self._started = False
        self._lock = asyncio.Lock()
        self._policy_admits = type(self.policy).admit is not Policy.admit
        """Only a policy that overrides ``admit`` needs the per-stage loads at every admission."""
        self.token_subscribers: dict[str, list[asyncio.Queue[RunEvent | None]]] = {}
        """Run id -> the event queues of its subscribers that asked for ``token`` events."""
        self.run_listeners: list[Callable[[RunInfo], None]] = []
        """Called with every finished run's info, in order of finishing (e.g. a trace recorder); a listener
        that raises is logged and kept."""

    def _cache_backend(self) -> Any:
        if self.config.cache == "redis":
            return RedisCache(self.config.redis_url or "redis://127.0.0.1:6379/0")
        return InProcessCache(self.config.cache_max_entries)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the engines and executors of ``spec`` and make it the current version."""
        if self._started:
            return
        await self.deploy(self.spec)
        if self.config.freeze_gc:
            # Everything alive now (engines, models, compiled templates) lives as long as the server:
            # keep it out of the cyclic collector's full passes, which otherwise cost milliseconds.
            gc.collect()
            gc.freeze()
        self._started = True

    async def stop(self, *, drain_s: float = 0.0) -> None:
        """Wait up to ``drain_s`` for runs in flight, cancel the rest, stop every engine and executor."""
        if drain_s > 0:
            pending = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
            if pending:
                await asyncio.wait(pending, timeout=drain_s)
        for run in list(self.runs.values()):
            if run.task is not None and not run.task.done():
                run.task.cancel()
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for run in self.runs.values():
            if run.idle_timer is not None:
                run.idle_timer.cancel()
        await self.prober.stop()
        for pool in list(self.pools_by_name.values()):
            await self._stop_pool(pool)
        self.pools_by_name.clear()
        self._pool_for_spec.clear()
        for _, executor in self._sql.values():
            executor.close()
        self._sql.clear()
        for v in self._all_versions:
            for tool in v.tools.values():
                tool.close()
        close = getattr(self.cache.backend, "close", None)
        if close is not None:
            await close()
        self._started = False

    async def __aenter__(self) -> "Orchestrator":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ versions
    async def deploy(self, spec: RuntimeSpec) -> WorkflowVersion:
        """Make ``spec`` the current version of its workflow, reusing unchanged pools (hot reload)."""
        async with self._lock:
            # Tools first, off the event loop: importing (or reloading) user code can be slow or
            # fail, and a failure then leaves nothing started.
            tools = await asyncio.to_thread(self._tools_for, spec)
            pools = await self._pools_for(spec)
            sql = await self._sql_for(spec)
            try:  # SQL constraints read their database's schema: after the executors started
                constraints = await asyncio.to_thread(decoding_constraints, spec.program.workflow(spec.workflow), sql)
            except ConstraintSetupError as exc:
                raise OrchestratorError(f"output constraint of {exc}") from exc
            version = WorkflowVersion(next(self._version_numbers), spec, pools, sql, tools, constraints)
            for pool in set(pools.values()):
                stages = [s for s, p in pools.items() if p is pool]
                pool.expected_s = max((version.graph.expected_s(s) for s in stages), default=0.0)
                llm = [version.graph.stages[s] for s in stages if isinstance(version.graph.stages[s], LLMStage)]
                if llm:
                    pool.call_tokens = (max(s.input_tokens for s in llm), max(round(s.mean_output_tokens(
                        version.knobs.max_tokens.get(s.name, s.max_tokens.preferred))) for s in llm))
                self._pool_users[pool.name] = self._pool_users.get(pool.name, 0) + 1
            self._link_peers()
            old = self.versions.get(version.name)
            self.versions[version.name] = version
            self._all_versions.append(version)
            self.run_stats.setdefault(version.name, RunStats())
            if old is not None:
                await self._retire_if_idle(old)
            return version

    async def _pools_for(self, spec: RuntimeSpec) -> dict[str, Pool]:
        by_stage: dict[str, Pool] = {}
        started: list[Pool] = []
        try:
            for lp in spec.llm_pools:
                key = llm_pool_key(lp)
                pool = self._pool_for_spec.get(lp.name)
                if pool is None or self._pool_keys.get(pool.name) != key:
                    pool = await self._start_llm_pool(spec, lp, self._fresh_name(lp.name))
                    started.append(pool)
                    self.pools_by_name[pool.name] = pool
                    self._pool_keys[pool.name] = key
                    self._pool_for_spec[lp.name] = pool
                for stage in lp.stages:
                    by_stage[stage] = pool
            for ep in spec.executor_pools:
                key = executor_pool_key(ep)
                pool = self._pool_for_spec.get(ep.name)
                if pool is None or self._pool_keys.get(pool.name) != key:
                    name = self._fresh_name(ep.name)
                    replica = Replica(f"{ep.kind}:{name}", name, ep.slots)
                    pool = Pool(name, ep.kind, [replica], policy=self.policy, max_queue=ep.max_queue,
                                clock=self.clock)
                    self.pools_by_name[name] = pool
                    self._pool_keys[name] = key
                    self._pool_for_spec[ep.name] = pool
                by_stage[ep.stage] = pool
        except BaseException:
            for pool in started:
                await self._stop_pool(pool)
                self.pools_by_name.pop(pool.name, None)
            raise
        return by_stage

    def _fresh_name(self, name: str) -> str:
        """``name``, or ``name@N`` while an older pool of that name still serves earlier versions."""
        if name not in self.pools_by_name:
            return name
        return next(f"{name}@{n}" for n in itertools.count(2) if f"{name}@{n}" not in self.pools_by_name)

    P_D_BACKENDS = frozenset({"vllm-inproc", "vllm-server"})
    """Engines that hand a prompt's KV from a prefill engine to a decode engine (vLLM's KV connectors)."""

    def build_engine(self, spec: RuntimeSpec, lp: LLMPoolSpec, rep: ReplicaSpec, pool: str) -> Engine:
        """The unstarted engine of replica ``rep`` of pool ``pool``: the factory's, wrapped to prefill on the
        pool's prefill engines when the pool is prefill/decode-disaggregated."""
        group = self._prefill_groups.get(pool)
        if group is None or group.storage is None:
            return self.engine_factory(spec, lp, rep)
        return DisaggregatedEngine(self.engine_factory(spec, lp, _stored_at(rep, group.storage)), group)

    async def _start_prefill_group(self, spec: RuntimeSpec, lp: LLMPoolSpec, name: str) -> None:
        """Build and start a disaggregated pool's prefill engines (before its decode engines are built)."""
        storage = make_storage()
        engines: list[Engine] = []
        try:
            for rep in lp.prefill_replicas:
                engines.append(await asyncio.to_thread(self.engine_factory, spec, lp, _stored_at(rep, storage)))
            group = PrefillGroup(engines, storage, names=[rep.replica_id for rep in lp.prefill_replicas])
        except BaseException:
            shutil.rmtree(storage, ignore_errors=True)
            raise
        try:
            await group.start()
        except EngineError as exc:
            raise OrchestratorError(f"pool {lp.name!r}: {exc}") from exc
        other = next((e.label for e in engines if e.label not in self.P_D_BACKENDS), None)  # a proxy knows it once started
        if other is not None:
            await group.stop()
            raise OrchestratorError(
                f"pool {lp.name!r} is prefill/decode-disaggregated, which needs vLLM engines (a KV connector hands "
                f"each prompt's KV to the decode engine); the {other} engine has none: simulate the plan with "
                "`cortex simulate --layout plan`, or re-plan without --disaggregate")
        self._prefill_groups[name] = group

    async def _start_llm_pool(self, spec: RuntimeSpec, lp: LLMPoolSpec, name: str) -> Pool:
        if lp.prefill_replicas:
            await self._start_prefill_group(spec, lp, name)
        try:
            return await self._start_decoders(spec, lp, name)
        except BaseException:
            group = self._prefill_groups.pop(name, None)
            if group is not None:
                await group.stop()
            raise

    async def _start_decoders(self, spec: RuntimeSpec, lp: LLMPoolSpec, name: str) -> Pool:
        engines = [await asyncio.to_thread(self.build_engine, spec, lp, rep, name) for rep in lp.replicas]
        needed = required_capabilities(spec.program.workflow(spec.workflow), lp.stages)
        for rep, engine in zip(lp.replicas, engines):  # before any starts: nothing to stop
            try:
                engine.require(needed, f"output constraints of pool {lp.name!r}'s stages")
            except EngineError as exc:
                raise OrchestratorError(f"engine {rep.replica_id} of pool {lp.name!r}: {exc}") from exc
        results = await asyncio.gather(*(e.start() for e in engines), return_exceptions=True)
        for i, engine in enumerate(engines):  # again: a proxy (Ray) knows its engine's capabilities once started
            if not isinstance(results[i], BaseException) and not needed <= engine.capabilities:
                results[i] = EngineError(f"the {engine.label} engine cannot honour "
                                         f"{', '.join(sorted(needed - engine.capabilities))} (output constraints)")
        failures = [(rep, r) for rep, r in zip(lp.replicas, results) if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(e.stop() for e in engines), return_exceptions=True)
            rep, exc = failures[0]
            raise OrchestratorError(f"engine {rep.replica_id} of pool {lp.name!r} failed to start: {exc}") from exc
        warm_ups = warm_up_requests(spec.program.workflow(spec.workflow), lp.prewarm)
        if warm_ups:  # the plan's prewarm decisions: prefixes resident before the first call
            await asyncio.gather(*(warm(e, warm_ups, rep.replica_id) for rep, e in zip(lp.replicas, engines)))
        replicas = [Replica(rep.replica_id, name, rep.engine.max_num_seqs or 16, model=lp.model, device=rep.device,
                            engine=e, kv_capacity_tokens=rep.kv_capacity_tokens, profile=_profile(rep))
                    for rep, e in zip(lp.replicas, engines)]
        pool = Pool(name, "llm", replicas, policy=self.policy, max_queue=lp.max_queue, model=lp.model,
                    clock=self.clock, borrow=self.config.borrow_idle,
                    borrow_max_kv_usage=self.config.borrow_max_kv_usage)
        pool.on_replica_failed = self.prober.watch
        return pool

    async def _sql_for(self, spec: RuntimeSpec) -> dict[str, SQLExecutor]:
        out: dict[str, SQLExecutor] = {}
        for db in spec.databases:
            key = db.model_dump_json()
            held = self._sql.get(db.name)
            if held is None or held[0] != key:
                try:  # a missing SQLite file (the constructor) or a superuser role (start): one line from the CLI
                    executor = SQLExecutor(Database(name=db.name, url=db.url, statement_timeout_s=db.statement_timeout_s,
                                                    row_limit=db.row_limit, pool_size=db.pool_size),
                                           max_result_bytes=db.max_result_bytes)
                    await executor.start()
                except SQLConfigError as exc:
                    raise DatabaseSetupError(f"database {db.name!r}: {exc}") from exc
                self._sql[db.name] = (key, executor)  # a replaced executor keeps serving the runs that hold it
            out[db.name] = self._sql[db.name][1]
        return out

    def _tools_for(self, spec: RuntimeSpec) -> dict[str, Tool]:
        workflow = spec.program.workflow(spec.workflow)
        tools = {}
        for s in workflow.stages:
            if isinstance(s, ToolStage):
                slots = spec.pool_of_stage(s.name).slots  # type: ignore[union-attr]
                tools[s.name] = Tool(s, import_tool(s.entry, Path(spec.base_dir)), slots)
        return tools

    def _link_peers(self) -> None:
        llm = [p for p in self.pools_by_name.values() if p.kind == "llm"]
        for p in llm:
            p.peers = [q for q in llm if q is not p and q.model == p.model]

    async def _retire_if_idle(self, version: WorkflowVersion) -> None:
        """Stop the pools only ``version`` used, once it is not current and has no runs left."""
        if version.active_runs or self.versions.get(version.name) is version:
            return
        if version not in self._all_versions:
            return
        self._all_versions.remove(version)
        for pool in set(version.pools.values()):
            self._pool_users[pool.name] -= 1
            current = {p.name for v in self.versions.values() for p in v.pools.values()}
            if self._pool_users[pool.name] <= 0 and pool.name not in current:
                self.pools_by_name.pop(pool.name, None)
                self._pool_keys.pop(pool.name, None)
                self._link_peers()
                await self._stop_pool(pool)
        for tool in version.tools.values():
            if all(tool is not t for v in self._all_versions for t in v.tools.values()):
                tool.close()

    def adopt_pool_spec(self, pool: Pool, lp: LLMPoolSpec) -> str | None:
        """Record that live ``pool`` now matches ``lp`` (resized in place by
        :mod:`runtime.orchestrator.scaling`), so a deploy of a spec holding ``lp`` keeps its engines;
        the previous record (to restore it with :meth:`restore_pool_key`)."""
        previous = self._pool_keys.get(pool.name)
        self._pool_keys[pool.name] = llm_pool_key(lp)
        return previous

    def restore_pool_key(self, pool: Pool, key: str | None) -> None:
        """Undo :meth:`adopt_pool_spec` (an apply whose deploy failed)."""
        if key is not None:
            self._pool_keys[pool.name] = key

    async def _stop_pool(self, pool: Pool) -> None:
        await self.prober.forget(pool)
        engines = [r.engine for r in pool.replicas if r.engine is not None]
        await asyncio.gather(*(e.stop() for e in engines), return_exceptions=True)
        group = self._prefill_groups.pop(pool.name, None)
        if group is not None:
            await group.stop()

    # ------------------------------------------------------------------ runs
    def version(self, workflow: str | None = None) -> WorkflowVersion:
        if workflow is None:
            if len(self.versions) != 1:
                raise BadRequest(f"name a workflow: {', '.join(self.versions) or 'none deployed'}")
            return next(iter(self.versions.values()))
        try:
            return self.versions[workflow]
        except KeyError:
            raise BadRequest(f"no workflow {workflow!r} (deployed: {', '.join(self.versions) or 'none'})") from None

    async def submit(self, inputs: dict[str, Any], *, workflow: str | None = None, deadline_s: float | None = None,
                     run_id: str | None = None) -> Run:
        """Admit and start a run; raises :class:`Overloaded` (retryable) or :class:`BadRequest`.

        ``deadline_s`` (positive and finite) is capped at the server's run timeout (see :meth:`_timeout_at`).
        """
        version = self.version(workflow)
        if deadline_s is not None and not (math.isfinite(deadline_s) and deadline_s > 0):
            raise BadRequest(f"deadline_s must be a positive, finite number of seconds (got {deadline_s!r})")
        missing = [name for name in version.workflow.inputs if name not in inputs]
        if missing:
            raise BadRequest(f"workflow {version.name!r} needs input(s) {', '.join(missing)}; "
                             f"got {', '.join(sorted(inputs)) or 'none'}")
        inputs = {k: inputs[k] for k in version.workflow.inputs}
        if run_id is not None and run_id in self.runs:
            raise BadRequest(f"run id {run_id!r} is already in use")
        stats = self.run_stats[version.name]
        now = self.clock()
        if self.active >= self.config.max_active_runs:
            self._reject(stats)
            raise Overloaded(f"{self.active} runs are in flight (limit {self.config.max_active_runs}); retry later",
                             retry_after_s=1.0)
        self._make_room(stats)
        entry = self._first_stage(version)
        pool = version.pools.get(entry)
        if pool is not None and not pool.healthy:
            raise NoHealthyReplica(f"cannot start a run: no healthy replica left in the pool of stage {entry!r}")
        if pool is not None and pool.full():
            self._reject(stats)
            pool.rejected += 1
            raise Overloaded(f"stage {entry!r} is overloaded: {pool.queued} calls are waiting "
                             f"(limit {pool.max_queue}); retry later",
                             retry_after_s=max(pool.load().expected_wait_s, 0.05), stage=entry)
        slo = version.workflow.slo
        number = next(self._numbers)
        run = Run(run_id or uuid.uuid4().hex[:16], version, inputs, now,
                  now + slo.latency_s if slo else None, self._timeout_at(now, deadline_s, slo), self.clock, number)
        if pool is not None and self._policy_admits:
            call = self.executor.view(run, entry, version.knobs.models.get(entry), 0, 0, None)
            loads = {name: p.load() for name, p in version.pools.items()}
            verdict = self.policy.admit(call, loads)
            if not verdict.admit:
                self._reject(stats)
                raise Overloaded(f"run refused by the {self.policy.name} policy: {verdict.reason}",
                                 retry_after_s=verdict.retry_after_s or 1.0, stage=entry)
        self.active += 1
        version.active_runs += 1
        self.runs[run.run_id] = run
        run.info.status = "running"
        run.emit("run_started", workflow=version.name, version=version.number, inputs=inputs)
        run.task = asyncio.create_task(self._execute(run), name=f"run:{run.run_id}")
        return run

    def _reject(self, stats: RunStats) -> None:
        stats.rejected += 1
        self.rejected_runs += 1

    def _timeout_at(self, now: float, deadline_s: float | None, slo: Any) -> float | None:
        """When a run arriving ``now`` times out: its ``deadline_s``, never later than the server's run
        timeout (``run_timeout_factor`` x the SLO latency; :data:`MAX_RUN_TIMEOUT_S` without one), which
        also applies when it asks for none. A caller cannot lift the server's bound on a run."""
        limit = None
        if slo is not None and self.config.run_timeout_factor is not None:
            limit = slo.latency_s * self.config.run_timeout_factor
        if deadline_s is None:
            return None if limit is None else now + limit
        return now + min(deadline_s, MAX_RUN_TIMEOUT_S if limit is None else limit)

    @staticmethod
    def _first_stage(version: WorkflowVersion) -> str:
        entry = version.workflow.entry
        if entry in version.graph.fanouts:
            return version.graph.fanouts[entry].branches[0][0]
        return entry

    async def _execute(self, run: Run) -> None:
        info = run.info
        try:
            with streaming_to(_token_events(run, self.token_subscribers)):
                if run.timeout_at is not None:
                    async with asyncio.timeout_at(self._loop_time(run.timeout_at)):
                        terminal, output = await self.executor.walk(run)
                else:
                    terminal, output = await self.executor.walk(run)
            info.status = "done" if terminal == "done" else "fail"
            info.output = output
        except TimeoutError:
            info.status = "timeout"
            info.error = f"the run's deadline passed after {self.clock() - run.arrival:.3f} s at {info.node!r}"
        except asyncio.CancelledError:
            info.status = "cancelled"
            info.error = info.error or "cancelled"
        except (NoHealthyReplica, FlowError, OrchestratorError) as exc:
            info.status, info.error = "error", str(exc)
        except RequestRejected as exc:  # this run's request, not the engine: the replica stays in rotation
            info.status, info.error = "error", f"stage {info.node!r}: {exc}"
        except Exception as exc:  # a bug or an unforeseen backend failure: the run ends with the reason
            log.exception("run %s failed", run.run_id)
            info.status, info.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self._finish(run)

    def _loop_time(self, t: float) -> float:
        """Orchestrator clock -> event loop clock (they differ when a test injects a clock)."""
        return asyncio.get_running_loop().time() + (t - self.clock())

    def _finish(self, run: Run) -> None:
        info = run.info
        info.latency_s = self.clock() - run.arrival
        stats = self.run_stats[run.version.name]
        stats.statuses[info.status] += 1
        stats.latency.observe(info.latency_s)
        stats.retries += info.retries
        stats.pruned += info.pruned
        if info.slo_latency_s is not None and info.status != "cancelled":  # a caller's choice, not a miss
            info.slo_met = info.status in ("done", "fail") and info.latency_s <= info.slo_latency_s
            stats.slo_counted += 1
            stats.slo_met += int(info.slo_met)
        run.emit("run_finished", status=info.status, latency_s=round(info.latency_s, 6), error=info.error,
                 slo_met=info.slo_met)
        self._announce(info)
        run.close_streams()
        run.finished.set()
        self.active -= 1
        run.version.active_runs -= 1
        if run.version.active_runs == 0 and self.versions.get(run.version.name) is not run.version:
            asyncio.get_running_loop().create_task(self._retire_if_idle(run.version))
        self._finished_ids[run.run_id] = None
        self._evict()

    # ------------------------------------------------------------------ history
    def _evict(self, room: int = 0) -> None:
        """Drop the oldest finished runs until ``room`` more fit in ``retained_runs`` (never a run in flight)."""
        while len(self.runs) + room > self.config.retained_runs and self._finished_ids:
            run_id, _ = self._finished_ids.popitem(last=False)
            self.runs.pop(run_id, None)

    def _make_room(self, stats: RunStats | None = None) -> None:
        """Room in the history for one more run, or :class:`Overloaded` when it is full of runs in flight.

        An external run with no call in flight is not in flight: when nothing finished is left to
        evict, the one idle longest ends now (as its idle timeout would end it later; a later call
        naming it starts it afresh). Otherwise one client naming many runs would hold every place
        for ``external_run_idle_s`` and lock every other client out."""
        self._evict(room=1)
        if len(self.runs) >= self.config.retained_runs:
            idle = min((r for r in self.runs.values()
                        if r.external and not r.calls_in_flight and not r.finished.is_set()),
                       key=lambda r: r.last_active, default=None)
            if idle is not None:
                self._end_external(idle, reason="its place in the run history was needed")
                self._evict(room=1)
        if len(self.runs) >= self.config.retained_runs:
            if stats is not None:
                self._reject(stats)
            raise Overloaded(f"the run history is full of runs in flight ({len(self.runs)}, limit "
                             f"{self.config.retained_runs}); retry later", retry_after_s=1.0)

    async def run(self, inputs: dict[str, Any], **kwargs: Any) -> RunInfo:
        """Submit a run and wait for its end."""
        run = await self.submit(inputs, **kwargs)
        await run.finished.wait()
        return run.info

    def get(self, run_id: str) -> Run:
        try:
            return self.runs[run_id]
        except KeyError:
            raise UnknownRun(f"no run {run_id!r} (unknown, or evicted from the retained history)") from None

    def status(self, run_id: str) -> RunInfo:
        return self.get(run_id).info

    async def wait(self, run_id: str, timeout_s: float | None = None) -> RunInfo:
        run = self.get(run_id)
        await asyncio.wait_for(run.finished.wait(), timeout_s)
        return run.info

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run in flight (its calls are aborted in the engines); False if it had finished."""
        run = self.get(run_id)
        if run.task is None or run.task.done():
            return False
        run.task.cancel()
        await asyncio.gather(run.task, return_exceptions=True)
        return True

    async def events(self, run_id: str, *, tokens: bool = False) -> AsyncIterator[RunEvent]:
        """The run's events so far, then live ones until it finishes; with ``tokens``, also a ``token``
        event for each piece of text its LLM calls generate from now on (never stored: see
        :func:`_token_events`)."""
        run = self.get(run_id)
        queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        backlog = list(run.events)
        finished = run.info.status in FINISHED
        if not finished:
            run.subscribers.append(queue)
            if tokens:
                self.token_subscribers.setdefault(run_id, []).append(queue)
        try:
            for event in backlog:
                yield event
            if finished:
                return
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            if queue in run.subscribers:
                run.subscribers.remove(queue)
            listening = self.token_subscribers.get(run_id, [])
            if queue in listening:
                listening.remove(queue)
                if not listening:
                    del self.token_subscribers[run_id]

    # ------------------------------------------------------------------ external LLM calls
    async def chat(self, messages: str | tuple[ChatMessage, ...], *, stage: str, workflow: str | None = None,
                   run_id: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
                   top_p: float | None = None, stop: tuple[str, ...] | None = None,
                   options: dict[str, Any] | None = None, on_token: TokenSink | None = None) -> GenerationResult:
        """One LLM call from an external agent, scheduled as a call of ``stage`` of ``run_id``.

        ``messages`` are chat messages, or a raw prompt (legacy completions: no chat template).
        ``options`` are further :class:`GenerationRequest` fields (``seed``, ``response_format``,
        ``tools``, ``tool_choice``, ``logprobs``); a call using one that an engine of the stage's
        pool cannot honour is refused with :class:`RequestRejected` before it is queued.
        ``on_token`` receives the text as the engine generates it (engines that stream; others
        hand it the whole text once, at the end).

        A known ``run_id`` (one started here, or an external run named before)
        lends the call its SLO deadline and service so far; an unknown one
        starts an *external run* record (arrival = now) that later calls with
        the same id share, until it has been idle for ``external_run_idle_s``
        (a later call with its id then starts it afresh). Refused with
        :class:`Overloaded` when the stage's queue is full or the run history
        is full of runs in flight; :class:`RequestRejected` when the engine
        refuses the request (too long for the model's context, ...).
        """
        version = self.version(workflow)
        stage_ir = version.graph.stages.get(stage)
        if not isinstance(stage_ir, LLMStage):
            llm = [s.name for s in version.workflow.stages if isinstance(s, LLMStage)]
            raise BadRequest(f"workflow {version.name!r} has no LLM stage {stage!r} (LLM stages: {', '.join(llm)})")
        pool = version.pools[stage]
        if pool.full():
            pool.rejected += 1
            raise Overloaded(f"stage {stage!r} is overloaded: {pool.queued} calls are waiting "
                             f"(limit {pool.max_queue}); retry later",
                             retry_after_s=max(pool.load().expected_wait_s, 0.05), stage=stage)
        run = self.runs.get(run_id) if run_id else None
        if run is not None and run.external and run.finished.is_set():
            del self.runs[run.run_id]  # ended idle: this call starts it afresh
            self._finished_ids.pop(run.run_id, None)
            run = None
        if run is None:
            run = self._external_run(version, run_id)
        model = version.knobs.models.get(stage, stage_ir.models[0].model)
        cap = max_tokens or version.knobs.max_tokens.get(stage, stage_ir.max_tokens.preferred)
        call = self.executor.view(run, stage, model, stage_ir.input_tokens, round(stage_ir.mean_output_tokens(cap)), None)
        request = GenerationRequest(
            request_id=run.next_request_id(stage), prompt=messages,
            max_tokens=cap,
            temperature=stage_ir.temperature if temperature is None else temperature,
            top_p=stage_ir.top_p if top_p is None else top_p, stop=stage_ir.stop if stop is None else stop,
            priority=engine_priority(self.policy.priority(call)), constraint=version.constraints.get(stage),
            **(options or {}),
        )
        for replica in pool.replicas:  # refused here, before a slot is taken and before any answer byte
            if replica.engine is not None:
                replica.engine.check_request(request)
        started = self.clock()
        run.calls_in_flight += 1
        try:
            with streaming_to(on_token):
                result, replica, borrowed, _, queue_s = await self.executor.generate(pool, call, request, 1, False)
        finally:
            run.calls_in_flight -= 1
            run.last_active = self.clock()
        self.executor.record(run, CallRecord(
            stage=stage, kind="llm", outcome="ok" if result.finish_reason != "abort" else "error",
            started_s=started - run.arrival, latency_s=self.clock() - started, queue_s=queue_s,
            replica=replica.replica_id, engine=result.engine, model=model, borrowed=borrowed,
            prompt_tokens=result.prompt_tokens, output_tokens=result.output_tokens,
            after=run.info.calls[-1].seq if run.info.calls else None,  # an agent's calls: one after another
            **engine_timing(result)))
        run.emit("external_call", stage=stage, replica=replica.replica_id, latency_s=self.clock() - started)
        return result

    def _external_run(self, version: WorkflowVersion, run_id: str | None) -> Run:
        """The record of an external run named ``run_id`` (kept in the history), or of an anonymous call."""
        if run_id:
            self._make_room()
        now = self.clock()
        slo = version.workflow.slo
        run = Run(run_id or uuid.uuid4().hex[:16], version, {}, now, now + slo.latency_s if slo else None, None,
                  self.clock, next(self._numbers))
        run.info.status = "running"
        run.info.node = "external"
        if run_id:
            run.external = True
            self.runs[run.run_id] = run
            self._check_idle(run)
        return run

    def _check_idle(self, run: Run) -> None:
        """End external ``run`` if it has been idle long enough, else check again when it could be."""
        run.idle_timer = None
        if run.finished.is_set():
            return
        idle_s = self.clock() - run.last_active
        if run.calls_in_flight or idle_s < self.external_run_idle_s:
            wait_s = self.external_run_idle_s - (0.0 if run.calls_in_flight else idle_s)
            run.idle_timer = asyncio.get_running_loop().call_later(max(wait_s, 0.01), self._check_idle, run)
            return
        self._end_external(run, reason=f"no call for {self.external_run_idle_s:g} s")

    def _end_external(self, run: Run, reason: str) -> None:
        """End the idle external ``run`` (``done``, its latency up to its last call) for ``reason``."""
        if run.idle_timer is not None:
            run.idle_timer.cancel()
            run.idle_timer = None
        info = run.info
        info.status = "done"
        info.latency_s = run.last_active - run.arrival
        run.emit("run_finished", status="done", latency_s=round(info.latency_s, 6), error=None, slo_met=None,
                 reason=reason)
        self._announce(info)
        run.close_streams()
        run.finished.set()
        self._finished_ids[run.run_id] = None
        self._evict()

    def _announce(self, info: RunInfo) -> None:
        for listener in self.run_listeners:
            try:
                listener(info)
            except Exception:  # a broken listener must not end the run badly
                log.exception("run listener %r failed on run %s", listener, info.run_id)

    # ------------------------------------------------------------------ observability
    def ready(self) -> bool:
        return self._started and all(p.healthy for p in self.pools_by_name.values())

    def summary(self, workflow: str | None = None) -> dict[str, Any]:
        """Per-workflow, per-stage and per-replica figures (the CLI's and the demo's summary)."""
        version = self.version(workflow)
        stats = self.run_stats[version.name]
        stages = {}
        for (wf, stage), st in self.executor.stage_stats.items():
            if wf != version.name:
                continue
            stages[stage] = {
                "calls": sum(st.outcomes.values()), "outcomes": dict(st.outcomes), "cached": st.cached,
                "hedged": st.hedged, "borrowed": st.borrowed, "swapped": st.swapped,
                "p50_s": st.latency.percentile(50), "p95_s": st.latency.percentile(95),
                "p99_s": st.latency.percentile(99), **st.summary(),
            }
        pools = {}
        for pool in {p.name: p for p in version.pools.values()}.values():
            pools[pool.name] = {
                "kind": pool.kind, "model": pool.model, "queued": pool.queued, "running": pool.running,
                "rejected": pool.rejected, "borrowed": pool.borrowed,
                "replicas": {r.replica_id: self._replica_summary(r) for r in pool.replicas},
            }
        return {
            "workflow": version.name, "version": version.number, "runs": dict(stats.statuses),
            "rejected": stats.rejected, "retries": stats.retries, "pruned": stats.pruned,
            "slo_latency_s": version.workflow.slo.latency_s if version.workflow.slo else None,
            "slo_attainment": stats.slo_attainment,
            "latency_p50_s": stats.latency.percentile(50), "latency_p90_s": stats.latency.percentile(90),
            "latency_p95_s": stats.latency.percentile(95), "latency_p99_s": stats.latency.percentile(99),
            "stages": stages, "pools": pools,
            "cache": {"hits": self.cache.stats.hits, "misses": self.cache.stats.misses},
        }

    @staticmethod
    def _replica_summary(r: Replica) -> dict[str, Any]:
        out: dict[str, Any] = {"healthy": r.healthy, "inflight": r.inflight, "slots": r.slots, "served": r.served,
                               "lent": r.borrowed_served, "failure": r.failure, "recoveries": r.recoveries}
        if r.engine is not None:
            m = r.engine.metrics()
            out.update(engine=m.label, kv_cache_usage=m.kv_cache_usage, prefix_cache_hit_rate=m.prefix_cache_hit_rate,
                       preemptions=m.preemptions, kv_capacity_tokens=r.kv_capacity_tokens)
        return out

    def metrics_text(self) -> str:
        """Prometheus text exposition of the orchestrator's and engines' state."""
        out = PromText()
        for version in self.versions.values():
            wf = version.name
            stats = self.run_stats[wf]
            out.family("cortex_runs_total", "counter", "Finished runs by final status.")
            for status, n in sorted(stats.statuses.items()):
                out.sample("cortex_runs_total", n, workflow=wf, status=status)
            out.family("cortex_runs_rejected_total", "counter", "Runs refused by admission control (retryable).")
            out.sample("cortex_runs_rejected_total", stats.rejected, workflow=wf)
            out.family("cortex_runs_active", "gauge", "Runs in flight.")
            out.sample("cortex_runs_active", sum(1 for r in self.runs.values()
                                                 if r.version.name == wf and not r.finished.is_set()), workflow=wf)
            out.family("cortex_run_latency_seconds", "histogram", "End-to-end run latency.")
            out.histogram("cortex_run_latency_seconds", stats.latency, workflow=wf)
            out.family("cortex_slo_attainment", "gauge", "Fraction of finished runs that met the SLO latency "
                                                         "(cancelled runs are not counted).")
            if stats.slo_attainment is not None:
                out.sample("cortex_slo_attainment", stats.slo_attainment, workflow=wf)
            out.family("cortex_retries_total", "counter", "Loop iterations taken (retries).")
            out.sample("cortex_retries_total", stats.retries, workflow=wf)
        for (wf, stage), st in sorted(self.executor.stage_stats.items()):
            out.family("cortex_stage_calls_total", "counter", "Stage executions by outcome.")
            for outcome, n in sorted(st.outcomes.items()):
                out.sample("cortex_stage_calls_total", n, workflow=wf, stage=stage, outcome=outcome)
            out.family("cortex_stage_latency_seconds", "histogram", "Stage latency (queueing + service).")
            out.histogram("cortex_stage_latency_seconds", st.latency, workflow=wf, stage=stage)
            for name, hist, help_text in (
                ("cortex_stage_queue_seconds", st.queue, "Wait for a slot in Cortex's pool."),
                ("cortex_stage_service_seconds", st.service, "Stage latency after Cortex's queue (engine queue, "
                                                             "prefill and decode included)."),
                ("cortex_stage_engine_queue_seconds", st.engine_queue, "Wait inside the engine before its first "
                                                                       "scheduling (engines that report it)."),
                ("cortex_stage_ttft_seconds", st.ttft, "Dispatch to the engine until the first output token."),
                ("cortex_stage_output_tokens_per_second", st.tokens_per_s, "Decode rate per call (tokens after "
                                                                           "the first per second)."),
                ("cortex_stage_time_per_output_token_seconds", st.tpot, "Time per output token after the first "
                                                                        "(TPOT), per call."),
            ):
                if hist.count:
                    out.family(name, "histogram", help_text)
                    out.histogram(name, hist, workflow=wf, stage=stage)
            out.family("cortex_stage_prompt_tokens_total", "counter", "Prompt tokens the stage's calls sent.")
            out.sample("cortex_stage_prompt_tokens_total", st.prompt_tokens, workflow=wf, stage=stage)
            out.family("cortex_stage_output_tokens_total", "counter", "Output tokens generated by the stage's calls.")
            out.sample("cortex_stage_output_tokens_total", st.output_tokens, workflow=wf, stage=stage)
            out.family("cortex_stage_cache_hits_total", "counter", "Stage results served from the agentic-state cache.")
            out.sample("cortex_stage_cache_hits_total", st.cached, workflow=wf, stage=stage)
        for pool in self.pools_by_name.values():
            out.family("cortex_pool_queue_depth", "gauge", "Calls waiting for a slot in the pool.")
            out.sample("cortex_pool_queue_depth", pool.queued, pool=pool.name)
            out.family("cortex_pool_running", "gauge", "Calls holding a slot in the pool.")
            out.sample("cortex_pool_running", pool.running, pool=pool.name)
            out.family("cortex_pool_rejected_total", "counter", "Calls or runs refused because the pool's queue was full.")
            out.sample("cortex_pool_rejected_total", pool.rejected, pool=pool.name)
            out.family("cortex_pool_borrowed_total", "counter", "Calls served on an idle replica of another pool.")
            out.sample("cortex_pool_borrowed_total", pool.borrowed, pool=pool.name)
            for r in pool.replicas:
                out.family("cortex_replica_healthy", "gauge", "1 when the replica is in rotation.")
                out.sample("cortex_replica_healthy", int(r.healthy), pool=pool.name, replica=r.replica_id)
                out.family("cortex_replica_recoveries_total", "counter",
                           "Times the replica came back into rotation after a failure (health probes).")
                out.sample("cortex_replica_recoveries_total", r.recoveries, pool=pool.name, replica=r.replica_id)
                if r.engine is not None:
                    _engine_samples(out, pool.name, r.replica_id, r.engine)
            group = self._prefill_groups.get(pool.name)
            for replica_id, engine in zip(group.names, group.engines) if group is not None else ():
                _engine_samples(out, pool.name, replica_id, engine)  # a P/D pool's prefill engines
        out.family("cortex_cache_hits_total", "counter", "Agentic-state cache hits.")
        out.sample("cortex_cache_hits_total", self.cache.stats.hits)
        out.family("cortex_cache_misses_total", "counter", "Agentic-state cache misses.")
        out.sample("cortex_cache_misses_total", self.cache.stats.misses)
        return out.text()


def _stored_at(rep: ReplicaSpec, storage: Path) -> ReplicaSpec:
    """``rep`` with its engine's KV connector pointed at a P/D pool's store (:func:`with_storage`)."""
    kv = with_storage(rep.engine.kv_transfer, storage)
    return rep.model_copy(update={"engine": rep.engine.model_copy(update={"kv_transfer": kv})})


def _engine_samples(out: PromText, pool: str, replica: str, engine: Engine) -> None:
    """The ``cortex_replica_*`` gauges of one engine (a replica's, or a P/D pool's prefill engine's)."""
    m = engine.metrics()
    out.family("cortex_replica_kv_cache_usage", "gauge", "Used fraction of the engine's KV blocks.")
    out.sample("cortex_replica_kv_cache_usage", m.kv_cache_usage, pool=pool, replica=replica, engine=m.label)
    out.family("cortex_replica_prefix_cache_hit_rate", "gauge", "Prefix-cache hit rate since start.")
    if m.prefix_cache_hit_rate is not None:
        out.sample("cortex_replica_prefix_cache_hit_rate", m.prefix_cache_hit_rate, pool=pool, replica=replica,
                   engine=m.label)
    out.family("cortex_replica_requests_running", "gauge", "Requests in the engine's running batch.")
    out.sample("cortex_replica_requests_running", m.running, pool=pool, replica=replica, engine=m.label)
    out.family("cortex_replica_requests_waiting", "gauge",
               "Requests queued inside the engine (admitted by Cortex, not yet in its batch).")
    out.sample("cortex_replica_requests_waiting", m.waiting, pool=pool, replica=replica, engine=m.label)
