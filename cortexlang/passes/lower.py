"""Pass 4: lowering. Resolves model and database names and builds the IR.

Runs only on declarations the earlier passes accepted. Everything that can still
be wrong here (an unknown model, a context window too small for the declared
tokens, inconsistent KV facts) is reported as a diagnostic. A value the IR's own
constraints refuse (a zero service time, a 0% attainment) is reported as CX203 at
the attribute it was written in; nothing here raises.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from cortexlang import ir
from cortexlang.diagnostics import did_you_mean
from cortexlang.passes.constraints import INVALID_CONSTRAINT, lower_constraint
from cortexlang.passes.flow import FlowGraph
from cortexlang.passes.structure import Decl
from cortexlang.passes.values import NameUse, ValueContext

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The URL shape SQLAlchemy's ``make_url`` accepts (sqlalchemy/engine/url.py: a ``dialect[+driver]://``
# prefix, and a port that is a number), checked without importing SQLAlchemy, which would
# triple `cortexc check`'s start-up; the runtime connects with SQLAlchemy itself.
_DB_URL = re.compile(r"[\w+]+://(?:[^:/]*(?::[^@]*)?@)?(?:(?:\[[^/?]+\]|[^/:?]+)?(?::(?P<port>[^/?]*))?)?")
GPU_MEMORY = {"A100": 80 * 2**30, "H100": 80 * 2**30, "H200": 141 * 2**30, "L4": 24 * 2**30, "A10G": 24 * 2**30}


# IR fields whose attribute is spelt differently, to point at the value the IR refused.
_ATTRIBUTE_OF = {"service_s": "service", "budget_s": "budget", "ttl_s": "ttl", "statement_timeout_s": "timeout",
                 "pool_size": "pool", "latency_s": "latency", "rate_per_s": "rate", "memory_bytes": "memory",
                 "cost_per_hour": "cost", "budget_per_hour": "budget"}


def _refused(exc: ValidationError, decl: Decl, ctx: ValueContext) -> None:
    """Report the first value of ``decl`` that the IR's constraints refuse (CX203)."""
    err = exc.errors()[0]
    field = next((str(p) for p in reversed(err["loc"]) if isinstance(p, str)), "")
    attr = _ATTRIBUTE_OF.get(field, field)
    rule = str(err["msg"]).replace("Input should be", "must be").replace("Value error, ", "")
    span = _value_span(decl, attr)
    where = f"`{decl.type} {decl.label}`" if decl.label else f"`{decl.type}`"
    ctx.diags.error("CX203", f"`{attr}` is out of range in {where}: {rule}", span or decl.span)


def _value_span(decl: Decl, attr: str):
    if attr in decl.value_spans:
        return decl.value_spans[attr]
    return next((s for c in decl.children if (s := _value_span(c, attr)) is not None), None)


def lower_models(root: Decl, ctx: ValueContext) -> dict[str, ir.ModelSpec]:
    out: dict[str, ir.ModelSpec] = {}
    for d in root.children_of("model"):
        if not {"weights", "params", "max_context"} <= d.values.keys():
            continue  # missing or invalid: already reported
        dtype = d.get("dtype", "bfloat16")
        arch = [d.get(k) for k in ("layers", "kv_heads", "head_dim")]
        derived = 2 * arch[0] * arch[1] * arch[2] * DTYPE_BYTES[dtype] if all(arch) else None
        declared = d.get("kv_bytes_per_token")
        invalid = d.attr_spans.keys() - d.values.keys()  # written, but refused (already reported)
        if invalid & {"kv_bytes_per_token", "layers", "kv_heads", "head_dim", "dtype"}:
            continue
        if declared is None and derived is None:
            given = [k for k in ("layers", "kv_heads", "head_dim") if d.get(k)]
            ctx.diags.error("CX207", f"model `{d.label}` needs `kv_bytes_per_token`, or `layers`, `kv_heads` "
                            "and `head_dim` to derive it", d.span,
                            notes=[f"given: {', '.join(given)}"] if given else [])
            continue
        if declared is not None and derived is not None and declared != derived:
            ctx.diags.warning("CX207", f"model `{d.label}`: `kv_bytes_per_token` ({declared} B) differs from "
                              f"2 × layers × kv_heads × head_dim × {DTYPE_BYTES[dtype]} B = {derived} B",
                              d.value_spans["kv_bytes_per_token"], hint="the declared value is used")
        try:
            out[d.label] = ir.ModelSpec(
                name=d.label, weights=d.get("weights"), params=d.get("params"), max_context=d.get("max_context"),
                kv_bytes_per_token=declared or derived, dtype=dtype, layers=arch[0], kv_heads=arch[1],
                head_dim=arch[2], profile=d.get("profile"),
            )
        except ValidationError as exc:
            _refused(exc, d, ctx)
    return out


def lower_databases(root: Decl, ctx: ValueContext) -> dict[str, ir.Database]:
    out: dict[str, ir.Database] = {}
    for d in root.children_of("database"):
        url = d.get("url")
        if url is None:
            continue
        if not _is_db_url(url):
            ctx.diags.error("CX201", f"`{url}` is not a SQLAlchemy URL", d.value_spans["url"],
                            hint='for example "sqlite:///data/sales.db" or "postgresql+psycopg://host/db"')
            continue
        try:
            out[d.label] = ir.Database(
                name=d.label, url=url, access=d.get("access", "read_only"),
                statement_timeout_s=d.get("timeout", 5.0), row_limit=d.get("row_limit", 1000),
                pool_size=d.get("pool", 4), max_result_bytes=int(d.get("max_result_bytes", 1 << 20)),
            )
        except ValidationError as exc:
            _refused(exc, d, ctx)
    return out


def _is_db_url(url: str) -> bool:
    m = _DB_URL.match(url)
    port = m.group("port") if m else None
    return m is not None and (not port or (port.isascii() and port.isdigit() and int(port) <= 65535))


def lower_inventory(root: Decl, ctx: ValueContext) -> ir.Inventory | None:
    res = root.child("resources")
    if res is None:
        return None
    gpus = []
    for g in res.children_of("gpu"):
        if "count" in g.values and "cost" in g.values:
            try:
                gpus.append(ir.GpuResource(kind=g.label, count=g.get("count", 0), cost_per_hour=g.get("cost", 0.0),
                                           memory_bytes=g.get("memory", GPU_MEMORY.get(g.label))))
            except ValidationError as exc:
                _refused(exc, g, ctx)
    cpu_decl = res.child("cpu")
    cpu = None
    if cpu_decl is not None and "slots" in cpu_decl.values:
        try:
            cpu = ir.CpuResource(slots=cpu_decl.get("slots"), cost_per_hour=cpu_decl.get("cost", 0.0))
        except ValidationError as exc:
            _refused(exc, cpu_decl, ctx)
    return ir.Inventory(gpus=tuple(sorted(gpus, key=lambda g: g.kind)), cpu=cpu)


def _resolve(use: NameUse, table: dict, what: str, ctx: ValueContext, others: dict[str, str]) -> bool:
    if use.name in table:
        return True
    if others.get(use.name) == what:
        return False  # declared, but its declaration has errors (reported)
    if use.name in others:
        ctx.diags.error("CX302", f"`{use.name}` is a {others[use.name]}, not a {what}", use.span)
    else:
        ctx.diags.error("CX301", f"unknown {what} `{use.name}`", use.span, hint=did_you_mean(use.name, table))
    return False


def _cache(d: Decl) -> ir.CachePolicy | None:
    c = d.child("cache")
    if c is None:
        return None
    defaults = ir.CachePolicy()
    return ir.CachePolicy(enabled=c.get("enabled", True), ttl_s=c.get("ttl", defaults.ttl_s),
                          scope=c.get("scope", defaults.scope), max_entries=c.get("max_entries", defaults.max_entries))


def lower_workflow(wf: Decl, graph: FlowGraph, models: dict[str, ir.ModelSpec],
                   databases: dict[str, ir.Database], names: dict[str, str], ctx: ValueContext) -> ir.Workflow | None:
    """Build one workflow's IR; None if a reference could not be resolved (reported)."""
    stage_decls = {d.label: d for d in wf.children_of("llm", "sql", "tool")}
    stages: list = []
    ok = True
    for name, d in sorted(stage_decls.items()):
        try:
            stage = _lower_stage(d, stage_decls, models, databases, names, ctx)
        except ValidationError as exc:
            _refused(exc, d, ctx)
            stage = None
        ok = ok and stage is not None
        stages.append(stage)
    ok = ok and _check_pools([s for s in stages if isinstance(s, ir.LLMStage)], stage_decls, ctx)
    slo_d, load_d, vars_d = wf.child("slo"), wf.child("load"), wf.child("vars")
    slo = load = None
    try:
        if slo_d and {"latency", "attainment"} <= slo_d.values.keys():
            slo = ir.SLO(latency_s=slo_d.get("latency"), attainment=slo_d.get("attainment"))
    except ValidationError as exc:
        _refused(exc, slo_d, ctx)
        ok = False
    try:
        if load_d and "rate" in load_d.values:
            load = ir.Load(rate_per_s=load_d.get("rate"), pattern=load_d.get("pattern", "poisson"),
                           burstiness=load_d.get("burstiness", 1.0))
    except ValidationError as exc:
        _refused(exc, load_d, ctx)
        ok = False
    autoscale = _lower_autoscale(wf.child("autoscale"), [s for s in stages if isinstance(s, ir.LLMStage)], ctx)
    ok = ok and autoscale is not _BAD
    if not ok:
        return None
    edges, loops = _lower_graph(graph)
    fanouts = tuple(
        ir.FanOut(name=f.name, branches=(_sub_flow(f.subflow),) if f.subflow is not None else f.branches,
                  width=f.width, over=f.over, widths=f.widths, join=f.join)
        for f in sorted(graph.fanouts.values(), key=lambda f: f.name))
    return ir.Workflow(
        name=wf.label, inputs=tuple(u.name for u in wf.get("inputs", ())),
        vars=dict(vars_d.vars) if vars_d else {}, stages=tuple(stages), fanouts=fanouts,
        entry=graph.entry, edges=edges, loops=loops, slo=slo, load=load, autoscale=autoscale,
    )


def _check_pools(stages: list[ir.LLMStage], decls: dict[str, Decl], ctx: ValueContext) -> bool:
    """Stages sharing a declared pool run one model on its replicas: they must prefer the same one."""
    ok = True
    by_pool: dict[str, list[ir.LLMStage]] = {}
    for st in stages:
        if st.pool is not None:
            by_pool.setdefault(st.pool, []).append(st)
    for pool, members in sorted(by_pool.items()):
        first = members[0]
        for st in members[1:]:
            if st.models[0].model != first.models[0].model:
                ctx.diags.error("CX210", f"`{st.name}` and `{first.name}` share pool `{pool}` but prefer different "
                                f"models (`{st.models[0].model}`, `{first.models[0].model}`)",
                                decls[st.name].value_spans["pool"],
                                hint="a pool's replicas run one model: give both stages the same preferred model, "
                                     "or separate pools")
                ok = False
    return ok


_BAD = object()
"""An autoscale block with an error already reported."""


def _lower_autoscale(decl: Decl | None, stages: list[ir.LLMStage], ctx: ValueContext) -> ir.Autoscale | None | object:
    """The workflow's ``autoscale`` block; CX215 for a range of replicas written high..low or a pool block
    naming no LLM pool of the workflow."""
    if decl is None:
        return None
    pools = {st.name for st in stages} | {st.pool for st in stages if st.pool is not None}
    default = _replica_limits(decl, ctx)
    ok = default is not None
    per_pool = {}
    for d in decl.children_of("pool"):
        limits = _replica_limits(d, ctx)
        if d.label not in pools:
            ctx.diags.error("CX215", f"`autoscale` limits pool `{d.label}`, which is no LLM pool of this workflow",
                            d.label_span or d.span,
                            hint=did_you_mean(d.label, pools) or f"LLM pools: {', '.join(sorted(pools))}")
            ok = False
        elif limits is None:
            ok = False
        else:
            per_pool[d.label] = limits
    try:
        return ir.Autoscale(default=default, pools=per_pool, budget_per_hour=decl.get("budget")) if ok else _BAD
    except ValidationError as exc:
        _refused(exc, decl, ctx)
        return _BAD


def _replica_limits(decl: Decl, ctx: ValueContext) -> ir.ReplicaLimits | None:
    """``replicas = LOW..HIGH`` of ``decl`` (the IR's default when absent); CX215 when LOW > HIGH."""
    lo, hi = decl.get("replicas", (1, 4))
    if lo <= hi:
        return ir.ReplicaLimits(min_replicas=lo, max_replicas=hi)
    where = f"`pool {decl.label}`" if decl.label else "`autoscale`"
    ctx.diags.error("CX215", f"{where} allows at least {lo} and at most {hi} replicas",
                    decl.value_spans.get("replicas") or decl.span, hint=f"write the smaller bound first: {hi}..{lo}")
    return None


def _sub_flow(graph: FlowGraph) -> ir.SubFlow:
    edges, loops = _lower_graph(graph)
    return ir.SubFlow(entry=graph.entry, edges=edges, loops=loops)


def _lower_graph(graph: FlowGraph) -> tuple[tuple[ir.Edge, ...], tuple[ir.Loop, ...]]:
    """A checked flow's edges and loops in IR form, in canonical order."""
    edges = sorted(
        (ir.Edge(source=e.source, target=e.target,
                 condition=ir.Condition(kind=e.kind, values=e.values, field=e.field),
                 probability=round(e.probability, 12), loop=e.loop) for e in graph.edges),
        key=lambda e: (e.source, e.condition.kind, e.condition.values, e.target),
    )
    loops = tuple(ir.Loop(name=i.name, max_iterations=i.max, on_exhausted=i.then or "fail", parent=i.within,
                          rejoin_parent=i.rejoin)
                  for i in sorted(graph.loops.values(), key=lambda i: i.name))
    return tuple(edges), loops


def _lower_stage(d: Decl, stage_decls: dict[str, Decl], models: dict[str, ir.ModelSpec],
                 databases: dict[str, ir.Database], names: dict[str, str], ctx: ValueContext):
    common = dict(name=d.label, budget_s=d.get("budget"), prewarm=d.get("prewarm", False))
    if d.type == "llm":
        if not {"model", "prompt", "max_tokens", "input_tokens", "output_tokens"} <= d.values.keys():
            return None
        options = []
        for use, quality in d.get("model"):
            if not _resolve(use, models, "model", ctx, names):
                return None
            options.append(ir.ModelOption(model=use.name, quality=quality))
            limit = models[use.name].max_context
            need = d.get("input_tokens") + d.get("max_tokens").preferred
            if need > limit:
                ctx.diags.error("CX203", f"`{d.label}` needs up to {need} tokens (input_tokens + max_tokens) but "
                                f"model `{use.name}` holds {limit}", d.value_spans["max_tokens"])
                return None
        prefix, prompt = d.get("prefix_tokens", 0), d.get("input_tokens")
        if prefix > prompt:
            # The shared prefix is part of every prompt: a longer one describes no call the engines could
            # serve, and the simulator would model a prefix beyond the model's context.
            ctx.diags.error("CX203", f"`{d.label}` shares a prefix of {prefix} tokens but its prompts hold "
                            f"input_tokens = {prompt}; the prefix is part of the prompt",
                            d.value_spans["prefix_tokens"])
            return None
        constraint = lower_constraint(d, databases, names, ctx)
        if constraint is INVALID_CONSTRAINT:
            return None
        template, path = d.get("prompt")
        system = d.get("system")
        return ir.LLMStage(
            **common, models=tuple(options),
            prompt=ir.Prompt(template=template, path=path, system=system[0] if system else None),
            max_tokens=d.get("max_tokens"), temperature=d.get("temperature", 0.0), top_p=d.get("top_p", 1.0),
            stop=d.get("stop", ()), output=d.get("output", "text"), input_tokens=d.get("input_tokens"),
            output_tokens=d.get("output_tokens"), prefix_tokens=d.get("prefix_tokens", 0),
            output_cv=d.get("output_cv"), runaway=d.get("runaway", 0.0),
            output_correlation=d.get("output_correlation", 0.0), hedge=d.get("hedge", ir.IntKnob.fixed(1)), pool=d.get("pool").name if d.get("pool") else None,
            constraint=constraint,
        )
    if d.type == "sql":
        db = d.get("database")
        if db is None or not _resolve(db, databases, "database", ctx, names):
            return None
        query = d.get("query")
        if query is not None:
            if query.name not in stage_decls:
                ctx.diags.error("CX301", f"unknown stage `{query.name}`", query.span, hint=did_you_mean(query.name, stage_decls))
                return None
            if stage_decls[query.name].type == "sql":
                ctx.diags.error("CX302", f"`{query.name}` is an SQL stage; `query` names the stage that writes "
                                "the statement", query.span)
                return None
        return ir.SQLStage(**common, database=db.name, query_from=query.name if query else None,
                           **_service(d, 0.05), cache=_cache(d))
    if "entry" not in d.values or "service" not in d.values:
        return None
    retry, args = d.child("retry"), d.child("args")
    return ir.ToolStage(**common, entry=d.get("entry"), **_service(d, None), cache=_cache(d),
                        retry=ir.Retry(max_retries=retry.get("max"), backoff_s=retry.get("backoff", 0.0))
                        if retry is not None and "max" in retry.values else None,
                        args=dict(args.vars) if args is not None else {})


def _service(d: Decl, default: float | None) -> dict:
    """``service_s``/``service_cv``, and ``service_range_s`` for a range (uniform: its mean and CV)."""
    value = d.get("service", default)
    if not isinstance(value, tuple):
        return {"service_s": value, "service_cv": d.get("service_cv", 1.0)}
    lo, hi = value
    mean = (lo + hi) / 2
    return {"service_s": mean, "service_cv": (hi - lo) / (12 ** 0.5 * mean), "service_range_s": (lo, hi)}
