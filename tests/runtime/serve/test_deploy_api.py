"""`/v1/deployment` on a real uvicorn server (simulated engines): inspect, dry-run, apply, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from planner.plan import Plan
from runtime.orchestrator import Orchestrator
from runtime.orchestrator.autoscaler import AutoscalerConfig, PoolLimits
from runtime.serve.deploy_api import scalable_app
from tests.runtime.orchestrator.conftest import sim_factory
from tests.runtime.orchestrator.test_deployment import changed, nl2sql_plan, planned_spec  # noqa: F401
from tests.runtime.orchestrator.test_failures import long_answer

from .live import live_server

TOKEN = "s3cret-token-for-apply-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def app_for(plan: Plan, db: Path, token: str | None = TOKEN, autoscale: AutoscalerConfig | None = None,  # type: ignore[no-untyped-def]
            speedup: float = 200):
    """What `cortex serve` runs (simulated engines)."""
    return scalable_app(Orchestrator(planned_spec(plan, db), sim_factory(long_answer, speedup=speedup)), token=token,
                        autoscale=autoscale)


def test_apply_over_http_streams_progress_and_changes_the_deployment(nl2sql_plan: Plan, sales_db: Path) -> None:  # noqa: F811
    with live_server(app_for(nl2sql_plan, sales_db)) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        assert http.get("/v1/deployment").status_code == 401  # the token guards it
        live = http.get("/v1/deployment", headers=AUTH).json()
        assert live["llm_pools"][0]["replicas"] == 1 and live["plan"] is not None
        runs = [http.post("/v1/runs", json={"inputs": {"question": f"customers {i}"}}, headers=AUTH).json()["run_id"]
                for i in range(12)]
        body = {"plan": json.loads(changed(nl2sql_plan, replicas=2, max_tokens=64).canonical_json()),
                "revision": live["revision"]}
        dry = http.post("/v1/deployment/apply", json={**body, "dry_run": True}, headers=AUTH).json()
        assert [s["action"] for s in dry["steps"]] == ["scale_out", "deploy"]
        assert http.get("/v1/deployment", headers=AUTH).json()["revision"] == live["revision"]  # dry: no change
        with http.stream("POST", "/v1/deployment/apply", json=body, headers=AUTH) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in resp.iter_lines() if line]
        progress = [(x["step"]["action"], x["step"]["status"]) for x in lines if "step" in x]
        assert progress == [("scale_out", "running"), ("scale_out", "done"), ("deploy", "running"), ("deploy", "done")]
        result = lines[-1]["result"]
        assert result["status"] == "applied"
        assert result["deployment"]["llm_pools"][0]["replicas"] == 2
        assert result["deployment"]["knobs"]["max_tokens"]["generate"] == 64
        for run_id in runs:
            info = http.get(f"/v1/runs/{run_id}", headers=AUTH).json()
            while info["status"] == "running":
                info = http.get(f"/v1/runs/{run_id}", headers=AUTH).json()
            assert info["status"] in ("done", "fail") and info["error"] is None
        stale = http.post("/v1/deployment/apply", json=body, headers=AUTH)
        assert stale.status_code == 409 and "changed since" in stale.json()["error"]
        metrics = http.get("/metrics", headers=AUTH).text
        assert 'cortex_pool_replicas{pool="fix"} 2' in metrics
        assert 'cortex_pool_scaling_actions_total{pool="fix",action="scale_out"} 1' in metrics
        with http.stream("GET", "/v1/scaling/events", headers=AUTH) as events:
            first = next(line for line in events.iter_lines() if line.startswith("data: "))
        event = json.loads(first.removeprefix("data: "))
        assert event["action"] == "scale_out" and event["pool"] == "fix" and event["replica"] == "fix-1"


def test_serve_with_the_monitor_exports_its_decisions(nl2sql_plan: Plan, sales_db: Path) -> None:  # noqa: F811
    # The burst below must overload the pool: one replica of 4 slots, pinned (the planner's choice between
    # 4 and 5 slots moves with its model; 60 runs keep 5 slots under full load at this speed-up).
    w = nl2sql_plan.workflows[0]
    plan = nl2sql_plan.model_copy(update={"workflows": (w.model_copy(update={"llm_pools": tuple(
        p.model_copy(update={"replicas": 1, "max_num_seqs": 4}) for p in w.llm_pools)}),)})
    config = AutoscalerConfig(default=PoolLimits(1, 3), interval_s=0.05, window_s=0.4, scale_out_cooldown_s=0.1)
    with live_server(app_for(plan, sales_db, autoscale=config, speedup=20)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30, headers=AUTH) as http:
        for i in range(60):  # well beyond one replica's 4 slots
            assert http.post("/v1/runs", json={"inputs": {"question": f"customers {i}"}}).status_code in (202, 429)
        with http.stream("GET", "/v1/scaling/events") as events:
            data = (json.loads(line.removeprefix("data: ")) for line in events.iter_lines()
                    if line.startswith("data: "))
            decision = next(e for e in data if e.get("kind") == "decision")
        assert decision["action"] == "scale_out" and decision["pool"] == "fix" and "M/G/c" in decision["reason"]
        assert decision["signals"]["arrival_rate"] > 0
        metrics = http.get("/metrics").text
        assert 'cortex_autoscaler_decisions_total{pool="fix",action="scale_out"}' in metrics
        assert 'cortex_autoscaler_desired_replicas{pool="fix"}' in metrics


def test_apply_refusals_change_nothing(nl2sql_plan: Plan, sales_db: Path) -> None:  # noqa: F811
    plan_json = json.loads(changed(nl2sql_plan, replicas=2).canonical_json())
    with live_server(app_for(nl2sql_plan, sales_db)) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        before = http.get("/v1/deployment", headers=AUTH).json()
        assert http.post("/v1/deployment/apply", json={"plan": plan_json}).status_code == 401
        assert http.post("/v1/deployment/apply", content=json.dumps({"plan": plan_json}),
                         headers={**AUTH, "Content-Type": "text/plain"}).status_code == 415
        bad = http.post("/v1/deployment/apply", json={"plan": {"workflows": []}}, headers=AUTH)
        assert bad.status_code == 400 and bad.json()["error"].startswith("invalid request: ")
        other = json.loads(nl2sql_plan.canonical_json())
        other["workflows"][0]["workflow"] = "elsewhere"
        wrong = http.post("/v1/deployment/apply", json={"plan": other}, headers=AUTH)
        assert wrong.status_code == 400 and "elsewhere" in wrong.json()["error"]
        assert http.get("/v1/deployment", headers=AUTH).json() == before
    with live_server(app_for(nl2sql_plan, sales_db, token=None)) as srv, httpx.Client(base_url=srv.url) as http:
        refused = http.post("/v1/deployment/apply", json={"plan": plan_json})
        assert refused.status_code == 403 and "--token" in refused.json()["error"]


def test_cortex_apply_shows_the_diff_and_applies_with_yes(nl2sql_plan: Plan, sales_db: Path,  # noqa: F811
                                                           tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cortexlang.cli import runtime_app

    new_plan = tmp_path / "new.json"
    new_plan.write_text(changed(nl2sql_plan, replicas=2, max_tokens=64).canonical_json())
    runner = CliRunner()
    with live_server(app_for(nl2sql_plan, sales_db)) as srv:
        args = ["apply", str(new_plan), "--server", srv.url]
        no_token = runner.invoke(runtime_app, args, env={"CORTEX_API_TOKEN": ""})
        assert no_token.exit_code == 2 and "--token" in no_token.output
        wrong = runner.invoke(runtime_app, [*args, "--token", "x" * 20])
        assert wrong.exit_code == 1 and "HTTP 401" in wrong.output
        declined = runner.invoke(runtime_app, [*args, "--token", TOKEN])  # not a terminal: asks for --yes
        assert declined.exit_code == 2 and "--yes" in declined.output
        assert "~ nl2sql.fix" in declined.output and "replicas: 1 -> 2" in declined.output
        assert "1. scale_out fix: replicas 1 -> 2" in declined.output
        done = runner.invoke(runtime_app, [*args, "--token", TOKEN, "--yes"])
        assert done.exit_code == 0, done.output
        assert "[1/2] scale_out fix" in done.output and "[2/2] done" in done.output
        assert "Applied: 2 step(s)." in done.output and "x 2 (fix-0, fix-1)" in done.output
        again = runner.invoke(runtime_app, [*args, "--token", TOKEN, "--yes"])
        assert again.exit_code == 0 and "Nothing to change" in again.output
        with httpx.Client(base_url=srv.url) as http:
            assert http.get("/v1/deployment", headers=AUTH).json()["llm_pools"][0]["replicas"] == 2


def test_serve_refuses_bad_autoscale_limits_before_starting_anything() -> None:
    from typer.testing import CliRunner

    from cortexlang.cli import runtime_app

    result = CliRunner().invoke(runtime_app, ["serve", "examples/nl2sql.cortex", "--engine", "simulated",
                                              "--autoscale", "min=3,max=2"])
    assert result.exit_code == 2 and "min <= max" in result.output


def test_cortex_apply_reports_a_partial_failure(nl2sql_plan: Plan, sales_db: Path, tmp_path: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from cortexlang.cli import runtime_app
    from runtime.engines.base import EngineHealth

    good = sim_factory(long_answer, speedup=200)
    built = {"n": 0}

    def factory(spec, lp, rep):  # type: ignore[no-untyped-def]  # the third engine built never gets ready
        built["n"] += 1
        engine = good(spec, lp, rep)
        if built["n"] == 3:
            async def failed() -> EngineHealth:
                return EngineHealth(state="failed", detail="out of memory")
            engine.health = failed  # type: ignore[method-assign]
        return engine

    new_plan = tmp_path / "new.json"
    new_plan.write_text(changed(nl2sql_plan, replicas=3, max_tokens=64).canonical_json())
    app = scalable_app(Orchestrator(planned_spec(nl2sql_plan, sales_db), factory), token=TOKEN)
    with live_server(app) as srv:
        result = CliRunner().invoke(runtime_app, ["apply", str(new_plan), "--server", srv.url, "--token", TOKEN,
                                                  "--yes"])
        assert result.exit_code == 1
        assert "[1/3] done" in result.output and "[2/3] failed" in result.output
        assert "out of memory" in result.output
        assert "Changed: scale_out fix: replicas 1 -> 2" in result.output
        assert "Not changed: scale_out fix: replicas 2 -> 3" in result.output
        assert "deploy: knob max_tokens[fix]: 96 -> 64" in result.output
        assert "x 2 (fix-0, fix-1)" in result.output  # the replica that started serves; the deployment says so
        with httpx.Client(base_url=srv.url, headers=AUTH) as http:
            live = http.get("/v1/deployment").json()
        assert live["llm_pools"][0]["replicas"] == 2 and live["knobs"]["max_tokens"]["fix"] == 96


def test_hostile_plans_get_a_4xx_json_error_and_change_nothing(nl2sql_plan: Plan, sales_db: Path) -> None:  # noqa: F811
    """Hostile-user pass (round 3): ``/v1/deployment/apply`` was not in the HTTP fuzzer. Mutated plans (hostile
    numbers, wrong types, deleted keys), dry runs and applies: a 200 or a 4xx with a JSON error, never a 5xx,
    and a refused apply leaves the deployment's revision as it was."""
    import random
    from collections import Counter

    from tests.runtime.cli_fuzzing import mutate_json, mutate_number

    base = json.loads(nl2sql_plan.canonical_json())
    seen: Counter[str] = Counter()
    with live_server(app_for(nl2sql_plan, sales_db)) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        for i in range(150):
            rng = random.Random(f"apply:{i}")
            plan = json.loads(json.dumps(base))
            for _ in range(rng.choice([1, 2, 3])):
                plan = mutate_number(rng, plan) if rng.random() < 0.5 else mutate_json(rng, plan, ["generate", -3])
            body = {"plan": plan, "dry_run": rng.random() < 0.8}
            if rng.random() < 0.1:
                body = rng.choice([plan, [], {"plan": []}, {"plan": plan, "revision": "x" * 65},
                                   {"plan": plan, "workflow": "nope"}])
            dry = isinstance(body, dict) and body.get("dry_run") is True
            before = http.get("/v1/deployment", headers=AUTH).json()["revision"]
            r = http.post("/v1/deployment/apply", content=json.dumps(body, allow_nan=True),
                          headers={**AUTH, "Content-Type": "application/json"})
            assert r.status_code in (200, 400, 409, 422), (i, r.status_code, r.text[:300])
            seen[f"{r.status_code}{' dry' if dry else ''}"] += 1
            if r.status_code != 200:
                assert isinstance(r.json().get("error"), (str, dict)), (i, r.text[:300])
                assert http.get("/v1/deployment", headers=AUTH).json()["revision"] == before, i
            elif not dry:
                result = [json.loads(line) for line in r.text.splitlines() if line][-1]["result"]
                assert result["status"] in ("applied", "failed", "refused"), (i, result)
        assert http.get("/readyz").status_code == 200
        assert seen["400"] + seen["400 dry"] + seen["422"] + seen["422 dry"] > 50 and seen["200 dry"] > 10, seen
        r = http.post("/v1/runs", json={"inputs": {"question": "customers"}, "wait": True}, headers=AUTH)
        assert r.status_code == 200, r.text[:300]
