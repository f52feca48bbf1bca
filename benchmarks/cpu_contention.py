"""CPU engines that slow each other: the planner's mean-field term against the simulator (SIMULATED).

    .venv/bin/python benchmarks/cpu_contention.py [--contention 1.0,0.6] [--runs 4000]
        [--profile PATH] [--out benchmarks/results/cpu_contention.md]

The demo's NL2SQL (``examples/nl2sql.cortex``) is planned in ``headroom`` mode (it uses the CPU
slots it has: one or two engines) at several rates on a SmolLM2 CPU profile -- by default the
shipped one made 3x slower (this AMD EPYC's order of magnitude), or ``--profile`` (e.g. this
machine's calibration) -- with the contention ``--contention PREFILL,DECODE`` (the slowdown of an
iteration with every other engine busy; this machine's real engines measured theirs with `cortex
calibrate`). Each plan is simulated on the same profile with common random numbers: in the simulator
engines slow each other only while both compute (fluid sharing, ``runtime/simulator/engine.py``), an
independent model of the planner's mean-field fixed point (``planner.api.plan_under_contention``).

Reported per rate: the layout, the busy fraction the plan assumed, the planned and simulated p50 and
p99 (ratio planned / simulated), and what the same plan's latency would be if the planner ignored
contention ("blind": planned on the profile without it, simulated with it) -- the error the term
removes. The last column holds the same plan simulated on a profile pre-slowed by the assumed
fraction, without dynamics: the base model's own error at that utilisation, which the contention
term cannot fix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexlang.compiler import compile_file  # noqa: E402
from planner.api import cpu_busy_others, plan_program  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.profiles import PROFILE_DIR, clear_cache, use_calibrated  # noqa: E402
from runtime.simulator.verify import simulate_plan  # noqa: E402

PREFILL = ("prefill_us_per_token", "prefill_fixed_ms")
DECODE = ("decode_fixed_ms", "decode_ms_per_seq", "decode_ns_per_kv_token")
RATES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


def _profile_dirs(base: dict, contention: tuple[float, float], root: Path) -> dict[str, Path]:
    """Directories of one-profile overlays: ``on`` (with contention), ``off`` (without)."""
    out = {}
    for name, extra in (("on", {"cpu_contention": {"prefill": contention[0], "decode": contention[1],
                                                   "engines_at_once": 2}}), ("off", {})):
        data = {k: v for k, v in base.items() if k != "cpu_contention"} | extra
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(data))
        out[name] = folder
    return out


def _pre_slowed(base: dict, contention: tuple[float, float], x: float, root: Path) -> Path:
    data = {k: v for k, v in base.items() if k != "cpu_contention"}
    for k in PREFILL:
        data[k] = data[k] * (1 + contention[0] * x)
    for k in DECODE:
        data[k] = data[k] * (1 + contention[1] * x)
    folder = root / f"slowed-{x:.3f}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(data))
    return folder


def _use(folder: Path) -> None:
    use_calibrated(folder)
    clear_cache()


def _layout(plan: Plan) -> str:
    wp = plan.workflow()
    return "; ".join(f"{'+'.join(p.stages)} {p.replicas}x (util {100 * p.utilisation:.0f}%)" for p in wp.llm_pools)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contention", default="1.0,0.6", help="PREFILL,DECODE slowdown with every other engine busy")
    ap.add_argument("--profile", type=Path, default=None, help="a SmolLM2 CPU tp1 profile (default: shipped x3)")
    ap.add_argument("--runs", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cpu_contention.md")
    args = ap.parse_args()
    contention = tuple(float(x) for x in args.contention.split(","))
    if args.profile is not None:
        base = json.loads(args.profile.read_text())
        source = str(args.profile)
    else:
        base = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
        base.update({k: 3 * base[k] for k in ("prefill_us_per_token", *DECODE)})
        source = "shipped smollm2-135m CPU tp1 profile, every coefficient x3"
    program = compile_file(REPO / "examples/nl2sql.cortex").program
    started, load0 = time.time(), os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = _profile_dirs(base, contention, Path(tmp))
        for rate in RATES:
            _use(dirs["off"])
            blind = plan_program(program, rate=rate, mode="headroom")
            _use(dirs["on"])
            plan = plan_program(program, rate=rate, mode="headroom")
            if not isinstance(plan, Plan) or not isinstance(blind, Plan):
                rows.append(f"| {rate:g} | no plan: {plan if not isinstance(plan, Plan) else blind} |||||||")
                continue
            wf = plan.workflow().workflow
            sim = simulate_plan(program, plan, wf, runs=args.runs, seed=args.seed)
            blind_sim = simulate_plan(program, blind, wf, runs=args.runs, seed=args.seed)
            assumed = plan.cpu_contention or 0.0
            _use(_pre_slowed(base, contention, assumed, Path(tmp)))
            static = simulate_plan(program, plan, wf, runs=args.runs, seed=args.seed)
            lp, bp = plan.workflow().latency, blind.workflow().latency
            rows.append(
                f"| {rate:g} | {_layout(plan)} | {assumed:.2f} (implied {cpu_busy_others(plan):.2f}) "
                f"| {lp.p50:.2f} / {sim.latency.p50:.2f} = **{lp.p50 / sim.latency.p50:.3f}** "
                f"| {lp.p99:.2f} / {sim.latency.p99:.2f} = **{lp.p99 / sim.latency.p99:.3f}** "
                f"| {100 * (sim.slo_attainment or 0):.1f}% | {bp.p99:.2f} / {blind_sim.latency.p99:.2f} = "
                f"{bp.p99 / blind_sim.latency.p99:.3f} | {lp.p99 / static.latency.p99:.3f} |")
            print(rows[-1], flush=True)
    use_calibrated()
    clear_cache()
    text = "\n".join([
        "# CPU contention: planned vs simulated (SIMULATED)", "",
        f"Command: `.venv/bin/python benchmarks/cpu_contention.py --contention {args.contention} --runs {args.runs}"
        + (f" --profile {args.profile}" if args.profile else "") + "`  ",
        f"Profile: {source}; contention prefill +{100 * contention[0]:.0f}%, decode +{100 * contention[1]:.0f}% "
        "with every other engine busy. Workflow: examples/nl2sql.cortex (SLO p90 <= 30 s), `headroom` mode "
        f"on its 3 CPU slots; simulator FCFS, {args.runs} runs per plan, seed {args.seed}. Load average "
        f"{load0:.2f} -> {os.getloadavg()[0]:.2f}; {time.time() - started:.0f} s.", "",
        "Columns: ratios are planned / simulated. *blind*: the plan made without the contention term, simulated "
        "with contention (what ignoring it predicts). *static*: this plan's p99 over a simulation on a profile "
        "pre-slowed by the assumed busy fraction, without dynamics (the base model's own error at that load).", "",
        "| runs/s | layout | busy fraction assumed | p50 planned / simulated | p99 planned / simulated "
        "| simulated attainment | blind p99 planned / simulated | static p99 ratio |",
        "|---|---|---|---|---|---|---|---|",
        *rows, ""])
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
