"""The plan's prewarm decisions: every replica of a pool computes its stages' static prompt prefix before
its first call, at start and on a scale-out; a failing warm-up never keeps a replica out of rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cortexlang.compiler import compile_source
from runtime.build.layout import default_spec
from runtime.engines.base import GenerationRequest
from runtime.orchestrator.prewarm import static_prefix, warm_up_requests
from runtime.orchestrator.scaling import PoolScaler

from .conftest import EXAMPLES, compile_example, example_spec, run_async, sim_factory, started

WORKFLOW = '''
model m {{ weights = "x/y"  params = 135M  max_context = 4096  kv_bytes_per_token = 10KiB }}
workflow w {{
  inputs = [question]
  vars {{ schema = "CREATE TABLE t(a INT);" }}
  llm ask {{
    model = m  {system}
    prompt = {prompt}
    max_tokens = 8  input_tokens = 100  output_tokens = 4
  }}
  flow {{ ask -> done }}
}}
'''


def _prefix(prompt: str, system: str = "") -> Any:
    result = compile_source(WORKFLOW.format(prompt=prompt, system=system), "t")
    assert result.ok, result.diagnostics
    return static_prefix(result.program.workflows[0], "ask")


def test_the_prefix_is_the_text_before_the_first_part_that_varies() -> None:
    (user,) = _prefix('"Schema: {{ schema }}\\nQuestion: {{ question }}"')
    assert user.role == "user" and user.content == "Schema: CREATE TABLE t(a INT);\nQuestion: "


def test_a_prompt_that_varies_from_its_start_has_no_prefix() -> None:
    assert _prefix('"{{ question }} -- {{ schema }}"') is None


def test_a_static_system_message_is_part_of_the_prefix() -> None:
    system, user = _prefix('"Q: {{ question }}"', system='system = "You write SQL for {{ schema }}"')
    assert system.content == "You write SQL for CREATE TABLE t(a INT);" and user.content == "Q: "


def test_what_a_template_does_after_the_prefix_does_not_matter() -> None:
    (user,) = _prefix('"Fix this. {% if attempt > 1 %}Again {{ attempt - 1 }}{% endif %}{{ sql | upper }}"')
    assert user.content == "Fix this. "


def test_the_nl2sql_examples_prefix_is_its_schema_and_instructions() -> None:
    wf = compile_example("nl2sql").workflows[0]
    (request,) = warm_up_requests(wf, ["generate"])
    assert request.max_tokens == 1 and "CREATE TABLE" in request.prompt[-1].content
    assert request.prompt[-1].content.endswith("Question: ")


def _recording(requests: list[tuple[str, GenerationRequest]], fail: bool = False) -> Any:
    build = sim_factory()

    def factory(spec: Any, lp: Any, rep: Any) -> Any:
        engine = build(spec, lp, rep)
        generate = engine.generate

        async def recorded(request: GenerationRequest) -> Any:
            requests.append((rep.replica_id, request))
            if fail and request.request_id.startswith("prewarm-"):
                raise RuntimeError("warm-up refused")
            return await generate(request)

        engine.generate = recorded  # type: ignore[method-assign]
        return engine

    return factory


def test_every_replica_is_warmed_before_its_first_call_at_start_and_on_scale_out(sales_db: Path) -> None:
    async def body() -> None:
        spec = example_spec("nl2sql", sales_db)
        assert {p.name: p.prewarm for p in spec.llm_pools} == {"fix": ("fix",), "generate": ("generate",)}
        requests: list[tuple[str, GenerationRequest]] = []
        orch = await started(spec, _recording(requests))
        scaler = PoolScaler(orch)
        try:
            warmed = sorted((rid, r.request_id) for rid, r in requests)  # the pools start concurrently
            assert warmed == [("fix-0", "prewarm-fix-fix-0"), ("generate-0", "prewarm-generate-generate-0")]
            added = await scaler.add_replica("generate", reason="test")
            assert [(rid, r.request_id) for rid, r in requests[2:]] == [
                (added.replica_id, f"prewarm-generate-{added.replica_id}")]  # before it served anything
            info = await orch.run({"question": "how many customers"})
            assert info.status in ("done", "fail") and not info.error
            firsts = {}
            for rid, r in requests:
                firsts.setdefault(rid, r.request_id)
            assert all(first.startswith("prewarm-") for first in firsts.values())
        finally:
            await scaler.stop()
            await orch.stop()

    run_async(body())


def test_a_failing_warm_up_still_puts_the_replica_in_rotation(sales_db: Path) -> None:
    async def body() -> None:
        requests: list[tuple[str, GenerationRequest]] = []
        orch = await started(example_spec("nl2sql", sales_db), _recording(requests, fail=True))
        scaler = PoolScaler(orch)
        try:
            added = await scaler.add_replica("generate", reason="test")
            assert added in orch.pools_by_name["generate"].replicas
            assert (await orch.run({"question": "how many customers"})).status in ("done", "fail")
        finally:
            await scaler.stop()
            await orch.stop()

    run_async(body())


def test_the_plans_prewarm_decisions_reach_the_runtime_spec() -> None:
    from planner.api import plan_program
    from runtime.build.layout import spec_from_plan

    program = compile_example("nl2sql")
    plan = plan_program(program)
    spec = spec_from_plan(program, plan, base_dir=EXAMPLES, backend="simulated")
    decided = {s for w in plan.workflows for p in w.llm_pools
               for s, on in [(p.stage, p.prewarm), *[(c.stage, c.prewarm) for c in p.colocated]] if on}
    assert decided == {s for w in plan.workflows for p in w.llm_pools for s in p.prewarm_stages}
    assert decided and {s for p in spec.llm_pools for s in p.prewarm} == decided
    assert default_spec(program, base_dir=EXAMPLES).llm_pools[0].prewarm  # the file's prefixes: warmed by default
