"""The simulated responder follows the stage's output-length law: its ``runaway`` share of answers is padded
to ``max_tokens``, the rest to ``output_tokens`` (runtime/orchestrator/simulated.py)."""

from __future__ import annotations

from cortexlang.ir import Workflow
from runtime.engines.base import GenerationRequest
from runtime.orchestrator.simulated import planned_responder
from runtime.simulator.workloads import edge, llm


def _answer_words(runaway: float, n: int = 400) -> list[int]:
    stage = llm("g", 100, 20, max_tokens=200).model_copy(update={"runaway": runaway})
    respond = planned_responder(Workflow(name="w", stages=(stage,), entry="g", edges=(edge("g", "done"),)))
    return [len(respond(GenerationRequest(request_id=f"r{i}.g.0", prompt="q", max_tokens=200)).split())
            for i in range(n)]


def test_a_runaway_share_of_answers_run_to_max_tokens() -> None:
    words = _answer_words(0.3)
    long = sum(w == 200 for w in words) / len(words)
    assert 0.24 < long < 0.36 and all(w in (20, 200) for w in words)
    assert set(_answer_words(0.0)) == {20}  # no runaways: every answer as before
