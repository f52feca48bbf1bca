"""Trace replay: deadline-aware policies with and without a learnt remaining-path estimate (simulated).

A replayed trace call knows its own size but not what follows it in its run. The
replay gives it, as remaining critical path, its own standalone time plus the
trace-wide mean of what follows calls of its stage at that visit
(:class:`runtime.simulator.trace.RemainingPathStats`). This benchmark measures what
that buys against the blind estimate (the call's own time alone, what replay gave
before) for the deadline-aware policies, FCFS alongside as the deadline-blind
reference (it must not change).

The trace: NL2SQL (:func:`runtime.simulator.workloads.nl2sql`, up to 8 repairs) simulated
at light load on one shared H100 pool, every call recorded; runs are chains, so a call's
parent is the run's previous call. It is then replayed on ``--replicas`` H100s with
its arrivals compressed to ``--load`` of the analytic capacity, deadlines at
``--slo-scale`` x standalone. Everything here is SIMULATED.

    .venv/bin/python benchmarks/trace_remaining_path.py [--runs 4000] [--load 0.8] [--seed 1]

Writes ``benchmarks/results/trace_remaining_path.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

from runtime.policies.registry import make_policy
from runtime.simulator import sim as sim_module
from runtime.simulator.capacity import capacity_runs_per_s
from runtime.simulator.cluster import shared_layout
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.trace import RemainingPathStats, TraceCall, TraceRequest, trace_models
from runtime.simulator.workloads import nl2sql, program
from cortexlang.ir import Program

OUT = Path(__file__).parent / "results"
POLICIES = ("fcfs", "hexgen-text2sql", "hexagent", "cortex")


class BlindStats(RemainingPathStats):
    """The estimate before learning: nothing known to follow a call (its own time is the path)."""

    def after(self, workflow: str, stage: str, visit: int) -> tuple[float, float]:
        return 0.0, 0.0


def record_trace(runs: int, seed: int) -> list[TraceRequest]:
    """NL2SQL simulated lightly loaded with every call recorded, as trace requests (chains)."""
    wf = nl2sql()
    prog = program(wf)
    layout = shared_layout({"H100": 8}, "llama8b", workflow=wf, executor_slots=256)
    probe = Simulator(prog, layout, make_policy("fcfs"), [Stream(wf.name, 1.0)], SimConfig(runs=1))
    rate = 0.2 * capacity_runs_per_s(prog, probe.graphs[wf.name], layout)
    res = Simulator(prog, layout, make_policy("fcfs"), [Stream(wf.name, rate)],
                    SimConfig(runs=runs, seed=seed, warmup_fraction=0.0, record_calls=True)).run()
    prefix = {s.name: getattr(s, "prefix_tokens", 0) for s in wf.stages}  # shared prompt prefix per stage
    by_run: dict[int, list[tuple]] = defaultdict(list)
    for rec in res.calls:
        by_run[int(rec[0])].append(rec)
    arrival = dict(zip(res.run_id.tolist(), res.arrival.tolist()))
    out = []
    for rid, recs in sorted(by_run.items()):
        recs.sort(key=lambda r: r[6])  # chains: in start order
        calls, parent = [], ()
        for i, (_, _, stage, kind, _, _, t0, t1, inp, outp) in enumerate(recs):
            cid = f"c{i}"
            if kind == "llm":
                calls.append(TraceCall(cid, stage, "llm", parent, model="llama8b", input_tokens=int(inp),
                                       output_tokens=int(outp), prefix_tokens=prefix[stage]))
            else:
                calls.append(TraceCall(cid, stage, kind, parent, duration_s=max(t1 - t0, 1e-6)))
            parent = (cid,)
        out.append(TraceRequest(str(rid), wf.name, arrival[rid], tuple(calls)))
    return out


def replay(trace: list[TraceRequest], replicas: int, load: float, scale: float, blind: bool) -> dict:
    prog = Program(models=trace_models(trace))
    layout = shared_layout({"H100": replicas}, "llama8b", executor_slots=256)
    wf = nl2sql()
    probe_prog = program(wf)
    probe = Simulator(probe_prog, layout, make_policy("fcfs"), [Stream(wf.name, 1.0)], SimConfig(runs=1))
    capacity = capacity_runs_per_s(probe_prog, probe.graphs[wf.name], layout)
    span = trace[-1].arrival_s - trace[0].arrival_s
    squeeze = (len(trace) / span) / (load * capacity)  # arrival times x squeeze -> load x capacity
    t0 = trace[0].arrival_s
    timed = [TraceRequest(r.run_id, r.workflow, (r.arrival_s - t0) * squeeze, r.calls) for r in trace]
    rows = {}
    original = sim_module.RemainingPathStats
    sim_module.RemainingPathStats = BlindStats if blind else original
    try:
        for name in POLICIES:
            res = Simulator(prog, layout, make_policy(name), trace=timed,
                            config=SimConfig(seed=1, slo_scale=scale, warmup_fraction=0.1)).run()
            rows[name] = {"attainment": res.attainment(scale), "scale95": res.min_scale(0.95),
                          "scale99": res.min_scale(0.99)}
    finally:
        sim_module.RemainingPathStats = original
    return {"rate_runs_per_s": load * capacity, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4000)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--load", type=float, nargs="+", default=[0.7, 0.85])
    ap.add_argument("--slo-scale", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    trace = record_trace(args.runs, args.seed)
    results = {"label": "simulated", "runs": len(trace), "replicas": args.replicas, "slo_scale": args.slo_scale,
               "seed": args.seed, "loads": {}}
    for load in args.load:
        results["loads"][str(load)] = {mode: replay(trace, args.replicas, load, args.slo_scale, mode == "blind")
                                       for mode in ("blind", "learnt")}
    OUT.mkdir(exist_ok=True)
    (OUT / "trace_remaining_path.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Trace replay: learnt remaining-path estimate vs blind (SIMULATED)", "",
             f"`python benchmarks/trace_remaining_path.py --runs {args.runs} --replicas {args.replicas} "
             f"--load {' '.join(map(str, args.load))} --slo-scale {args.slo_scale} --seed {args.seed}`; "
             f"load average at end {os.getloadavg()[0]:.1f} (figures are simulated time, load-independent).", "",
             f"NL2SQL trace of {len(trace)} runs recorded in the simulator, replayed on {args.replicas}xH100 "
             f"(one shared pool), deadline = {args.slo_scale} x standalone. Blind = a call's remaining path is its "
             "own time (replay before); learnt = own time + the trace's mean of what follows its stage at that visit.",
             "", "| load | policy | attainment blind | learnt | SLO scale @95% blind | learnt | @99% blind | learnt |",
             "|---|---|---|---|---|---|---|---|"]
    for load, modes in results["loads"].items():
        for name in POLICIES:
            b, l = modes["blind"]["rows"][name], modes["learnt"]["rows"][name]
            lines.append(f"| {load} | {name} | {b['attainment']:.1%} | {l['attainment']:.1%} | {b['scale95']:.2f} | "
                         f"{l['scale95']:.2f} | {b['scale99']:.2f} | {l['scale99']:.2f} |")
    (OUT / "trace_remaining_path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
