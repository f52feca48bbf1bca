"""Tools called with named arguments rendered from the run, retried with backoff on failure, and
stages repeated a fixed number of times: real orchestrator runs (simulated engines)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from cortexlang.compiler import compile_source
from runtime.build.layout import default_spec
from runtime.orchestrator import Orchestrator

from .conftest import sim_factory

TOOLS = Path(__file__).resolve().parents[2] / "semantics_tools"

SOURCE = """
model m { weights = "m"  params = 135M  max_context = 2048  kv_bytes_per_token = 45KiB  profile = "smollm2-135m"
          dtype = float32 }
workflow w {
  inputs = [question]
  llm think {
    model = m  prompt = "{{ question }} {{ attempt }}"  max_tokens = 8  input_tokens = 20  output_tokens = 4
    repeat = 3
  }
  tool look {
    entry = "argtools:lookup"
    service = 1ms..3ms
    args { query = "{{ question }}/{{ history.think | length }}"  k = "{{ 2 + 3 }}" }
    cache { scope = global }
  }
  tool fetch {
    entry = "argtools:flaky"
    service = 1ms
    retry { max = %(retries)d  backoff = 1ms }
    args { query = "{{ question }}" }
  }
  flow {
    think -> look -> fetch
    on fetch { ok -> done  error (10%%) -> fail }
  }
}
"""


def _run(questions: list[str], retries: int) -> list:
    result = compile_source(SOURCE % {"retries": retries}, "w.cortex")
    assert result.program is not None, [str(d) for d in result.diagnostics]
    spec = default_spec(result.program, base_dir=TOOLS, backend="simulated")
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    import argtools

    argtools.calls.clear()
    argtools.attempts.clear()

    async def body() -> list:
        orch = Orchestrator(spec, sim_factory())
        await orch.start()
        try:
            return [await orch.run({"question": q}) for q in questions]
        finally:
            await orch.stop()

    return asyncio.run(body())


def test_named_arguments_repeats_and_retries() -> None:
    infos = _run(["a", "b", "a"], retries=2)
    import argtools

    assert [i.status for i in infos] == ["done", "done", "done"]
    # `think` ran 3 times per run (repeat = 3), so history held 3 results when `look` rendered its args.
    assert [c.stage for c in infos[0].calls].count("think") == 3
    assert argtools.calls == [{"query": "a/3", "k": "5"}, {"query": "b/3", "k": "5"}]  # 3rd run: a cache hit
    assert sum(c.cached for c in infos[2].calls if c.stage == "look") == 1
    # `fetch` failed twice per query and succeeded on the third attempt, inside one call of the stage
    # (the second run of "a" succeeded at once: its attempts went on counting).
    assert dict(argtools.attempts) == {"a": 4, "b": 3}
    assert [c.outcome for c in infos[0].calls if c.stage == "fetch"] == ["ok"]


def test_a_call_whose_every_attempt_fails_ends_the_stage_with_error() -> None:
    (info,) = _run(["c"], retries=1)
    assert info.status == "fail"
    (fetch,) = [c for c in info.calls if c.stage == "fetch"]
    assert fetch.outcome == "error" and "attempt 2 for 'c' failed" in fetch.error


def test_the_compiled_ir_carries_args_retry_and_range() -> None:
    program = compile_source(SOURCE % {"retries": 2}, "w.cortex").program
    look, fetch = program.workflow().stage("look"), program.workflow().stage("fetch")
    assert look.args == {"query": "{{ question }}/{{ history.think | length }}", "k": "{{ 2 + 3 }}"}
    assert look.service_range_s == (0.001, 0.003) and look.service_s == pytest.approx(0.002)
    assert fetch.retry.max_retries == 2 and fetch.retry.backoff_s == pytest.approx(0.001)
    (loop,) = program.workflow().loops
    assert loop.name == "think.repeat" and loop.max_iterations.preferred == 2 and loop.on_exhausted == "look"
