"""``cortex apply PLAN.json --server URL``: change a running deployment to match a plan.

Like ``terraform apply`` after ``cortexc plan``: fetches the running deployment
(``GET /v1/deployment``), shows the diff against the plan it serves (pool by pool,
:func:`planner.render.render_diff`) and the steps the server will take (a dry run),
asks for confirmation unless ``--yes``, then applies them and prints each step as
it progresses, and finally what changed and what did not. The server refuses the
apply if the deployment changed since the diff was shown.

Exit codes: 0 applied (or nothing to change, or declined), 1 the apply failed part
way or the server refused it, 2 usage errors (unreadable plan, no server, no token).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from cortexlang.cli.common import EXIT_ERRORS, usage_error


class _Refused(Exception):
    """The server answered with an error (message from its JSON body)."""


def _check(resp: Any) -> Any:
    if resp.status_code >= 400:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text
        hint = " (pass the server's token: --token or CORTEX_API_TOKEN)" if resp.status_code == 401 else ""
        raise _Refused(f"HTTP {resp.status_code}: {message}{hint}")
    return resp


def _step_line(step: dict[str, Any]) -> str:
    what = f"{step['action']}" + (f" {step['pool']}" if step.get("pool") else "")
    return f"{what}: {'; '.join(step['details'])}"


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply_cmd(
        plan_path: Path = typer.Argument(..., help="A plan made by `cortexc plan -o`.", metavar="PLAN.json"),
        server: str = typer.Option(..., "--server", help="The running `cortex serve`, e.g. http://127.0.0.1:8000."),
        token: Optional[str] = typer.Option(None, "--token", envvar="CORTEX_API_TOKEN",
                                            help="The server's API token (applying always needs it)."),
        workflow: Optional[str] = typer.Option(None, "--workflow", help="The workflow, if it serves several."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Apply without asking."),
        timeout: float = typer.Option(900.0, "--timeout", min=1.0, help="Seconds to wait for the apply."),
    ) -> None:
        """Apply a plan to a running deployment: show the diff, confirm, apply step by step."""
        import httpx

        from cortexlang.cli.common import load_plan
        from planner.plan import Plan
        from planner.render import render_diff

        plan = load_plan(plan_path, str(plan_path))
        if not token:
            raise usage_error("applying needs the server's API token: pass --token or set CORTEX_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"}
        params = {"workflow": workflow} if workflow else {}
        body: dict[str, Any] = {"plan": json.loads(plan.canonical_json()), **({"workflow": workflow} if workflow else {})}
        try:
            with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout) as http:
                live = _check(http.get("/v1/deployment", params=params)).json()
                body["revision"] = live["revision"]
                if live.get("plan"):
                    diff = render_diff(Plan.model_validate(live["plan"]), plan)
                    typer.echo(diff.replace("Changes against the saved plan:", "Changes against the running "
                                            f"deployment ({live['workflow']} v{live['version']}):", 1))
                steps = _check(http.post("/v1/deployment/apply", json={**body, "dry_run": True})).json()["steps"]
                if not steps:
                    typer.echo("Nothing to change: the deployment already matches the plan.")
                    return
                typer.echo("Steps:")
                for i, step in enumerate(steps, 1):
                    typer.echo(f"  {i}. {_step_line(step)}")
                if not yes:
                    if not sys.stdin.isatty():
                        raise usage_error("not a terminal: pass --yes to apply without a prompt")
                    if not typer.confirm("Apply these changes?", default=False):
                        typer.echo("Not applied.")
                        return
                result = _stream_apply(http, body, len(steps))
        except _Refused as exc:
            typer.echo(f"error: the server refused: {exc}", err=True)
            raise typer.Exit(EXIT_ERRORS)
        except httpx.HTTPError as exc:
            typer.echo(f"error: cannot reach {server}: {exc}", err=True)
            raise typer.Exit(EXIT_ERRORS)
        raise typer.Exit(_report(result))


def _stream_apply(http: Any, body: dict[str, Any], total: int) -> dict[str, Any]:
    """POST the apply and print each step's progress; the final result."""
    started: dict[int, float] = {}
    order: list[str] = []
    with http.stream("POST", "/v1/deployment/apply", json=body) as resp:
        if resp.status_code >= 400:
            resp.read()
            _check(resp)
        for line in resp.iter_lines():
            if not line:
                continue
            item = json.loads(line)
            if "result" in item:
                return dict(item["result"])
            step = item["step"]
            key = _step_line(step)
            if key not in order:
                order.append(key)
            n = order.index(key) + 1
            if step["status"] == "running":
                started[n] = time.monotonic()
                typer.echo(f"[{n}/{total}] {key} ...")
            else:
                took = f" ({time.monotonic() - started[n]:.1f} s)" if n in started else ""
                error = f": {step['error']}" if step.get("error") else ""
                typer.echo(f"[{n}/{total}] {step['status']}{took}{error}")
    raise _Refused("the server closed the connection before the apply finished: check GET /v1/deployment")


def _report(result: dict[str, Any]) -> int:
    """Print what changed and what did not; the exit code."""
    if result["status"] == "refused":
        typer.echo(f"error: not applied: {result.get('error')}", err=True)
        return EXIT_ERRORS
    steps = result["steps"]
    done = [s for s in steps if s["status"] == "done"]
    if result["status"] == "applied":
        typer.echo(f"Applied: {len(done)} step(s).")
    else:
        failed = next(s for s in steps if s["status"] == "failed")
        typer.echo(f"error: the apply stopped at a failed step: {_step_line(failed)}: {failed['error']}", err=True)
        typer.echo("Changed: " + ("; ".join(_step_line(s) for s in done) or "nothing"))
        typer.echo("Not changed: " + "; ".join(_step_line(s) for s in steps if s["status"] != "done"))
    pools = result.get("deployment", {}).get("llm_pools", [])
    for pool in pools:
        typer.echo(f"  pool {pool['name']}: {pool['model']} on {pool['device']} x {pool['replicas']} "
                   f"({', '.join(pool['replica_ids'])})")
    return 0 if result["status"] == "applied" else EXIT_ERRORS
