"""Executing runs: the call-graph walker and the LLM, SQL, tool and fan-out nodes.

The walker follows the run rules of :mod:`cortexlang.semantics` (the one
definition the compiler, planner and simulator share): run a node, take the
out-edge its outcome (or result field) selects, count loop iterations, leave a
loop through ``on_exhausted`` when its budget is spent (or when the policy
prunes the retry under SLO pressure), reset nested loops when their parent
iterates, stop at ``done`` or ``fail``.

Per node kind:

* **LLM**: render the prompt (sandboxed jinja2), build the policy's
  :class:`~runtime.policies.base.CallView`, let the policy adapt it
  (malleability: a lighter declared model, taken only when a replica serving it
  has a free slot now; more hedge candidates), acquire a slot in the stage's
  pool, generate. Hedged candidates go only to replicas free *now* (hedging
  never queues); the first *acceptable* result wins (not aborted, and a JSON
  object for ``output = json``) and the others are cancelled, which aborts them
  in the engine. An engine failure takes the replica out of rotation and the
  call is retried on another replica; with none left the run ends ``error``.
* **SQL**: extract one statement from the source stage's output, look it up
  in the agentic-state cache (key: scope, database, database version,
  normalised statement), else execute it read-only on a slot of the stage's
  pool; ``ok``/``empty``/``error`` is the executor's outcome.
* **tool**: call ``module:function`` with the run context on the stage's
  worker threads (or await it when it is a coroutine function), through the
  cache when declared; an exception is the ``error`` outcome.
* **fan-out**: run the branches as concurrent chains; join ``all`` (ok iff all
  ok), ``first`` (first ok branch wins, the others are cancelled), ``vote``
  (majority of the branches' final texts) or ``best`` (highest ``score``
  field); ``vote``/``best`` are ok iff at least one branch is.

A stage's ``budget`` bounds it (exceeding it is its ``error`` outcome); the
run's deadline bounds the whole walk (the orchestrator cancels the walk, which
cancels every call in flight, down to the engines).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cortexlang.ir import TERMINALS, Edge, FanOut, LLMStage, SQLStage, ToolStage
from cortexlang.semantics import Semantics, join_succeeds, join_waits_for_all
from runtime.cache import StateCache
from runtime.engines.base import EngineError, GenerationRequest, GenerationResult, RequestRejected
from runtime.orchestrator.errors import NoHealthyReplica
from runtime.orchestrator.metrics import StageStats
from runtime.orchestrator.pools import Pool, Replica
from runtime.orchestrator.results import (
    NO_ROWS, CallRecord, StageOutcome, parse_json_object, sql_value, tool_value,
)
from runtime.orchestrator.templates import PromptError
from runtime.policies.base import CallView, Policy
from runtime.sql.extract import extract_sql

if TYPE_CHECKING:
    from runtime.build.spec import OrchestratorSpec
    from runtime.orchestrator.runs import Run
    from runtime.orchestrator.versions import WorkflowVersion

PRIORITY_LIMIT = 2**31 - 1
_CALL_HAS_PREFIX_TOKENS = "prefix_tokens" in CallView.__dataclass_fields__
"""Newer policy interfaces take the stage's shared-prefix length; set it where they do."""
CHARS_PER_PREFIX_TOKEN = 4
"""Characters per token when cutting a prompt's shared prefix for affinity keys (a coarse, fixed ratio)."""


class FlowError(RuntimeError):
    """The flow has no edge for a node's outcome (the compiler rules this out; kept as a clear failure)."""


def text_of(value: Any) -> str:
    """The text of a stage result: a string, its ``text`` field, or JSON of anything else."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    return json.dumps(value, sort_keys=True, default=str)


def engine_priority(key: tuple[float, ...]) -> int:
    """vLLM's integer priority from the policy's key (first component, in milliseconds, clipped)."""
    first = key[0] if key else 0.0
    if not math.isfinite(first):
        return PRIORITY_LIMIT if first > 0 else -PRIORITY_LIMIT
    return max(-PRIORITY_LIMIT, min(PRIORITY_LIMIT, int(first * 1000)))


class Executor:
    """Walks runs and executes their nodes on the pools (see module docstring)."""

    def __init__(self, *, policy: Policy, cache: StateCache, config: "OrchestratorSpec",
                 pools_by_name: dict[str, Pool], clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.cache = cache
        self.config = config
        self.pools_by_name = pools_by_name
        self.clock = clock
        self.stage_stats: dict[tuple[str, str], StageStats] = {}
        self.max_engine_retries = 3

    def stats(self, workflow: str, stage: str) -> StageStats:
        key = (workflow, stage)
        st = self.stage_stats.get(key)
        if st is None:
            st = self.stage_stats[key] = StageStats()
        return st

    # ------------------------------------------------------------------ the walk
    async def walk(self, run: "Run") -> tuple[str, Any]:
        """Run ``run`` from its entry to a terminal; returns (terminal, output of the last node)."""
        v = run.version
        graph = v.graph
        node = v.workflow.entry
        prev: StageOutcome | None = None
        while node not in TERMINALS:
            run.info.node = node
            out = await self.node(run, node, prev)
            run.results[node] = out.value
            run.remember(node, out.value)
            edge = graph.semantics.select_edge(node, out.outcome, out.value)
            if edge is None:
                raise FlowError(f"stage {node!r} ended {out.outcome!r} and no edge of the flow covers it")
            target = edge.target if edge.loop is None else self.take_loop(run, edge)
            run.emit("edge", source=node, target=target, outcome=out.outcome, loop=edge.loop)
            prev, node = out, target
        run.info.node = node
        return node, prev.value if prev is not None else None

    def take_loop(self, run: "Run", edge: Edge) -> str:
        """Take loop edge ``edge`` (:meth:`Semantics.take`; the policy may prune the retry) and
        return where it leads."""
        v = run.version
        sem = v.graph.semantics
        counters = tuple(run.loops.get(name, 0) for name in sem.loop_names)
        step = sem.take(counters, edge)
        if step.exhausted is not None:
            run.emit("loop_exhausted", loop=step.exhausted, iterations=counters[sem.loop_index[step.exhausted]],
                     target=step.target)
            return step.target
        if self.config.malleable and step.target in v.pools:
            call = self.view(run, step.target, None, 0, 0, None)
            if self.policy.prune_retry(call, edge.loop, step.iteration, v.pools[step.target].load()):
                pruned = sem.exhaust(counters, edge)
                run.info.pruned += 1
                run.emit("retry_pruned", loop=edge.loop, iteration=step.iteration, target=pruned.target)
                return pruned.target
        run.loops = sem.counters_dict(step.counters)
        run.info.retries += 1
        run.info.loops = dict(run.loops)
        return step.target

    def attempt(self, run: "Run", node: str, scope: BranchScope | None = None) -> int:
        """The 1-based iteration of ``node``'s innermost loop (a branch's own loops counted in its scope)."""
        loop = run.version.graph.innermost_loop.get(node)
        if loop is None:
            return 1
        if scope is not None and loop in scope.loops:
            return scope.loops[loop] + 1
        return run.loops.get(loop, 0) + 1

    async def node(self, run: "Run", node: str, prev: StageOutcome | None,
                   scope: BranchScope | None = None) -> StageOutcome:
        v = run.version
        if node in v.graph.fanouts:
            out = await self.fanout(run, v.graph.fanouts[node], prev)
            _link(out, prev)
            return out
        stage = v.graph.stages[node]
        attempt = self.attempt(run, node, scope)
        branch = scope.index if scope is not None else None
        run.emit("stage_started", stage=node, attempt=attempt, branch=branch)
        started = self.clock()
        try:
            if stage.budget_s is not None:
                async with asyncio.timeout(stage.budget_s):
                    out = await self._stage(run, stage, prev, attempt, scope)
            else:
                out = await self._stage(run, stage, prev, attempt, scope)
        except TimeoutError:
            out = self.failed(run, stage.name, stage.kind, started, attempt, branch,
                              f"stage {stage.name!r} exceeded its budget of {stage.budget_s:g} s")
        _link(out, prev)
        rec = out.record
        run.emit("stage_finished", stage=node, outcome=out.outcome, latency_s=round(rec.latency_s, 6) if rec else None,
                 replica=rec.replica if rec else None, cached=rec.cached if rec else False,
                 error=out.error, branch=branch)
        return out

    async def _stage(self, run: "Run", stage: Any, prev: StageOutcome | None, attempt: int,
                     scope: BranchScope | None) -> StageOutcome:
        if isinstance(stage, LLMStage):
            return await self.llm(run, stage, prev, attempt, scope)
        if isinstance(stage, SQLStage):
            return await self.sql(run, stage, prev, attempt, scope)
        return await self.tool(run, stage, prev, attempt, scope)

    # ------------------------------------------------------------------ records
    def view(self, run: "Run", stage: str, model: str | None, input_tokens: int, output_tokens: int,
             prefix_key: str | None) -> CallView:
        g = run.version.graph
        now = self.clock()
        s = g.stages.get(stage)
        return CallView(
            run_id=run.number, workflow=run.version.name, stage=stage, kind=s.kind if s is not None else "tool",
            model=model, run_arrival_s=run.arrival, now_s=now, deadline_s=run.slo_deadline,
            stage_expected_s=g.expected_s(stage), remaining_critical_path_s=g.remaining_s(stage),
            remaining_std_s=g.remaining_std_s(stage), attained_service_s=run.attained_s,
            critical_path_service_s=run.critical_s, prefix_key=prefix_key, input_tokens=input_tokens,
            output_tokens=output_tokens, attempt=sum(run.loops.values()),
            last_replica_id=run.last_replica.get(model) if model else None,
        )

    def record(self, run: "Run", rec: CallRecord) -> None:
        rec.seq = len(run.info.calls)
        run.info.calls.append(rec)
        latency = rec.latency_s
        run.attained_s += latency
        run.critical_s += latency
        st = self.stats(run.version.name, rec.stage)
        st.outcomes[rec.outcome] += 1
        st.observe_call(latency, rec.queue_s, engine_queue_s=rec.engine_queue_s, ttft_s=rec.ttft_s,
                        engine_s=rec.engine_s, prompt_tokens=rec.prompt_tokens, output_tokens=rec.output_tokens)
        if rec.cached:
            st.cached += 1
        if rec.candidates > 1:
            st.hedged += 1
        if rec.borrowed:
            st.borrowed += 1
        if rec.engine and rec.engine not in run.info.engines:
            run.info.engines.append(rec.engine)

    def failed(self, run: "Run", stage: str, kind: str, started: float, attempt: int, branch: int | None,
               message: str) -> StageOutcome:
        rec = CallRecord(stage=stage, kind=kind, outcome="error", started_s=started - run.arrival,  # type: ignore[arg-type]
                         latency_s=self.clock() - started, attempt=attempt, error=message, branch=branch)
        self.record(run, rec)
        return StageOutcome("error", None, error=message, record=rec)

    # ------------------------------------------------------------------ LLM
    async def llm(self, run: "Run", stage: LLMStage, prev: StageOutcome | None, attempt: int,
                  scope: BranchScope | None) -> StageOutcome:
        branch = scope.index if scope is not None else None
        v = run.version
        started = self.clock()
        try:
            messages = v.renderer.render(stage.name, run.context(prev, attempt, scope))
        except PromptError as exc:
            return self.failed(run, stage.name, "llm", started, attempt, branch, str(exc))
        model = v.knobs.models.get(stage.name, stage.models[0].model)
        prefix_key = None
        if stage.prefix_tokens:
            prefix_key = f"{model}:{hash(messages[-1].content[:stage.prefix_tokens * CHARS_PER_PREFIX_TOKEN])}"
        cap = v.knobs.max_tokens.get(stage.name, stage.max_tokens.preferred)
        call = self.view(run, stage.name, model, stage.input_tokens, round(stage.mean_output_tokens(cap)), prefix_key)
        if _CALL_HAS_PREFIX_TOKENS:
            call.prefix_tokens = stage.prefix_tokens  # type: ignore[attr-defined]
        pool = v.pools[stage.name]
        hedge = v.knobs.hedge.get(stage.name, 1) if self.config.hedging else 1
        swapped = False
        if self.config.malleable and len(stage.models) > 1:
            adaptation = self.policy.adapt(call, pool.load(models=self._models_with_replicas(v, stage)))
            if adaptation.model and adaptation.model != model:
                alt = self._free_pool_for(v, adaptation.model, stage)
                if alt is not None:
                    pool, model, swapped = alt, adaptation.model, True
                    call.model = model
            if self.config.hedging and adaptation.hedge > hedge:
                hedge = adaptation.hedge
        key = self.policy.priority(call)
        request = GenerationRequest(
            request_id=run.next_request_id(stage.name), prompt=messages,
            max_tokens=cap,
            temperature=stage.temperature, top_p=stage.top_p, stop=stage.stop, priority=engine_priority(key),
            constraint=v.constraints.get(stage.name),
        )
        result, replica, borrowed, candidates, queue_s = await self.generate(
            pool, call, request, hedge, stage.output == "json")
        replica.remember_prefix(prefix_key)
        run.last_replica[model] = replica.replica_id
        outcome, value, error = "ok", None, None
        if result.finish_reason == "abort":
            outcome, error = "error", "the engine aborted the request"
        elif stage.output == "json":
            try:
                value = parse_json_object(result.text)
            except ValueError as exc:
                outcome, error = "error", f"stage {stage.name!r} should answer a JSON object: {exc}: {result.text[:200]!r}"
        else:
            value = {"text": result.text}
        rec = CallRecord(
            stage=stage.name, kind="llm", outcome=outcome, started_s=started - run.arrival,
            latency_s=self.clock() - started, queue_s=queue_s, attempt=attempt, replica=replica.replica_id,
            engine=result.engine, model=model, candidates=candidates, borrowed=borrowed,
            prompt_tokens=result.prompt_tokens, output_tokens=result.output_tokens, error=error, branch=branch,
            **engine_timing(result),
        )
        self.record(run, rec)
        if swapped:
            self.stats(v.name, stage.name).swapped += 1
        return StageOutcome(outcome, value, error=error, record=rec)

    def _models_with_replicas(self, v: "WorkflowVersion", stage: LLMStage) -> tuple[str, ...]:
        served = {p.model for p in set(v.pools.values()) if p.model and p.healthy}
        return tuple(o.model for o in stage.models if o.model in served)

    def _free_pool_for(self, v: "WorkflowVersion", model: str, stage: LLMStage) -> Pool | None:
        """A pool of this version serving ``model`` with a free replica now (a swap never queues)."""
        if model not in {o.model for o in stage.models}:
            return None
        for p in v.pools.values():
            if p.model == model and not p.queued and any(r.free for r in p.replicas):
                return p
        return None

    async def generate(self, pool: Pool, call: CallView, request: GenerationRequest, hedge: int,
                       want_json: bool) -> tuple[GenerationResult, Replica, bool, int, float]:
        """Acquire, generate (hedged when spare replicas allow), fail over; see module docstring."""
        t0 = self.clock()
        failures = 0
        while True:
            replica, borrowed = await pool.acquire(call)
            queue_s = self.clock() - t0
            extras: list[Replica] = []
            while len(extras) < hedge - 1:
                spare = pool.try_acquire(call, frozenset({replica.replica_id, *(e.replica_id for e in extras)}))
                if spare is None:
                    break
                extras.append(spare)
            if not extras:
                try:
                    assert replica.engine is not None
                    result = await replica.engine.generate(request)
                except EngineError as exc:
                    pool.release(replica)
                    failures = self._engine_failed(replica, exc, failures)
                    continue
                except BaseException:
                    pool.release(replica)
                    raise
                pool.release(replica)
                if result.finish_reason == "abort" and not await self._healthy(replica):
                    failures = self._engine_failed(replica, EngineError("stopped mid-request"), failures)
                    continue
                return result, replica, borrowed, 1, queue_s
            raced = await self._race(pool, [replica, *extras], request, want_json)
            if raced is not None:
                result, winner = raced
                return result, winner, borrowed and winner is replica, 1 + len(extras), queue_s
            failures += 1
            if failures > self.max_engine_retries:
                raise NoHealthyReplica(f"every hedged candidate of stage {call.stage!r} failed")

    async def _race(self, pool: Pool, replicas: list[Replica], request: GenerationRequest,
                    want_json: bool) -> tuple[GenerationResult, Replica] | None:
        """Run one candidate per replica; the first acceptable wins, the others are cancelled (aborted)."""
        requests = [request] + [request.model_copy(update={"request_id": f"{request.request_id}h{i}", "seed": i})
                                for i in range(1, len(replicas))]
        tasks = {asyncio.ensure_future(r.engine.generate(q)): r  # type: ignore[union-attr]
                 for r, q in zip(replicas, requests)}
        pending = set(tasks)
        fallback: tuple[GenerationResult, Replica] | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                rejected: RequestRejected | None = None
                for task in done:
                    replica = tasks[task]
                    exc = task.exception()
                    if exc is not None:
                        if isinstance(exc, RequestRejected):  # every candidate is the same request
                            rejected = exc
                            continue
                        if isinstance(exc, EngineError):
                            self._engine_failed(replica, exc, 0)
                        continue
                    result = task.result()
                    if _acceptable(result, want_json):
                        return result, replica
                    if result.finish_reason == "abort" and not await self._healthy(replica):
                        self._engine_failed(replica, EngineError("stopped mid-request"), 0)
                        continue
                    fallback = fallback or (result, replica)
                if rejected is not None:
                    raise rejected
            return fallback
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            for r in replicas:
                pool.release(r)

    async def _healthy(self, replica: Replica) -> bool:
        try:
            return (await replica.engine.health()).ok  # type: ignore[union-attr]
        except Exception:
            return False

    def _engine_failed(self, replica: Replica, exc: BaseException, failures: int) -> int:
        owner = self.pools_by_name.get(replica.pool)
        if owner is not None:
            owner.fail_replica(replica, f"{type(exc).__name__}: {exc}")
        failures += 1
        if failures > self.max_engine_retries:
            raise NoHealthyReplica(f"replica {replica.replica_id} failed and retries are spent: {exc}") from exc
        return failures

    # ------------------------------------------------------------------ SQL
    async def sql(self, run: "Run", stage: SQLStage, prev: StageOutcome | None, attempt: int,
                  scope: BranchScope | None) -> StageOutcome:
        branch = scope.index if scope is not None else None
        v = run.version
        started = self.clock()
        if stage.query_from:
            source = stage.query_from
            value = (scope.results if scope is not None else {}).get(source, run.results.get(source))
        else:
            source = "the previous stage"
            value = prev.value if prev is not None else None
        statement = extract_sql(text_of(value))
        if not statement:
            return self.failed(run, stage.name, "sql", started, attempt, branch,
                               f"no SQL statement in the output of {source}")
        run.last_sql = statement
        executor = v.sql[stage.database]
        scope = db_version = None
        result = None
        if stage.cache is not None and stage.cache.enabled:
            scope = self.scope(run, stage.cache.scope)
            db_version = await executor.version()
            result = await self.cache.get_sql(scope, stage.database, db_version, statement)
        queue_s = 0.0
        replica_id = None
        if result is None:
            pool = v.pools[stage.name]
            replica, _ = await pool.acquire(self.view(run, stage.name, None, 0, 0, None))
            queue_s = self.clock() - started
            replica_id = replica.replica_id
            try:
                result = await executor.execute(statement)
            finally:
                pool.release(replica)
            if scope is not None and db_version is not None:
                await self.cache.put_sql(scope, db_version, result, ttl_s=stage.cache.ttl_s)  # type: ignore[union-attr]
        run.last_sql = result.statement or statement
        error = result.error if result.outcome == "error" else (NO_ROWS if result.outcome == "empty" else None)
        rec = CallRecord(stage=stage.name, kind="sql", outcome=result.outcome, started_s=started - run.arrival,
                         latency_s=self.clock() - started, queue_s=queue_s, attempt=attempt, replica=replica_id,
                         cached=result.cached, error=error, branch=branch)
        self.record(run, rec)
        return StageOutcome(result.outcome, sql_value(result), error=error, statement=result.statement, record=rec)

    def scope(self, run: "Run", scope: str) -> str:
        if scope == "run":
            return f"run:{run.run_id}"
        if scope == "workflow":
            return f"workflow:{run.version.name}"
        return "global"

    # ------------------------------------------------------------------ tools
    async def tool(self, run: "Run", stage: ToolStage, prev: StageOutcome | None, attempt: int,
                   scope: BranchScope | None) -> StageOutcome:
        branch = scope.index if scope is not None else None
        v = run.version
        started = self.clock()
        tool = v.tools[stage.name]
        ctx = run.context(prev, attempt, scope)
        try:
            args = v.renderer.arguments(stage.name, ctx)
        except PromptError as exc:
            return self.failed(run, stage.name, "tool", started, attempt, branch, str(exc))
        # A tool without ``args`` sees the run's context but not ``history``: it grows with every
        # visit and would make every call's cache key (the context) unique; ``args`` may use it.
        ctx.pop("history", None)
        received: Any = args if args is not None else ctx  # what the tool gets is its cache key
        cache_scope = None
        value = None
        cached = False
        if stage.cache is not None and stage.cache.enabled:
            cache_scope = self.scope(run, stage.cache.scope)
            value = await self.cache.get_tool(cache_scope, stage.entry, received)
            cached = value is not None
        queue_s = 0.0
        replica_id = None
        if value is None:
            pool = v.pools[stage.name]
            replica, _ = await pool.acquire(self.view(run, stage.name, None, 0, 0, None))
            queue_s = self.clock() - started
            replica_id = replica.replica_id
            try:  # the slot goes back however the call ends (a `first` join cancels the losers)
                value = tool_value(await self._call_tool(tool, stage, ctx, args))
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                rec = CallRecord(stage=stage.name, kind="tool", outcome="error", started_s=started - run.arrival,
                                 latency_s=self.clock() - started, queue_s=queue_s, attempt=attempt,
                                 replica=replica_id, error=message, branch=branch)
                self.record(run, rec)
                return StageOutcome("error", None, error=message, record=rec)
            finally:
                pool.release(replica)
            if cache_scope is not None:
                await self.cache.put_tool(cache_scope, stage.entry, received, value, ttl_s=stage.cache.ttl_s)  # type: ignore[union-attr]
        rec = CallRecord(stage=stage.name, kind="tool", outcome="ok", started_s=started - run.arrival,
                         latency_s=self.clock() - started, queue_s=queue_s, attempt=attempt, replica=replica_id,
                         cached=cached, branch=branch)
        self.record(run, rec)
        return StageOutcome("ok", value, record=rec)

    @staticmethod
    async def _call_tool(tool: Any, stage: ToolStage, ctx: dict[str, Any], args: dict[str, str] | None) -> Any:
        """One call of ``stage``'s function (with ``args`` as keywords, else with the context), its
        retries included: a failed attempt is retried up to ``retry.max_retries`` times, the ``i``-th
        retry after ``retry.backoff_s * 2**(i-1)``; the last attempt's exception propagates."""
        retries = stage.retry.max_retries if stage.retry is not None else 0
        call = partial(tool.func, **args) if args is not None else partial(tool.func, ctx)
        for i in range(retries + 1):
            try:
                if tool.is_async:
                    return await call()
                return await asyncio.get_running_loop().run_in_executor(tool.threads, call)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception:
                if i == retries:
                    raise
                await asyncio.sleep(stage.retry.backoff_s * 2 ** i)  # type: ignore[union-attr]
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ fan-out
    async def fanout(self, run: "Run", fo: FanOut, prev: StageOutcome | None) -> StageOutcome:
        v = run.version
        sem = v.graph.semantics
        started = self.clock()
        try:
            items = self.map_items(run, fo)
        except FlowError as exc:
            return self._fanout_finished(run, fo, started, "error", {"branches": []}, str(exc), 0)
        width = len(items) if items is not None else sem.width_pmf(fo.name)[0][0]
        run.emit("fanout_started", fanout=fo.name, branches=width, join=fo.join)
        tasks = [asyncio.ensure_future(self._branch(
            run, sem.branch(fo.name, sem.branch_index(fo.name, i)),
            BranchScope(i, items[i] if items is not None else None), prev)) for i in range(width)]
        results: list[tuple[bool, dict[str, Any], str | None] | None] = [None] * len(tasks)
        winner: int | None = None
        try:
            if not join_waits_for_all(fo.join):
                index = {t: i for i, t in enumerate(tasks)}
                pending = set(tasks)
                while pending and winner is None:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for t in sorted(done, key=index.__getitem__):
                        results[index[t]] = t.result()
                        if winner is None and t.result()[0]:
                            winner = index[t]
            else:
                for i, r in enumerate(await asyncio.gather(*tasks)):
                    results[i] = r
        finally:
            unfinished = [t for t in tasks if not t.done()]
            for t in unfinished:
                t.cancel()
            if unfinished:
                await asyncio.gather(*unfinished, return_exceptions=True)
        finished = [(i, r) for i, r in enumerate(results) if r is not None]
        ok = [(i, r) for i, r in finished if r[0]]
        success = join_succeeds(fo.join, [r is not None and r[0] for r in results])
        if fo.join in ("vote", "best"):
            winner = _vote(ok) if fo.join == "vote" else _best(ok)
        branches = [r[1] if r is not None else {} for r in results]
        value: dict[str, Any] = {"branches": branches}
        if winner is not None:
            value["winner"] = winner
        if len(fo.branches) > 1:  # distinct stage names: publish them at the top level too (rag's dense/sparse/web)
            for b in branches:
                run.results.update(b)
        errors = [r[2] for _, r in finished if not r[0] and r[2]]
        error = None if success else (errors[0] if errors else f"fan-out {fo.name!r}: no branch succeeded")
        return self._fanout_finished(run, fo, started, "ok" if success else "error", value, error, width, winner)

    def _fanout_finished(self, run: "Run", fo: FanOut, started: float, outcome: str, value: dict[str, Any],
                         error: str | None, width: int, winner: int | None = None) -> StageOutcome:
        rec = CallRecord(stage=fo.name, kind="fanout", outcome=outcome, started_s=started - run.arrival,  # type: ignore[arg-type]
                         latency_s=self.clock() - started, error=error, candidates=width, seq=len(run.info.calls))
        run.info.calls.append(rec)  # not record(): its branches' calls already count as service
        self.stats(run.version.name, fo.name).outcomes[outcome] += 1
        self.stats(run.version.name, fo.name).latency.observe(rec.latency_s)
        run.emit("fanout_finished", fanout=fo.name, outcome=outcome, winner=winner)
        return StageOutcome(outcome, value, error=error, record=rec)

    def map_items(self, run: "Run", fo: FanOut) -> list[Any] | None:
        """The items a map fan-out runs one branch for (None for a fan-out of fixed width), capped
        by its width knob. Raises :class:`FlowError` when the source holds no list."""
        if fo.over is None:
            return None
        source, _, field = fo.over.partition(".")
        value = run.results.get(source)
        if field:
            value = value.get(field) if isinstance(value, dict) else None
        elif source in run.version.graph.fanouts and isinstance(value, dict):
            value = value.get("branches")
        if not isinstance(value, list):
            raise FlowError(f"fan-out {fo.name!r} maps over `{fo.over}`, which is not a list "
                            f"(got {type(value).__name__})")
        cap = run.version.graph.semantics.width.get(fo.name)
        return value if cap is None else value[:cap]

    async def _branch(self, run: "Run", sem: Semantics, scope: BranchScope,
                      prev: StageOutcome | None) -> tuple[bool, dict[str, Any], str | None]:
        """Walk one branch's sub-flow to ``done`` (ok) or ``fail``: (ok, results by stage, error)."""
        counters = sem.initial_counters()
        node, last, error = sem.graph.entry, prev, None
        while node not in TERMINALS:
            out = await self.node(run, node, last, scope)
            scope.results[node] = out.value
            run.remember(node, out.value)
            if out.outcome != "ok":
                error = out.error or f"stage {node!r} ended {out.outcome}"
            edge = sem.select_edge(node, out.outcome, out.value)
            if edge is None:
                raise FlowError(f"stage {node!r} ended {out.outcome!r} and no edge of its branch covers it")
            step = sem.take(counters, edge)
            counters = step.counters
            scope.loops = sem.counters_dict(counters)
            node, last = step.target, out
        return node == "done", scope.results, None if node == "done" else (error or "the branch failed")


@dataclass
class BranchScope:
    """What one fan-out branch run adds to its stages' context: its index, the map item it works
    on, its stages' results so far and its own loops' counters."""

    index: int
    item: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    loops: dict[str, int] = field(default_factory=dict)


def engine_timing(result: GenerationResult) -> dict[str, Any]:
    """The engine's own measurements of one call, as :class:`CallRecord` fields."""
    t = result.timing
    return {"engine_queue_s": t.queue_s, "ttft_s": t.ttft_s, "engine_s": t.total_s,
            "engine_prefill_s": t.prefill_s, "engine_decode_s": t.decode_s,
            "cached_tokens": result.cached_prompt_tokens, "finish_reason": result.finish_reason}


def _link(out: StageOutcome, prev: StageOutcome | None) -> None:
    """Record which call led to ``out`` (the trace's ``parents``; see :class:`CallRecord`.after)."""
    if out.record is not None and prev is not None and prev.record is not None:
        out.record.after = prev.record.seq


def _acceptable(result: GenerationResult, want_json: bool) -> bool:
    if result.finish_reason == "abort":
        return False
    if want_json:
        try:
            parse_json_object(result.text)
        except ValueError:
            return False
    return True


def _vote(ok: list[tuple[int, tuple[bool, dict[str, Any], str | None]]]) -> int | None:
    """Index of a branch holding the most common final answer (lowest index among ties)."""
    if not ok:
        return None
    answers = {i: text_of(list(r[1].values())[-1]).strip().lower() if r[1] else "" for i, r in ok}
    counts = Counter(answers.values())
    top = max(counts.values())
    return min(i for i, a in answers.items() if counts[a] == top)


def _best(ok: list[tuple[int, tuple[bool, dict[str, Any], str | None]]]) -> int | None:
    """Index of the branch whose final result has the highest numeric ``score`` field."""
    best, best_score = None, -math.inf
    for i, r in ok:
        last = list(r[1].values())[-1] if r[1] else None
        try:
            score = float(last.get("score")) if isinstance(last, dict) else -math.inf
        except (TypeError, ValueError):
            score = -math.inf
        if best is None or score > best_score:
            best, best_score = i, score
    return best
