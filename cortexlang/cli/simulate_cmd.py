"""``cortex simulate``: compare scheduling policies on a simulated cluster.

    cortex simulate FILE.cortex [--workflow W] [--policy P ...] [--cluster mixed12 | H100=8,A100=4]
                    [--prefill A100=4,H100=2]
                    [--layout shared|isolated|plan] [--plan PLAN.json] [--rate 5/s] [--runs N]
                    [--slo-scale S] [--seed N] [--json]
    cortex simulate --trace FILE.jsonl [--policy P ...] [--cluster ...]

Every number printed is from the discrete-event simulator (labelled
"simulated"). Exit codes: 0 success, 1 errors in the input, 2 usage error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from cortexlang.cli.common import EXIT_ERRORS, compile_or_exit, load_plan, read_lines, usage_error
from cortexlang.ir import MIN_RATE_PER_S, LLMStage, Program

DEFAULT_RUNS = 2000
MAX_RUNS = 1_000_000
"""Most runs one simulation takes: ~a minute per 100k LLM calls here, so 10^9 would never end."""
MAX_DEVICES = 10_000
"""Most devices of one kind in a simulated cluster: each is an engine object, and a typo such as
H100=99999999 would spend minutes building them."""
CLUSTERS = {"h100x12": {"H100": 12}, "mixed12": {"A100": 4, "H100": 4, "H200": 4}, "h100x8": {"H100": 8}}


def parse_cluster(text: str, flag: str = "--cluster") -> dict[str, int]:
    """A named cluster or 'KIND=COUNT,...' (e.g. 'H100=8,A100=4'); a usage error naming ``flag`` otherwise."""
    if text in CLUSTERS:
        return dict(CLUSTERS[text])
    out: dict[str, int] = {}
    for part in text.split(","):
        kind, _, count = part.partition("=")
        if not kind.strip() or not count.strip().isdigit() or not 0 < int(count) <= MAX_DEVICES:
            raise usage_error(f"{flag} {text!r}: expected one of {', '.join(CLUSTERS)} or KIND=COUNT,... "
                              f"such as H100=8,A100=4 (1 to {MAX_DEVICES} of each kind)")
        if kind.strip().upper() in out:
            raise usage_error(f"{flag} {text!r}: {kind.strip().upper()} is given twice")
        out[kind.strip().upper()] = int(count)
    return out


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        file: Optional[Path] = typer.Argument(None, help="A .cortex file (omit with --trace)."),
        trace: Optional[Path] = typer.Option(None, "--trace", help="Replay a JSONL trace (docs/trace-format.md)."),
        workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="Workflow to simulate."),
        policy: list[str] = typer.Option(["fcfs", "cortex"], "--policy", "-p", help="Policies (repeatable)."),
        cluster: Optional[str] = typer.Option(None, "--cluster",
                                              help="Named cluster or KIND=COUNT,... (default: the file's resources, "
                                                   "else mixed12)."),
        layout: str = typer.Option("auto", "--layout",
                                   help="auto: planner-sized pools for cortex, the same replicas pooled for the "
                                        "others | shared | isolated | plan (with --plan; the default when --plan "
                                        "is given)."),
        plan: Optional[Path] = typer.Option(None, "--plan", help="A plan JSON (cortexc plan --json) for --layout plan."),
        rate: Optional[float] = typer.Option(None, "--rate", help="Arrivals per second (default: the workflow's load)."),
        runs: Optional[int] = typer.Option(None, "--runs", min=1, max=MAX_RUNS,
                                           help="Runs to simulate (default 2000; with --trace: its first N runs "
                                                "by arrival, default all)."),
        slo_scale: Optional[float] = typer.Option(None, "--slo-scale", help="Deadline = scale x standalone latency."),
        seed: int = typer.Option(0, "--seed", min=0, help="Simulation seed."),
        prefill: Optional[str] = typer.Option(
            None, "--prefill", help="Prefill/decode disaggregation of the workflow's main model (its first LLM stage's): "
                                    "KIND=COUNT,... of its replicas only prefill (e.g. A100=4,H100=2), the others "
                                    "decode. Same split for every policy."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Simulate policies on a cluster and report SLO scale, latency and rejections (simulated)."""
        from runtime.policies.registry import POLICIES, make_policy
        from runtime.simulator import cluster as cl
        from runtime.simulator.sim import SimConfig, Simulator, Stream
        from runtime.simulator.trace import TraceError, parse_trace, trace_models

        split = parse_cluster(prefill, "--prefill") if prefill is not None else None
        for flag, value in (("--rate", rate), ("--slo-scale", slo_scale)):
            if value is not None and not 0 < value < math.inf:
                raise usage_error(f"{flag} {value:g}: expected a positive finite number")
        if rate is not None and rate < MIN_RATE_PER_S:
            raise usage_error(f"--rate {rate:g}: the slowest rate simulated is {MIN_RATE_PER_S:g} runs/s")
        for name in policy:
            if name not in POLICIES:
                raise usage_error(f"--policy {name!r}: known policies are {', '.join(POLICIES)}")
        if layout not in ("auto", "shared", "isolated", "plan"):
            raise usage_error("--layout must be shared, isolated, plan or auto")
        if plan is not None and layout == "auto":
            layout = "plan"  # a plan given is a plan to simulate, never silently set aside
        elif plan is not None and layout != "plan":
            raise usage_error(f"--plan applies to --layout plan, not --layout {layout}")
        if (file is None) == (trace is None):
            raise usage_error("give either a .cortex FILE or --trace FILE.jsonl")
        requests = None
        if trace is not None and (rate is not None or workflow is not None):
            raise usage_error(f"{'--rate' if rate is not None else '--workflow'} applies to a .cortex FILE; a trace "
                              "replays its own recorded arrivals and workflows")
        if trace is not None:
            try:
                requests = parse_trace(read_lines(trace, f"--trace {trace}"), str(trace))[:runs]
                program = Program(models=trace_models(requests))
                if not program.models:
                    raise TraceError(f"{trace}: no llm call in the trace: nothing for the simulated engines to serve")
            except TraceError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(EXIT_ERRORS)
            wf = None
            model = program.models[0].name
            devices = parse_cluster(cluster if cluster is not None else "mixed12")
        else:
            program = compile_or_exit(file).program
            try:
                wf = program.workflow(workflow)
            except KeyError:
                names = ", ".join(w.name for w in program.workflows)
                raise usage_error(f"--workflow: name one of {names}" if workflow is None
                                  else f"no workflow {workflow!r}; the file has {names}")
            model = next((s.models[0].model for s in wf.stages if isinstance(s, LLMStage)), None)
            if model is None:
                raise usage_error(f"workflow {wf.name} has no LLM stage to simulate")
            runs = runs or DEFAULT_RUNS
            if rate is None:
                if wf.load is None:
                    raise usage_error(f"workflow {wf.name} declares no load; pass --rate")
                rate = wf.load.rate_per_s
            devices = (parse_cluster(cluster if cluster is not None else "mixed12")
                       if cluster is not None or program.inventory is None
                       else {g.kind: g.count for g in program.inventory.gpus})
        if trace is not None and layout == "isolated":
            raise usage_error("a trace names no workflow to isolate stages of: replay it on a plan's pools "
                              "(--layout plan --plan PLAN.json) or on a shared layout")
        planned = None
        knobs = None
        if layout == "plan" or (wf is not None and layout == "auto"):
            planned = _load_plan(plan) if layout == "plan" else _planned(program, wf, devices, rate)
            try:
                wp = planned.workflow(wf.name if wf is not None else None)
            except KeyError:
                raise usage_error(f"--plan {plan}: it has no workflow {wf.name if wf else ''!r} "
                                  "(a trace replays on a plan of one workflow)")
            declared = {m.name for m in program.models}
            unknown = sorted({pool.model for pool in wp.llm_pools} - declared)
            if layout == "plan" and unknown:
                source = str(file) if file is not None else "the trace"
                raise usage_error(f"--plan {plan}: its pools serve {', '.join(unknown)}, which {source} does not "
                                  f"declare (it has {', '.join(sorted(declared)) or 'no models'})")
            wrong = wp.knobs.violations(wf) if wf is not None and layout == "plan" else []
            if wrong:
                more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
                raise usage_error(f"--plan {plan}: its knobs do not fit workflow {wf.name}: {wrong[0]}{more}; "
                                  "re-run `cortexc plan`")
            knobs = {wf.name: wp.knobs} if wf is not None else None  # a trace's calls are already sized
        rows = []
        slo = wf.slo if wf is not None else None
        for name in policy:
            try:
                if planned is not None:
                    # The plan's pools for cortex (auto) or for every policy (--layout plan); under
                    # auto the baselines share the same replicas, pooled. The plan's knobs apply to all.
                    lay = cl.layout_from_plan(planned, wf.name if wf is not None else None)
                    lay = lay if (name == "cortex" or layout == "plan") else cl.pooled(lay)
                else:
                    lay = _layout(cl, program, wf, model, devices, layout, name)
                if split:
                    lay = cl.disaggregate(lay, split, model=model)
                sim = Simulator(program, lay, make_policy(name), [Stream(wf.name, rate)] if wf else [],
                                SimConfig(runs=runs or len(requests), seed=seed, slo_scale=slo_scale), trace=requests,
                                knobs=knobs)
                res = sim.run()
            except (cl.LayoutError, ValueError, LookupError) as exc:
                why = f"unknown name {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else exc  # not "'x'"
                typer.echo(f"error: {name}: {why}", err=True)
                raise typer.Exit(EXIT_ERRORS)
            row = res.summary()
            if slo is not None:
                row["slo_attainment"] = _attainment(res, slo.latency_s)
            rows.append(row)
        scales = not (trace is not None and slo_scale is None)  # a trace without --slo-scale has no deadlines
        if not scales:
            for r in rows:
                del r["scale95"], r["scale99"]
        if as_json:
            typer.echo(json.dumps(_json_safe({"label": "simulated", "cluster": devices, "rows": rows}), indent=2,
                                  allow_nan=False))
            return
        typer.echo(f"simulated: {('trace ' + str(trace)) if trace else wf.name} on "
                   + _cluster_text(devices, program)
                   + (f" at {rate:g} runs/s" if rate else "")
                   + (f"; SLO {slo.attainment * 100:.4g}% within {slo.latency_s:g}s" if slo else ""))
        head = f"{'policy':18s} {'runs':>6s} {'p50 s':>8s} {'p99 s':>8s}"
        head += f" {'scale@95':>9s} {'scale@99':>9s}" if scales else ""
        head += f" {'SLO met':>8s}" if slo else ""
        typer.echo(head + f" {'rejected':>9s}")
        for r in rows:
            line = f"{r['policy']:18s} {r['runs']:6d} {r['p50_s']:8.2f} {r['p99_s']:8.2f}"
            line += f" {r['scale95']:9.2f} {r['scale99']:9.2f}" if scales else ""
            line += f" {r['slo_attainment']:8.2%}" if slo else ""
            typer.echo(line + f" {r['rejected']:9.3f}")


def _json_safe(value):
    """``value`` with NaN and infinities as ``null`` (no runs measured, zero wall time): strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _cluster_text(devices: dict[str, int], program) -> str:
    """``4xA100, 4xH100``, or the CPU slots when the cluster has no GPU (e.g. a CPU-only inventory)."""
    if devices:
        return ", ".join(f"{n}x{k}" for k, n in sorted(devices.items()))
    cpu = program.inventory.cpu if program.inventory is not None else None
    return f"CPU only ({cpu.slots} slots)" if cpu is not None else "CPU only"


def _attainment(res, latency_s: float) -> float:
    """Share of measured runs admitted and finished within ``latency_s`` (a run ending at `fail`
    counts with its latency, as in the planner)."""
    import numpy as np

    m = res.measured
    ok = (res.status[m] != "rejected") & ((res.end[m] - res.arrival[m]) <= latency_s)
    return float(np.mean(ok)) if len(ok) else 0.0


def _planned(program, wf, devices, rate):
    """A plan (headroom mode) of ``wf`` on ``devices`` plus the file's CPU slots."""
    from cortexlang.ir import CpuResource, GpuResource, Inventory
    from planner.api import plan_program
    from planner.heap import retain_freed_memory
    from planner.plan import Plan

    retain_freed_memory()  # as `cortexc plan` does (a 64-wide fan-out's plan spent half its CPU in page faults)
    cpu = program.inventory.cpu if program.inventory and program.inventory.cpu else CpuResource(slots=64)
    inv = Inventory(gpus=tuple(GpuResource(kind=k, count=n, cost_per_hour=1.0) for k, n in sorted(devices.items())),
                    cpu=cpu)
    result = plan_program(program, inv, rate=rate, mode="headroom", workflows=[wf.name])
    if not isinstance(result, Plan):
        typer.echo(f"error: the planner found no plan ({result.message}); try --layout shared", err=True)
        raise typer.Exit(EXIT_ERRORS)
    return result


def _load_plan(plan_path):
    if plan_path is None:
        raise usage_error("--layout plan needs --plan PLAN.json")
    return load_plan(plan_path, f"--plan {plan_path}")


def _layout(cl, program, wf, model, devices, layout, policy):
    choice = layout if layout != "auto" else ("isolated" if policy == "cortex" and wf is not None else "shared")
    if choice == "isolated" and wf is not None:
        # Work share per LLM stage from its declared tokens (decode tokens weighted 3x).
        visits = {s.name: s.input_tokens + 3.0 * s.output_tokens for s in wf.stages if isinstance(s, LLMStage)}
        return cl.isolated_layout(devices, program, wf, visits, executor_slots=256)
    return cl.shared_layout(devices, model, workflow=wf, executor_slots=256)
