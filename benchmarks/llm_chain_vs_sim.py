"""Two LLM pools in a chain, ``u -> a``: how much of its arrivals' burstiness the second pool's
departures carry on, planned against the simulator (SIMULATED).

    .venv/bin/python benchmarks/llm_chain_vs_sim.py [--runs 4000]

One A100 replica per stage (Llama-3-8B), Poisson runs, FCFS. ``u``'s prefill stalls and cohorts make
its departures -- ``a``'s arrivals -- bursty (:mod:`planner.dispersion`); ``a`` is sized for that
burstiness as the planner sizes it (its candidate built with the arrivals' index read over its stay).
Reported per window (0.25 / 1 / 5 s): the index of dispersion (variance / mean of the counts) of
``a``'s arrivals and of its departures, planned (:func:`planner.dispersion.pool_departure`: ``a``'s own
stalls and cohorts, the arrivals' burstiness entering only through ``a``'s prefill variance) and
simulated; beside them a reference, the arrivals' excess added to the planned departures' unchanged
(departures are the arrivals shifted by their stays, so over windows longer than the stays' spread what
comes in bursty goes out bursty); and ``a``'s p99 latency. A link of a loop over pools (a pool whose
departures reach other pools and come back to it) is such a chain: its gain is what this measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexlang.ir import SLO, Load, Program, Workflow  # noqa: E402
from planner.candidates import Candidate, Device, StageLoad, _llm_config, profiles_of  # noqa: E402
from planner.dispersion import Excess, index_at, pool_departure  # noqa: E402
from planner.synthetic import LLAMA_8B, edge, gpu_inventory, llm  # noqa: E402
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.cluster import ReplicaSpec  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402

WINDOWS = (0.25, 1.0, 5.0)
"""Windows (s) over which the indices of dispersion are compared."""

CASES = (  # (u prompt, u output), (a prompt, a output), runs/s
    ((1025, 55), (647, 64), 7.0),
    ((1025, 55), (647, 64), 8.0),
    ((1400, 40), (300, 150), 6.0),
    ((1400, 40), (1025, 55), 5.0),
    ((647, 64), (1025, 55), 6.0),
)


def counts_index(times: np.ndarray, window_s: float) -> float:
    """Index of dispersion of the event counts in consecutive windows of ``window_s`` seconds."""
    t = np.sort(times)
    counts = np.histogram(t, bins=np.arange(t[0], t[-1], window_s))[0]
    return float(counts.var() / max(counts.mean(), 1e-12))


def chain_workflow(u_io: tuple[int, int], a_io: tuple[int, int], rate: float) -> Workflow:
    """The workflow ``u -> a -> done`` at ``rate`` runs/s."""
    u = llm("u", "llama8b", input_tokens=u_io[0], output_tokens=u_io[1], max_tokens=256)
    a = llm("a", "llama8b", input_tokens=a_io[0], output_tokens=a_io[1], max_tokens=256)
    return Workflow(name="w", stages=(u, a), entry="u", edges=(edge("u", "a"), edge("a", "done")),
                    slo=SLO(latency_s=600.0, attainment=0.9), load=Load(rate_per_s=rate))


def planned_chain(wf: Workflow, rate: float) -> tuple[dict[str, Candidate], dict[str, Excess], dict[str, tuple]]:
    """The two pools as the planner sizes them (``a`` for the arrivals' index ``u`` causes, read over
    ``a``'s stay), and the excess by origin of ``a``'s arrivals (``"a"``), of its departures as planned
    (``"own"``) and of the reference with the arrivals' excess added (``"sum"``); with the origins' scales."""
    profile = next(p for p in profiles_of("llama-3-8b", "A100") if p.tp == 1)
    device = Device("A100", 1.0, 64)
    u, a = wf.stage("u"), wf.stage("a")
    cu = _llm_config(u, LLAMA_8B, profile, device, StageLoad(rate, 1.0), 256, 1, 1.0, 1)
    scales: dict[str, tuple] = {}
    arrivals = pool_departure(wf, "u", {"u": cu}, {"u": {}}, scales)
    first = _llm_config(a, LLAMA_8B, profile, device, StageLoad(rate, 1.0), 256, 1, 1.0, 1)
    burst = index_at(arrivals, first.mean, scales)
    ca = _llm_config(a, LLAMA_8B, profile, device, StageLoad(rate, 1.0, burst=burst), 256, 1, 1.0, 1)
    chosen = {"u": cu, "a": ca}
    own = pool_departure(wf, "a", chosen, {"u": {}, "a": arrivals}, scales)
    return chosen, {"a": arrivals, "own": own, "sum": arrivals | own}, scales


def simulated_chain(wf: Workflow, chosen: dict[str, Candidate], rate: float, runs: int) -> np.ndarray:
    """Rows (arrival, end) of stage ``a``'s calls simulated on the planned pools (warm-up dropped)."""
    prog = Program(models=(LLAMA_8B,), workflows=(wf,), inventory=gpu_inventory(a100=64))
    layout = tuple(ReplicaSpec(name=f"{s}-0", kind="llm", device="A100", model="llama8b", tp=1,
                               stages=frozenset({s}), slots=c.max_num_seqs, kv_capacity_tokens=c.kv_budget_tokens)
                   for s, c in chosen.items())
    res = Simulator(prog, layout, make_policy("fcfs"), [Stream("w", rate)],
                    SimConfig(runs=runs, seed=3, record_calls=True)).run()
    calls = res.calls[len(res.calls) // 10:]
    return np.array([(c[5], c[7]) for c in calls if c[2] == "a"])


def row(u_io: tuple[int, int], a_io: tuple[int, int], rate: float, runs: int) -> str:
    """One table row."""
    wf = chain_workflow(u_io, a_io, rate)
    chosen, excess, scales = planned_chain(wf, rate)
    calls = simulated_chain(wf, chosen, rate, runs)

    def planned(e: Excess) -> str:
        return " / ".join(f"{index_at(e, w, scales):.1f}" for w in WINDOWS)

    def simulated(times: np.ndarray) -> str:
        return " / ".join(f"{counts_index(times, w):.1f}" for w in WINDOWS)

    p99 = float(np.quantile(calls[:, 1] - calls[:, 0], 0.99))
    return (f"| {u_io[0]} / {u_io[1]} | {a_io[0]} / {a_io[1]} | {rate:g} | {planned(excess['a'])} | "
            f"{simulated(calls[:, 0])} | {planned(excess['own'])} | {planned(excess['sum'])} | "
            f"{simulated(calls[:, 1])} | {chosen['a'].quantile(0.99):.2f} | {p99:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4000)
    args = ap.parse_args()
    print("| u prompt / output | a prompt / output | runs/s | a arrivals' index .25/1/5 s planned | simulated "
          "| a departures' index planned | arrivals' excess added | simulated | a p99 planned | simulated |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in CASES:
        print(row(*case, runs=args.runs), flush=True)


if __name__ == "__main__":
    main()
