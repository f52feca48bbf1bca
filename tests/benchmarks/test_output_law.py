"""benchmarks/output_law.py: the two laws it compares are built from the trace as documented."""

from __future__ import annotations

import json
import statistics

from benchmarks.output_law import EARLIER, old_law, with_law
from cortexlang.compiler import compile_file
from cortexlang.ir import LLMStage
from planner.observed import observe, read_trace
from tests.conftest import EXAMPLES


def test_the_old_law_is_every_calls_mean_and_the_learnt_one_splits_off_the_runaways() -> None:
    program = compile_file(EXAMPLES / "nl2sql.cortex").program
    lines = EARLIER.read_text(encoding="utf-8").splitlines()
    lengths: dict[str, list[int]] = {}
    for line in lines:
        for call in json.loads(line).get("calls", ()):
            if call.get("output_tokens"):
                lengths.setdefault(call["stage"], []).append(call["output_tokens"])
    old = old_law(program, EARLIER)
    assert old == {n: {"output_tokens": round(statistics.fmean(xs)), "output_cv": None, "runaway": 0.0}
                   for n, xs in lengths.items()}
    learnt = observe(program, read_trace(lines)).program
    assert all(s.runaway > 0.4 and s.output_tokens < old[s.name]["output_tokens"] / 1.5
               for s in learnt.workflows[0].stages if isinstance(s, LLMStage))
    back = with_law(learnt, old).workflows[0]
    assert all((s.output_cv, s.runaway) == (None, 0.0) for s in back.stages if isinstance(s, LLMStage))
    assert back.stage("execute") == learnt.workflows[0].stage("execute")
