"""KV footprint over time, one shared engine pool vs stage-isolated pools (simulated).

The Cortex paper's Figure 2 setting: the same load on the same GPUs, served by
one shared pool of generic engines or by the planner's stage-isolated pools
(the same replicas, pooled vs dedicated, same ``max_num_seqs`` per replica). KV
in use (tokens, summed over the engines, running sequences plus resident
shared prefixes) is sampled every 0.5 s of simulated time. Scenarios:

* ``nl2sql``: NL2SQL, 12x H100, Llama-3-8B, 70% load, latency-aware caps.
* ``longrag``: the KV-heavy deep-research step (``runtime.simulator.workloads.longrag``:
  Llama-3.1-70B at TP4 on 16x A100-80G, 4000-token reports) at 50% load with
  vLLM's KV-derived caps only (``decode_stretch = inf``: up to 256 sequences).

    .venv/bin/python benchmarks/sim_kv_footprint.py

Writes benchmarks/results/sim_kv_footprint.{json,png}.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.sim_common import plan_layouts, setup  # noqa: E402
from planner.candidates import DECODE_STRETCH  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402

OUT = Path(__file__).parent / "results"
SCENARIOS = (  # name, workload, cluster, load, decode stretch, runs, SLO scale for the deadline-aware policy
    ("nl2sql", "nl2sql", "h100x12", 0.7, DECODE_STRETCH, 2500, 4.0),
    ("longrag", "longrag", "a100x16", 0.5, math.inf, 600, 4.0),
)


def scenario(name: str, workload: str, cluster: str, load: float, stretch: float, runs: int,
             slo_scale: float) -> tuple[dict, dict]:
    s = setup(workload, cluster, decode_stretch=stretch)
    rate = load * s.capacity
    isolated, shared, _ = plan_layouts(s, rate)
    series, summary = {}, {}
    for label, layout, pol in (("shared pool (fcfs)", shared, "fcfs"), ("isolated pools (cortex)", isolated,
                                                                         "cortex")):
        res = Simulator(s.program, layout, make_policy(pol), [Stream(s.workflow.name, rate)],
                        SimConfig(runs=runs, seed=1, slo_scale=slo_scale, kv_sample_s=0.5)).run()
        total: dict[float, int] = defaultdict(int)
        for t, _, used in res.kv_samples:
            total[t] += used
        ts = sorted(total)
        series[label] = (ts, [total[t] for t in ts])
        steady = [total[t] for t in ts if 0.2 * ts[-1] <= t <= 0.8 * ts[-1]]
        cap = sum(e.kv_capacity_tokens for e in res.engines)
        summary[label] = {"mean_kv_tokens": round(sum(steady) / len(steady)), "peak_kv_tokens": max(total.values()),
                          "peak_replica_kv_fraction": round(max(e.kv_peak_tokens / e.kv_capacity_tokens
                                                                for e in res.engines), 3),
                          "capacity_tokens": cap, "preemptions": sum(e.preemptions for e in res.engines),
                          "p99_s": round(res.summary()["p99_s"], 2)}
    meta = {"workload": workload, "cluster": cluster, "load": load, "rate_runs_per_s": round(rate, 3),
            "decode_stretch": stretch if math.isfinite(stretch) else "inf",
            "max_num_seqs": sorted({r.slots for r in isolated if r.kind == "llm"}), "summary": summary}
    return meta, series


def main() -> None:
    results, plots = {}, {}
    for name, *args in SCENARIOS:
        results[name], plots[name] = scenario(name, *args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sim_kv_footprint.json").write_text(json.dumps({"label": "simulated", "scenarios": results}, indent=2)
                                               + "\n")
    fig, axes = plt.subplots(1, len(plots), figsize=(6 * len(plots), 4))
    for ax, (name, series) in zip(axes, plots.items()):
        for label, (ts, ys) in series.items():
            ax.plot(ts, [y / 1e3 for y in ys], label=label)
        meta = results[name]
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("KV in use (thousand tokens, all engines)")
        ax.set_title(f"{name}, {meta['cluster']}, {int(meta['load'] * 100)}% load (simulated)")
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "sim_kv_footprint.png", dpi=120)
    for name, meta in results.items():
        for label, d in meta["summary"].items():
            print(f"[simulated] {name} {label}: mean KV {d['mean_kv_tokens']} tokens, peak {d['peak_kv_tokens']} "
                  f"of {d['capacity_tokens']} (busiest replica {d['peak_replica_kv_fraction']:.0%}), "
                  f"preemptions {d['preemptions']}, p99 {d['p99_s']:.2f}s")


if __name__ == "__main__":
    main()
