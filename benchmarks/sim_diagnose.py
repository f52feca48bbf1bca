"""Where the tail of latency / standalone comes from, per policy (simulated engines).

For one workload, cluster and load, every policy is simulated once with call
records; each measured run's latency is decomposed over its calls into

* ``queue``   -- waiting for a batch slot (``t_start - t_enqueue``, preemption re-queues included);
* ``device``  -- the call's standalone time on the device it ran on minus its standalone time on the
  fastest device (the slow-device penalty);
* ``batch``   -- service time minus the standalone time on its device (batch slowdown: a bigger,
  longer-context batch makes every decode step slower, admitting iterations add prefill);
* ``executor``-- SQL/tool service and waits.

It prints, for runs above the 95th percentile of the ratio (the runs that set
the SLO scale), the mean excess per component in units of the run's
standalone latency, per-device call shares and time-averaged batch sizes.

    .venv/bin/python benchmarks/sim_diagnose.py [--workload nl2sql] [--cluster mixed12] [--load 0.7]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.sim_common import BASELINES, plan_layouts, setup  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.graph import llm_standalone_s  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402


def diagnose(workload: str, cluster: str, load: float, policies: list[str], runs: int, seed: int,
             scale: float) -> list[dict]:
    s = setup(workload, cluster)
    cortex_lay, base_lay, _ = plan_layouts(s, load * s.capacity)
    rows = []
    for pol in policies:
        lay = cortex_lay if pol == "cortex" else base_lay
        sim = Simulator(s.program, lay, make_policy(pol), [Stream(s.workflow.name, load * s.capacity)],
                        SimConfig(runs=runs, seed=seed, slo_scale=scale, record_calls=True))
        res = sim.run()
        rows.append(decompose(sim, res, pol))
    return rows


def decompose(sim: Simulator, res, pol: str) -> dict:
    ref = sim.ref_profiles
    g = next(iter(sim.graphs.values()))
    parts: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    dev_calls: dict[str, int] = defaultdict(int)
    dev_busy: dict[str, float] = defaultdict(float)
    for run_id, _wf, stage, kind, rep, t_enq, t_start, t_end, inp, out in sim.call_records:
        p = parts[run_id]
        r = sim.replicas[rep]
        if kind != "llm":
            p["executor"] += t_end - t_enq
            continue
        st = g.stages[stage]
        model = r.spec.model
        fast = llm_standalone_s(ref[model], inp, out, st.prefix_tokens)
        own = llm_standalone_s(r.p, inp, out, st.prefix_tokens)
        p["queue"] += t_start - t_enq
        p["device"] += own - fast
        p["batch"] += (t_end - t_start) - own
        dev_calls[r.spec.device] += 1
        dev_busy[rep] += t_end - t_start
    ratios = res.ratios()
    m = res.measured
    ids, sa = res.run_id[m], res.standalone[m]
    cut = np.quantile(ratios[np.isfinite(ratios)], 0.95)
    tail = [(i, s) for i, s, r in zip(ids, sa, ratios) if r >= cut]
    comp = {k: float(np.mean([parts[i][k] / s for i, s in tail])) for k in ("queue", "device", "batch", "executor")}
    allc = {k: float(np.mean([parts[i][k] / s for i, s in zip(ids, sa)])) for k in comp}
    span = max(res.sim_end_s, 1e-9)
    batch_by_dev: dict[str, list[float]] = defaultdict(list)
    for name, busy in dev_busy.items():
        batch_by_dev[sim.replicas[name].spec.device].append(busy / span)
    total = sum(dev_calls.values()) or 1
    return {"policy": pol, "scale95": res.min_scale(0.95), "scale99": res.min_scale(0.99),
            "tail_excess": comp, "mean_excess": allc,
            "call_share": {d: round(n / total, 3) for d, n in sorted(dev_calls.items())},
            "mean_batch": {d: round(float(np.mean(v)), 1) for d, v in sorted(batch_by_dev.items())},
            "preemptions": sum(e.preemptions for e in sim.engines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="nl2sql")
    ap.add_argument("--cluster", default="mixed12")
    ap.add_argument("--load", type=float, default=0.7)
    ap.add_argument("--runs", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=3.0, help="SLO scale given to deadline-aware policies")
    ap.add_argument("--policies", default=",".join([*BASELINES, "cortex"]))
    args = ap.parse_args()
    print(f"[simulated] {args.workload} on {args.cluster} at load {args.load}, {args.runs} runs, seed {args.seed}; "
          "excess latency in units of the run's standalone latency (tail = runs at or above p95 of the ratio)")
    for r in diagnose(args.workload, args.cluster, args.load, args.policies.split(","), args.runs, args.seed,
                      args.scale):
        t, a = r["tail_excess"], r["mean_excess"]
        print(f"{r['policy']:16s} s95 {r['scale95']:.2f} s99 {r['scale99']:.2f} | tail: "
              + " ".join(f"{k} {v:.2f}" for k, v in t.items()) + " | all: "
              + " ".join(f"{k} {v:.2f}" for k, v in a.items())
              + f" | calls {r['call_share']} batch {r['mean_batch']} preempt {r['preemptions']}")


if __name__ == "__main__":
    main()
