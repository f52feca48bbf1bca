"""Applying a plan to a running deployment: diff steps, order, no dropped run, partial failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cortexlang.ir import Program
from planner.api import plan_program
from planner.plan import Plan
from planner.render import diff_plans
from runtime.build.layout import spec_from_plan
from runtime.build.spec import RuntimeSpec
from runtime.engines.base import EngineHealth
from runtime.orchestrator.deployment import ApplyError, Deployment
from runtime.orchestrator.scaling import PoolScaler

from .conftest import EXAMPLES, compile_example, run_async, sim_factory, started
from .test_failures import long_answer


def malleable_nl2sql() -> Program:
    """The nl2sql example with malleable knobs, so that a plan may change them: both LLM stages' ``max_tokens``
    96 or 64 and the repair loop's budget 3 or 2 (a plan may only choose declared options:
    :meth:`planner.plan.KnobSettings.violations`)."""
    data = compile_example("nl2sql").model_dump()
    wf = data["workflows"][0]
    for stage in wf["stages"]:
        if stage["kind"] == "llm":
            stage["max_tokens"]["options"] = (*stage["max_tokens"]["options"], {"value": 64, "quality": 0.9})
    for loop in wf["loops"]:
        loop["max_iterations"]["options"] = (*loop["max_iterations"]["options"], {"value": 2, "quality": 0.9})
    return Program.model_validate(data)


@pytest.fixture(scope="module")
def nl2sql_plan() -> Plan:
    plan = plan_program(malleable_nl2sql())
    assert isinstance(plan, Plan), plan
    knobs = plan.workflows[0].knobs  # the preferred values: the tests change them
    assert set(knobs.max_tokens.values()) == {96} and set(knobs.retry_depth.values()) == {3}, knobs
    return plan


def changed(plan: Plan, *, replicas: int | None = None, max_tokens: int | None = None,
            retry_depth: int | None = None) -> Plan:
    """``plan`` with its (only) LLM pool resized and/or knobs changed."""
    w = plan.workflows[0]
    pools = tuple(p.model_copy(update={"replicas": replicas or p.replicas,
                                       "max_tokens": max_tokens or p.max_tokens}) for p in w.llm_pools)
    knobs = w.knobs
    if max_tokens is not None:
        knobs = knobs.model_copy(update={"max_tokens": {k: max_tokens for k in knobs.max_tokens}})
    if retry_depth is not None:
        knobs = knobs.model_copy(update={"retry_depth": {k: retry_depth for k in knobs.retry_depth}})
    return plan.model_copy(update={"workflows": (w.model_copy(update={"llm_pools": pools, "knobs": knobs}),)})


def planned_spec(plan: Plan, db: Path) -> RuntimeSpec:
    spec = spec_from_plan(malleable_nl2sql(), plan, base_dir=EXAMPLES, backend="simulated")
    return spec.model_copy(update={"databases": tuple(d.model_copy(update={"url": f"sqlite:///{db}"})
                                                      for d in spec.databases)})


def test_apply_scales_out_changes_knobs_then_scales_in_under_load(nl2sql_plan: Plan, sales_db: Path) -> None:
    engines: list[Any] = []

    async def body() -> None:
        orch = await started(planned_spec(nl2sql_plan, sales_db), sim_factory(long_answer, speedup=100,
                                                                             engines=engines))
        deployment = Deployment(orch, PoolScaler(orch))
        try:
            live = deployment.describe()
            assert [p["replicas"] for p in live["llm_pools"]] == [1]
            assert not diff_plans(Plan.model_validate(live["plan"]), nl2sql_plan)  # nothing changed yet
            bigger = changed(nl2sql_plan, replicas=3, max_tokens=64, retry_depth=2)
            assert [c.action for c in diff_plans(Plan.model_validate(live["plan"]), bigger)] == ["~"]
            target = deployment.target(bigger)
            steps = deployment.steps(target)
            assert [(s.action, s.replicas) for s in steps] == [("scale_out", 2), ("scale_out", 3), ("deploy", None)]
            assert any("max_tokens[generate]: 96 -> 64" in d for d in steps[2].details)
            assert any("retry_depth[repair]: 3 -> 2" in d for d in steps[2].details)

            old_runs = [await orch.submit({"question": f"how many customers {i}"}) for i in range(30)]
            await asyncio.sleep(0.01)
            seen: list[tuple[str, str]] = []
            done = await deployment.apply(target, expect_revision=live["revision"],
                                          on_step=lambda s: seen.append((s.action, s.status)))
            assert [(s.action, s.status) for s in done] == [("scale_out", "done")] * 2 + [("deploy", "done")]
            assert seen == [("scale_out", "running"), ("scale_out", "done")] * 2 + [("deploy", "running"),
                                                                                     ("deploy", "done")]
            version = orch.version()
            assert version.number == 2 and version.knobs.max_tokens["generate"] == 64
            pool = version.pools["generate"]
            assert len(pool.replicas) == 3 and len(engines) == 3  # resized in place: no engine restarted
            new_runs = [await orch.submit({"question": f"more customers {i}"}) for i in range(10)]

            with pytest.raises(ApplyError, match="changed since"):
                await deployment.apply(target, expect_revision=live["revision"])
            smaller = deployment.target(changed(nl2sql_plan, replicas=1, max_tokens=64, retry_depth=2))
            assert [s.action for s in deployment.steps(smaller)] == ["scale_in", "scale_in"]
            done = await deployment.apply(smaller)
            assert [(s.action, s.status) for s in done] == [("scale_in", "done")] * 2
            assert [r.replica_id for r in pool.replicas] == ["fix-0"]

            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=30) for r in old_runs + new_runs))
            assert {i.status for i in infos} <= {"done", "fail"} and all(i.error is None for i in infos)
            assert {r.version.number for r in old_runs} == {1} and {r.version.number for r in new_runs} == {2}
            assert not deployment.steps(smaller)  # applied: nothing left to change
        finally:
            await deployment.scaler.stop()
            await orch.stop()

    run_async(body())


def test_a_failing_step_stops_the_apply_and_reports_what_changed(nl2sql_plan: Plan, sales_db: Path) -> None:
    async def body() -> None:
        good = sim_factory(long_answer, speedup=2000)
        built = {"n": 0}

        def factory(spec: RuntimeSpec, lp: Any, rep: Any) -> Any:  # engines after the third never get ready
            built["n"] += 1
            engine = good(spec, lp, rep)
            if built["n"] > 2:
                async def failed() -> EngineHealth:
                    return EngineHealth(state="failed", detail="out of memory")
                engine.health = failed  # type: ignore[method-assign]
            return engine

        orch = await started(planned_spec(nl2sql_plan, sales_db), factory)
        deployment = Deployment(orch, PoolScaler(orch))
        try:
            steps = await deployment.apply(deployment.target(changed(nl2sql_plan, replicas=4, max_tokens=64)))
            assert [(s.action, s.status) for s in steps] == [("scale_out", "done"), ("scale_out", "failed"),
                                                            ("scale_out", "skipped"), ("deploy", "skipped")]
            assert "out of memory" in (steps[1].error or "")
            live = deployment.describe()
            assert live["llm_pools"][0]["replicas"] == 2  # the one replica that started serves; nothing else
            assert live["version"] == 1 and live["knobs"]["max_tokens"]["generate"] == 96
            info = await orch.run({"question": "how many customers"})
            assert info.status in ("done", "fail") and info.error is None
            with pytest.raises(ApplyError, match="no workflow"):
                deployment.describe("nope")
        finally:
            await deployment.scaler.stop()
            await orch.stop()

    run_async(body())
