"""Simulator speed: simulated LLM calls per second of wall time, on one core (simulated engines).

Workload: NL2SQL (schema_link, generate, fix, answer LLM calls) on 16 shared
H100 replicas at ~70% of analytic capacity, FCFS and Cortex policies.
Target: >= 50,000 simulated LLM calls per second on one core; both CPU time (time.process_time,
the fair measure on a shared machine) and wall time are reported. Each simulation is repeated
``--repeat`` times (identical results: same seed) and the fastest repetition is reported, as
``timeit`` advises (slower ones measure interference from other processes on the shared machine,
not the simulator); every repetition's CPU time is kept in the JSON.

    .venv/bin/python benchmarks/sim_speed.py [--runs N] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from runtime.policies.registry import make_policy
from runtime.simulator.capacity import capacity_runs_per_s
from runtime.simulator.cluster import isolated_layout, shared_layout
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import nl2sql, program

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40000)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per policy; the fastest is reported")
    args = ap.parse_args()
    wf = nl2sql()
    prog = program(wf)
    dev = {"H100": 16}
    shared = shared_layout(dev, "llama8b", workflow=wf, executor_slots=256)
    iso = isolated_layout(dev, prog, wf, {"schema_link": 1, "generate": 1, "fix": 0.8, "answer": 1},
                          executor_slots=256)
    probe = Simulator(prog, shared, make_policy("fcfs"), [Stream(wf.name, 1.0)], SimConfig(runs=1))
    rate = 0.7 * capacity_runs_per_s(prog, probe.graphs[wf.name], shared)
    rows = []
    for name, layout in (("fcfs", shared), ("cortex", iso)):
        times = []
        for _ in range(max(args.repeat, 1)):
            t0, c0 = time.perf_counter(), time.process_time()
            res = Simulator(prog, layout, make_policy(name), [Stream(wf.name, rate)],
                            SimConfig(runs=args.runs, seed=1, slo_scale=3.0)).run()
            times.append((time.process_time() - c0, time.perf_counter() - t0))
        cpu, wall = min(times)
        rows.append({"policy": name, "runs": args.runs, "llm_calls": res.llm_calls, "wall_s": round(wall, 3),
                     "cpu_s": round(cpu, 3), "llm_calls_per_wall_s": round(res.llm_calls / wall),
                     "llm_calls_per_cpu_s": round(res.llm_calls / cpu), "simulated_s": round(res.sim_end_s, 1),
                     "repeats_cpu_s": [round(c, 3) for c, _ in times]})
    report = {"label": "simulated", "python": platform.python_version(), "rate_runs_per_s": round(rate, 2),
              "repeat": max(args.repeat, 1), "reported": "fastest repetition (CPU time)",
              "load_average_1m_at_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
              "target_llm_calls_per_s": 50000, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sim_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine load average {report['load_average_1m_at_end']} on {report['cpus']} CPUs "
          "(other processes share the cores; wall-clock rates scale with the share we get)")
    for r in rows:
        print(f"[simulated] {r['policy']:7s} {r['llm_calls']} LLM calls in {r['wall_s']:.2f}s wall "
              f"({r['cpu_s']:.2f}s CPU) = {r['llm_calls_per_wall_s']:,} calls/wall-s, "
              f"{r['llm_calls_per_cpu_s']:,} calls/CPU-s (target 50,000; fastest of {report['repeat']})")


if __name__ == "__main__":
    main()
