"""Run history over HTTP (a real server on 127.0.0.1): fresh ``X-Cortex-Run`` ids cannot push runs in flight out."""

from __future__ import annotations

from pathlib import Path

import httpx

from runtime.orchestrator import Orchestrator
from runtime.orchestrator.engines import engine_factory
from runtime.serve import create_app

from ..orchestrator.conftest import example_spec, scripted
from .live import live_server


def two_speed(stage: str, prompt: str) -> str:
    """``generate`` answers long (its run stays in flight for seconds); ``fix`` answers at once."""
    return "SELECT 1 -- " + "padding " * 200 if stage == "generate" else "ok"


def test_fresh_run_ids_cannot_evict_runs_in_flight(sales_db_master: Path) -> None:
    spec = example_spec("nl2sql", sales_db_master, retained_runs=4, borrow_idle=False)
    orch = Orchestrator(spec, engine_factory("simulated", responder=scripted(two_speed), speedup=0.5))
    with live_server(create_app(orch)) as live:
        slow = [httpx.post(f"{live.url}/v1/runs", json={"inputs": {"question": f"slow {i}"}}).json()["run_id"]
                for i in range(2)]

        def chat(run_id: str) -> httpx.Response:
            return httpx.post(f"{live.url}/v1/chat/completions", timeout=30,
                              headers={"X-Cortex-Stage": "fix", "X-Cortex-Run": run_id},
                              json={"messages": [{"role": "user", "content": "fix it"}]})

        assert chat("agent-1").status_code == 200 and chat("agent-2").status_code == 200
        # Full (two runs in flight, two idle agents): a fresh name ends the agent idle longest, never a
        # run in flight; so do fresh runs, until every place holds a run in flight.
        assert chat("agent-3").status_code == 200
        assert httpx.get(f"{live.url}/v1/runs/agent-1").status_code == 404  # ended, then evicted
        slow += [httpx.post(f"{live.url}/v1/runs", json={"inputs": {"question": f"slow {i}"}}).json()["run_id"]
                 for i in (2, 3)]
        refused = chat("agent-4")
        assert refused.status_code == 429 and "history is full" in refused.json()["error"]["message"]
        assert refused.json()["retryable"] is True and int(refused.headers["retry-after"]) >= 1
        for run_id in slow:
            assert httpx.get(f"{live.url}/v1/runs/{run_id}").json()["status"] == "running"
        cancelled = httpx.delete(f"{live.url}/v1/runs/{slow[0]}").json()
        assert cancelled["cancelled"] is True and cancelled["status"] == "cancelled"
        assert chat("agent-4").status_code == 200  # the cancelled run finished: it may go now
        for run_id in slow[1:]:
            assert httpx.get(f"{live.url}/v1/runs/{run_id}").json()["status"] == "running"
        assert httpx.get(f"{live.url}/v1/runs/{slow[0]}").status_code == 404
