"""Declared output constraints through the orchestrator, on simulated engines (labelled so).

Every call of a constrained stage carries its constraint (an `sql` one as the grammar of the
database's live schema); the simulated engine does not decode under it but labels each result
`satisfied`/`violated`; an engine without the capability fails the deployment before it starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.engines.base import GenerationRequest
from runtime.engines.simulated import SimulatedEngine
from runtime.orchestrator.engines import replica_profile
from runtime.orchestrator.errors import OrchestratorError
from runtime.orchestrator.prewarm import is_warm_up
from runtime.orchestrator.simulated import request_stage

from .conftest import example_spec, run_async, started

pytest.importorskip("xgrammar")


class Recording:
    """A factory of simulated engines answering per stage, remembering every request and the label
    (``result.constraint``) of every result."""

    def __init__(self, answers: dict[str, str], engine_class: type[SimulatedEngine] = SimulatedEngine) -> None:
        self.answers, self.engine_class = answers, engine_class
        self.requests: list[GenerationRequest] = []
        self.labels: list[tuple[str | None, str | None]] = []
        self.engines: list[SimulatedEngine] = []

    def respond(self, request: GenerationRequest) -> str:
        if is_warm_up(request):  # the plan's prewarm requests: not a run's call
            return ""
        self.requests.append(request)
        return self.answers[request_stage(request.request_id) or ""]

    def __call__(self, spec, pool, rep) -> SimulatedEngine:  # noqa: ANN001 (the EngineFactory signature)
        engine = self.engine_class(replica_profile(rep), kv_capacity_tokens=rep.kv_capacity_tokens,
                                   max_num_seqs=16, responder=self.respond, speedup=2000.0)
        self.engines.append(engine)
        engine_generate = engine.generate

        async def generate(request: GenerationRequest):  # noqa: ANN202
            result = await engine_generate(request)
            if not is_warm_up(request):
                self.labels.append((request_stage(request.request_id), result.constraint))
            return result

        engine.generate = generate  # type: ignore[method-assign]
        return engine


async def _run(spec, factory: Recording, inputs: dict) -> tuple:
    orch = await started(spec, factory)
    try:
        info = await orch.run(inputs)
        return info, [c for c in info.calls if c.kind == "llm"]
    finally:
        await orch.stop()


def test_sql_constraint_reaches_every_call_as_the_database_grammar(sales_db: Path) -> None:
    factory = Recording({"generate": "SELECT COUNT(*) FROM sales;", "fix": "SELECT COUNT(*) FROM sales;"})
    info, _ = run_async(_run(example_spec("nl2sql_constrained", sales_db), factory, {"question": "How many sales?"}))
    assert info.status == "done"
    (request,) = factory.requests
    c = request.constraint
    assert c is not None and c.kind == "grammar" and c.source == "sql:sales"
    for table in ("customers", "employees", "products", "quotas", "regions", "sales"):
        assert f'"{table}"' in c.spec  # the tables of the live schema, read at start
    # the unconstrained example sends none
    plain = Recording({"generate": "SELECT COUNT(*) FROM sales;"})
    run_async(_run(example_spec("nl2sql", sales_db), plain, {"question": "How many sales?"}))
    assert plain.requests[0].constraint is None


def test_simulated_engine_labels_whether_its_answer_satisfies_the_constraint(sales_db: Path) -> None:
    factory = Recording({"generate": "SELECT secret FROM users;", "fix": "SELECT COUNT(*) FROM sales;"})
    info, _ = run_async(_run(example_spec("nl2sql_constrained", sales_db), factory, {"question": "q"}))
    assert factory.labels == [("generate", "violated"), ("fix", "satisfied")]
    assert info.status == "done"  # the fix's statement ran


def test_structured_output_example_regex_json_and_grammar() -> None:
    ticket = json.dumps({"product": "X200", "severity": "high", "summary": "the screen flickers"})
    factory = Recording({"classify": "technical", "extract": ticket, "escalate": "yes: it is urgent"})
    info, _ = run_async(_run(example_spec("structured_output"), factory, {"ticket": "My X200 screen flickers"}))
    assert info.status == "done"
    assert [r.constraint.kind for r in factory.requests] == ["regex", "json", "grammar"]
    assert factory.labels == [("classify", "satisfied"), ("extract", "satisfied"), ("escalate", "satisfied")]
    factory.answers.update(classify="billing, I think", extract=json.dumps({"product": "X200"}),
                           escalate="maybe")
    factory.labels.clear()
    run_async(_run(example_spec("structured_output"), factory, {"ticket": "t"}))
    assert factory.labels == [("classify", "violated"), ("extract", "violated"), ("escalate", "violated")]


def test_an_engine_that_cannot_honour_a_constraint_fails_the_deployment(sales_db: Path) -> None:
    class NoGrammar(SimulatedEngine):
        capabilities = SimulatedEngine.capabilities - {"constraint:grammar"}

    factory = Recording({"generate": "SELECT 1;"}, NoGrammar)
    with pytest.raises(OrchestratorError, match="cannot honour constraint:grammar"):
        run_async(started(example_spec("nl2sql_constrained", sales_db), factory))
    assert factory.engines and all(e._loop_task is None for e in factory.engines)  # none was started


def test_external_calls_of_a_constrained_stage_carry_it_and_refuse_a_response_format(sales_db: Path) -> None:
    from runtime.engines.base import ChatMessage, RequestRejected

    factory = Recording({"generate": "SELECT COUNT(*) FROM sales"})

    async def body() -> None:
        orch = await started(example_spec("nl2sql_constrained", sales_db), factory)
        try:
            messages = (ChatMessage(role="user", content="How many sales?"),)
            await orch.chat(messages, stage="generate")
            assert factory.requests[-1].constraint is not None
            assert factory.labels[-1] == ("generate", "satisfied")
            with pytest.raises(RequestRejected, match="declares an output constraint"):
                await orch.chat(messages, stage="generate", options={"response_format": {"type": "json_object"}})
        finally:
            await orch.stop()

    run_async(body())


def test_an_engine_that_narrows_its_capabilities_when_started_fails_the_deployment_too(sales_db: Path) -> None:
    """A proxy (the Ray one) learns its engine's capabilities only when it starts: checked again then."""

    class Proxy(SimulatedEngine):
        async def start(self) -> None:
            await super().start()
            self.capabilities = SimulatedEngine.capabilities - {"constraint:grammar"}  # type: ignore[misc]

    factory = Recording({"generate": "SELECT 1;"}, Proxy)
    with pytest.raises(OrchestratorError, match="cannot honour constraint:grammar"):
        run_async(started(example_spec("nl2sql_constrained", sales_db), factory))
    assert factory.engines and all(e._loop_task is None for e in factory.engines)  # started, then stopped
