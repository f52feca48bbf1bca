"""One LLM pool, the planner's latency table against the simulator, across prefill shares (SIMULATED).

    .venv/bin/python benchmarks/llm_pool_vs_sim.py [--out benchmarks/results/llm_pool_vs_sim.md]

For a single-stage workload on one A100 replica (Poisson arrivals, FCFS), the planner's candidate
(:func:`planner.candidates._llm_config`, one replica: its ``max_num_seqs``, prefill stalls, slot
wait) predicts each call's latency; the discrete-event simulator runs that replica with the same
batch cap and profile. Then pools of 2-3 replicas behind the simulator's least-backlog router, at
the same per-replica loads (how the router spreads prefill bursts). Reported: mean, p50 and p99, predicted and simulated, and their ratio
(simulated / predicted), by prefill share ``x`` (the share of the replica's time spent
prefilling); and the index of dispersion of the pool's departures over 1 s and 5 s windows, the
planner's (:mod:`planner.dispersion`: what the stages after the pool are sized for) against the
simulated one (1 = Poisson). This isolates the LLM-pool model from everything else ``plan_vs_sim`` mixes in
(arrivals shaped by upstream pools, fan-outs, shared pools).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.sim_common import one_replica_calls  # noqa: E402
from cortexlang.ir import SLO, Load, Program, Workflow  # noqa: E402
from planner.synthetic import edge, gpu_inventory  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.cluster import ReplicaSpec  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402
from planner.candidates import Device, StageLoad, _llm_config, prefill_stall, profiles_of  # noqa: E402
from planner.synthetic import LLAMA_8B, LLAMA_70B, llm  # noqa: E402
from planner.dispersion import index_at, pool_departure  # noqa: E402

WINDOWS = (1.0, 5.0)
"""Windows (s) over which the departures' index of dispersion is compared."""


def departure_dispersion(calls: list[tuple], windows: tuple[float, ...] = WINDOWS) -> list[float]:
    """Index of dispersion (variance / mean of the counts) of the calls' completions per window."""
    ends = np.sort(np.array([c[7] for c in calls]))
    out = []
    for w in windows:
        counts = np.histogram(ends, bins=np.arange(ends[0], ends[-1], w))[0]
        out.append(float(counts.var() / max(counts.mean(), 1e-12)))
    return out


def planned_departure_dispersion(stage, cand, windows: tuple[float, ...] = WINDOWS) -> list[float]:
    """The planner's index of the pool's departures (:func:`planner.dispersion.pool_departure`) per window."""
    wf = Workflow(name="w", stages=(stage,), entry="a", edges=(edge("a", "done"),))
    scales: dict[str, tuple[float, float]] = {}
    excess = pool_departure(wf, "a", {"a": cand}, {"a": {}}, scales)
    return [index_at(excess, w, scales) for w in windows]

CASES = (  # model, profile family, tp, input tokens, output tokens, calls/s
    *(("llama8b", "llama-3-8b", 1, 1025, 55, r) for r in (3.0, 5.0, 7.0, 8.0, 9.0)),
    *(("llama8b", "llama-3-8b", 1, 1400, 40, r) for r in (4.0, 6.0, 8.0)),
    *(("llama8b", "llama-3-8b", 1, 647, 64, r) for r in (6.0, 10.0, 12.0)),
    ("llama8b", "llama-3-8b", 1, 300, 150, 10.0),
    *(("llama70b", "llama-3-70b", 4, 1283, 74, r) for r in (2.0, 3.0, 4.0)),
    *(("llama70b", "llama-3-70b", 4, 718, 53, r) for r in (4.0, 6.0, 7.0)),
)
POOLS = (  # several replicas behind the simulator's least-backlog router: (replicas, case with the rate per replica)
    *((3, ("llama8b", "llama-3-8b", 1, 1025, 55, r)) for r in (7.0, 9.0)),
    *((3, ("llama8b", "llama-3-8b", 1, 1400, 40, r)) for r in (6.0, 8.0)),
    *((3, ("llama70b", "llama-3-70b", 4, 1283, 74, r)) for r in (3.0, 4.0)),
    *((3, ("llama70b", "llama-3-70b", 4, 718, 53, r)) for r in (6.0, 7.0)),
    (2, ("llama70b", "llama-3-70b", 4, 718, 53, 7.0)),
)


def pool_calls(model: str, tp: int, inp: int, out: int, rate: float, slots: int, runs: int, replicas: int,
               kv_capacity_tokens: int) -> list[tuple]:
    """Call records of ``replicas`` A100 replicas serving one stage at ``rate`` calls/s in all
    (Poisson, FCFS, least-backlog routing), warm-up (the first tenth) dropped."""
    if replicas == 1:
        return one_replica_calls(model, tp, inp, out, rate, slots, runs, kv_capacity_tokens=kv_capacity_tokens)
    spec = LLAMA_8B if model == "llama8b" else LLAMA_70B
    stage = llm("a", model, input_tokens=inp, output_tokens=out, max_tokens=256)
    wf = Workflow(name="w", stages=(stage,), entry="a", edges=(edge("a", "done"),),
                  slo=SLO(latency_s=600.0, attainment=0.9), load=Load(rate_per_s=rate))
    prog = Program(models=(spec,), workflows=(wf,), inventory=gpu_inventory(a100=64))
    layout = tuple(ReplicaSpec(name=f"a-{i}", kind="llm", device="A100", model=model, tp=tp, stages=frozenset({"a"}),
                               slots=slots, kv_capacity_tokens=kv_capacity_tokens) for i in range(replicas))
    res = Simulator(prog, layout, make_policy("fcfs"), [Stream("w", rate)],
                    SimConfig(runs=runs, seed=3, record_calls=True)).run()
    return res.calls[len(res.calls) // 10:]


def row(model: str, family: str, tp: int, inp: int, out: int, rate: float, replicas: int = 1) -> str:
    """One table row; ``rate`` is per replica."""
    spec = LLAMA_8B if model == "llama8b" else LLAMA_70B
    stage = llm("a", model, input_tokens=inp, output_tokens=out, max_tokens=256)
    profile = next(p for p in profiles_of(family, "A100") if p.tp == tp)
    x = prefill_stall(profile, [(rate, inp)]).share
    total = rate * replicas
    cand = _llm_config(stage, spec, profile, Device("A100", 1.0, 64), StageLoad(total, 1.0), 256, 1, 1.0, replicas)
    if cand is None:
        return f"| {model} | {inp} / {out} | {replicas} | {total:g} | {x:.2f} | - | no stable candidate |||||||||||"
    calls = pool_calls(model, tp, inp, out, total, cand.max_num_seqs, int(max(4000, total * 400)), replicas,
                       cand.kv_budget_tokens)
    lat = np.array([c[7] - c[5] for c in calls])
    pred = (cand.mean, cand.quantile(0.5), cand.quantile(0.99))
    sim = (float(lat.mean()), float(np.quantile(lat, 0.5)), float(np.quantile(lat, 0.99)))
    cells = " | ".join(f"{p:.2f} | {s:.2f} | {s / p:.2f}" for p, s in zip(pred, sim))
    disp = " | ".join(f"{p:.1f} | {s:.1f}" for p, s in zip(planned_departure_dispersion(stage, cand),
                                                          departure_dispersion(calls)))
    return f"| {model} | {inp} / {out} | {replicas} | {total:g} | {x:.2f} | {cand.max_num_seqs} | {cells} | {disp} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "llm_pool_vs_sim.md")
    args = ap.parse_args()
    lines = ["# One LLM pool: the planner's table vs the simulator (SIMULATED)", "",
             "`.venv/bin/python benchmarks/llm_pool_vs_sim.py`: A100 replicas at the planner's max_num_seqs "
             "(one, then pools of 2-3 behind the least-backlog router; calls/s for the whole pool), "
             f"Poisson arrivals, FCFS. 1-minute load average before: {os.getloadavg()[0]:.2f}.", "",
             "| model | prompt / output tokens | replicas | calls/s | prefill share x | max_num_seqs | mean planned | mean simulated "
             "| ratio | p50 planned | p50 simulated | ratio | p99 planned | p99 simulated | ratio "
             "| departures' dispersion 1 s planned | simulated | 5 s planned | simulated |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for replicas, case in [(1, c) for c in CASES] + list(POOLS):
        lines.append(row(*case, replicas=replicas))
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
