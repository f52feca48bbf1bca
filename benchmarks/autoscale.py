"""Autoscaling under a 5x load step: static-for-mean vs static-for-peak vs the monitor (simulated engines).

NL2SQL (``examples/nl2sql.cortex``) on simulated engines (the simulator's engine
model in real time, sped up ``--speedup`` times: engine service times and the
workflow's SLO are divided by it, arrival rates multiplied by it; figures in
"equivalent" units are multiplied back). The LLM replicas have ``--slots`` batch
slots each, so a modest rate needs several replicas.

1. Calibration: a short low-rate run on one replica per pool measures the service
   time per call of each pool (the monitor's own signals, nothing acted on).
2. The trace: Poisson arrivals, ``low`` runs/s for a third of ``--duration``, ``5 x
   low`` for a third, ``low`` again; ``low`` puts one replica of the busiest pool at
   ``--low-utilisation``. The same arrival times (``--seed``) for every configuration.
3. Three configurations on that trace: every LLM pool sized by the planner's M/G/c
   model (the monitor's :meth:`Autoscaler.size`) for the trace's mean rate, for its
   peak rate, and the monitor within ``[1, peak size]``.

Reported per configuration: SLO attainment over the whole trace (a run refused by
admission control counts as a miss), p50/p99 latency, replica-hours (LLM replicas
integrated over time), scaling actions, and for the monitor the time from the load
step to its first scale-out decision and to the first new replica serving.
Writes ``benchmarks/results/autoscale.md``, ``autoscale.json`` and ``autoscale.png``.

    python -m benchmarks.autoscale [--duration 60] [--speedup 10] [--slots 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from cortexlang.compiler import compile_file
from runtime.build.layout import default_spec
from runtime.build.spec import RuntimeSpec
from runtime.orchestrator import Orchestrator, Overloaded
from runtime.orchestrator.autoscaler import Autoscaler, AutoscalerConfig, PoolLimits, Signals, size_pool
from runtime.orchestrator.engines import engine_factory
from runtime.orchestrator.scaling import PoolScaler

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUESTIONS = ["how many customers are there", "total sales per region", "top 5 products by revenue",
             "orders placed in 2023", "average order value per customer"]


def make_spec(speedup: float, slots: int, replicas: dict[str, int] | None = None) -> RuntimeSpec:
    """NL2SQL's default layout, ``slots`` per LLM replica, the SLO divided by ``speedup``."""
    program = compile_file(ROOT / "examples" / "nl2sql.cortex").program
    assert program is not None
    workflows = tuple(w.model_copy(update={"slo": w.slo.model_copy(update={"latency_s": w.slo.latency_s / speedup})})
                      if w.slo else w for w in program.workflows)
    program = program.model_copy(update={"workflows": workflows})
    spec = default_spec(program, base_dir=ROOT / "examples", backend="simulated")
    pools = []
    for p in spec.llm_pools:
        rep = p.replicas[0].model_copy(update={"engine": p.replicas[0].engine.model_copy(
            update={"max_num_seqs": slots})})
        n = (replicas or {}).get(p.name, 1)
        pools.append(p.model_copy(update={"replicas": tuple(
            rep.model_copy(update={"replica_id": f"{p.name}-{i}"}) for i in range(n))}))
    orchestrator = spec.orchestrator.model_copy(update={"max_active_runs": 100_000, "borrow_idle": False})
    return spec.model_copy(update={"llm_pools": tuple(pools), "orchestrator": orchestrator})


def arrivals(low: float, duration_s: float, seed: int) -> list[float]:
    """Poisson arrival times: ``low``/s, then ``5 x low``/s, then ``low``/s, a third of the time each."""
    rng = random.Random(seed)
    out, t, third = [], 0.0, duration_s / 3
    while True:
        rate = 5 * low if third <= t < 2 * third else low
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        out.append(t)


async def drive(orch: Orchestrator, times: list[float], on_tick: Any = None) -> tuple[list[Any], int, list[tuple]]:
    """Submit a run at each time; the finished runs' infos, the number refused, and a replica timeline."""
    start = time.monotonic()
    runs, refused, timeline = [], 0, []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            timeline.append((time.monotonic() - start, {p.name: len(p.replicas) for p in orch.pools_by_name.values()
                                                        if p.kind == "llm"}))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    for i, at in enumerate(times):
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            runs.append(await orch.submit({"question": QUESTIONS[i % len(QUESTIONS)]}))
        except Overloaded:
            refused += 1
    infos = [await orch.wait(r.run_id, timeout_s=600) for r in runs]
    stop.set()
    await sampler
    return infos, refused, timeline


def replica_seconds(timeline: list[tuple]) -> float:
    total = 0.0
    for (t0, counts), (t1, _) in zip(timeline, timeline[1:]):
        total += (t1 - t0) * sum(counts.values())
    return total


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(q / 100 * len(values)), len(values) - 1)] if values else float("nan")


async def calibrate(args: argparse.Namespace) -> dict[str, Signals]:
    """Each pool's service time at a light load on one replica (the monitor measures, never acts)."""
    orch = Orchestrator(make_spec(args.speedup, args.slots), engine_factory("simulated", speedup=args.speedup))
    await orch.start()
    monitor = Autoscaler(orch, PoolScaler(orch), AutoscalerConfig(default=PoolLimits(1, 1), interval_s=0.1,
                                                                  window_s=8.0))
    await monitor.start()
    try:
        await drive(orch, [i / (2.0 * args.speedup / 10) for i in range(int(10 * args.speedup / 10 * 2))])
        await asyncio.sleep(0.3)
        return dict(monitor.signals)
    finally:
        await monitor.stop()
        await orch.stop()


async def run_config(name: str, args: argparse.Namespace, times: list[float], replicas: dict[str, int],
                     limits: dict[str, PoolLimits] | None, step_s: float) -> dict[str, Any]:
    orch = Orchestrator(make_spec(args.speedup, args.slots, replicas), engine_factory("simulated", speedup=args.speedup))
    await orch.start()
    scaler = PoolScaler(orch)
    monitor = None
    if limits is not None:
        monitor = Autoscaler(orch, scaler, AutoscalerConfig(
            pools=limits, interval_s=0.1, window_s=args.window, fast_window_s=args.fast_window,
            scale_out_cooldown_s=args.fast_window,
            scale_in_cooldown_s=args.window * 1.5, scale_in_stable_s=args.window))
        await monitor.start()
    wall0 = time.time()
    try:
        infos, refused, timeline = await drive(orch, times)
    finally:
        if monitor is not None:
            await monitor.stop()
        await scaler.stop()
        await orch.stop()
    slo = orch.version().workflow.slo
    latencies = [i.latency_s for i in infos]
    met = sum(1 for i in infos if i.slo_met)
    out: dict[str, Any] = {
        "config": name, "runs": len(infos) + refused, "refused": refused,
        "errors": sum(1 for i in infos if i.status not in ("done", "fail")),
        "attainment": met / max(len(infos) + refused, 1), "slo_s": slo.latency_s if slo else None,
        "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
        "replica_s": replica_seconds(timeline), "actions": len(scaler.events),
        "timeline": [(round(t, 2), c) for t, c in timeline],
    }
    if monitor is not None:
        step_wall = wall0 + step_s
        decisions = [d for d in monitor.decisions if d.action == "scale_out"]
        serving = [e for e in scaler.events if e.action == "scale_out" and e.t >= step_wall]
        # Decision times are on the monotonic clock: convert through the drive's start.
        out["decisions"] = [d.as_dict() for d in monitor.decisions]
        out["events"] = [e.as_dict() for e in scaler.events]
        first_serving = min((e.t for e in serving), default=None)
        out["step_to_first_replica_s"] = None if first_serving is None else first_serving - step_wall
        out["first_decision_after_step"] = next((d.reason for d in decisions), None)
    return out


def plot(results: list[dict[str, Any]], times: list[float], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_rep) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    bins = [0.0] * (int(args.duration) + 1)
    for t in times:
        bins[int(t)] += 1
    ax_rate.step(range(len(bins)), bins, where="post", color="black")
    ax_rate.set_ylabel("arrivals / s (sped up)")
    ax_rate.set_title(f"NL2SQL, simulated engines x{args.speedup:g}: 5x load step")
    for r in results:
        ts = [t for t, _ in r["timeline"]]
        ax_rep.step(ts, [sum(c.values()) for _, c in r["timeline"]], where="post",
                    label=f"{r['config']} (attainment {r['attainment']:.1%}, p99 {r['p99_s']:.2f}s)")
    ax_rep.set_ylabel("LLM replicas")
    ax_rep.set_xlabel("time (s, sped up)")
    ax_rep.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results: list[dict[str, Any]], args: argparse.Namespace, sizes: dict[str, Any]) -> str:
    k = args.speedup
    peak = next(r for r in results if r["config"] == "static-peak")
    lines = [
        "# Autoscaling under a 5x load step (simulated engines)", "",
        f"`python -m benchmarks.autoscale --duration {args.duration:g} --speedup {args.speedup:g} "
        f"--slots {args.slots} --window {args.window:g} --fast-window {args.fast_window:g} --seed {args.seed}` on this machine (2 shared cores). NL2SQL, default layout, "
        f"{args.slots} batch slots per LLM replica; simulated engines (the simulator's engine model in real time) "
        f"sped up x{k:g}: service times and the SLO ({results[0]['slo_s'] * k:g} s -> {results[0]['slo_s']:.2f} s) "
        f"are divided by {k:g}. Everything below is SIMULATED; no real engine ran.", "",
        f"Trace: Poisson arrivals, {sizes['low']:.2f} runs/s for {args.duration / 3:.0f} s, "
        f"{5 * sizes['low']:.2f} runs/s for {args.duration / 3:.0f} s, {sizes['low']:.2f} runs/s for "
        f"{args.duration / 3:.0f} s (seed {args.seed}, the same arrivals for every configuration).", "",
        f"Calibration (one replica per pool, light load): service time per call {sizes['service']}. "
        f"Static sizes from the planner's M/G/c model (the monitor's sizing): mean rate -> {sizes['mean']}, "
        f"peak rate -> {sizes['peak']}.", "",
        "| configuration | runs | refused | errors | attainment | p50 (s) | p99 (s) | replica-hours (equiv.) "
        "| cost vs peak | scaling actions |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['runs']} | {r['refused']} | {r['errors']} | {r['attainment']:.1%} | "
            f"{r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['replica_s'] * k / 3600:.3f} | "
            f"{r['replica_s'] / peak['replica_s']:.0%} | {r['actions']} |")
    auto = next(r for r in results if r["config"] == "autoscaler")
    floor = (sum(1 for _ in sizes["peak"]) * 2 / 3 + sum(sizes["peak"].values()) / 3) / sum(sizes["peak"].values())
    lines += ["", "Replica-hours: LLM replicas integrated over the run, x the speed-up (simulated-time hours).",
              "Latencies are in sped-up seconds (x the speed-up for the simulated time).", "",
              "Reading: one run per configuration, one after another on a machine shared with other work, so "
              "attainment differences of a few points are within run-to-run noise (compare the runs with other "
              "seeds); the peak-sized plan has at least the autoscaler's replicas at every moment. The cost of any "
              f"autoscaler on this trace is at least {floor:.0%} of the peak-sized plan's (one replica per pool "
              "outside the step, the peak size during it, with instant reactions), so the issue's <= 60% target "
              "cannot be met on a step that lasts a third of the trace. Refused runs count as misses: the Cortex "
              "admission policy estimates queue waits from the latency profiles, which the speed-up does not "
              "scale, so it refuses a run as soon as a queue forms on its entry stage (in every configuration).", ""]
    step = auto.get("step_to_first_replica_s")
    lines.append(f"Autoscaler: load step -> first new replica in rotation: "
                 f"{'none' if step is None else f'{step:.2f} s (sped up)'}; simulated engines start at once, so "
                 "this is the monitor's window filling plus its decision; a real engine adds its start time "
                 "(not measured here). First scale-out decision: "
                 f"{auto.get('first_decision_after_step') or 'none'}.")
    lines += ["", "Scaling actions of the monitor, in order (with the reason of each decision in the JSON):", ""]
    for e in auto.get("events", []):
        lines.append(f"- {e['action']} {e['pool']} {e['replica']} -> {e['replicas']} replicas")
    lines += ["", f"![replicas over time]({args.name}.png)", "",
              "Not measured here: real vLLM engines (start-up time per backend, the CPU 1 <-> 2 engine case), "
              "a diurnal ramp and bursts, KV use as a signal, the discrete-event simulator running this controller."]
    return "\n".join(lines) + "\n"


def rerender(args: argparse.Namespace) -> None:
    """Rewrite the report and the plot from a run's JSON (same arrivals: same seed and rates)."""
    data = json.loads((RESULTS / f"{args.name}.json").read_text())
    saved = argparse.Namespace(**{**data["args"], "name": args.name})
    times = arrivals(data["sizes"]["low"], saved.duration, saved.seed)
    plot(data["results"], times, saved, RESULTS / f"{args.name}.png")
    (RESULTS / f"{args.name}.md").write_text(report(data["results"], saved, data["sizes"]))


async def main_async(args: argparse.Namespace) -> None:
    signals = await calibrate(args)
    busiest = max(signals.values(), key=lambda s: s.service_s * s.arrival_rate)
    low = args.low_utilisation * args.slots / busiest.service_s / max(busiest.arrival_rate / (2.0 * args.speedup / 10),
                                                                      1e-9)
    times = arrivals(low, args.duration, args.seed)
    defaults = AutoscalerConfig()
    per_run = {name: s.arrival_rate / (2.0 * args.speedup / 10) for name, s in signals.items()}  # calls per run

    def sized(rate: float) -> dict[str, int]:
        return {name: size_pool(Signals(rate * per_run[name], 0, 0, 0, s.service_s, 0, 0, None, 1), args.slots,
                                PoolLimits(1, 64), defaults.target_utilisation, defaults.wait_budget)
                for name, s in signals.items()}

    mean_rate = len(times) / args.duration
    sizes = {"low": low, "service": {n: round(s.service_s, 4) for n, s in signals.items()},
             "mean": sized(mean_rate), "peak": sized(5 * low)}
    limits = {name: PoolLimits(1, max(n, 1)) for name, n in sizes["peak"].items()}
    results = []
    for name, replicas, lim in (("static-mean", sizes["mean"], None), ("static-peak", sizes["peak"], None),
                                ("autoscaler", {n: 1 for n in signals}, limits)):
        print(f"running {name} ...", flush=True)
        results.append(await run_config(name, args, times, replicas, lim, args.duration / 3))
        r = results[-1]
        print(f"  attainment {r['attainment']:.1%} p99 {r['p99_s']:.3f}s replica-s {r['replica_s']:.1f} "
              f"actions {r['actions']} refused {r['refused']} errors {r['errors']}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "sizes": sizes, "results": results},
                                                          indent=1, default=str))
    plot(results, times, args, RESULTS / f"{args.name}.png")
    (RESULTS / f"{args.name}.md").write_text(report(results, args, sizes))
    print((RESULTS / f"{args.name}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="Trace length, sped-up seconds.")
    parser.add_argument("--speedup", type=float, default=10.0)
    parser.add_argument("--slots", type=int, default=4, help="Batch slots (max_num_seqs) per LLM replica.")
    parser.add_argument("--low-utilisation", type=float, default=0.3)
    parser.add_argument("--window", type=float, default=3.0, help="The monitor's window, sped-up seconds.")
    parser.add_argument("--fast-window", type=float, default=0.6, help="Its scale-out window, sped-up seconds.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="autoscale", help="Results file names in benchmarks/results/.")
    parser.add_argument("--rerender", action="store_true", help="Only rewrite the report and plot from the JSON.")
    args = parser.parse_args()
    if args.rerender:
        rerender(args)
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
