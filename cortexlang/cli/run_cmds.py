"""``cortex run | serve | dev`` and ``cortexc build``: from a .cortex file (or a build) to a running system.

TARGET is a ``.cortex`` file (compiled, planned and laid out on the fly) or a
build directory made by ``cortexc build``. Without ``--plan`` a file is
planned with the planner's API; when no plan is feasible the reason is printed
and the default layout (one replica per LLM stage) is used.

Engines (``--engine``): ``vllm`` (in-process for a single engine, one
``vllm serve`` process per engine otherwise), ``vllm-inproc``, ``vllm-server``,
``openai`` (``--endpoint MODEL=URL`` per model) or ``simulated`` (the
simulator's engine model in real time; every output says so).

Exit codes: 0 success, 1 errors in the input or engines that cannot start,
2 usage errors.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from cortexlang.cli.common import (
    EXIT_ERRORS, SourceError, compile_or_exit, load_plan, load_source, read_lines, read_source, usage_error,
)

if TYPE_CHECKING:  # rich loads when a command runs, so `cortexc --version` and `check` start fast
    from rich.console import Console

# --------------------------------------------------------------------------- shared


class EngineChoice(str, Enum):
    vllm = "vllm"
    vllm_inproc = "vllm-inproc"
    vllm_server = "vllm-server"
    openai = "openai"
    simulated = "simulated"


def _console(**kwargs: Any) -> Console:
    from rich.console import Console

    return Console(**kwargs)


def _err() -> Console:
    return _console(stderr=True)


def plan_or_none(program: Any, console: Console) -> Any:
    """The planner's plan for ``program``, or None (the reason printed) to use the default layout."""
    from planner.api import plan_program
    from planner.plan import Infeasible
    from planner.render import render_infeasible
    from runtime.drift import planning_with_drift

    # The promise holds on this machine's slowest recent calibration.
    with planning_with_drift(report=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)):
        result = plan_program(program)
    if isinstance(result, Infeasible):
        console.print(render_infeasible(result).rstrip(), markup=False)
        console.print("no feasible plan: using the default layout (one replica per LLM stage)")
        return None
    return result


def prepare_spec(target: Path, *, plan_path: Path | None, workflow: str | None, no_plan: bool,
                 console: Console, policy: str | None = None) -> Any:
    """A runtime spec from a build directory or a .cortex file (see module docstring)."""
    from runtime.build import BuildError, default_spec, load_build, spec_from_plan

    try:
        if target.is_dir():
            if plan_path is not None:
                raise usage_error("--plan applies to a .cortex file; a build directory already holds its plan")
            spec = load_build(target)
        else:
            program = compile_or_exit(target).program
            plan = (load_plan(plan_path, f"--plan {plan_path}") if plan_path
                    else (None if no_plan else plan_or_none(program, console)))
            base = target.resolve().parent
            if plan is not None:
                spec = spec_from_plan(program, plan, workflow, base_dir=base, source=str(target))
            else:
                spec = default_spec(program, workflow, base_dir=base, source=str(target))
    except BuildError as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_ERRORS)
    if policy is not None:
        from runtime.policies.registry import POLICIES

        if policy not in POLICIES:
            raise usage_error(f"--policy {policy!r}: known policies are {', '.join(POLICIES)}")
        spec = spec.model_copy(update={"orchestrator": spec.orchestrator.model_copy(update={"policy": policy})})
    return spec


def check_tools(spec: Any, console: Console) -> None:
    """Import every tool stage's entry point now: a missing module is one line and exit 1,
    rather than a traceback from inside the engines' start-up."""
    from runtime.orchestrator.versions import ToolImportError, import_tool

    for stage in spec.program.workflow(spec.workflow).stages:
        if stage.kind == "tool":
            try:
                import_tool(stage.entry, Path(spec.base_dir))
            except ToolImportError as exc:
                console.print(f"error: tool stage `{stage.name}`: {exc}", markup=False, highlight=False,
                              soft_wrap=True)
                raise typer.Exit(EXIT_ERRORS)


def use_machine_profiles() -> None:
    """Put this machine's calibrated profiles (``cortex calibrate``) ahead of the shipped ones, and
    let OpenMP threads wait passively (unless the environment says otherwise): on cores other
    processes share, spin-waiting made every vLLM-CPU decode step ~7x slower (482 vs 70 ms,
    measured on the 2-core development machine). Set before anything loads OpenMP."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from planner.profiles import all_profiles, unreadable_profiles
    from runtime.profiles import activate

    activate()
    all_profiles()  # read the calibrated files now, so an unreadable one is reported here
    for path, why in unreadable_profiles().items():
        print(f"warning: ignoring the calibrated profile {path}: {why} (run `cortex calibrate` again)",
              file=sys.stderr)


def print_profiles(spec: Any, console: Console, backend: str) -> None:
    """One line per latency profile the spec's engines use: calibrated here, or the shipped fallback."""
    from runtime.profiles import describe

    seen = dict.fromkeys((rep.profile, rep.device, rep.tp) for pool in spec.llm_pools for rep in pool.replicas)
    for model, device, tp in seen:
        use = describe(model, device, tp)
        if use is None:
            console.print(f"profile {model} on {device} tp{tp}: none", markup=False, highlight=False)
            continue
        note = " (drives the simulated engines)" if backend == "simulated" else " (planning and scheduling estimates)"
        console.print(use.line() + note, markup=False, highlight=False, soft_wrap=True)


def parse_endpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        model, sep, url = item.partition("=")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise usage_error(f"--endpoint {item!r}: expected MODEL=http(s)://HOST:PORT")
        out[model] = url
    return out


def make_factory(spec: Any, engine: EngineChoice, endpoints: list[str], speedup: float = 1.0,
                 use_ray: bool = False) -> tuple[Any, str]:
    from runtime.orchestrator import engine_factory
    from runtime.orchestrator.engines import vllm_backend_for

    backend = {
        EngineChoice.vllm: vllm_backend_for(spec), EngineChoice.vllm_inproc: "vllm-inproc",
        EngineChoice.vllm_server: "vllm-server", EngineChoice.openai: "openai-remote",
        EngineChoice.simulated: "simulated",
    }[engine]
    if backend == "vllm-inproc" and sum(len(p.replicas) for p in spec.llm_pools) > 1:
        raise usage_error("--engine vllm-inproc runs one engine per process and this layout has several; "
                          "use --engine vllm (one server process per engine)")
    factory = engine_factory(backend, speedup=speedup, endpoints=parse_endpoints(endpoints),
                             api_key=os.environ.get("CORTEX_ENDPOINT_API_KEY"))
    if use_ray:
        try:
            import ray
        except ImportError:
            raise usage_error("--ray needs Ray: pip install '.[distributed]'")
        from runtime.distributed import ray_engine_factory

        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, ignore_reinit_error=True)
        factory = ray_engine_factory(factory)
    return factory, backend


def read_inputs(path: Path, names: tuple[str, ...], limit: int | None) -> list[tuple[str, dict[str, Any]]]:
    """``(id, inputs)`` per JSON line; usage error naming the line when one is malformed."""
    lines = read_lines(path, f"--input {path}")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise usage_error(f"{path}:{number}: not JSON ({exc.msg})")
        except RecursionError:  # `[[[[...` 100k deep: the decoder recurses once per level
            raise usage_error(f"{path}:{number}: not JSON (nested too deeply)")
        except ValueError:  # int() refused a number of more than 4,300 digits (JSONDecodeError is caught above)
            raise usage_error(f"{path}:{number}: not JSON (an integer of more than 4,300 digits)")
        if not isinstance(obj, dict):
            raise usage_error(f"{path}:{number}: expected a JSON object with the workflow inputs")
        missing = [n for n in names if n not in obj]
        if missing:
            raise usage_error(f"{path}:{number}: missing input(s) {', '.join(missing)} (the workflow takes "
                              f"{', '.join(names) or 'no inputs'})")
        rows.append((str(obj.get("id", number)), {n: obj[n] for n in names}))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise usage_error(f"{path} holds no inputs")
    return rows


# --------------------------------------------------------------------------- run


async def run_batch(spec: Any, factory: Any, rows: list[tuple[str, dict[str, Any]]], *, concurrency: int,
                    rate: float | None, seed: int, console: Console, json_out: Path | None,
                    deadline_s: float | None, record: Path | None = None) -> int:
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runtime.orchestrator import OrchestratorError, Overloaded
    from runtime.orchestrator.engines import EngineSetupError
    from runtime.orchestrator.orchestrator import Orchestrator
    from runtime.orchestrator.report import KvSampler, batch_report, render_report
    from runtime.sql.errors import SQLConfigError

    orchestrator = Orchestrator(spec, factory)
    recorder = open_recorder(record, spec, orchestrator, console)  # before the engines start: a bad path stops nothing
    try:
        with console.status("starting engines ..."):
            await orchestrator.start()
    except (EngineSetupError, OrchestratorError, SQLConfigError) as exc:  # the last: e.g. no SQLite file yet
        console.print(f"error: cannot start the runtime: {exc}", markup=False)
        if recorder is not None:
            recorder.close()
        return EXIT_ERRORS
    sampler = KvSampler(orchestrator)
    sampler.start()
    infos: dict[str, Any] = {}
    rejected: dict[str, str] = {}
    rng = random.Random(seed)
    gate = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()
    failed = False  # an output (--json) that could not be written: exit 1 once the runs are reported
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task(spec.workflow, total=len(rows))

            async def one(row_id: str, inputs: dict[str, Any], start_at: float) -> None:
                await asyncio.sleep(max(start_at - (time.monotonic() - t0), 0.0))
                async with gate:
                    try:
                        run = await orchestrator.submit(inputs, deadline_s=deadline_s)
                    except Overloaded as exc:
                        rejected[row_id] = str(exc)
                        progress.console.print(f"{row_id}: rejected (retryable): {exc}", markup=False)
                        progress.advance(task)
                        return
                    await run.finished.wait()
                info = run.info
                infos[row_id] = info
                progress.console.print(_run_line(row_id, info), markup=False)
                progress.advance(task)

            starts, t = [], 0.0
            for _ in rows:
                starts.append(t)
                if rate:
                    t += rng.expovariate(rate)
            await asyncio.gather(*(one(rid, inputs, s) for (rid, inputs), s in zip(rows, starts)))
        wall = time.monotonic() - t0
        await sampler.stop()
        report = batch_report(orchestrator, list(infos.values()), sampler, wall, rejected=len(rejected))
        render_report(report, console)
        if json_out is not None:
            report["runs_detail"] = {rid: info.model_dump(mode="json") for rid, info in infos.items()}
            report["rejections"] = rejected
            try:
                json_out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
            except OSError as exc:
                console.print(f"error: --json {json_out}: cannot write: {exc.strerror or exc}", markup=False)
                failed = True
            else:
                console.print(f"wrote {json_out}")
    finally:
        await orchestrator.stop()
        if recorder is not None:
            recorder.close()
            console.print(f"recorded {recorder.written} runs to {record} (trace format: docs/trace-format.md)",
                          markup=False)
    return EXIT_ERRORS if failed or (recorder is not None and recorder.error) else 0


class Recording:
    """``--record``'s run listener around a :class:`TraceRecorder`: the first write that fails (a full
    disk, ``/dev/full``) prints one error line and stops the recording; the runs go on, and no
    traceback is logged per run."""

    def __init__(self, recorder: Any, path: Path, console: Console) -> None:
        self.recorder, self.path, self.console = recorder, path, console
        self.error: str | None = None

    @property
    def written(self) -> int:
        return self.recorder.written

    def __call__(self, info: Any) -> None:
        if self.error is None:
            try:
                self.recorder(info)
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = f"--record {self.path}: cannot write: {exc.strerror or exc}"
        self.console.print(f"error: {self.error}; recording stopped", markup=False, highlight=False)
        try:
            self.recorder.close()
        except OSError:
            pass  # the same error, already said

    def close(self) -> None:
        """Close the file; a failure to write what was buffered is reported like a failed write."""
        try:
            self.recorder.close()
        except OSError as exc:
            if self.error is None:
                self._fail(exc)


def open_recorder(path: Path | None, spec: Any, orchestrator: Any, console: Console) -> Recording | None:
    """A :class:`Recording` listening to ``orchestrator`` (``--record``), or None without a path."""
    if path is None:
        return None
    from runtime.orchestrator.recorder import TraceRecorder

    try:
        recorder = TraceRecorder(path, spec.program)
    except OSError as exc:
        raise usage_error(f"--record {path}: cannot write: {exc.strerror or exc}")
    recording = Recording(recorder, path, console)
    orchestrator.run_listeners.append(recording)
    return recording


async def calibrate_engines(spec: Any, factory: Any, backend: str, console: Console, *, quick: bool,
                            how: str) -> int:
    """``cortex calibrate``'s body: start the layout's engines, measure each kind alone and the CPU
    engines' contention (``runtime.calibrate``), store and show the profiles (simulated engines are
    measured at once and shown, never stored: they follow a profile)."""
    from runtime.calibrate import calibrate_orchestrator, fit, measure, probes_for
    from runtime.orchestrator import OrchestratorError
    from runtime.orchestrator.engines import EngineSetupError
    from runtime.orchestrator.orchestrator import Orchestrator
    from runtime.profiles import machine_dir, machine_text

    probes = probes_for(spec, quick)
    engines = sum(len(p.replicas) for p in spec.llm_pools)
    console.print(f"calibrating {engines} {backend} engine(s) on {machine_text()}: each kind alone, then the "
                  "CPU engines' contention when there are several", markup=False)
    orchestrator = Orchestrator(spec, factory)
    try:
        with console.status("starting engines ..."):
            await orchestrator.start()
    except (EngineSetupError, OrchestratorError) as exc:
        console.print(f"error: cannot start the engines: {exc}", markup=False)
        return EXIT_ERRORS
    say = lambda line: console.print("  " + line, markup=False, highlight=False)  # noqa: E731
    try:
        if backend == "simulated":
            live = [r.engine for p in orchestrator.pools_by_name.values() if p.kind == "llm" for r in p.replicas]
            result = fit(await measure(live, probes, say), engines=len(live))
            console.print("SIMULATED engines follow their profile: measured, not stored", markup=False)
            _coefficient_table(console, result.coefficients, None, result)
            return 0
        done = await calibrate_orchestrator(orchestrator, probes, how=how, progress=say)
    finally:
        await orchestrator.stop()
    for c in done:
        console.print(f"\nprofile {c.model} on {c.device} tp{c.tp} -> {c.path}", markup=False, highlight=False)
        _coefficient_table(console, c.calibration.coefficients, c.previous, c.calibration, c.previous_path)
    console.print(f"`cortex run|serve` and the demo use the profiles in {machine_dir()} on this machine", markup=False)
    from runtime.drift import drifts

    for m in drifts(machine_dir()):  # what the plans will take as this machine's drift margin
        console.print(m.line(), markup=False, highlight=False, soft_wrap=True)
    return 0


def _coefficient_table(console: Console, coef: dict[str, float], previous: dict[str, float] | None,
                       calibration: Any, previous_path: str | None = None) -> None:
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("coefficient", "before" if previous else "-", "measured", "fastest .. slowest"):
        table.add_column(col)
    for name, value in coef.items():
        before = f"{previous[name]:.4g}" if previous else "-"
        table.add_row(name, before, f"{value:.4g}",
                      f"{calibration.fastest[name]:.4g} .. {calibration.slowest[name]:.4g}")
    console.print(table)
    if previous_path:
        console.print(f"before: {previous_path}", markup=False, highlight=False)
    console.print(f"largest probe spread {100 * calibration.max_spread:.0f}%; fit error prefill "
                  f"{100 * calibration.prefill_error:.1f}%, decode {100 * calibration.decode_error:.1f}%; "
                  f"load average {calibration.load_average[0]:.1f} -> {calibration.load_average[1]:.1f}",
                  markup=False, highlight=False)
    if previous is not None or calibration.contention is not None:  # a stored calibration (not simulated)
        from runtime.calibrate import contention_line

        console.print(contention_line(calibration.contention), markup=False, highlight=False)


def _run_line(row_id: str, info: Any) -> str:
    tag = " [simulated]" if info.simulated else ""
    latency = f"{info.latency_s:.2f}s" if info.latency_s is not None else "-"
    slo = "" if info.slo_met is None else (" slo ok" if info.slo_met else " slo MISSED")
    detail = info.error or _preview(info.output)
    return f"{row_id}: {info.status} in {latency}{slo}, retries {info.retries}{tag}: {detail}"


def _preview(output: Any, width: int = 100) -> str:
    if isinstance(output, dict):
        if "rows" in output and "statement" in output:
            text = f"{output['statement']} -> {output['row_count']} row(s) {output['rows'][:2]}"
        elif isinstance(output.get("text"), str):
            text = output["text"]
        else:
            text = json.dumps(output, default=str)
    else:
        text = json.dumps(output, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """``cortex run``, ``cortex serve``, ``cortex dev`` and ``cortex apply``."""
    from cortexlang.cli import apply_cmd

    apply_cmd.register(app)

    @app.command("run")
    def run_cmd(
        target: Path = typer.Argument(..., help="A .cortex file or a build directory."),
        input: Path = typer.Option(..., "--input", "-i", help="JSON lines, one object of workflow inputs per run."),
        engine: EngineChoice = typer.Option(EngineChoice.vllm, "--engine", help="Engine backend."),
        plan: Optional[Path] = typer.Option(None, "--plan", help="A plan made by `cortexc plan -o`."),
        no_plan: bool = typer.Option(False, "--no-plan", help="Skip planning: one replica per LLM stage."),
        workflow: Optional[str] = typer.Option(None, "--workflow", help="The workflow, if the file has several."),
        concurrency: int = typer.Option(8, "--concurrency", min=1, help="Runs in flight at once."),
        rate: Optional[float] = typer.Option(None, "--rate", min=0.0, help="Poisson arrivals per second."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N inputs."),
        policy: Optional[str] = typer.Option(None, "--policy", help="Scheduling policy (default: the build's)."),
        deadline: Optional[float] = typer.Option(None, "--deadline", min=0.001, help="Per-run timeout, seconds."),
        endpoint: list[str] = typer.Option([], "--endpoint", help="MODEL=URL for --engine openai (repeatable)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the summary as JSON here."),
        record: Optional[Path] = typer.Option(None, "--record", help="Record every run as a JSONL trace here "
                                                                     "(docs/trace-format.md)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the arrival times."),
        use_ray: bool = typer.Option(False, "--ray", help="Place engine replicas as Ray actors (RAY_ADDRESS or local)."),
    ) -> None:
        """Run a batch and print per-run outcome and latency, percentiles and SLO attainment."""
        import asyncio

        console = _console(width=None if sys.stdout.isatty() else 140)
        use_machine_profiles()
        spec = prepare_spec(target, plan_path=plan, workflow=workflow, no_plan=no_plan, console=console,
                            policy=policy)
        check_tools(spec, console)
        names = spec.program.workflow(spec.workflow).inputs
        rows = read_inputs(input, names, limit)
        factory, backend = make_factory(spec, engine, endpoint, use_ray=use_ray)
        print_profiles(spec, console, backend)
        if backend == "simulated":
            console.print("[bold yellow]SIMULATED engines[/bold yellow]: latencies come from the latency "
                          "profiles, texts are synthetic; nothing here is a real model's output.")
        code = asyncio.run(run_batch(spec, factory, rows, concurrency=concurrency, rate=rate, seed=seed,
                                     console=console, json_out=json_out, deadline_s=deadline, record=record))
        raise typer.Exit(code)

    @app.command("serve")
    def serve_cmd(
        target: Path = typer.Argument(..., help="A .cortex file or a build directory."),
        host: str = typer.Option("127.0.0.1", "--host", help="Bind address (beyond localhost needs --token)."),
        port: int = typer.Option(8000, "--port", min=1, max=65535),
        token: Optional[str] = typer.Option(None, "--token", envvar="CORTEX_API_TOKEN",
                                            help="API token (Authorization: Bearer ...)."),
        engine: EngineChoice = typer.Option(EngineChoice.vllm, "--engine"),
        plan: Optional[Path] = typer.Option(None, "--plan"),
        no_plan: bool = typer.Option(False, "--no-plan"),
        workflow: Optional[str] = typer.Option(None, "--workflow"),
        policy: Optional[str] = typer.Option(None, "--policy"),
        endpoint: list[str] = typer.Option([], "--endpoint"),
        use_ray: bool = typer.Option(False, "--ray", help="Place engine replicas as Ray actors (RAY_ADDRESS or local)."),
        record: Optional[Path] = typer.Option(None, "--record", help="Record every finished run as a JSONL trace "
                                                                     "here (docs/trace-format.md)."),
        autoscale: list[str] = typer.Option([], "--autoscale", help="[POOL:]min=N,max=M[,budget=$/h]: the monitor "
                                                                    "resizes LLM pools within these (repeatable; "
                                                                    "over the workflow's autoscale block)."),
    ) -> None:
        """Serve the workflow over HTTP: runs, events (SSE), OpenAI-compatible chat, /metrics, health;
        `cortex apply` changes it live; the workflow's `autoscale { }` block or `--autoscale` resizes its
        pools with the load."""
        from runtime.orchestrator.autoscaler import declared_config, parse_limits
        from runtime.orchestrator.orchestrator import Orchestrator
        from runtime.serve import check_binding
        from runtime.serve.deploy_api import scalable_app

        try:
            check_binding(host, token)
            limits = parse_limits(autoscale) if autoscale else None
        except ValueError as exc:
            raise usage_error(str(exc))
        console = _console(stderr=True)
        use_machine_profiles()
        spec = prepare_spec(target, plan_path=plan, workflow=workflow, no_plan=no_plan, console=console,
                            policy=policy)
        check_tools(spec, console)
        declared = declared_config(spec.program.workflow(spec.workflow))
        if declared is not None:  # the file's limits, with --autoscale's items over them
            try:
                limits = parse_limits(autoscale, base=declared)
            except ValueError as exc:
                raise usage_error(str(exc))
        factory, backend = make_factory(spec, engine, endpoint, use_ray=use_ray)
        print_profiles(spec, console, backend)
        orchestrator = Orchestrator(spec, factory)
        recorder = open_recorder(record, spec, orchestrator, console)
        app = scalable_app(orchestrator, token=token, autoscale=limits)
        console.print(f"serving {spec.workflow} on http://{host}:{port} ({backend} engines"
                      f"{', SIMULATED' if backend == 'simulated' else ''}); Ctrl-C stops", markup=False)
        if recorder is not None:
            console.print(f"recording every finished run to {record}", markup=False)
        try:
            _serve_or_exit(app, host, port, token)
        finally:
            if recorder is not None:
                recorder.close()

    @app.command("calibrate")
    def calibrate_cmd(
        target: Path = typer.Argument(..., help="A .cortex file or a build directory: the engines to measure."),
        engine: EngineChoice = typer.Option(EngineChoice.vllm, "--engine", help="Engine backend (as you will serve)."),
        plan: Optional[Path] = typer.Option(None, "--plan", help="A plan made by `cortexc plan -o`."),
        no_plan: bool = typer.Option(False, "--no-plan", help="Skip planning: one replica per LLM stage."),
        workflow: Optional[str] = typer.Option(None, "--workflow"),
        quick: bool = typer.Option(False, "--quick", help="Fewer probes, one repeat (about half the time)."),
        endpoint: list[str] = typer.Option([], "--endpoint", help="MODEL=URL for --engine openai (repeatable)."),
        cpu_width: Optional[int] = typer.Option(
            None, "--cpu-width", min=1,
            help="Pin every CPU engine to this many cores (default: the layout's widths). A profile holds only "
                 "for engines of its width: calibrate a width to let the planner choose it."),
    ) -> None:
        """Measure the layout's engines as they serve (same backend and pinning): each kind alone, then how
        much several CPU engines slow each other when busy at once; store the fitted profile for this
        machine; `cortex run|serve` and planning then use it."""
        import asyncio

        from runtime.build.layout import BuildError, with_cpu_width

        console = _console(width=None if sys.stdout.isatty() else 140)
        use_machine_profiles()
        spec = prepare_spec(target, plan_path=plan, workflow=workflow, no_plan=no_plan, console=console)
        if cpu_width is not None:
            try:
                spec = with_cpu_width(spec, cpu_width)
            except BuildError as exc:
                raise usage_error(f"--cpu-width {cpu_width}: {exc}") from None
        factory, backend = make_factory(spec, engine, endpoint)
        command = (f"cortex calibrate {target}" + (f" --plan {plan}" if plan else "") + (" --quick" if quick else "")
                   + (f" --cpu-width {cpu_width}" if cpu_width is not None else ""))
        raise typer.Exit(asyncio.run(calibrate_engines(spec, factory, backend, console, quick=quick,
                                                       how=f"`{command}` ({backend} engines)")))

    @app.command("dev")
    def dev_cmd(
        target: Path = typer.Argument(..., help="The .cortex file to watch."),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port", min=1, max=65535),
        token: Optional[str] = typer.Option(None, "--token", envvar="CORTEX_API_TOKEN"),
        engine: EngineChoice = typer.Option(EngineChoice.vllm, "--engine"),
        workflow: Optional[str] = typer.Option(None, "--workflow"),
        policy: Optional[str] = typer.Option(None, "--policy"),
    ) -> None:
        """Serve with hot reload: on save, recompile; on errors keep serving the last good version."""
        from runtime.dev import DevServer

        if target.is_dir() or target.suffix != ".cortex":
            raise usage_error("cortex dev watches a .cortex file")
        try:
            from runtime.serve import check_binding

            check_binding(host, token)
        except ValueError as exc:
            raise usage_error(str(exc))
        console = _console(stderr=True)
        use_machine_profiles()  # as run and serve: this machine's calibration ahead of the shipped profile
        compile_spec = _dev_compiler(workflow, policy)
        read_source(target)
        spec, text = compile_spec(target)
        if text:
            console.print(text, markup=False, highlight=False)
        if spec is None:
            raise typer.Exit(EXIT_ERRORS)
        check_tools(spec, console)
        factory, backend = make_factory(spec, engine, [])
        server = DevServer(target, spec, factory, compile_fn=compile_spec,
                           report=lambda text: console.print(text, markup=False, highlight=False))
        console.print(f"dev server for {target} on http://{host}:{port} ({backend} engines); watching for saves",
                      markup=False)
        _serve_or_exit(server.app(token=token), host, port, token)


def _serve_or_exit(app: Any, host: str, port: int, token: str | None) -> None:
    import asyncio

    from runtime.serve import serve

    try:
        asyncio.run(serve(app, host=host, port=port, token=token))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _err().print(f"error: cannot serve on {host}:{port}: {exc}", markup=False)
        raise typer.Exit(EXIT_ERRORS)


def _dev_compiler(workflow: str | None, policy: str | None) -> Any:
    """The compile callback ``cortex dev`` injects (the runtime never imports the compiler)."""

    def compile_spec(path: Path) -> tuple[Any, str | None]:
        from cortexlang.compiler import compile_source
        from cortexlang.diagnostics import render_all
        from planner.api import plan_program
        from planner.plan import Infeasible
        from runtime.build import BuildError, default_spec, spec_from_plan
        from runtime.drift import planning_with_drift

        try:  # a save caught half-written, or the file moved: report it and keep watching
            source = load_source(path)
        except SourceError as exc:
            return None, f"error: {exc}"
        result = compile_source(source, str(path), path.parent)
        text = render_all(result.diagnostics, {result.path: result.source}) if result.diagnostics else None
        if result.program is None:
            return None, text
        base = path.resolve().parent
        with planning_with_drift():  # as cortex run: the promise holds on the slowest recent calibration
            plan = plan_program(result.program)
        try:
            if isinstance(plan, Infeasible):
                text = (text + "\n" if text else "") + f"no feasible plan ({plan.message}); default layout"
                spec = default_spec(result.program, workflow, base_dir=base, source=str(path))
            else:
                spec = spec_from_plan(result.program, plan, workflow, base_dir=base, source=str(path))
        except BuildError as exc:
            return None, f"error: {exc}"
        if policy:
            spec = spec.model_copy(update={"orchestrator": spec.orchestrator.model_copy(update={"policy": policy})})
        return spec, text

    return compile_spec


def register_build(app: typer.Typer) -> None:
    """``cortexc build FILE [--plan plan.json] -o build/``."""

    @app.command("build")
    def build_cmd(
        source: Path = typer.Argument(..., help="The .cortex file."),
        output: Path = typer.Option(..., "--output", "-o", help="The build directory to write."),
        plan: Optional[Path] = typer.Option(None, "--plan", help="A plan made by `cortexc plan -o`."),
        no_plan: bool = typer.Option(False, "--no-plan", help="Skip planning: one replica per LLM stage."),
        workflow: Optional[str] = typer.Option(None, "--workflow"),
        shared: bool = typer.Option(False, "--shared", help="One engine pool per model (no stage isolation)."),
        policy: Optional[str] = typer.Option(None, "--policy"),
    ) -> None:
        """Render the plan into an inspectable runtime: engine specs, SQL pools, orchestrator settings."""
        from runtime.build import share_engines, write_build

        console = _console(stderr=True)
        if source.is_dir():
            raise usage_error(f"{source} is a directory; give the .cortex file")
        spec = prepare_spec(source, plan_path=plan, workflow=workflow, no_plan=no_plan, console=console,
                            policy=policy)
        if shared:
            spec = share_engines(spec)
        if output.exists() and not output.is_dir():
            raise usage_error(f"{output} exists and is not a directory")
        try:
            files = write_build(spec, output)
        except OSError as exc:
            raise usage_error(f"cannot write {output}: {exc}")
        typer.echo(f"wrote {len(files)} files to {output}/ ({spec.layout} layout, "
                   f"{sum(len(p.replicas) for p in spec.llm_pools)} engine replicas, "
                   f"{len(spec.executor_pools)} executor pools); see {output}/README.md")


__all__ = ["register", "register_build"]
