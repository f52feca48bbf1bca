"""One LLM replica: where the planner's mean latency goes, against the simulator (SIMULATED).

    .venv/bin/python benchmarks/llm_pool_split.py [--out benchmarks/results/llm_pool_split.md]

``benchmarks/llm_pool_vs_sim.py`` compares whole latencies; this splits the mean at admission. Per
single-replica case of that benchmark (one A100, Poisson arrivals, FCFS, the planner's
``max_num_seqs``): the simulated mean *wait* (enqueue -> admission) and *in-engine* time (admission ->
end) against the planner's: its wait is the batch-slot wait (the candidate's M/G/c, recomputed here
as :func:`planner.candidates._llm_config` does) plus the prompt's Pollaczek-Khinchine wait behind the
prefills ``m2 / (2 (1 - x))``, its in-engine time the candidate's mean less that wait (own prefill, the
co-admitted prompts, the decode with its stall and batch terms). The last column is the hypothesis of a
*gated* first iteration (branch ``loops-gated-rejected``): a call's decode starts right behind its own
long first iteration, and the iterations after a long one are long (each prefills what arrived during
the last), which adds ``e x (1 - x^o) / (1 - x)``, ``e = prefill_s + x m2 / (1 - x^2)``, to the
in-engine time. Results and reading: ``benchmarks/results/gated_iterations.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.llm_pool_vs_sim import CASES  # noqa: E402
from benchmarks.sim_common import one_replica_calls  # noqa: E402
from planner.candidates import (Device, StageLoad, _llm_config, output_tokens_moments, prefill_stall,  # noqa: E402
                                profiles_of)
from planner.queueing import llm_batch_point, mgc_wait  # noqa: E402
from planner.synthetic import LLAMA_8B, LLAMA_70B, llm  # noqa: E402


def row(model: str, family: str, tp: int, inp: int, out: int, rate: float) -> str:
    """One table row: simulated and planned mean wait and in-engine time, and the gated excess."""
    spec = LLAMA_8B if model == "llama8b" else LLAMA_70B
    stage = llm("a", model, input_tokens=inp, output_tokens=out, max_tokens=256)
    prof = next(p for p in profiles_of(family, "A100") if p.tp == tp)
    cand = _llm_config(stage, spec, prof, Device("A100", 1.0, 64), StageLoad(rate, 1.0), 256, 1, 1.0, 1)
    if cand is None:
        return f"| {model} | {inp} / {out} | {rate:g} | - | no stable candidate ||||||"
    calls = one_replica_calls(model, tp, inp, out, rate, cand.max_num_seqs, int(max(4000, rate * 400)),
                              kv_capacity_tokens=cand.kv_budget_tokens)
    wait = float(np.mean([c[6] - c[5] for c in calls]))
    engine = float(np.mean([c[7] - c[6] for c in calls]))
    mean_out, var_out, _ = output_tokens_moments(out, 256)
    point = llm_batch_point(prof, rate, inp, inp, mean_out, cand.max_num_seqs)
    stall = prefill_stall(prof, [(rate, inp)])
    x = stall.share
    slot_mean = point.prefill_s + mean_out * point.t_iter
    slot = mgc_wait(cand.max_num_seqs, rate, slot_mean, point.t_iter ** 2 * var_out / slot_mean ** 2)
    planned_wait = slot.p_wait * slot.mean_if_waiting + stall.m2 / (2 * (1 - x))
    service = cand.mean - planned_wait
    e = point.prefill_s + x * stall.m2 / (1 - x * x)
    gated = e * x * (1 - x ** mean_out) / (1 - x)
    return (f"| {model} | {inp} / {out} | {rate:g} | {x:.2f} | {wait:.3f} | {planned_wait:.3f} | "
            f"{engine:.3f} | {service:.3f} | {engine - service:+.3f} | {gated:+.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "llm_pool_split.md")
    args = ap.parse_args()
    lines = ["# One LLM replica: the mean split at admission, planner vs simulator (SIMULATED)", "",
             f"`.venv/bin/python benchmarks/llm_pool_split.py` (one A100, Poisson, FCFS); 1-minute load average "
             f"before: {os.getloadavg()[0]:.2f}.", "",
             "| model | prompt / output | calls/s | x | wait sim | wait planned | in-engine sim | in-engine planned "
             "| in-engine sim - planned | gated excess (hypothesis) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        lines.append(row(*case))
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
