"""From a compiled program (and optionally a plan) to a :class:`RuntimeSpec`.

Three layouts:

* ``planned`` (:func:`spec_from_plan`): one dedicated pool per stage exactly as
  the plan sizes it -- replicas, device, tensor parallelism, ``max_num_seqs``,
  the KV budget (``kv_budget_tokens x kv_bytes_per_token`` bytes per replica)
  and executor slots -- and the plan's knob settings. A prefill/decode-
  disaggregated pool gets its decode replicas (``{stage}-i``, KV consumers) and
  its prefill replicas (``{stage}-prefill-i``, KV producers), linked by a KV
  connector (:mod:`runtime.engines.disaggregated`).
* ``default`` (:func:`default_spec`): no plan; one replica per LLM stage on the
  inventory's first device kind with a profile for the model (CPU when there is
  no GPU), every knob at its preferred value.
* ``shared`` (:func:`share_engines`): the no-isolation baseline derived from
  another spec: per model, one engine serving every stage of that model with
  the *same total* resources (summed KV space and ``max_num_seqs``, the union of
  the CPU cores, the largest tensor-parallel degree).

CPU engines are bound to cores here (``VLLM_CPU_OMP_THREADS_BIND``). A CPU
replica's ``tp`` is its width (:class:`planner.profiles.LatencyProfile`): the
replicas get consecutive blocks of ``tp`` cores in layout order, so each engine
runs on exactly as many cores as the profile that planned it was measured on --
an engine alone on a 2-core machine gets one core under a one-core profile, not
both, or its speed would be another configuration's. vLLM itself runs each CPU
engine unsharded (``tensor_parallel_size=1``) on its cores. Only when the widths
add up to more cores than the machine has do blocks wrap around and engines
share cores (the inventory declared more ``cpu`` slots than there are cores).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from cortexlang.ir import LLMStage, Program, SQLStage, Workflow
from planner.plan import Plan
from planner.profiles import ProfileNotFound, get_profile, profiles_for
from runtime.build.spec import (
    Backend, DatabaseSpec, ExecutorPoolSpec, Knobs, LLMPoolSpec, OrchestratorSpec, ReplicaSpec, RuntimeSpec,
)
from runtime.engines.base import EngineSpec, parse_cpu_list
from runtime.engines.disaggregated import kv_transfer_config
from runtime.profiles import cpu_cores

CPU_DEFAULT_KV_BYTES = 512 << 20
"""KV space of a CPU replica when no plan sizes it (plenty for 16 sequences of 2k tokens on a 135M model)."""
CPU_DEFAULT_MAX_SEQS = 16
GPU_DEFAULT_MAX_SEQS = 256
DEFAULT_TOOL_SLOTS = 4
QUEUE_PER_SLOT = 4
MIN_QUEUE = 32


class BuildError(ValueError):
    """The program/plan cannot be turned into a runtime (message says why and what to do)."""


def queue_bound(slots: int) -> int:
    """Waiting calls a pool accepts before it rejects: ``max(32, 4 x slots)``."""
    return max(MIN_QUEUE, QUEUE_PER_SLOT * slots)


def cpu_bindings(widths: list[int], cores: int | None = None) -> list[str]:
    """Core lists for CPU engines of the given widths (cores each), in order: consecutive blocks of
    the machine's ``cores``, wrapping around when the widths add up to more (see module docstring)."""
    n = max(cores or cpu_cores(), 1)
    out, start = [], 0
    for width in widths:
        block = sorted({(start + j) % n for j in range(min(max(width, 1), n))})
        out.append(_core_list(block))
        start = (start + max(width, 1)) % n
    return out


def preferred_knobs(workflow: Workflow) -> Knobs:
    """Every knob of ``workflow`` at its preferred (first) option."""
    llm = [s for s in workflow.stages if isinstance(s, LLMStage)]
    return Knobs(
        models={s.name: s.models[0].model for s in llm},
        max_tokens={s.name: s.max_tokens.preferred for s in llm},
        hedge={s.name: s.hedge.preferred for s in llm},
        retry_depth={lp.name: lp.max_iterations.preferred for lp in workflow.loops},
        fanout_width={f.name: f.width.preferred for f in workflow.fanouts if f.width is not None},
    )


def absolute_database_url(url: str, base_dir: Path) -> str:
    """SQLite file URLs made absolute against ``base_dir``; other URLs unchanged."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return url
    path = Path(parsed.database).expanduser()
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def _databases(program: Program, workflow: Workflow, base_dir: Path) -> tuple[DatabaseSpec, ...]:
    used = {s.database for s in workflow.stages if isinstance(s, SQLStage)}
    used |= {s.constraint.database for s in workflow.stages  # an `sql` output constraint reads its schema
             if isinstance(s, LLMStage) and s.constraint is not None and s.constraint.database}
    return tuple(
        DatabaseSpec(name=d.name, url=absolute_database_url(d.url, base_dir), pool_size=d.pool_size,
                     statement_timeout_s=d.statement_timeout_s, row_limit=d.row_limit,
                     max_result_bytes=d.max_result_bytes)
        for d in program.databases if d.name in used
    )


def _default_device(program: Program, profile: str | None) -> str:
    inventory = program.inventory
    gpus = [g.kind for g in (inventory.gpus if inventory else ()) if g.count > 0]
    if profile:
        for kind in gpus:
            if profiles_for(profile, kind):
                return kind
    return "CPU" if not gpus or (inventory and inventory.cpu) else gpus[0]


def _engine_spec(program: Program, model: str, device: str, tp: int, max_num_seqs: int, kv_bytes: int | None,
                 bind: str | None, served_name: str) -> EngineSpec:
    m = program.model(model)
    return EngineSpec(
        model=m.weights, served_model_name=served_name, dtype=m.dtype if device != "CPU" else "float32",
        max_model_len=m.max_context, max_num_seqs=max_num_seqs, kv_cache_bytes=kv_bytes,
        tensor_parallel_size=tp if device != "CPU" else 1,  # a CPU engine's width is its cores (see _bind_cpu)
        enable_prefix_caching=True, enforce_eager=True,
        cpu_threads_bind=bind if device == "CPU" else None, scheduling_policy="priority",
    )


def _bind_cpu(pools: list[LLMPoolSpec]) -> tuple[LLMPoolSpec, ...]:
    """Assign core lists to every CPU replica across all pools (a P/D pool's prefill replicas included),
    ``tp`` cores each."""
    groups = [(pi, field) for pi in range(len(pools)) for field in ("replicas", "prefill_replicas")]
    cpu = [(pi, field, ri) for pi, field in groups for ri, r in enumerate(getattr(pools[pi], field))
           if r.device == "CPU"]
    widths = [getattr(pools[pi], field)[ri].tp for pi, field, ri in cpu]
    binds = dict(zip(cpu, cpu_bindings(widths)))
    out = []
    for pi, p in enumerate(pools):
        update = {}
        for field in ("replicas", "prefill_replicas"):
            update[field] = tuple(
                r.model_copy(update={"engine": r.engine.model_copy(update={"cpu_threads_bind": binds[(pi, field, ri)]})})
                if (pi, field, ri) in binds else r
                for ri, r in enumerate(getattr(p, field))
            )
        out.append(p.model_copy(update=update))
    return tuple(out)


def _executor_pools(program: Program, workflow: Workflow, slots: dict[str, int]) -> tuple[ExecutorPoolSpec, ...]:
    pools = []
    for s in workflow.stages:
        if s.kind == "llm":
            continue
        default = program.database(s.database).pool_size if isinstance(s, SQLStage) else DEFAULT_TOOL_SLOTS
        n = slots.get(s.name, default)
        pools.append(ExecutorPoolSpec(name=s.name, stage=s.name, kind=s.kind, slots=n, max_queue=queue_bound(n),
                                      database=s.database if isinstance(s, SQLStage) else None))
    return tuple(pools)


def _kv_tokens(program: Program, model: str, kv_bytes: int | None, profile: str, device: str, tp: int) -> int:
    m = program.model(model)
    if kv_bytes is not None:
        return max(kv_bytes // m.kv_bytes_per_token, 1)
    try:
        return max(get_profile(profile, device, tp).kv_capacity_tokens(m.weight_bytes, m.kv_bytes_per_token), 1)
    except ProfileNotFound:
        return max(m.max_context * GPU_DEFAULT_MAX_SEQS, 1)


def default_spec(program: Program, workflow: str | None = None, *, base_dir: Path, source: str | None = None,
                 orchestrator: OrchestratorSpec | None = None, backend: Backend = "vllm-inproc") -> RuntimeSpec:
    """One replica per LLM stage (per declared ``pool`` for stages that name one), knobs at their
    preferred values (no plan). With no plan there is no profile width to honour, so the CPU engines
    split the machine's cores evenly (at least one each); an engine wider than any profile is
    estimated with the widest narrower one (a stand-in, and said so: ``runtime.profiles.describe``)."""
    wf = _workflow(program, workflow)
    knobs = preferred_knobs(wf)
    pools = []
    sharing: dict[str, list[str]] = {}
    for s in wf.stages:
        if isinstance(s, LLMStage) and s.pool is not None:
            sharing.setdefault(s.pool, []).append(s.name)
    for s in wf.stages:
        if not isinstance(s, LLMStage) or (s.pool is not None and sharing[s.pool][0] != s.name):
            continue
        model = knobs.models[s.name]
        m = program.model(model)
        profile = m.profile or model
        device = _default_device(program, m.profile)
        known = profiles_for(profile, device)
        tp = known[0].tp if known else 1  # the smallest tensor-parallel degree profiled for the device
        kv_bytes = CPU_DEFAULT_KV_BYTES if device == "CPU" else None
        seqs = CPU_DEFAULT_MAX_SEQS if device == "CPU" else GPU_DEFAULT_MAX_SEQS
        engine = _engine_spec(program, model, device, tp, seqs, kv_bytes, None, model)
        rep = ReplicaSpec(replica_id=f"{s.name}-0", device=device, profile=profile, tp=tp,
                          kv_capacity_tokens=_kv_tokens(program, model, kv_bytes, profile, device, tp), engine=engine)
        stages = tuple(sharing[s.pool]) if s.pool else (s.name,)
        warm = tuple(sorted(n for n in stages if wf.stage(n).warms_prefix))  # as the planner decides
        pools.append(LLMPoolSpec(name=s.name, stages=stages, model=model, replicas=(rep,), max_queue=queue_bound(seqs),
                                 prewarm=warm))
    cpu_engines = sum(1 for p in pools for r in p.replicas if r.device == "CPU")
    if cpu_engines:
        pools = _cpu_width(pools, max(1, cpu_cores() // cpu_engines))
    return RuntimeSpec(
        workflow=wf.name, source=source, base_dir=str(base_dir.resolve()), program=program, plan=None,
        layout="default", knobs=knobs, llm_pools=_bind_cpu(pools), executor_pools=_executor_pools(program, wf, {}),
        databases=_databases(program, wf, base_dir), orchestrator=orchestrator or OrchestratorSpec(), backend=backend,
    )


def spec_from_plan(program: Program, plan: Plan, workflow: str | None = None, *, base_dir: Path,
                   source: str | None = None, orchestrator: OrchestratorSpec | None = None,
                   backend: Backend = "vllm-inproc") -> RuntimeSpec:
    """The plan's pools and knobs: each plan pool serves the stages it lists (one, or several
    sharing its replicas)."""
    wf = _workflow(program, workflow)
    try:
        wp = plan.workflow(wf.name)
    except KeyError:
        raise BuildError(f"the plan has no workflow {wf.name!r} (it plans: "
                         f"{', '.join(w.workflow for w in plan.workflows)}); re-run `cortexc plan`") from None
    stages = {s.name for s in wf.stages}
    unknown = [p.stage for p in (*wp.llm_pools, *wp.executor_pools) if p.stage not in stages]
    if unknown:
        raise BuildError(f"the plan sizes stages the workflow does not have ({', '.join(unknown)}); "
                         "it was made for another version of the file: re-run `cortexc plan`")
    wrong = wp.knobs.violations(wf)
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise BuildError(f"the plan's knobs do not fit workflow {wf.name}: {wrong[0]}{more}; re-run `cortexc plan`")
    base = preferred_knobs(wf)
    knobs = Knobs(
        models={**base.models, **wp.knobs.models}, max_tokens={**base.max_tokens, **wp.knobs.max_tokens},
        hedge={**base.hedge, **wp.knobs.hedge}, retry_depth={**base.retry_depth, **wp.knobs.retry_depth},
        fanout_width={**base.fanout_width, **wp.knobs.fanout_width},
    )
    pools = []
    for lp in wp.llm_pools:
        try:
            program.model(lp.model)
        except KeyError:
            raise BuildError(f"the plan uses model {lp.model!r}, which the program does not declare") from None
        kv_bytes = lp.kv_budget_tokens * program.model(lp.model).kv_bytes_per_token if lp.kv_budget_tokens else None

        def replica(replica_id: str, kv_role: str | None) -> ReplicaSpec:
            engine = _engine_spec(program, lp.model, lp.device, lp.tp, lp.max_num_seqs, kv_bytes, None, lp.model)
            if kv_role is not None:  # a P/D pool: its engines are linked by a KV connector
                engine = engine.model_copy(update={"kv_transfer": kv_transfer_config(kv_role)})
            return ReplicaSpec(replica_id=replica_id, device=lp.device, profile=lp.profile, tp=lp.tp,
                               kv_capacity_tokens=_kv_tokens(program, lp.model, kv_bytes, lp.profile, lp.device, lp.tp),
                               engine=engine)

        split = lp.disaggregated
        reps = tuple(replica(f"{lp.stage}-{i}", "kv_consumer" if split else None) for i in range(lp.decode_replicas))
        prefill = tuple(replica(f"{lp.stage}-prefill-{i}", "kv_producer") for i in range(lp.prefill_replicas))
        pools.append(LLMPoolSpec(name=lp.stage, stages=tuple(lp.stages), model=lp.model, replicas=reps,
                                 max_queue=queue_bound(lp.max_num_seqs * lp.decode_replicas),
                                 prewarm=lp.prewarm_stages, prefill_replicas=prefill))
    planned = {stage for p in pools for stage in p.stages}
    default = default_spec(program, wf.name, base_dir=base_dir)
    pools += [p for p in default.llm_pools if p.name not in planned]  # stages the plan left out (should be none)
    return RuntimeSpec(
        workflow=wf.name, source=source, base_dir=str(base_dir.resolve()), program=program, plan=plan,
        layout="planned", knobs=knobs, llm_pools=_bind_cpu(pools),
        executor_pools=_executor_pools(program, wf, {e.stage: e.slots for e in wp.executor_pools}),
        databases=_databases(program, wf, base_dir), orchestrator=orchestrator or OrchestratorSpec(), backend=backend,
    )


def share_engines(spec: RuntimeSpec) -> RuntimeSpec:
    """The no-isolation baseline with the same total resources (see module docstring)."""
    by_model: dict[str, list[LLMPoolSpec]] = {}
    for p in spec.llm_pools:
        by_model.setdefault(p.model, []).append(p)
    pools = []
    for model, group in by_model.items():
        reps = [r for p in group for r in (*p.replicas, *p.prefill_replicas)]  # a P/D pool's prefill side too
        first = reps[0]
        kv_bytes = sum(r.engine.kv_cache_bytes or 0 for r in reps) or None
        kv_tokens = sum(r.kv_capacity_tokens for r in reps)
        seqs = sum(r.engine.max_num_seqs or 0 for r in reps) or None
        cores = sorted({c for r in reps for c in parse_cpu_list(r.engine.cpu_threads_bind) or ()})
        bind = _core_list(cores) if cores else None
        on_cpu = first.device == "CPU"
        tp = len(cores) if on_cpu and cores else max(r.tp for r in reps)  # a CPU engine's width: its cores
        engine = first.engine.model_copy(update={
            "kv_cache_bytes": kv_bytes, "max_num_seqs": seqs, "cpu_threads_bind": bind, "kv_transfer": None,
            "tensor_parallel_size": 1 if on_cpu else tp})
        rep = first.model_copy(update={"replica_id": f"shared-{model}-0", "kv_capacity_tokens": kv_tokens,
                                       "tp": tp, "engine": engine})
        stages = tuple(s for p in group for s in p.stages)
        pools.append(LLMPoolSpec(name=f"shared-{model}", stages=stages, model=model, replicas=(rep,),
                                 max_queue=sum(p.max_queue for p in group)))
    return spec.model_copy(update={"llm_pools": tuple(pools), "layout": "shared"})


def with_cpu_width(spec: RuntimeSpec, width: int) -> RuntimeSpec:
    """``spec`` with every CPU engine ``width`` cores wide (``tp``), pinned anew: what ``cortex calibrate
    --cpu-width`` measures, so that the planner gets a profile for engines of that width and can weigh
    one wide engine against several narrow ones."""
    if not 1 <= width <= cpu_cores():
        raise BuildError(f"a CPU engine is 1 to {cpu_cores()} cores wide on this machine (asked for {width})")
    engines = sum(1 for p in spec.llm_pools for r in (*p.replicas, *p.prefill_replicas) if r.device == "CPU")
    if engines * width > cpu_cores():  # they would share cores: a configuration no plan serves on
        raise BuildError(f"{engines} CPU engines x {width} cores exceed this machine's {cpu_cores()} cores; "
                         "calibrate a layout with fewer engines (a plan that shares one pool, or --plan FILE)")
    return spec.model_copy(update={"llm_pools": _bind_cpu(_cpu_width(list(spec.llm_pools), width))})


def _cpu_width(pools: list[LLMPoolSpec], width: int) -> list[LLMPoolSpec]:
    """``pools`` with every CPU replica ``width`` cores wide (not yet pinned: :func:`_bind_cpu`)."""
    def widen(reps: tuple[ReplicaSpec, ...]) -> tuple[ReplicaSpec, ...]:
        return tuple(r.model_copy(update={"tp": width}) if r.device == "CPU" else r for r in reps)

    return [p.model_copy(update={"replicas": widen(p.replicas), "prefill_replicas": widen(p.prefill_replicas)})
            for p in pools]


def _core_list(cores: list[int]) -> str:
    if cores == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}" if len(cores) > 1 else str(cores[0])
    return ",".join(map(str, cores))


def _workflow(program: Program, name: str | None) -> Workflow:
    try:
        return program.workflow(name)
    except KeyError:
        names = ", ".join(w.name for w in program.workflows) or "none"
        raise BuildError(f"no workflow {name!r} in the program (it has: {names})" if name else
                         f"the program has {len(program.workflows)} workflows ({names}); name one with --workflow")


__all__ = ["BuildError", "default_spec", "spec_from_plan", "share_engines", "with_cpu_width", "cpu_bindings",
           "queue_bound", "preferred_knobs", "absolute_database_url"]
