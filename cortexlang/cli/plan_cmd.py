"""``cortexc plan``: size pools (dedicated or shared) per stage, verify the plan in the
simulator, and show (or diff) it.

Exit codes: 0 success, 1 errors in the input or no feasible plan, 2 usage
error. With ``--detailed-exitcode`` (as in ``terraform plan``): 0 no changes,
1 error, 2 changes present — against ``--diff FILE`` when given, otherwise
every pool of a new plan counts as a change.
"""

from __future__ import annotations

import math
import re
import threading
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from cortexlang.cli.common import (
    EXIT_ERRORS, EXIT_OK, MAX_SOURCE_BYTES, compile_or_exit, load_plan, read_lines, read_text, usage_error,
    write_output,
)

if TYPE_CHECKING:  # the planner, pydantic and rich load only when `plan` runs: `cortexc check` starts fast
    from rich.console import Console

    from cortexlang.ir import Inventory, Program
    from planner.plan import Infeasible, Plan

EXIT_CHANGES = 2
SPINNER_AFTER_S = 1.0

_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*(?:/\s*(s|sec|min|m|h|hr))?\s*$", re.IGNORECASE)
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "min": 1 / 60, "m": 1 / 60, "h": 1 / 3600, "hr": 1 / 3600}


class PlanMode(str, Enum):
    cost = "cost"
    headroom = "headroom"


def parse_rate(text: str) -> float:
    """'5/s', '120/min', '3000/h' or a bare number (per second) -> runs per second."""
    m = _RATE.match(text)
    if not m or not 0 < float(m.group(1)) < math.inf:
        raise usage_error(f"--rate {text!r}: expected a positive rate such as 5/s, 120/min or 3000/h")
    return float(m.group(1)) * _PER[m.group(2).lower() if m.group(2) else None]


def compile_program(path: Path) -> Program:
    """The one place the plan command touches the compiler (the planner itself never does)."""
    return compile_or_exit(path).program


def load_inventory(path: Path) -> Inventory:
    """An inventory from JSON (the IR's Inventory) or from a .cortex file's `resources` block."""
    from pydantic import ValidationError

    from cortexlang.ir import Inventory

    if path.suffix == ".json":
        text = read_text(path, f"--inventory {path}", MAX_SOURCE_BYTES)
        try:
            return Inventory.model_validate_json(text)
        except ValidationError as exc:
            raise usage_error(f"{path} is not an inventory: {exc.errors()[0]['msg']} at "
                              f"{'.'.join(str(x) for x in exc.errors()[0]['loc'])}")
    program = compile_program(path)
    if program.inventory is None:
        raise usage_error(f"{path} declares no `resources` block")
    return program.inventory


def apply_observed(program: Program, path: Path, *, to_stderr: bool) -> Program:
    """``--observed TRACE``: the program with the parameters learnt from recorded runs of each of its
    workflows the trace holds; the comparison with the declared values is printed first."""
    from planner.observed import TraceFormatError, observe, read_trace, render

    lines = read_lines(path, f"--observed {path}")
    try:
        runs = read_trace(lines, str(path))
        names = {str(r.get("workflow", "trace")) for r in runs}
        workflows = [w.name for w in program.workflows if w.name in names]
        if not workflows:
            raise TraceFormatError(f"{path}: no run of {', '.join(w.name for w in program.workflows)} "
                                   f"(the trace has: {', '.join(sorted(names))})")
        for name in workflows:
            observed = observe(program, runs, name)
            typer.echo(render(observed), err=to_stderr)
            program = observed.program
    except TraceFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERRORS)
    return program


def _solve_with_feedback(console: Console, verify_budget_s: float | None, feedback_rounds: int = 0,
                         **kwargs) -> Plan | Infeasible:
    """Run the planner (and, unless ``verify_budget_s`` is None, verify the plan in the simulator);
    show a spinner with its current step once it has taken more than a second."""
    from planner.heap import retain_freed_memory

    retain_freed_memory()  # a short-lived planning process: freed arrays reused, not page-faulted in again
    if verify_budget_s is None:
        from planner.api import plan_program as solve
    else:
        from functools import partial

        from cortexlang.cli.plan_verify import plan_and_verify

        solve = partial(plan_and_verify, budget_s=verify_budget_s, feedback_rounds=feedback_rounds)

    result: dict = {}
    step = {"text": "planning"}

    def work() -> None:
        try:
            result["value"] = solve(progress=lambda msg: step.__setitem__("text", msg), **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(SPINNER_AFTER_S)
    if thread.is_alive():
        with console.status("planning...") as status:
            while thread.is_alive():
                status.update(f"planning: {step['text']}...")
                thread.join(0.1)
    if "error" in result:
        raise result["error"]
    return result["value"]


def plan(
    file: Path = typer.Argument(..., help="The .cortex file to plan."),
    inventory: Optional[Path] = typer.Option(None, "--inventory", help="Inventory: a .json Inventory or a .cortex file with `resources`."),
    rate: Optional[str] = typer.Option(None, "--rate", help="Arrival rate for every workflow, e.g. 5/s (overrides `load`)."),
    mode: PlanMode = typer.Option(PlanMode.cost, "--mode", help="cost: cheapest plan meeting the SLOs; headroom: most SLO headroom on the inventory."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as canonical JSON instead of text."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also save the plan (canonical JSON) here."),
    diff: Optional[Path] = typer.Option(None, "--diff", help="Show changes against this saved plan."),
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 0 no changes, 1 error, 2 changes present."),
    seed: int = typer.Option(0, "--seed", min=0, help="Monte Carlo seed (plans are deterministic per seed)."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Simulate the plan before showing it; tighten it until it holds there."),
    verify_budget: float = typer.Option(2.0, "--verify-budget", min=0.1,
                                        help="Simulation per verification round, in seconds at a nominal speed (the run count is the same on every machine)."),
    verify_feedback: int = typer.Option(0, "--verify-feedback", min=0, max=3,
                                        help="Re-plan up to N times with the arrivals' burstiness measured in "
                                        "the verification where it exceeds the prediction (about 2x the planning "
                                        "time per round; see docs/planner.md)."),
    observed: Optional[Path] = typer.Option(None, "--observed", help="A trace of recorded runs (cortex run "
                                            "--record): plan with the branch probabilities, token counts, "
                                            "service times and arrival rate it shows."),
    disaggregate: bool = typer.Option(False, "--disaggregate", help="Also consider prefill/decode-disaggregated "
                                      "pools (KV shipped between replicas); simulation only: `cortex run` refuses "
                                      "such plans (no KV connector)."),
) -> None:
    """Choose a dedicated pool per stage (GPU kind x replicas, TP, batch/KV budget, executor slots) and knobs."""
    from rich.console import Console

    from planner.plan import Infeasible
    from planner.render import diff_plans, render_diff, render_infeasible, render_plan

    rate_per_s = parse_rate(rate) if rate is not None else None
    old = load_plan(diff, f"--diff {diff}") if diff is not None else None
    program = compile_program(file)
    if observed is not None:
        program = apply_observed(program, observed, to_stderr=as_json)
    inv = load_inventory(inventory) if inventory is not None else None
    err = Console(stderr=True)
    result = _solve_with_feedback(err, verify_budget if verify else None, verify_feedback, program=program, inventory=inv,
                                  rate=rate_per_s, mode=mode.value, seed=seed, disaggregate=disaggregate)
    if isinstance(result, Infeasible):
        if as_json:
            write_output(result.model_dump_json(indent=2) + "\n", None)
        else:
            typer.echo(render_infeasible(result), err=True, nl=False)
        raise typer.Exit(EXIT_ERRORS)
    if output is not None:
        write_output(result.canonical_json(), output)
    if as_json:
        write_output(result.canonical_json(), None)
    else:
        write_output(render_plan(result), None)
        if old is not None:
            write_output("\n" + render_diff(old, result), None)
    if detailed_exitcode:
        changed = bool(diff_plans(old, result)) if old is not None else bool(
            any(w.llm_pools or w.executor_pools for w in result.workflows))
        raise typer.Exit(EXIT_CHANGES if changed else EXIT_OK)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
