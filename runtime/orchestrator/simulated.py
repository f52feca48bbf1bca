"""Responses for simulated engines that walk the call graph the way the plan expects.

A simulated engine (:class:`runtime.engines.simulated.SimulatedEngine`) has no
model; it needs a *responder* for the text of each request. The planned
responder makes runs take the branches the IR's planning probabilities say
they take, so a simulated run exercises retries, field branches and the real
SQL executors with realistic frequencies:

* a stage whose output feeds an SQL stage answers a *real* statement whose
  execution ends with the outcome drawn from the SQL stage's out-edge
  probabilities (``ok``: ``SELECT 1``; ``empty``: a query with no rows;
  ``error``: a query on a table that does not exist);
* a JSON stage with field branches answers an object whose branch fields take
  the value of the out-edge drawn from its probabilities (``else`` draws a
  value no branch names);
* anything else answers placeholder words.

Every answer is padded (in an SQL comment, a JSON ``text`` field, or words) to
the stage's declared ``output_tokens`` -- or, for the stage's ``runaway`` share of
calls, to ``max_tokens`` -- so simulated timings follow the plan's token counts. Draws are seeded by the request id: reproducible per run.
Results still carry ``engine == "simulated"``.
"""

from __future__ import annotations

import hashlib
import json
import random

from cortexlang.ir import LLMStage, SQLStage, Workflow
from runtime.engines.base import GenerationRequest
from runtime.engines.simulated import CHARS_PER_TOKEN, Responder, prompt_text

SQL_BY_OUTCOME = {
    "ok": "SELECT 1 AS simulated",
    "empty": "SELECT 1 AS simulated WHERE 1 = 0",
    "error": "SELECT simulated FROM simulated_missing_table",
}
OTHER_VALUE = "__simulated_other__"


def request_stage(request_id: str) -> str | None:
    """The stage encoded in an orchestrator request id (``<run>.<stage>.<n>``)."""
    parts = request_id.rsplit(".", 2)
    return parts[1] if len(parts) == 3 else None


def _filler(tokens: int, seed: bytes) -> str:
    return "".join(f"s{seed[i % len(seed)] % 100:02d} " for i in range(max(tokens, 0)))


class PlannedResponder:
    """A :data:`Responder` for one workflow (see module docstring)."""

    def __init__(self, workflow: Workflow, seed: int = 0) -> None:
        self.workflow = workflow
        self.seed = seed
        self.stages = {s.name: s for s in workflow.stages}
        self._sql_consumer: dict[str, SQLStage] = {}
        for s in workflow.stages:
            if isinstance(s, SQLStage):
                if s.query_from:
                    self._sql_consumer[s.query_from] = s
                for e in workflow.edges:
                    if e.target == s.name and e.source in self.stages:
                        self._sql_consumer.setdefault(e.source, s)

    def __call__(self, request: GenerationRequest) -> str:
        digest = hashlib.sha256(f"{self.seed}:{request.request_id}:{prompt_text(request)}".encode()).digest()
        rng = random.Random(digest)
        stage = self.stages.get(request_stage(request.request_id) or "")
        if not isinstance(stage, LLMStage):
            return _filler(32, digest)
        budget = min(stage.output_tokens, request.max_tokens)
        if stage.runaway > 0.0 and random.Random(digest + b"runaway").random() < stage.runaway:
            budget = request.max_tokens  # the stage's law: this call never stops (its own stream: others stay put)
        consumer = self._sql_consumer.get(stage.name)
        if consumer is not None:
            sql = SQL_BY_OUTCOME[self._draw_outcome(consumer.name, rng)]
            pad = budget - len(sql) // CHARS_PER_TOKEN - 1
            return sql + (" -- " + _filler(pad - 1, digest) if pad > 1 else "")
        if stage.output == "json":
            obj: dict[str, object] = self._draw_fields(stage.name, rng)
            body = json.dumps(obj)
            obj["text"] = _filler(budget - len(body) // CHARS_PER_TOKEN - 4, digest).strip()
            return json.dumps(obj)
        return _filler(budget, digest)

    def _draw_outcome(self, stage: str, rng: random.Random) -> str:
        edges = self.workflow.out_edges(stage)
        outcome_edges = [e for e in edges if e.condition.kind == "outcome"]
        if not outcome_edges:
            return "ok"
        u, acc = rng.random() * sum(e.probability for e in outcome_edges), 0.0
        for e in outcome_edges:
            acc += e.probability
            if u < acc:
                return rng.choice(e.condition.values)
        return outcome_edges[-1].condition.values[0]

    def _draw_fields(self, stage: str, rng: random.Random) -> dict[str, object]:
        edges = [e for e in self.workflow.out_edges(stage) if e.condition.kind in ("field", "else")]
        fields = {e.condition.field for e in edges if e.condition.field}
        if not fields:
            return {}
        u, acc = rng.random() * (sum(e.probability for e in edges) or 1.0), 0.0
        chosen = edges[-1]
        for e in edges:
            acc += e.probability
            if u < acc:
                chosen = e
                break
        out: dict[str, object] = {f: OTHER_VALUE for f in sorted(fields)}
        if chosen.condition.kind == "field" and chosen.condition.field:
            out[chosen.condition.field] = chosen.condition.values[0]
        return out


def planned_responder(workflow: Workflow, seed: int = 0) -> Responder:
    return PlannedResponder(workflow, seed)
