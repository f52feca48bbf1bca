"""Simulator speed: simulated LLM calls per second on one core, pure Python vs compiled (simulated engines).

Workload: NL2SQL (schema_link, generate, fix, answer LLM calls) on 16 shared
H100 replicas at ~70% of analytic capacity, FCFS (one shared pool) and Cortex (stage-isolated
pools) policies. Target: >= 100,000 simulated LLM calls per CPU-second under both.

Two builds of the same source are measured in the same run: the interpreted modules
(``CORTEX_ACCEL=0``, the executable spec) and the compiled ones (:mod:`runtime.accel`: Cython,
typed by the ``.pxd`` files beside the modules; built into the cache first if missing, which
needs Cython and a C compiler -- without them only the pure build is reported, with the reason). Each repetition runs every build in a fresh process, alternating
builds, so both see the same machine conditions; the fastest repetition is reported (``timeit``'s
advice: slower ones measure interference from other processes on a shared machine). Both CPU
time (``time.process_time``, the fair measure there) and wall time are reported, and the
builds' results are checked to be identical.

    .venv/bin/python benchmarks/sim_speed.py [--runs N] [--repeat K] [--instructions RUNS]

Writes ``benchmarks/results/sim_speed.json`` and ``sim_speed.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the repository's packages first
POLICIES = ("fcfs", "cortex")
TARGET = 100_000
"""Simulated LLM calls per CPU-second, under every policy measured."""


def measure(runs: int, policies: tuple[str, ...] = POLICIES) -> dict:
    """One repetition in this process: each of ``policies`` once; CPU/wall seconds and a result digest."""
    from runtime import accel
    from runtime.policies.registry import make_policy
    from runtime.simulator.capacity import capacity_runs_per_s
    from runtime.simulator.cluster import isolated_layout, shared_layout
    from runtime.simulator.sim import SimConfig, Simulator, Stream
    from runtime.simulator.workloads import nl2sql, program

    wf = nl2sql()
    prog = program(wf)
    dev = {"H100": 16}
    shared = shared_layout(dev, "llama8b", workflow=wf, executor_slots=256)
    iso = isolated_layout(dev, prog, wf, {"schema_link": 1, "generate": 1, "fix": 0.8, "answer": 1},
                          executor_slots=256)
    probe = Simulator(prog, shared, make_policy("fcfs"), [Stream(wf.name, 1.0)], SimConfig(runs=1))
    rate = 0.7 * capacity_runs_per_s(prog, probe.graphs[wf.name], shared)
    out = {"compiled_modules": accel.compiled_modules(), "rate_runs_per_s": rate, "policies": {}}
    for name, layout in zip(POLICIES, (shared, iso)):
        if name not in policies:
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        res = Simulator(prog, layout, make_policy(name), [Stream(wf.name, rate)],
                        SimConfig(runs=runs, seed=1, slo_scale=3.0)).run()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        out["policies"][name] = {"cpu_s": cpu, "wall_s": wall, "llm_calls": res.llm_calls,
                                 "simulated_s": res.sim_end_s, "digest": _digest(res)}
    return out


def _digest(res) -> str:
    """SHA-256 prefix of every run's end time and status (equal digests: identical simulations)."""
    return hashlib.sha256(repr((res.end.tolist(), res.status.tolist())).encode()).hexdigest()[:16]


def _instructions(build: str, runs: int, policy: str) -> float:
    """Machine instructions per simulated run of ``policy`` in ``build``, counted by valgrind
    (cachegrind, no cache model): a worker process at ``runs`` and one at ``runs // 10``, differenced
    so that interpreter start, imports and setup cancel. Unlike CPU time, the count does not depend
    on what else runs on the machine (it is not a time: cache misses and stalls are not in it)."""
    counts = []
    for n in (runs, runs // 10):
        done = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             sys.executable, __file__, "--worker", "--runs", str(n), "--policy", policy],
            env=_env(build), cwd=REPO, capture_output=True, text=True, check=True)
        refs = next(line for line in done.stderr.splitlines() if "I" in line and "refs:" in line)
        counts.append(int(refs.split(":")[1].replace(",", "").split()[0]))
    return (counts[0] - counts[1]) / (runs - runs // 10)


def _env(build: str) -> dict[str, str]:
    """A worker's environment for ``build``."""
    # One BLAS thread: the setup's numpy calls otherwise leave OpenBLAS threads spinning into the
    # measured simulation (perf saw them there, counted in its process time); the simulation uses no BLAS.
    return {**os.environ, "CORTEX_ACCEL": "0" if build == "pure" else "1", "OPENBLAS_NUM_THREADS": "1"}


def _run_build(build: str, runs: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", "--runs", str(runs)], env=_env(build), cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40000)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per build; the fastest is reported")
    ap.add_argument("--note", default=None, help="what changed since the previous results (printed in the header)")
    ap.add_argument("--instructions", type=int, default=0, metavar="RUNS",
                    help="also count instructions per simulated run under valgrind (RUNS and RUNS/10 runs "
                         "per policy and build; minutes): a figure other processes on the machine do not move")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--policy", choices=POLICIES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(args.runs, (args.policy,) if args.policy else POLICIES)))
        return

    from runtime.accel import HOT_MODULES, AccelBuildError, AccelUnavailable
    from runtime.accel.build import build

    builds = ["pure", "compiled"]
    note = None
    load_start = [round(x, 2) for x in os.getloadavg()]
    try:
        build()
    except (AccelUnavailable, AccelBuildError) as e:
        builds, note = ["pure"], f"compiled build unavailable: {e}"
        print(note)
    reps: dict[str, list[dict]] = {b: [] for b in builds}
    for _ in range(max(args.repeat, 1)):
        for b in builds:
            reps[b].append(_run_build(b, args.runs))
            loaded = reps[b][-1]["compiled_modules"]
            if loaded != (list(HOT_MODULES) if b == "compiled" else []):
                sys.exit(f"error: the {b} build ran with compiled modules {loaded}")
    rows = []
    for b in builds:
        for name in POLICIES:
            times = [r["policies"][name] for r in reps[b]]
            best = min(times, key=lambda t: t["cpu_s"])
            rows.append({"build": b, "policy": name, "runs": args.runs, "llm_calls": best["llm_calls"],
                         "cpu_s": round(best["cpu_s"], 3), "wall_s": round(best["wall_s"], 3),
                         "llm_calls_per_cpu_s": round(best["llm_calls"] / best["cpu_s"]),
                         "llm_calls_per_wall_s": round(best["llm_calls"] / best["wall_s"]),
                         "meets_target": best["llm_calls"] / best["cpu_s"] >= TARGET,
                         "simulated_s": round(best["simulated_s"], 1),
                         "repeats_cpu_s": [round(t["cpu_s"], 3) for t in times],
                         "compiled_modules": len(reps[b][0]["compiled_modules"])})
    if args.instructions:
        for r in rows:
            r["instructions_per_run"] = round(_instructions(r["build"], args.instructions, r["policy"]))
    # The builds must agree exactly (same calls, same end times) for the comparison to mean anything.
    identical = all(len({(r["policies"][n]["llm_calls"], r["policies"][n]["simulated_s"],
                          r["policies"][n]["digest"]) for b in builds for r in reps[b]}) == 1 for n in POLICIES)
    speedup = {}
    if len(builds) == 2:
        for name in POLICIES:
            pure, comp = (next(r for r in rows if r["build"] == b and r["policy"] == name) for b in builds)
            speedup[name] = round(pure["cpu_s"] / comp["cpu_s"], 2)
    from runtime.profiles import cpu_model  # here: workers import runtime only after setting CORTEX_ACCEL

    report = {"label": "simulated", "python": platform.python_version(),
              "rate_runs_per_s": round(reps["pure"][0]["rate_runs_per_s"], 2),
              "repeat": max(args.repeat, 1), "reported": "fastest repetition (CPU time) per build",
              "load_average_1m_at_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
              "cpu_model": cpu_model(), "load_averages_1_5_15": {"start": load_start,
                                                                  "end": [round(x, 2) for x in os.getloadavg()]},
              "changes": args.note, "instruction_runs": args.instructions or None,
              "target_llm_calls_per_cpu_s": TARGET, "results_identical_across_builds": identical,
              "compiled_speedup_cpu": speedup, "note": note, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sim_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "sim_speed.md").write_text(_markdown(report, args))
    print(f"machine load average {report['load_average_1m_at_end']} on {report['cpus']} CPUs "
          "(other processes share the cores; wall-clock rates scale with the share we get)")
    for r in rows:
        print(f"[simulated] {r['build']:8s} {r['policy']:7s} {r['llm_calls']} LLM calls in {r['cpu_s']:.2f}s CPU "
              f"({r['wall_s']:.2f}s wall) = {r['llm_calls_per_cpu_s']:,} calls/CPU-s, "
              f"{r['llm_calls_per_wall_s']:,} calls/wall-s (target {TARGET:,}; fastest of {report['repeat']})")
    for r in rows:
        if "instructions_per_run" in r:
            print(f"[simulated] {r['build']:8s} {r['policy']:7s} {r['instructions_per_run']:,} instructions per run")
    for name, x in speedup.items():
        print(f"compiled vs pure, {name}: {x:.2f}x (CPU time)")
    print(f"results identical across builds: {identical}")
    if not identical:
        sys.exit("error: the builds disagree; the compiled simulator must be bit-identical")


def _markdown(report: dict, args: argparse.Namespace) -> str:
    """The report as the results page (benchmarks/results/sim_speed.md)."""
    lines = [
        "# Simulator speed (simulated LLM calls per CPU-second)",
        "",
        f"Command: `.venv/bin/python benchmarks/sim_speed.py --runs {args.runs} --repeat {report['repeat']}"
        + (f" --instructions {args.instructions}" if args.instructions else "") + "` "
        f"(Python {report['python']}, {platform.machine()}, {report['cpus']} CPUs; load average "
        f"{report['load_average_1m_at_end']} at the end: other processes shared the cores, so CPU time is the "
        "measure and the fastest repetition is reported).",
        "",
        f"Machine: {report['cpu_model']}; load averages (1/5/15 min) "
        f"{' / '.join(map(str, report['load_averages_1_5_15']['start']))} at the start, "
        f"{' / '.join(map(str, report['load_averages_1_5_15']['end']))} at the end.",
        "",
        *([f"What changed: {report['changes']}", ""] if report["changes"] else []),
        "Workload: NL2SQL on 16 simulated H100 replicas at 70% of analytic capacity "
        f"({report['rate_runs_per_s']} runs/s), seed 1, SLO scale 3; FCFS on one shared pool, Cortex on "
        "stage-isolated pools. `pure` is the Python source (the executable spec, `CORTEX_ACCEL=0`); "
        "`compiled` the same source built by `python -m runtime.accel build` (Cython, typed by the `.pxd` "
        f"files beside the modules). Target: {report['target_llm_calls_per_cpu_s']:,} calls per CPU-second.",
        "",
        "| build | policy | LLM calls | CPU s | calls / CPU-s | calls / wall-s | target met | CPU s of each repeat |"
        + (" instructions / run |" if report["instruction_runs"] else ""),
        "|---|---|---:|---:|---:|---:|---|---|" + ("---:|" if report["instruction_runs"] else ""),
    ]
    for r in report["rows"]:
        lines.append(f"| {r['build']} | {r['policy']} | {r['llm_calls']:,} | {r['cpu_s']:.2f} | "
                     f"{r['llm_calls_per_cpu_s']:,} | {r['llm_calls_per_wall_s']:,} | "
                     f"{'yes' if r['meets_target'] else 'no'} | {', '.join(map(str, r['repeats_cpu_s']))} |"
                     + (f" {r['instructions_per_run']:,} |" if "instructions_per_run" in r else ""))
    lines.append("")
    if report["instruction_runs"]:
        lines.append(f"Instructions per simulated run: valgrind (cachegrind, no cache model), a process simulating "
                     f"{report['instruction_runs']:,} runs minus one simulating a tenth of them, per policy and "
                     "build; independent of the machine's load, but not a time (no cache misses or stalls).")
        lines.append("")
    for name, x in report["compiled_speedup_cpu"].items():
        lines.append(f"Compiled vs pure, {name}: {x:.2f}x (CPU time).")
    lines.append(f"Results identical across builds (every run's end time and status): "
                 f"{report['results_identical_across_builds']}.")
    if report["note"]:
        lines.append(f"Note: {report['note']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
