"""The Cortex intermediate representation (IR): a typed, frozen call graph.

This module is the contract between the front end (``cortexlang.syntax`` and
``cortexlang.passes``) and every consumer (``planner``, ``runtime``). Consumers
import this module, never the parser.

Conventions, for every model here:

* All models are frozen pydantic models with ``extra="forbid"``.
* Units are normalised: durations in seconds, sizes in bytes, rates per second,
  money in US dollars per hour, probabilities and qualities as fractions in [0, 1].
* Collections are tuples sorted by name where order carries no meaning, so the
  canonical JSON (:func:`Program.canonical_json`) is stable across runs.
* Source positions are deliberately absent: ``cortexc fmt`` must not change the IR.

The call graph
--------------
A workflow's graph has *nodes* (stages, fan-out groups) and two terminals,
``done`` and ``fail``. Execution starts at ``entry``. After a node finishes it
has an *outcome*: ``ok``/``error`` for LLM and tool stages and fan-outs, and
``ok``/``error``/``empty`` for SQL stages. Exactly one out-edge is then taken:

* an edge with ``condition.kind == "always"`` is the node's only out-edge;
* otherwise the node's out-edges form a *branch*: ``outcome`` conditions
  matching the node's outcome, or ``field`` conditions matching a named field of
  the node's result, with one ``else`` edge catching the rest (mandatory for
  field branches; outcome branches may instead list every outcome).

Each edge carries ``probability``, the planning probability that it is taken
when its source finishes (a node's out-edges sum to 1).

Loops: an edge with ``loop`` set is a *loop edge*. The graph without loop edges
is acyclic. Taking a loop edge counts one iteration of that loop; when the
loop's budget (``Loop.max_iterations``) is spent, the edge leads to
``Loop.on_exhausted`` instead. A loop with ``parent`` is nested: its counter
resets whenever an edge of the parent loop is taken.

A loop whose budget is spent inside an enclosing loop may rejoin it
(``Loop.rejoin_parent``): leaving through ``on_exhausted`` then counts as an
iteration of the parent loop (and is bounded by the parent's budget).

Fan-out: a :class:`FanOut` node starts its branches in parallel; each branch is
a :class:`SubFlow`, a call graph of its own (branches, loops, nested fan-outs)
that ends at ``done`` (branch ok) or ``fail``. The number of branches is fixed,
a knob, or the length of a list produced at run time (a *map*). The join
decides the fan-out's outcome: ``all`` waits for every branch (ok iff all ok);
``first`` finishes with the first ok branch and cancels the rest; ``vote`` and
``best`` wait for every branch and pick a result (majority answer, highest
``score`` field), ok iff at least one branch is ok.

These rules are implemented once, in :mod:`cortexlang.semantics`.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IR_VERSION = "1"

TERMINALS = ("done", "fail")
"""Names of the two terminal nodes. They are reserved words in the language."""

OUTCOMES: dict[str, tuple[str, ...]] = {
    "llm": ("ok", "error"),
    "tool": ("ok", "error"),
    "sql": ("ok", "empty", "error"),
    "fanout": ("ok", "error"),
}
"""The outcomes each node kind can end with."""


TEMPLATE_BUILTINS = ("previous", "attempt", "error", "sql", "history", "branch", "item")
"""Variables the runtime gives every prompt template besides the workflow's inputs, its
``vars`` and the results of earlier stages (by stage name): ``previous`` is the result of
the stage that led here, ``attempt`` the 1-based iteration of the innermost loop being
iterated, ``error`` the previous stage's error message (or "the query returned no rows"
after an ``empty`` SQL outcome), ``sql`` the last statement an SQL stage ran, ``history``
maps each stage to the results of its earlier visits in this run (oldest first; a loop body
reads its previous iterations there). Inside a fan-out branch, ``branch`` is the branch's
0-based index and ``item`` the list element a map's branch works on (None otherwise)."""


class IRModel(BaseModel):
    """Base of every IR model: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- knobs


class IntOption(IRModel):
    """One admissible value of an integer knob and its declared relative quality."""

    value: int = Field(description="The knob's value, e.g. a token or retry count.")
    quality: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="Quality relative to the preferred option (1.0 = no loss).",
    )


class ModelOption(IRModel):
    """One admissible model for a malleable LLM stage and its declared relative quality."""

    model: str = Field(description="Name of a declared model.")
    quality: float = Field(default=1.0, ge=0.0, le=1.0)


class IntKnob(IRModel):
    """An integer setting the planner or runtime may turn.

    ``options[0]`` is the preferred value (what runs when nothing is under
    pressure). A knob with one option is fixed.
    """

    options: tuple[IntOption, ...] = Field(min_length=1)

    @property
    def preferred(self) -> int:
        return self.options[0].value

    @property
    def malleable(self) -> bool:
        return len(self.options) > 1

    @classmethod
    def fixed(cls, value: int) -> "IntKnob":
        return cls(options=(IntOption(value=value),))


# --------------------------------------------------------------------------- declarations


class ModelSpec(IRModel):
    """A model declaration: weights and the facts the planner needs."""

    name: str
    weights: str = Field(description="Local path or model id of the weights.")
    params: float = Field(gt=0, description="Parameter count.")
    max_context: int = Field(gt=0, description="Maximum context length in tokens.")
    kv_bytes_per_token: int = Field(
        gt=0, description="KV-cache bytes per token (declared or derived from the architecture)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    profile: str | None = Field(
        default=None, description="Name of the performance profile family, e.g. 'llama-3-8b'."
    )

    @property
    def weight_bytes(self) -> int:
        return int(self.params * {"float32": 4, "bfloat16": 2, "float16": 2}[self.dtype])


MAX_COST_PER_HOUR = 1e6
"""The largest price per GPU or CPU slot per hour (US dollars): the planner's solver works in integer
milli-dollars, and a price of 1e300 (fuzz_cli seed 8, input 1405) overflowed its 64-bit coefficients."""


class GpuResource(IRModel):
    """A kind of GPU available to the planner."""

    kind: str = Field(description="GPU kind, e.g. 'A100', 'H100', 'H200'.")
    count: int = Field(ge=0)
    cost_per_hour: float = Field(ge=0, le=MAX_COST_PER_HOUR, description="US dollars per GPU per hour.")
    memory_bytes: int | None = Field(default=None, gt=0)


class CpuResource(IRModel):
    """CPU executor slots for SQL and tool stages (and CPU LLM engines)."""

    slots: int = Field(ge=0)
    cost_per_hour: float = Field(default=0.0, ge=0, le=MAX_COST_PER_HOUR, description="US dollars per slot per hour.")


class Inventory(IRModel):
    """The resources a plan may use."""

    gpus: tuple[GpuResource, ...] = ()
    cpu: CpuResource | None = None


class Database(IRModel):
    """A database reached through SQLAlchemy. Generated SQL only ever reads it."""

    name: str
    url: str = Field(description="SQLAlchemy URL.")
    access: Literal["read_only"] = "read_only"
    statement_timeout_s: float = Field(default=5.0, gt=0)
    row_limit: int = Field(default=1000, gt=0)
    pool_size: int = Field(default=4, gt=0)
    max_result_bytes: int = Field(default=1 << 20, ge=1024,
                                  description="A result larger than this (JSON size) is cut and marked truncated.")


# --------------------------------------------------------------------------- workflow parts


class Prompt(IRModel):
    """A jinja2 prompt template, embedded so the IR is self-contained."""

    template: str
    path: str | None = Field(default=None, description="Source file, relative to the .cortex file.")
    system: str | None = Field(default=None, description="Optional system message template.")


class CachePolicy(IRModel):
    """Agentic-state cache for SQL/tool results."""

    enabled: bool = True
    ttl_s: float = Field(default=300.0, gt=0)
    scope: Literal["run", "workflow", "global"] = "workflow"
    max_entries: int = Field(default=10_000, gt=0)


class OutputConstraint(IRModel):
    """What an LLM stage's output must match, enforced by the engine while decoding.

    Exactly one of the fields named by ``kind`` is set: ``json_schema`` (a JSON schema, as
    canonical JSON text so the model stays hashable),
    ``regex`` (the whole output matches it), ``grammar`` (an EBNF/GBNF grammar, as
    vLLM's structured outputs take it) or ``database`` (``sql``: one read-only ``SELECT``
    over that database's tables and columns; the runtime builds its grammar from the
    database's schema when it starts). ``path`` is the file it was read from, if any.
    """

    kind: Literal["json", "regex", "grammar", "sql"]
    json_schema: str | None = None
    regex: str | None = None
    grammar: str | None = None
    database: str | None = None
    path: str | None = Field(default=None, description="Source file, relative to the .cortex file.")

    @model_validator(mode="after")
    def _one_field_for_kind(self) -> "OutputConstraint":
        field = {"json": "json_schema", "sql": "database"}.get(self.kind, self.kind)
        set_fields = [f for f in ("json_schema", "regex", "grammar", "database") if getattr(self, f) is not None]
        if set_fields != [field]:
            raise ValueError(f"a {self.kind!r} constraint sets exactly `{field}` (set: {set_fields})")
        return self


class StageBase(IRModel):
    name: str
    budget_s: float | None = Field(default=None, gt=0, description="Optional per-stage latency budget.")
    prewarm: bool = Field(default=False, description="Speculatively warm this stage's engine/prefix.")


MAX_OUTPUT_CV = 10.0
"""Largest ``LLMStage.output_cv`` (the language's bound too); `cortexc plan --observed` caps a learnt CV here."""


class LLMStage(StageBase):
    """A call to a language model."""

    kind: Literal["llm"] = "llm"
    models: tuple[ModelOption, ...] = Field(min_length=1, description="models[0] is preferred.")
    prompt: Prompt
    max_tokens: IntKnob
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    output: Literal["text", "json"] = Field(
        default="text", description="'json': the output is parsed and its keys are fields."
    )
    input_tokens: int = Field(gt=0, description="Expected prompt tokens, for planning.")
    output_tokens: int = Field(gt=0, description="Expected output tokens, for planning.")
    prefix_tokens: int = Field(default=0, ge=0, description="Prompt tokens shared by every call.")
    output_cv: float | None = Field(
        default=None, ge=0.0, le=MAX_OUTPUT_CV,
        description="Coefficient of variation of the output length of the calls that stop on their own (their "
                    "mean is output_tokens). None: the default, planner.candidates.OUTPUT_CV in the planner and "
                    "SimConfig.token_cv in the simulator (both 0.3).")
    runaway: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Share of calls that never stop on their own and run to max_tokens (a small model repeating "
                    "itself). A call's output length is max_tokens with probability runaway, else "
                    "min(X, max_tokens) with X of mean output_tokens and CV output_cv: raising max_tokens makes "
                    "these calls longer, a stop string makes them rarer.")
    output_correlation: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="How alike the output lengths of one run's calls are: each call's length is drawn at the "
                    "quantile Phi(sqrt(r) Z + sqrt(1 - r) e) of its distribution, Z one standard normal per run "
                    "shared by every LLM call of the run with r > 0, e the call's own; two calls' lengths then "
                    "correlate by sqrt(r1 r2) in normal scores. 0: independent draws. Greedy decoding of the "
                    "same question gives the same answer again (a repair loop's retries are alike).")
    hedge: IntKnob = Field(
        default_factory=lambda: IntKnob.fixed(1),
        description="Parallel candidates per call; the first acceptable one wins.",
    )
    pool: str | None = Field(
        default=None, description="Stages naming the same pool share its replicas (co-location the user asked for).")
    constraint: OutputConstraint | None = Field(
        default=None, description="Structured output: the engine only generates text matching it.")

    def mean_output_tokens(self, max_tokens: int) -> float:
        """Expected output tokens of a call capped at ``max_tokens``, as far as the runaway share moves it:
        ``(1 - runaway) output_tokens + runaway max_tokens`` (the stopped calls' own clip at the cap is
        left to the planner's and simulator's draws); ``output_tokens`` itself when nothing runs away. The
        runtime's estimates use it; the planner's tables use the clipped law's own mean
        (``planner.candidates.output_tokens_moments``), which differs near the cap or at a high ``output_cv``."""
        if self.runaway == 0.0:
            return self.output_tokens
        return (1.0 - self.runaway) * self.output_tokens + self.runaway * max_tokens

    @property
    def warms_prefix(self) -> bool:
        """Whether every replica serving the stage keeps its shared prompt prefix resident (declared
        ``prewarm``, or a shared ``prefix_tokens``): the planner then charges only the uncached rest of
        each prompt, and the runtime warms the prefix before a replica's first call."""
        return self.prewarm or self.prefix_tokens > 0


class SQLStage(StageBase):
    """Runs a generated statement on a database, read-only."""

    kind: Literal["sql"] = "sql"
    database: str
    query_from: str | None = Field(
        default=None,
        description="Stage whose output holds the statement; None = the stage that led here.",
    )
    service_s: float = Field(default=0.05, gt=0, description="Expected service time.")
    service_cv: float = Field(default=1.0, ge=0, description="Coefficient of variation of service time.")
    service_range_s: tuple[float, float] | None = Field(
        default=None, description="Service time uniform on [low, high] (service_s and service_cv are its moments).")
    cache: CachePolicy | None = None


class Retry(IRModel):
    """Retries of a failed tool call inside the stage: up to ``max_retries`` more attempts, the
    ``i``-th after waiting ``backoff_s * 2**(i-1)``. Only a call whose every attempt failed ends
    the stage with ``error``."""

    max_retries: int = Field(ge=1, le=100)
    backoff_s: float = Field(default=0.0, ge=0)


class ToolStage(StageBase):
    """Calls a Python function ``module:function``: with named ``args`` (jinja2 templates rendered
    from the run's context) when given, else with the whole context."""

    kind: Literal["tool"] = "tool"
    entry: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    service_s: float = Field(gt=0, description="Expected service time of one attempt.")
    service_cv: float = Field(default=1.0, ge=0)
    service_range_s: tuple[float, float] | None = Field(
        default=None, description="Service time uniform on [low, high] (service_s and service_cv are its moments).")
    args: dict[str, str] = Field(default_factory=dict, description="Argument name -> jinja2 template.")
    retry: Retry | None = None
    cache: CachePolicy | None = None


Stage = Annotated[Union[LLMStage, SQLStage, ToolStage], Field(discriminator="kind")]


class Condition(IRModel):
    """When an edge is taken."""

    kind: Literal["always", "outcome", "field", "else"]
    values: tuple[str, ...] = Field(default=(), description="Outcomes or field values matched.")
    field: str | None = Field(default=None, description="Result field, for kind 'field'.")


class Edge(IRModel):
    source: str
    target: str = Field(description="A node name or a terminal ('done', 'fail').")
    condition: Condition
    probability: float = Field(ge=0.0, le=1.0)
    loop: str | None = Field(default=None, description="Name of the loop this edge iterates.")


class Loop(IRModel):
    name: str
    max_iterations: IntKnob
    on_exhausted: str = Field(default="fail", description="Where a loop edge leads once the budget is spent.")
    parent: str | None = None
    rejoin_parent: bool = Field(
        default=False, description="Leaving through on_exhausted starts a new iteration of the parent loop.")


class Graph(IRModel):
    """A call graph: ``entry``, edges and loops (the fields a :class:`Workflow` and every
    fan-out branch's :class:`SubFlow` share), with derived lookups."""

    entry: str
    edges: tuple[Edge, ...]
    loops: tuple[Loop, ...] = ()

    @cached_property
    def _graph_index(self) -> dict[str, dict]:
        out_edges: dict[str, list[Edge]] = {}
        for e in self.edges:
            out_edges.setdefault(e.source, []).append(e)
        return {"loop": {lp.name: lp for lp in self.loops}, "out": {k: tuple(v) for k, v in out_edges.items()}}

    def loop(self, name: str) -> Loop:
        return self._graph_index["loop"][name]

    def out_edges(self, name: str) -> tuple[Edge, ...]:
        return self._graph_index["out"].get(name, ())


class SubFlow(Graph):
    """One fan-out branch: a call graph of its own over stages (and nested fan-outs) that
    belong to the fan-out. It starts at ``entry``; reaching ``done`` means the branch
    succeeded, ``fail`` that it failed. A linear chain ``a -> b`` is the sub-flow
    ``a -ok-> b -ok-> done`` whose ``error`` edges (planning probability 0) lead to ``fail``."""

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        """The sub-flow's nodes: its entry and every edge's endpoints, terminals excluded."""
        names = {self.entry} | {e.source for e in self.edges} | {e.target for e in self.edges}
        names |= {lp.on_exhausted for lp in self.loops}
        return tuple(sorted(n for n in names if n not in TERMINALS))

    @classmethod
    def chain(cls, stages: tuple[str, ...]) -> "SubFlow":
        """The sub-flow of a linear chain (see the class docstring)."""
        edges: list[Edge] = []
        for i, stage in enumerate(stages):
            nxt = stages[i + 1] if i + 1 < len(stages) else "done"
            edges.append(Edge(source=stage, target=nxt, condition=Condition(kind="outcome", values=("ok",)),
                              probability=1.0))
            edges.append(Edge(source=stage, target="fail", condition=Condition(kind="else"), probability=0.0))
        return cls(entry=stages[0], edges=tuple(edges))


class WidthShare(IRModel):
    """One value of a data-dependent fan-out's width and its planning probability."""

    width: int = Field(ge=0)
    probability: float = Field(gt=0.0, le=1.0)


class FanOut(IRModel):
    """Parallel branches and a join.

    Each branch is a :class:`SubFlow`. How many branches one visit runs:

    * ``over`` unset, ``width`` unset: one per listed branch;
    * ``over`` unset, ``width`` set: ``width`` copies of the one branch (a knob);
    * ``over`` set: one copy of the one branch per item of a list produced at run
      time -- ``"stage.field"`` (a list field of an earlier stage's JSON result) or
      the name of another fan-out (one branch per branch of its latest visit, so
      both share a width). ``widths`` is the planning distribution of that count;
      ``width``, when set, caps it (a knob).
    """

    name: str
    kind: Literal["fanout"] = "fanout"
    branches: tuple[SubFlow, ...] = Field(min_length=1)
    width: IntKnob | None = None
    over: str | None = Field(default=None, description="List the branches map over: 'stage.field' or a fan-out.")
    widths: tuple[WidthShare, ...] = Field(default=(), description="Planning distribution of a map's width.")
    join: Literal["all", "first", "vote", "best"] = "all"

    @field_validator("branches", mode="before")
    @classmethod
    def _chains_are_sub_flows(cls, value: object) -> object:
        """A branch may be given as a chain of stage names: it becomes :meth:`SubFlow.chain`."""
        if isinstance(value, (list, tuple)):
            return tuple(SubFlow.chain(tuple(b)) if isinstance(b, (list, tuple)) and all(
                isinstance(x, str) for x in b) else b for b in value)
        return value

    def branch_count(self, width: int | None = None) -> int:
        """Branches one visit runs when that is fixed: listed branches, else ``width`` (default:
        the knob's preferred value). A map's count is data-dependent: see ``widths``."""
        if self.width is None:
            return len(self.branches)
        return width if width is not None else self.width.preferred

    @cached_property
    def stages(self) -> tuple[str, ...]:
        """Every node of the fan-out's branches (stages and nested fan-outs), sorted."""
        return tuple(sorted({n for b in self.branches for n in b.nodes}))


class SLO(IRModel):
    """End-to-end latency objective: ``attainment`` of runs finish within ``latency_s``."""

    latency_s: float = Field(gt=0)
    attainment: float = Field(gt=0, le=1.0)


MIN_RATE_PER_S = 1e-6
"""The slowest arrival rate (one run every ~11.6 days). Planning and simulation measure time in
seconds from the first arrival: at 1e-300 runs/s an arrival at 1e300 s absorbs every service time
(``t + dt == t``) and a stall estimate divided by zero (fuzz_cli seed 9, input 200)."""


class Load(IRModel):
    """Expected arrivals, for planning and simulation."""

    rate_per_s: float = Field(ge=MIN_RATE_PER_S)
    pattern: Literal["poisson", "bursty", "constant"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0, description="Inter-arrival coefficient of variation.")


class ReplicaLimits(IRModel):
    """How many replicas the live monitor may give one LLM pool."""

    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=4, ge=1)


class Autoscale(IRModel):
    """Limits of the live monitor (``cortex serve``; its ``--autoscale`` overrides them): replicas per LLM
    pool and a budget per hour for all of them."""

    default: ReplicaLimits = ReplicaLimits()
    pools: dict[str, ReplicaLimits] = Field(default_factory=dict,
                                            description="Per LLM pool: a stage's name or a shared `pool =` name.")
    budget_per_hour: float | None = Field(default=None, gt=0)


class Workflow(Graph):
    name: str
    inputs: tuple[str, ...] = ()
    vars: dict[str, str] = Field(default_factory=dict, description="Constants for prompt templates.")
    stages: tuple[Stage, ...]
    fanouts: tuple[FanOut, ...] = ()
    slo: SLO | None = None
    load: Load | None = None
    autoscale: Autoscale | None = None

    # -- lookups (derived once, not serialised) ---------------------------
    @cached_property
    def _index(self) -> dict[str, dict]:
        return {"stage": {s.name: s for s in self.stages}, "fanout": {f.name: f for f in self.fanouts}}

    def stage(self, name: str) -> LLMStage | SQLStage | ToolStage:
        return self._index["stage"][name]

    def fanout(self, name: str) -> FanOut:
        return self._index["fanout"][name]

    def node_kind(self, name: str) -> str:
        """'llm' | 'sql' | 'tool' | 'fanout' | 'terminal'."""
        if name in TERMINALS:
            return "terminal"
        if name in self._index["fanout"]:
            return "fanout"
        return self.stage(name).kind

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        """Top-level graph nodes: stages and fan-outs that are not inside a fan-out's branches."""
        in_branches = {n for f in self.fanouts for n in f.stages}
        names = [s.name for s in self.stages] + [f.name for f in self.fanouts]
        return tuple(sorted(n for n in names if n not in in_branches))

    def branch_owner(self) -> dict[str, str]:
        """Node inside a fan-out's branches -> that fan-out (the innermost one)."""
        return {n: f.name for f in self.fanouts for n in f.stages}


class Program(IRModel):
    """Everything one compilation produced."""

    ir_version: str = IR_VERSION
    models: tuple[ModelSpec, ...] = ()
    databases: tuple[Database, ...] = ()
    inventory: Inventory | None = None
    workflows: tuple[Workflow, ...] = ()

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def database(self, name: str) -> Database:
        for d in self.databases:
            if d.name == name:
                return d
        raise KeyError(name)

    def workflow(self, name: str | None = None) -> Workflow:
        """The named workflow, or the only one when ``name`` is None."""
        if name is None:
            if len(self.workflows) != 1:
                raise KeyError("program has %d workflows; name one" % len(self.workflows))
            return self.workflows[0]
        for w in self.workflows:
            if w.name == name:
                return w
        raise KeyError(name)

    def canonical_json(self) -> str:
        """The one canonical JSON form: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Program":
        return cls.model_validate_json(text)
