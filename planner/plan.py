"""The Plan: what the planner decided, as frozen pydantic models.

This module is the contract between the planner and its consumers (the
runtime, the simulator, the CLI views). It imports only pydantic and
``cortexlang.ir``. Text and JSON are views of these models
(:mod:`planner.render`, :meth:`Plan.canonical_json`).

Conventions (as in the IR): frozen models with ``extra="forbid"``; durations
in seconds, rates per second, money in US dollars per hour, KV sizes in GiB
(``kv_gib``) or tokens (``*_tokens``), probabilities and utilisations as
fractions. Mappings are ``dict``s whose canonical JSON has sorted keys, and
pool tuples are sorted by stage name, so the canonical JSON of a plan is
stable across runs (plans are deterministic for a given seed).

Semantics of the predictions
----------------------------
* A *stage latency* (:class:`StageLatency`) is the latency of one visit to the
  stage: queueing wait in its pool plus service (for an LLM stage: prefill and
  decode under the predicted batch occupancy; with hedging, the fastest of the
  ``hedge`` candidates).
* The *end-to-end* distribution (:class:`LatencyDistribution`) is over whole
  runs of the workflow (entry to ``done`` or ``fail``), including retries,
  branches and fan-out/join, estimated by seeded Monte Carlo.
* ``slo_attainment`` is the predicted fraction of runs that finish within the
  SLO's latency; the SLO is met when it is at least ``slo.attainment``.
* ``utilisation`` of an LLM pool is its predicted batch-slot occupancy
  (mean running sequences / ``max_num_seqs``); of an executor pool, the
  offered load per slot (arrival rate x mean service time / slots).
* Layout: an :class:`LLMPool` is dedicated to its stage or shared by several
  (``LLMPool.colocated``); a runtime applies a shared pool by dedicating its
  replicas to ``LLMPool.stages`` together. A dedicated pool may be
  prefill/decode-disaggregated (``LLMPool.prefill_replicas`` > 0, planned only
  with ``disaggregate=True``): its utilisation is then the decode replicas'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from cortexlang.ir import SLO, IntKnob, Inventory, LLMStage, Workflow

PLAN_VERSION = "1"

Mode = Literal["cost", "headroom"]
"""``cost``: minimise dollars per hour subject to every SLO.
``headroom``: on the fixed inventory, maximise the smallest SLO headroom."""


class PlanModel(BaseModel):
    """Base of every plan model: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StageLatency(PlanModel):
    """Predicted latency of one visit to a stage (queueing + service), in seconds."""

    mean: float = Field(ge=0)
    p50: float = Field(ge=0)
    p95: float = Field(ge=0)
    p99: float = Field(ge=0)


class LatencyDistribution(PlanModel):
    """Predicted end-to-end latency of a workflow run, in seconds."""

    mean: float = Field(ge=0)
    p50: float = Field(ge=0)
    p90: float = Field(ge=0)
    p95: float = Field(ge=0)
    p99: float = Field(ge=0)


class ColocatedStage(PlanModel):
    """A stage served by another stage's pool (co-location): its own knobs and predictions."""

    stage: str
    max_tokens: int = Field(ge=1, description="The chosen max_tokens for the stage's calls.")
    hedge: int = Field(ge=1, description="Parallel candidates per call (1 = no hedging).")
    prewarm: bool = Field(description="Keep the stage's shared prompt prefix resident in every replica of the pool.")
    arrival_rate_per_s: float = Field(ge=0, description="Predicted requests per second of this stage into the pool.")
    visits_per_run: float = Field(ge=0, description="Expected visits to the stage per workflow run.")
    latency: StageLatency


class LLMPool(PlanModel):
    """A pool of identical engine replicas serving one LLM stage, or several (co-location).

    A *dedicated* pool serves ``stage`` alone (``colocated`` empty). A *shared*
    pool serves ``stage`` and every stage in ``colocated`` on the same replicas
    (one model, one batch); ``stage`` is then the first of its stages by name
    and names the pool. The per-stage fields (``max_tokens``, ``hedge``,
    ``prewarm``, ``arrival_rate_per_s``, ``visits_per_run``, ``latency``)
    describe ``stage``; ``colocated`` holds the same for the others; the pool
    fields (device, replicas, ``max_num_seqs``, KV, ``utilisation``,
    ``cost_per_hour``) describe the whole pool. Plans written before
    co-location have no ``colocated`` field and read as dedicated pools.
    """

    stage: str
    model: str = Field(description="The chosen model variant (a declared model name).")
    profile: str = Field(description="Performance-profile family of the model, e.g. 'llama-3-8b'.")
    device: str = Field(description="Device kind: a GPU kind of the inventory ('H100', 'A100', 'H200') or 'CPU'.")
    replicas: int = Field(ge=1)
    tp: int = Field(ge=1, description="Tensor-parallel degree: devices per replica.")
    max_num_seqs: int = Field(ge=1, description="Per-replica cap on concurrently running sequences.")
    kv_budget_tokens: int = Field(ge=0, description="KV-cache capacity of one replica, in tokens.")
    kv_gib: float = Field(ge=0, description="KV-cache space of one replica, in GiB.")
    max_tokens: int = Field(ge=1, description="The chosen max_tokens for the stage's calls.")
    hedge: int = Field(ge=1, description="Parallel candidates per call (1 = no hedging).")
    prewarm: bool = Field(description="Keep the stage's shared prompt prefix resident (prefix cache warm).")
    arrival_rate_per_s: float = Field(ge=0, description="Predicted requests per second into the pool (hedges included).")
    visits_per_run: float = Field(ge=0, description="Expected visits to the stage per workflow run.")
    utilisation: float = Field(ge=0, description="Predicted batch-slot occupancy per replica.")
    latency: StageLatency
    cost_per_hour: float = Field(ge=0)
    colocated: tuple[ColocatedStage, ...] = Field(
        default=(), description="The other stages this pool serves, sorted by stage (empty: a dedicated pool).")
    prefill_replicas: int = Field(
        default=0, ge=0,
        description="Of ``replicas``, how many only prefill and ship the KV to the others, which only decode "
                    "(prefill/decode disaggregation; 0: every replica runs both phases).")

    @model_validator(mode="after")
    def _split_leaves_decoders(self) -> "LLMPool":
        if self.prefill_replicas and (self.prefill_replicas >= self.replicas or self.colocated):
            raise ValueError("a disaggregated pool needs at least one decode replica and serves one stage")
        return self

    @model_serializer(mode="wrap")
    def _omit_colocated_split(self, handler):
        """A colocated pool's JSON has no ``prefill_replicas`` (plans written before the field stay byte-identical)."""
        data = handler(self)
        if not self.prefill_replicas:
            data.pop("prefill_replicas", None)
        return data

    @property
    def devices(self) -> int:
        """Devices the pool occupies (replicas x tp)."""
        return self.replicas * self.tp

    @property
    def stages(self) -> tuple[str, ...]:
        """Every stage the pool serves, ``stage`` first."""
        return (self.stage, *(c.stage for c in self.colocated))

    @property
    def prewarm_stages(self) -> tuple[str, ...]:
        """The stages whose shared prompt prefix every replica keeps warm (sorted)."""
        return tuple(sorted(s for s, on in ((self.stage, self.prewarm), *((c.stage, c.prewarm) for c in self.colocated))
                            if on))

    @property
    def shared(self) -> bool:
        return bool(self.colocated)

    @property
    def disaggregated(self) -> bool:
        """Whether the pool splits prefill and decode across its replicas."""
        return self.prefill_replicas > 0

    @property
    def decode_replicas(self) -> int:
        """Replicas that decode (all of them in a colocated pool)."""
        return self.replicas - self.prefill_replicas


class ExecutorPool(PlanModel):
    """Executor slots (connection pool or worker pool) for one SQL or tool stage."""

    stage: str
    kind: Literal["sql", "tool"]
    slots: int = Field(ge=1)
    arrival_rate_per_s: float = Field(ge=0)
    visits_per_run: float = Field(ge=0)
    utilisation: float = Field(ge=0)
    latency: StageLatency
    cost_per_hour: float = Field(ge=0)


class KnobSettings(PlanModel):
    """The chosen value of every knob of a workflow (malleable or fixed)."""

    models: dict[str, str] = Field(default_factory=dict, description="LLM stage -> chosen model.")
    max_tokens: dict[str, int] = Field(default_factory=dict, description="LLM stage -> chosen max_tokens.")
    hedge: dict[str, int] = Field(default_factory=dict, description="LLM stage -> chosen hedge width.")
    retry_depth: dict[str, int] = Field(default_factory=dict, description="Loop -> chosen max_iterations.")
    fanout_width: dict[str, int] = Field(default_factory=dict, description="Templated fan-out -> chosen width.")
    quality: float = Field(
        default=1.0, ge=0, le=1,
        description="Product of the declared qualities of the chosen options (1.0 = all preferred).",
    )

    def violations(self, workflow: Workflow) -> list[str]:
        """Why these settings cannot run ``workflow``: each names a stage, loop or fan-out the workflow
        lacks, or a value that is not one of that knob's declared options (empty: they can run).

        A plan is data a user may edit or a file may corrupt; its knobs reach the simulator and the
        runtime, which trust them (a fan-out width of 1,000,000 spawned a million branches per run:
        `fuzz_cli` seed 13, input 535). The planner only ever chooses declared options."""
        llm = {s.name: s for s in workflow.stages if isinstance(s, LLMStage)}
        loops = {lp.name: lp.max_iterations  # the workflow's and every fan-out branch's
                 for lp in (*workflow.loops, *(lp for f in workflow.fanouts for b in f.branches for lp in b.loops))}
        widths = {f.name: f.width for f in workflow.fanouts if f.width is not None}
        out = []

        def check(kind: str, chosen: dict[str, int], knob_of: dict[str, IntKnob], holder: str) -> None:
            for name, value in sorted(chosen.items()):
                knob = knob_of.get(name)
                if knob is None:
                    out.append(f"{kind} of {name!r}: the workflow has no such {holder}")
                elif value not in {o.value for o in knob.options}:
                    allowed = ", ".join(str(o.value) for o in knob.options)
                    out.append(f"{kind} of {name!r} is {value}, not one of the declared options ({allowed})")

        for stage, model in sorted(self.models.items()):
            if stage not in llm:
                out.append(f"model of {stage!r}: the workflow has no such LLM stage")
            elif model not in {o.model for o in llm[stage].models}:
                allowed = ", ".join(o.model for o in llm[stage].models)
                out.append(f"model of {stage!r} is {model!r}, not one of the declared options ({allowed})")
        check("max_tokens", self.max_tokens, {n: s.max_tokens for n, s in llm.items()}, "LLM stage")
        check("hedge width", self.hedge, {n: s.hedge for n, s in llm.items()}, "LLM stage")
        check("retry depth", self.retry_depth, loops, "loop")
        check("fan-out width", self.fanout_width, widths, "templated fan-out")
        return out


class SharedModelPool(PlanModel):
    """One pool serving every LLM stage that uses ``model`` (the no-isolation baseline)."""

    model: str
    stages: tuple[str, ...]
    device: str
    tp: int = Field(ge=1)
    replicas: int = Field(ge=1)
    max_num_seqs: int = Field(ge=1)
    kv_budget_tokens: int = Field(ge=0, description="Per replica.")
    kv_gib: float = Field(ge=0, description="KV space of the whole pool, in GiB.")
    kv_in_use_gib: float = Field(ge=0, description="Predicted KV in use across the pool (running sequences and resident prefixes).")
    utilisation: float = Field(ge=0)


class SharedPoolComparison(PlanModel):
    """The same inputs served by one shared pool per model instead of the plan's pools.

    The shared pools get the same devices as the plan's LLM pools (same cost),
    so the latency difference is what the plan's layout buys over one pool per
    model. (``isolated_kv_in_use_gib`` is the plan's KV in use; the name
    predates shared pools in plans.)
    ``replicas_for_slo`` is the smallest total replica count with which the
    shared pools meet the SLO (None when none within the inventory does).
    """

    pools: tuple[SharedModelPool, ...]
    replicas: int = Field(ge=0)
    kv_gib: float = Field(ge=0)
    kv_in_use_gib: float = Field(ge=0)
    latency: LatencyDistribution | None = Field(description="None when the shared pools are overloaded.")
    slo_attainment: float | None = Field(default=None, ge=0, le=1)
    replicas_for_slo: int | None = None
    cost_per_hour: float = Field(ge=0)
    isolated_kv_in_use_gib: float = Field(ge=0, description="The stage-isolated plan's KV in use, for comparison.")


class Objective(PlanModel):
    """What was optimised and the value reached."""

    mode: Mode
    description: str
    value: float
    unit: str = Field(description="'$/h' for cost mode, 'fraction' (of the SLO latency) for headroom mode.")


class Verification(PlanModel):
    """The plan checked in the discrete-event simulator (every figure here is *simulated*).

    The simulator runs the plan's pools and knobs on the same latency profiles
    under ``policy``; ``slo_attainment`` is measured against the file's SLO, with
    a 95% Wilson interval over the ``runs`` measured. When the first plan missed
    its SLO in simulation the planner was asked again for a tighter latency
    target (``planned_latency_s``), or again with the arrivals' dispersion measured here where it was
    burstier than predicted (``WorkflowPlan.verified_dispersion``), ``rounds`` plans in all.
    """

    label: Literal["simulated"] = "simulated"
    policy: str
    runs: int = Field(ge=0, description="Measured runs (after warm-up).")
    seed: int
    latency: LatencyDistribution
    slo_attainment: float | None = Field(default=None, ge=0, le=1)
    attainment_interval: tuple[float, float] | None = Field(default=None, description="95% Wilson interval.")
    holds: bool | None = Field(default=None, description="Simulated attainment meets the SLO (None: no SLO).")
    latency_at_target_s: float | None = Field(
        default=None, description="Simulated latency at the SLO's attainment quantile (inf: too many rejected).")
    planned_latency_s: float | None = Field(
        default=None, description="The SLO latency the pools were sized for (below the file's after tightening).")
    rounds: int = Field(default=1, ge=1, description="Plans verified, the first included (a re-plan that deploys "
                                                        "the same pools and knobs keeps its predecessor's simulation).")


class MeasuredArrivals(PlanModel):
    """How bursty one stage's arrivals were in a simulation (every figure here is *simulated*): the
    index of dispersion (variance / mean) of the counts of the calls reaching the stage in ``bins[i]``
    consecutive windows of ``windows_s[i]`` seconds, for a grid of windows (ascending). The input of
    the planner's verification feedback (:mod:`planner.verified_dispersion`)."""

    label: Literal["simulated"] = "simulated"
    windows_s: tuple[float, ...]
    index: tuple[float, ...]
    bins: tuple[int, ...]

    @model_validator(mode="after")
    def _aligned(self) -> "MeasuredArrivals":
        if not len(self.windows_s) == len(self.index) == len(self.bins):
            raise ValueError("windows_s, index and bins must have one entry per window")
        if any(b <= a for a, b in zip(self.windows_s, self.windows_s[1:])):
            raise ValueError("windows_s must ascend")
        return self


class VerifiedDispersion(PlanModel):
    """A stage whose arrivals' index of dispersion the plan took from its verification simulation,
    because the simulation measured them burstier than the analytic model predicted for the same pools
    (:mod:`planner.verified_dispersion`): the latency tables of the stage's pool were built with
    ``simulated`` (the queueing tables stay the planner's own; only the traffic descriptor is measured)."""

    window_s: float = Field(gt=0, description="The window the stage's queue reads its arrivals over.")
    analytic: float = Field(ge=0, description="The index predicted from the chosen pools (planner.dispersion).")
    simulated: float = Field(ge=0, description="The index measured in the verification simulation (simulated).")


class WorkflowPlan(PlanModel):
    """The plan of one workflow."""

    workflow: str
    objective: Objective = Field(description="This workflow's share: its cost, or its SLO headroom.")
    slo: SLO | None
    rate_per_s: float = Field(gt=0, description="Planned arrival rate of runs.")
    llm_pools: tuple[LLMPool, ...]
    executor_pools: tuple[ExecutorPool, ...]
    knobs: KnobSettings
    latency: LatencyDistribution
    slo_attainment: float | None = Field(default=None, ge=0, le=1, description="None when there is no SLO.")
    headroom: float | None = Field(
        default=None, description="1 - (predicted latency at the SLO's attainment) / (SLO latency)."
    )
    p_done: float = Field(ge=0, le=1, description="Probability that a run ends at 'done' (else 'fail').")
    shared_pool: SharedPoolComparison | None = Field(default=None, description="None when the workflow has no LLM stage.")
    cost_per_hour: float = Field(ge=0)
    verification: Verification | None = Field(
        default=None, description="The plan simulated before it was shown (None: not verified).")
    verified_dispersion: dict[str, VerifiedDispersion] = Field(
        default_factory=dict, description="Per stage: arrivals' dispersion taken from the verification "
                                          "simulation (empty: every stage's is the analytic prediction).")

    @model_serializer(mode="wrap")
    def _omit_analytic_dispersion(self, handler):
        """Plans whose dispersion is all analytic have no ``verified_dispersion`` (their JSON stays byte-identical)."""
        data = handler(self)
        if not self.verified_dispersion:
            data.pop("verified_dispersion", None)
        return data

    def pool(self, stage: str) -> LLMPool | ExecutorPool:
        """The pool serving ``stage`` (a shared LLM pool serves several stages)."""
        for p in self.llm_pools:
            if stage in p.stages:
                return p
        for p in self.executor_pools:
            if p.stage == stage:
                return p
        raise KeyError(stage)

    @property
    def layout(self) -> str:
        """``isolated`` (a dedicated pool per LLM stage), ``shared`` (one pool per model), or ``mixed``."""
        if not any(p.shared for p in self.llm_pools):
            return "isolated"
        models = [p.model for p in self.llm_pools]
        return "shared" if len(models) == len(set(models)) else "mixed"


class SolverInfo(PlanModel):
    """How the optimum was found (deterministic fields only, so plans diff cleanly)."""

    status: Literal["optimal", "feasible"] = Field(
        description="'optimal': proven optimal for the planning model; 'feasible': best found within the limits."
    )
    iterations: int = Field(ge=0, description="CP-SAT solves (each adds latency cuts).")
    candidates: int = Field(ge=0, description="Per-stage candidate configurations considered.")
    samples: int = Field(ge=1, description="Monte Carlo runs per latency estimate.")
    seed: int


class Plan(PlanModel):
    """Everything the planner decided for one program and inventory."""

    plan_version: str = PLAN_VERSION
    mode: Mode
    objective: Objective
    workflows: tuple[WorkflowPlan, ...]
    inventory: Inventory
    devices_used: dict[str, int] = Field(description="Device kind -> devices used (GPU kinds, and 'CPU' slots).")
    cost_per_hour: float = Field(ge=0)
    profiles: tuple[str, ...] = Field(description="Profiles used, as 'family/device/tpN'.")
    solver: SolverInfo
    cpu_contention: float | None = Field(
        default=None, ge=0, le=1,
        description="The fraction of the other CPU engines' cores the planner assumed busy when it slowed the "
                    "CPU profiles by their measured contention (planner.api.plan_under_contention); absent when "
                    "no CPU profile of the plan measured contention.")

    @model_serializer(mode="wrap")
    def _omit_no_contention(self, handler):
        """Plans without CPU contention have no ``cpu_contention`` (their JSON stays byte-identical)."""
        data = handler(self)
        if self.cpu_contention is None:
            data.pop("cpu_contention", None)
        return data

    def workflow(self, name: str | None = None) -> WorkflowPlan:
        """The named workflow's plan, or the only one when ``name`` is None."""
        if name is None:
            if len(self.workflows) != 1:
                raise KeyError("plan has %d workflows; name one" % len(self.workflows))
            return self.workflows[0]
        for w in self.workflows:
            if w.workflow == name:
                return w
        raise KeyError(name)

    def oversized_pool(self) -> str | None:
        """Why a pool cannot be deployed on the plan's own inventory, or None: a pool's replicas x TP
        above the inventory's count of its device kind (CPU: its slots), or a device kind the inventory
        lacks. Every plan the planner writes passes; a hand-edited one may not, and 10^9 replicas
        would keep ``cortex simulate`` building engines for hours."""
        have = {g.kind: g.count for g in self.inventory.gpus}
        if self.inventory.cpu is not None:
            have["CPU"] = self.inventory.cpu.slots
        for wp in self.workflows:
            for pool in wp.llm_pools:
                if pool.device not in have:
                    return (f"pool {pool.stage!r} of {wp.workflow} runs on {pool.device}, which the plan's inventory "
                            f"lacks (it has {', '.join(sorted(have)) or 'no devices'})")
                if pool.replicas * pool.tp > have[pool.device]:
                    return (f"pool {pool.stage!r} of {wp.workflow} needs {pool.replicas} x {pool.tp} {pool.device}, "
                            f"more than the plan's inventory has ({have[pool.device]})")
        return None

    def canonical_json(self) -> str:
        """The one canonical JSON form: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.model_validate_json(text)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.canonical_json())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        return cls.from_json(Path(path).read_text())


class Infeasible(PlanModel):
    """Why no plan exists, in the user's terms, and the closest feasible alternative."""

    workflow: str | None = Field(default=None, description="The workflow that cannot be planned (None: the inputs).")
    binding: Literal["slo", "inventory", "rate", "profile", "input"] = Field(
        description="What binds: the SLO, the inventory, the arrival rate, a missing profile, or malformed input."
    )
    message: str = Field(description="One or two sentences: what cannot be met and why.")
    closest: str | None = Field(default=None, description="The closest feasible alternative, in words.")
    tightest_latency_s: float | None = Field(
        default=None, description="The tightest SLO latency (at the SLO's attainment) that is feasible, if any."
    )
    required_devices: dict[str, int] = Field(
        default_factory=dict, description="Devices the closest feasible alternative needs, by kind."
    )

    def __str__(self) -> str:
        return self.message + (f" {self.closest}" if self.closest else "")
