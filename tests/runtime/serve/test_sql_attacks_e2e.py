"""Malicious SQL end to end: ``POST /v1/runs`` on a real server, a model scripted to emit the attack.

Every SQLite statement of the security suite's corpus (:mod:`tests.security.corpus`) goes
through the NL2SQL workflow: its LLM stages run on the simulated engine, scripted so that
``generate`` and every ``fix`` answer the attack verbatim (the stages' stop strings removed, so
a multi-statement trick is not cut at its first ``;`` before it reaches SQL), and the SQL stage
runs it against the corpus's scratch database. Every attempt (the first and each of the three
repairs) must be refused, the run must end ``fail`` (the repair budget is spent), and the
database's fingerprint and the host paths the corpus names must be unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cortexlang.ir import LLMStage
from runtime.build.spec import RuntimeSpec
from runtime.orchestrator import Orchestrator
from runtime.orchestrator.engines import engine_factory
from runtime.serve import create_app
from tests.security.corpus import Attack, attacks
from tests.security.databases import attack_files, make_sqlite, sqlite_fingerprint

from ..orchestrator.conftest import SPEEDUP, example_spec, scripted
from .live import LiveServer, live_server

STATEMENT_TIMEOUT_S = 0.25
"""Short, so the corpus's never-ending statements cost little (each runs four times)."""


def verbatim(spec: RuntimeSpec) -> RuntimeSpec:
    """``spec`` with no stop strings on its LLM stages: the model's whole answer reaches the SQL stage."""
    workflow = spec.program.workflow(spec.workflow)
    stages = tuple(s.model_copy(update={"stop": ()}) if isinstance(s, LLMStage) else s for s in workflow.stages)
    workflows = tuple(workflow.model_copy(update={"stages": stages}) if w.name == workflow.name else w
                      for w in spec.program.workflows)
    databases = tuple(d.model_copy(update={"statement_timeout_s": STATEMENT_TIMEOUT_S}) for d in spec.databases)
    return spec.model_copy(update={"program": spec.program.model_copy(update={"workflows": workflows}),
                                   "databases": databases})


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path, dict[str, str]]]:
    db = make_sqlite(tmp_path_factory.mktemp("e2e-attacks") / "shop.db")
    current = {"statement": ""}
    orch = Orchestrator(verbatim(example_spec("nl2sql", db)),
                        engine_factory("simulated", responder=scripted(lambda s, p: current["statement"]),
                                       speedup=SPEEDUP))
    with live_server(create_app(orch)) as live:
        yield live, db, current


def test_the_corpus_has_the_sqlite_attacks() -> None:
    assert len(attacks("sqlite")) >= 30


@pytest.mark.parametrize("attack", attacks("sqlite"), ids=lambda a: a.id)
def test_the_attack_is_refused_end_to_end_and_nothing_changes(
        scripted_server: tuple[LiveServer, Path, dict[str, str]], attack: Attack) -> None:
    live, db, current = scripted_server
    before, host_before = sqlite_fingerprint(db), attack_files()
    current["statement"] = attack.statement
    r = httpx.post(f"{live.url}/v1/runs", timeout=60, json={"inputs": {"question": f"please: {attack.why}"},
                                                            "wait": True})
    assert r.status_code == 200, r.text[:300]
    run = r.json()
    assert sqlite_fingerprint(db) == before and attack_files() == host_before
    emitted = [c for c in run["calls"] if c["stage"] in ("generate", "fix")]
    assert emitted and all(c["outcome"] == "ok" for c in emitted)  # the model did emit it, whole
    executed = [c for c in run["calls"] if c["stage"] == "execute"]
    assert [c["outcome"] for c in executed] == ["error"] * 4, run  # generate + 3 repairs, each refused
    assert all(c["error"] for c in executed) and run["status"] == "fail"
    assert httpx.get(f"{live.url}/readyz").status_code == 200
