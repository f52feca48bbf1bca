"""Autoscaling on a load trace: static-for-mean vs static-for-peak vs the monitor (simulated engines).

NL2SQL (``examples/nl2sql.cortex``) on simulated engines (the simulator's engine
model in real time, sped up ``--speedup`` times: engine service times, the
workflow's SLO and the admission policy's service-time estimates are divided by
it, arrival rates multiplied by it; figures in "equivalent" units are multiplied
back). The LLM replicas have ``--slots`` batch slots each, so the low rate needs
more than one replica and 5x that rate about five times as many.

1. Service times: the planner's estimate per pool (the graph's expected standalone
   time of a call, sped up) sizes the static plans and sets the rates; a short
   low-rate run on one replica per pool measures them too (the monitor's own
   signals, nothing acted on), reported beside the estimate (a ten-second
   measurement on a shared machine is too noisy to size plans with: it moved the
   peak plan of `fix` between 8 and 13 replicas). The calls per run of each pool
   are the planner's expected visits.
2. The trace (``--trace``), Poisson arrivals between ``low`` and ``peak = 5 x low``
   runs/s; ``low`` puts one replica of the busiest pool at ``--low-utilisation``:
   ``step`` (low, peak, low: a third of ``--duration`` each), ``diurnal`` (one
   raised-cosine day, low -> peak -> low) or ``bursts`` (low, with four bursts at
   the peak rate, each 5% of the trace). The same arrival times (per ``--seeds``
   seed) for every configuration.
3. Three configurations on that trace: every LLM pool sized by the planner's M/G/c
   model (the monitor's :func:`size_pool`) for the trace's mean rate, for its peak
   rate, and the monitor within ``[1, peak size]``, deployed at the size for the
   trace's initial rate (as a plan made for the load at deploy time would be). The
   monitor's settings derive from its two windows (``--window``, ``--fast-window``)
   and ``--z`` (see :func:`monitor_config`); they were chosen on seeds 0-2 of the
   step trace, seeds 3-4 are held out.

Reported per configuration and seed: SLO attainment over the whole trace (a run
refused by admission control counts as a miss; also without the refused runs),
p50/p99 latency, replica-hours (LLM replicas integrated over time), scaling
actions, when the refused runs arrived, the longest stall of the event loop and
the load average (a real-time simulation on a shared machine cannot tell a stall
from load: these say when a result was distorted); for the monitor on a step, the time from the load step to the signal
crossing (the model first wanting more replicas), to the scale-out decision, and
to the first new replica serving. Writes ``benchmarks/results/<name>.md``,
``.json`` and ``.png`` (``<name>`` defaults to ``autoscale`` for the step,
``autoscale_<trace>`` otherwise).

    python -m benchmarks.autoscale [--trace step|diurnal|bursts] [--seeds 0 1] [--duration 90]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from cortexlang.compiler import compile_file
from planner.visits import build_chain, expected_stage_visits
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


TRACES = ("step", "diurnal", "bursts")
CONFIGS = ("static-mean", "static-peak", "autoscaler")
BURSTS = (0.15, 0.4, 0.65, 0.85)
"""Where the ``bursts`` trace's bursts start, as fractions of the trace; each lasts :data:`BURST_LEN`."""
BURST_LEN = 0.05


def rate_at(trace: str, t: float, low: float, duration_s: float) -> float:
    """The trace's arrival rate (runs/s) at time ``t``: between ``low`` and ``5 x low`` (see module docstring)."""
    peak, x = 5 * low, t / duration_s
    if trace == "step":
        return peak if 1 / 3 <= x < 2 / 3 else low
    if trace == "diurnal":
        return low + (peak - low) * (1 - math.cos(2 * math.pi * x)) / 2
    if trace == "bursts":
        return peak if any(b <= x < b + BURST_LEN for b in BURSTS) else low
    raise ValueError(f"unknown trace {trace!r} (one of {', '.join(TRACES)})")


def arrivals(trace: str, low: float, duration_s: float, seed: int) -> list[float]:
    """Poisson arrival times at :func:`rate_at` (thinning a ``5 x low`` process)."""
    rng = random.Random(seed)
    out, t, peak = [], 0.0, 5 * low
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return out
        if rng.random() * peak < rate_at(trace, t, low, duration_s):
            out.append(t)


def mean_rate(trace: str, low: float, duration_s: float) -> float:
    """The trace's mean arrival rate (its rate function's average, not one draw's)."""
    n = 10_000
    return sum(rate_at(trace, (i + 0.5) * duration_s / n, low, duration_s) for i in range(n)) / n


async def drive(orch: Orchestrator, times: list[float]) -> tuple[list[Any], list[float], list[tuple], float]:
    """Submit a run at each time; the finished runs' infos, when (seconds into the trace) each refused
    run arrived, a replica timeline (per pool, every 0.1 s: a longer gap is the event loop held up), and
    the drive's start on the monotonic clock."""
    start = time.monotonic()
    runs: list[Any] = []
    refused: list[float] = []
    timeline: list[tuple] = []
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
            refused.append(at)
    infos = [await orch.wait(r.run_id, timeout_s=600) for r in runs]
    stop.set()
    await sampler
    return infos, refused, timeline, start


def loop_lag(timeline: list[tuple]) -> float:
    """The longest the 0.1 s sampler was held up (seconds beyond its period): the event loop stalled,
    e.g. by CPU contention on this shared machine, which a real-time simulation cannot tell from load."""
    return max((t1 - t0 - 0.1 for (t0, _), (t1, _) in zip(timeline, timeline[1:])), default=0.0)


def replica_seconds(timeline: list[tuple]) -> float:
    total = 0.0
    for (t0, counts), (t1, _) in zip(timeline, timeline[1:]):
        total += (t1 - t0) * sum(counts.values())
    return total


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(q / 100 * len(values)), len(values) - 1)] if values else float("nan")


async def start_orchestrator(args: argparse.Namespace, replicas: dict[str, int] | None = None) -> Orchestrator:
    """A started orchestrator on sped-up simulated engines whose admission estimates are sped up too."""
    orch = Orchestrator(make_spec(args.speedup, args.slots, replicas), engine_factory("simulated", speedup=args.speedup))
    await orch.start()
    # The admission policy compares a pool's expected wait (queued x the graph's service-time estimate,
    # from the unscaled latency profiles) with a run's slack under the sped-up SLO: scale the estimate
    # by the same factor, else it refuses runs as soon as any queue forms.
    for pool in orch.pools_by_name.values():
        pool.expected_s /= args.speedup
    return orch


async def calibrate(args: argparse.Namespace) -> tuple[dict[str, Signals], dict[str, float]]:
    """Each pool's service time at a light load on one replica (the monitor measures, never acts), and the
    planner's estimate of it (the graph's expected standalone time, sped up): the static plans are sized
    from the estimate, as the planner sizes them, not from a ten-second measurement on a shared machine
    (which moved the peak plan of `fix` between 8 and 13 replicas from one run to the next)."""
    orch = await start_orchestrator(args)
    monitor = Autoscaler(orch, PoolScaler(orch), AutoscalerConfig(default=PoolLimits(1, 1), interval_s=0.1,
                                                                  window_s=8.0))
    await monitor.start()
    rate = 2.0 * args.speedup / 10
    try:
        await drive(orch, [i / rate for i in range(int(10 * rate))])
        await asyncio.sleep(0.3)
        return dict(monitor.signals), {p.name: p.expected_s for p in orch.pools_by_name.values() if p.kind == "llm"}
    finally:
        await monitor.stop()
        await orch.stop()


def monitor_config(args: argparse.Namespace, limits: dict[str, PoolLimits]) -> AutoscalerConfig:
    """The monitor's settings, all tied to its two windows: a scale-out's effect is measured over the short
    window (its cool-down); a scale-in needs the model to want fewer for ``--scale-in-stable`` (default: the
    window, a full window of fresh evidence) and comes ``--scale-in-cooldown`` (default: the short window)
    after the last action."""
    fast = args.fast_window
    return AutoscalerConfig(pools=limits, interval_s=0.1, window_s=args.window, fast_window_s=fast,
                            scale_out_cooldown_s=fast, confidence_z=args.z,
                            scale_in_cooldown_s=fast if args.scale_in_cooldown is None else args.scale_in_cooldown,
                            scale_in_stable_s=args.window if args.scale_in_stable is None else args.scale_in_stable)


async def run_config(name: str, args: argparse.Namespace, times: list[float], replicas: dict[str, int],
                     limits: dict[str, PoolLimits] | None, step_s: float | None) -> dict[str, Any]:
    orch = await start_orchestrator(args, replicas)
    scaler = PoolScaler(orch)
    monitor = None
    if limits is not None:
        monitor = Autoscaler(orch, scaler, monitor_config(args, limits))
        await monitor.start()
    wall0 = time.time()
    load0 = os.getloadavg()[0]
    try:
        infos, refused_at, timeline, mono0 = await drive(orch, times)
    finally:
        if monitor is not None:
            await monitor.stop()
        await scaler.stop()
        await orch.stop()
    slo = orch.version().workflow.slo
    latencies = [i.latency_s for i in infos]
    met = sum(1 for i in infos if i.slo_met)
    refused = len(refused_at)
    out: dict[str, Any] = {
        "config": name, "runs": len(infos) + refused, "refused": refused,
        "errors": sum(1 for i in infos if i.status not in ("done", "fail")),
        "attainment": met / max(len(infos) + refused, 1), "attainment_admitted": met / max(len(infos), 1),
        "slo_s": slo.latency_s if slo else None,
        "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
        "replica_s": replica_seconds(timeline), "actions": len(scaler.events),
        "refused_at": [round(t, 2) for t in refused_at], "loadavg": [load0, os.getloadavg()[0]],
        "loop_lag_s": round(loop_lag(timeline), 3),
        "timeline": [(round(t, 2), c) for t, c in timeline],
    }
    if monitor is not None:
        out["decisions"] = [{**d.as_dict(), "t": round(d.t - mono0, 4)} for d in monitor.decisions]
        out["events"] = [{**e.as_dict(), "t": round(e.t - wall0, 4)} for e in scaler.events]
        if step_s is not None:
            out["step"] = step_latency(out, step_s)
    return out


def step_latency(result: dict[str, Any], step_s: float) -> dict[str, Any]:
    """From the load step (``step_s`` into the trace) to the monitor's first scale-out: the signal crossing
    (the model first wanting more replicas), the decision, the first new replica serving (seconds)."""
    decision = next((d for d in result["decisions"] if d["action"] == "scale_out" and d["t"] >= step_s), None)
    serving = next((e for e in result["events"] if e["action"] == "scale_out" and e["t"] >= step_s), None)
    if decision is None:
        return {"decision_s": None, "crossing_s": None, "pending_s": None, "serving_s": None, "reason": None}
    pending = decision["signals"].get("pending_s", 0.0)
    return {"crossing_s": decision["t"] - pending - step_s, "pending_s": pending, "decision_s": decision["t"] - step_s,
            "serving_s": None if serving is None else serving["t"] - step_s, "reason": decision["reason"]}


def plot(runs: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    """Arrival rate and LLM replicas over time, one panel per configuration's replicas (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = str(args.seeds[0])
    times = arrivals(args.trace, runs["sizes"]["low"], args.duration, int(seed))
    fig, (ax_rate, ax_rep) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    bins = [0.0] * (int(args.duration) + 1)
    for t in times:
        bins[int(t)] += 1
    ax_rate.step(range(len(bins)), bins, where="post", color="black", label="arrivals (seed " + seed + ")")
    ax_rate.set_ylabel("arrivals / s (sped up)")
    ax_rate.set_title(f"NL2SQL, simulated engines x{args.speedup:g}: {args.trace} trace")
    for r in runs["seeds"][seed]:
        ts = [t for t, _ in r["timeline"]]
        ax_rep.step(ts, [sum(c.values()) for _, c in r["timeline"]], where="post",
                    label=f"{r['config']} (attainment {r['attainment']:.1%}, p99 {r['p99_s']:.2f}s)")
    ax_rep.set_ylabel("LLM replicas (all pools)")
    ax_rep.set_xlabel("time (s, sped up)")
    ax_rep.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def command(args: argparse.Namespace) -> str:
    return (f"python -m benchmarks.autoscale --trace {args.trace} --duration {args.duration:g} "
            f"--speedup {args.speedup:g} --slots {args.slots} --low-utilisation {args.low_utilisation:g} "
            f"--window {args.window:g} --fast-window {args.fast_window:g} --z {getattr(args, 'z', 2.0):g} "
            + (f"--scale-in-stable {args.scale_in_stable:g} " if getattr(args, "scale_in_stable", None) is not None
               else "")
            + (f"--scale-in-cooldown {args.scale_in_cooldown:g} " if getattr(args, "scale_in_cooldown", None)
               is not None else "")
            + f"--seeds {' '.join(map(str, args.seeds))}"
            + (f" --held-out {' '.join(map(str, args.held_out))}" if getattr(args, "held_out", None) else ""))


def report(data: dict[str, Any], args: argparse.Namespace) -> str:
    k, sizes = args.speedup, data["sizes"]
    first = data["seeds"][str(args.seeds[0])]
    lines = [
        f"# Autoscaling on a {args.trace} trace (simulated engines)", "",
        f"`{command(args)}` on this machine (2 shared cores; load average at the start "
        f"{data['loadavg'][0]:.2f}, at the end {data['loadavg'][1]:.2f}: other helpers' work ran beside it). "
        f"NL2SQL, default layout, {args.slots} batch slots per LLM replica; simulated engines (the simulator's "
        f"engine model in real time) sped up x{k:g}: service times, the admission policy's service-time estimates "
        f"and the SLO ({first[0]['slo_s'] * k:g} s -> {first[0]['slo_s']:.2f} s) are divided by {k:g}. "
        "Everything below is SIMULATED; no real engine ran.", "",
        f"Trace `{args.trace}`: Poisson arrivals between {sizes['low']:.2f} and {5 * sizes['low']:.2f} runs/s "
        f"(mean {sizes['mean_rate']:.2f}) over {args.duration:g} s; "
        + {"step": "low, 5x, low, a third each.",
           "diurnal": "one raised-cosine day: low at the ends, 5x in the middle.",
           "bursts": f"low, with {len(BURSTS)} bursts at 5x, each {BURST_LEN * args.duration:g} s long, starting at "
                     + ", ".join(f"{b * args.duration:g}" for b in BURSTS) + " s."}[args.trace]
        + " The same arrivals for every configuration of a seed.", "",
        f"Service time per call (sped up): the planner's estimate {sizes['service']} s (the graph's standalone time, "
        f"what the static plans are sized from); measured at a light load on one replica "
        f"{sizes.get('service_measured', 'not recorded')} s. "
        f"Static sizes from the planner's M/G/c model (the monitor's sizing): mean rate -> {sizes['mean']}, "
        f"peak rate -> {sizes['peak']}; the autoscaler starts at the size for the initial rate "
        f"{sizes['initial']} and may use 1 to the peak size per pool.", "",
        "| seed | configuration | runs | refused | errors | attainment | attainment of admitted | p50 (s) | p99 (s) "
        "| replica-hours (equiv.) | cost vs peak | scaling actions | refused per third | longest loop stall (s) "
        "| load average (start, end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, results in data["seeds"].items():
        peak = next(r for r in results if r["config"] == "static-peak")
        for r in results:
            lines.append(
                f"| {seed} | {r['config']} | {r['runs']} | {r['refused']} | {r['errors']} | {r['attainment']:.1%} | "
                f"{r['attainment_admitted']:.1%} | {r['p50_s']:.3f} | {r['p99_s']:.3f} | "
                f"{r['replica_s'] * k / 3600:.3f} | {r['replica_s'] / peak['replica_s']:.0%} | {r['actions']} | "
                f"{thirds(r, args.duration)} | {fmt_or_dash(r.get('loop_lag_s'), '.2f')} | "
                + (f"{r['loadavg'][0]:.1f}, {r['loadavg'][1]:.1f} |" if "loadavg" in r else "- |"))
    lines += ["", "Replica-hours: LLM replicas integrated over the run, x the speed-up (simulated-time hours). "
              "Latencies are in sped-up seconds (x the speed-up for the simulated time). Attainment counts a run "
              "refused by admission control as a miss; the next column leaves refused runs out. Refused per third: "
              "the refused runs by when they arrived (first / second / last third of the trace). Longest loop "
              "stall: the longest the benchmark's 0.1 s sampler was held up beyond its period (the event loop "
              "stalled: CPU contention on this shared machine, which a real-time simulation cannot tell from "
              "load; engines, monitor and admission all stall with it).", ""]
    summary = summarise(data)
    lines.append(f"Over the seeds, the autoscaler's attainment minus the peak plan's: "
                 f"{', '.join(f'{d:+.1f}' for d in summary['attainment_gap_pts'])} points; its cost: "
                 f"{', '.join(f'{c:.0%}' for c in summary['cost_vs_peak'])} of the peak plan's. The mean-sized plan: "
                 f"{', '.join(f'{d:+.1f}' for d in summary['mean_gap_pts'])} points at "
                 f"{', '.join(f'{c:.0%}' for c in summary['mean_cost_vs_peak'])} of the cost. An oracle holding "
                 "the planner's size for the current rate at every moment (no reaction time) would cost "
                 f"{sizes.get('oracle_cost_vs_peak', float('nan')):.0%} of the peak plan on this trace.")
    met = [gap >= -1.0 and cost <= 0.6 for gap, cost in zip(summary["attainment_gap_pts"], summary["cost_vs_peak"])]
    held_out = [s for s in data["seeds"] if s in map(str, data.get("held_out", ()))]
    lines += ["", f"Issue 15's target (attainment within 1 point of the peak-sized plan at <= 60% of its cost): "
              f"met for {sum(met)} of {len(met)} seeds ({', '.join(s for s, m in zip(data['seeds'], met) if m) or 'none'})"
              + (f"; seeds {', '.join(held_out)} are held out (the monitor's settings were not chosen on them)"
                 if held_out else "") + "."]
    steps = [(seed, r["step"]) for seed, results in data["seeds"].items() for r in results if "step" in r]
    if steps:
        lines += ["", "Load step -> the monitor's first scale-out (sped-up seconds; x" + f"{k:g}" +
                  " for the simulated time). Crossing: the first tick at which the monitor's model wanted more "
                  "replicas; decision: the scale-out decided; serving: the first new replica in rotation "
                  "(simulated engines start at once: a real engine adds its start time, see "
                  "[engine_startup.md](engine_startup.md)).", "",
                  "| seed | step -> crossing | crossing -> decision | step -> decision | step -> first new replica "
                  "serving | first decision |", "|---|---|---|---|---|---|"]
        for seed, st in steps:
            fmt = (lambda v: "none" if v is None else f"{v:.2f} s ({v * k:.2f} s equiv.)")
            lines.append(f"| {seed} | {fmt(st['crossing_s'])} | {fmt(st['pending_s'])} | {fmt(st['decision_s'])} | "
                         f"{fmt(st['serving_s'])} | {st['reason']} |")
    auto = next(r for r in first if r["config"] == "autoscaler")
    lines += ["", f"Scaling actions of the monitor (seed {args.seeds[0]}), in order (the reason of each decision is in "
              "the JSON):", ""]
    for e in auto.get("events", []):
        lines.append(f"- t={e['t']:.1f} s {e['action']} {e['pool']} {e['replica']} -> {e['replicas']} replicas")
    if data.get("notes"):
        lines += ["", "Reading (written after the run, from the JSON):", "", *data["notes"]]
    lines += ["", f"![replicas over time]({args.name}.png)"]
    return "\n".join(lines) + "\n"


def summarise(data: dict[str, Any]) -> dict[str, list[float]]:
    """Per seed: the autoscaler's and the mean plan's attainment gap to the peak plan (points) and cost ratio."""
    out: dict[str, list[float]] = {"attainment_gap_pts": [], "cost_vs_peak": [], "mean_gap_pts": [],
                                   "mean_cost_vs_peak": []}
    for results in data["seeds"].values():
        by = {r["config"]: r for r in results}
        peak = by["static-peak"]
        for gap, cost, config in (("attainment_gap_pts", "cost_vs_peak", "autoscaler"),
                                  ("mean_gap_pts", "mean_cost_vs_peak", "static-mean")):
            out[gap].append(100 * (by[config]["attainment"] - peak["attainment"]))
            out[cost].append(by[config]["replica_s"] / peak["replica_s"])
    return out


def thirds(result: dict[str, Any], duration_s: float) -> str:
    """The refused runs of ``result`` per third of the trace, ``a / b / c`` (``-`` when not recorded)."""
    if "refused_at" not in result:
        return "-"
    counts = [0, 0, 0]
    for t in result["refused_at"]:
        counts[min(int(3 * t / duration_s), 2)] += 1
    return " / ".join(map(str, counts))


def fmt_or_dash(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def rerender(args: argparse.Namespace) -> None:
    """Rewrite the report and the plot from a run's JSON (same arrivals: same seed and rates)."""
    data = json.loads((RESULTS / f"{args.name}.json").read_text())
    saved = argparse.Namespace(**{**data["args"], "name": args.name})
    plot(data, saved, RESULTS / f"{args.name}.png")
    (RESULTS / f"{args.name}.md").write_text(report(data, saved))


async def main_async(args: argparse.Namespace) -> None:
    load0 = os.getloadavg()[0]
    measured, estimated = await calibrate(args)
    signals = {name: Signals(0, 0, 0, 0, estimated[name], 0, 0, None, 1) for name in measured}
    # Calls per run of each pool: the planner's expected visits from the flow's branch probabilities (the
    # simulated engines follow them); a short calibration's call counts are too noisy to size plans with.
    program = compile_file(ROOT / "examples" / "nl2sql.cortex").program
    assert program is not None
    visits = expected_stage_visits(build_chain(program.workflows[0]))
    per_run = {name: visits[name] for name in signals}
    busiest = max(signals, key=lambda n: signals[n].service_s * per_run[n])
    low = args.low_utilisation * args.slots / signals[busiest].service_s / max(per_run[busiest], 1e-9)
    defaults = AutoscalerConfig()

    def sized(rate: float) -> dict[str, int]:
        return {name: size_pool(Signals(rate * per_run[name], 0, 0, 0, s.service_s, 0, 0, None, 1), args.slots,
                                PoolLimits(1, 64), defaults.target_utilisation, defaults.wait_budget)
                for name, s in signals.items()}

    mean = mean_rate(args.trace, low, args.duration)
    sizes = {"low": low, "mean_rate": mean, "service": {n: round(s.service_s, 4) for n, s in signals.items()},
             "service_measured": {n: round(s.service_s, 4) for n, s in measured.items()},
             "calls_per_run": {n: round(c, 3) for n, c in per_run.items()}, "mean": sized(mean), "peak": sized(5 * low)}
    sizes["initial"] = sized(rate_at(args.trace, 0.0, low, args.duration))
    # The cost of an oracle that always has the planner's size for the current rate (no reaction time).
    grid = [sum(sized(rate_at(args.trace, (i + 0.5) * args.duration / 200, low, args.duration)).values())
            for i in range(200)]
    sizes["oracle_cost_vs_peak"] = sum(grid) / len(grid) / sum(sizes["peak"].values())
    limits = {name: PoolLimits(1, max(n, 1)) for name, n in sizes["peak"].items()}
    step_s = args.duration / 3 if args.trace == "step" else None
    data: dict[str, Any] = {"args": vars(args), "sizes": sizes, "seeds": {}, "held_out": args.held_out}
    for seed in args.seeds:
        times = arrivals(args.trace, low, args.duration, seed)
        results = data["seeds"][str(seed)] = []
        for name, replicas, lim in (("static-mean", sizes["mean"], None), ("static-peak", sizes["peak"], None),
                                    ("autoscaler", sizes["initial"], limits)):
            if name not in args.configs:
                continue
            print(f"seed {seed}: running {name} ...", flush=True)
            results.append(await run_config(name, args, times, replicas, lim, step_s))
            r = results[-1]
            print(f"  attainment {r['attainment']:.1%} (admitted {r['attainment_admitted']:.1%}) p99 {r['p99_s']:.3f}s "
                  f"replica-s {r['replica_s']:.1f} actions {r['actions']} refused {r['refused']} errors {r['errors']} "
                  f"loop lag {r['loop_lag_s']:.2f}s load {r['loadavg'][0]:.1f}->{r['loadavg'][1]:.1f}"
                  + (f" step {r['step']}" if "step" in r else ""), flush=True)
            save(data, args)
    data["loadavg"] = [load0, os.getloadavg()[0]]
    save(data, args)
    if set(args.configs) != set(CONFIGS):
        return  # a partial run (tuning): the JSON only
    plot(data, args, RESULTS / f"{args.name}.png")
    (RESULTS / f"{args.name}.md").write_text(report(data, args))
    print((RESULTS / f"{args.name}.md").read_text())


def save(data: dict[str, Any], args: argparse.Namespace) -> None:
    """Write the JSON (after every configuration, so a long run's finished part is kept)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({**data, "args": vars(args)}, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", choices=TRACES, default="step")
    parser.add_argument("--duration", type=float, default=90.0, help="Trace length, sped-up seconds.")
    parser.add_argument("--speedup", type=float, default=2.5)
    parser.add_argument("--slots", type=int, default=1, help="Batch slots (max_num_seqs) per LLM replica.")
    parser.add_argument("--low-utilisation", type=float, default=2.0,
                        help="Offered load of the low rate in replicas of the busiest pool (2.0: it needs ~3).")
    parser.add_argument("--window", type=float, default=3.0, help="The monitor's window, sped-up seconds.")
    parser.add_argument("--fast-window", type=float, default=0.6, help="Its scale-out window, sped-up seconds.")
    parser.add_argument("--z", type=float, default=2.0,
                        help="The monitor's confidence band on a measured rate, in standard deviations.")
    parser.add_argument("--scale-in-stable", type=float, default=None,
                        help="Seconds the model must want fewer replicas (default: the window).")
    parser.add_argument("--scale-in-cooldown", type=float, default=None,
                        help="Seconds after the last action before a scale-in (default: the fast window).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--held-out", type=int, nargs="*", default=[],
                        help="Seeds not used to choose the monitor's settings (labelled so in the report).")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS),
                        help="Run only these configurations (tuning; writes the JSON only).")
    parser.add_argument("--name", default=None, help="Results file names in benchmarks/results/ "
                        "(default: autoscale for the step, autoscale_<trace> otherwise).")
    parser.add_argument("--rerender", action="store_true", help="Only rewrite the report and plot from the JSON.")
    args = parser.parse_args()
    args.name = args.name or ("autoscale" if args.trace == "step" else f"autoscale_{args.trace}")
    if args.rerender:
        rerender(args)
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
