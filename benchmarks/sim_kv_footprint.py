"""KV footprint over time, one shared engine pool vs stage-isolated pools, NL2SQL (simulated).

The Cortex paper's Figure 2 setting: the same NL2SQL load on the same GPUs,
served by one shared pool of generic engines or by the planner's stage-isolated
pools (the same replicas, pooled vs dedicated). KV in
use (tokens, summed over the pool's engines, running sequences plus resident
shared prefixes) is sampled every 0.5 s of simulated time.

    .venv/bin/python benchmarks/sim_kv_footprint.py

Writes benchmarks/results/sim_kv_footprint.{json,png}.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.sim_common import plan_layouts, setup  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402

OUT = Path(__file__).parent / "results"


def main() -> None:
    s = setup("nl2sql", "h100x12")
    rate = 0.7 * s.capacity
    isolated, shared, _ = plan_layouts(s, rate)
    series, summary = {}, {}
    for label, layout, pol in (("shared pool (fcfs)", shared, "fcfs"), ("isolated pools (cortex)", isolated,
                                                                         "cortex")):
        res = Simulator(s.program, layout, make_policy(pol), [Stream("nl2sql", rate)],
                        SimConfig(runs=2500, seed=1, slo_scale=4.0, kv_sample_s=0.5)).run()
        total: dict[float, int] = defaultdict(int)
        for t, _, used in res.kv_samples:
            total[t] += used
        ts = sorted(total)
        series[label] = (ts, [total[t] for t in ts])
        steady = [total[t] for t in ts if 0.2 * ts[-1] <= t <= 0.8 * ts[-1]]
        cap = sum(e.kv_capacity_tokens for e in res.engines)
        summary[label] = {"mean_kv_tokens": sum(steady) / len(steady), "peak_kv_tokens": max(total.values()),
                          "capacity_tokens": cap, "preemptions": sum(e.preemptions for e in res.engines),
                          "p99_s": res.summary()["p99_s"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sim_kv_footprint.json").write_text(json.dumps({"label": "simulated", "rate_runs_per_s": rate,
                                                           "cluster": "12x H100", "summary": summary}, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, (ts, ys) in series.items():
        ax.plot(ts, [y / 1e3 for y in ys], label=label)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("KV in use (thousand tokens, all engines)")
    ax.set_title("NL2SQL KV footprint, 12x H100, 70% load (simulated)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "sim_kv_footprint.png", dpi=120)
    for label, d in summary.items():
        print(f"[simulated] {label}: mean KV {d['mean_kv_tokens']:.0f} tokens, peak {d['peak_kv_tokens']}, "
              f"capacity {d['capacity_tokens']}, preemptions {d['preemptions']}, p99 {d['p99_s']:.2f}s")


if __name__ == "__main__":
    main()
