"""How bursty are the calls a busy LLM pool releases? (SIMULATED: the discrete-event simulator.)

    .venv/bin/python benchmarks/llm_departures.py [--out benchmarks/results/llm_departures.md]

The planner models every stage's arrivals as Poisson (or the workflow's declared burstiness).
The stages after a busy prefill-heavy LLM pool do not see that: the pool's decode tokens come
slowly while prompts arrive and fast when they stop, so the calls it admitted during a run of
slow iterations leave together. This measures the index of dispersion of a pool's departures,
``I(w) = Var N(w) / E N(w)`` over windows ``w`` (1 for Poisson), for one replica fed Poisson
arrivals, against its prefill share ``x``, beside the value ``1 + 2 x^2 / (1 - x)^2`` that a
two-effect argument gives (cohorts admitted together, plus the random number of iterations a window
holds; docs/planner.md, "Assumptions and limits"), with the batch cap left open (256 sequences)
and at the cap the planner would set. The second column set shows why that argument is not in
the planner: at the planner's cap, departures are regulated by the cap and the dispersion falls.
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
from planner.candidates import Device, StageLoad, _llm_config, prefill_stall, profiles_of  # noqa: E402
from planner.synthetic import LLAMA_8B, LLAMA_70B, llm  # noqa: E402

WINDOWS = (0.25, 1.0, 2.0, 5.0, 10.0)
CASES = (  # model, profile family, tp, input tokens, output tokens, calls/s
    *(("llama8b", "llama-3-8b", 1, 1025, 55, r) for r in (3.0, 5.0, 7.0, 8.0, 9.0)),
    *(("llama8b", "llama-3-8b", 1, 1025, 200, r) for r in (3.0, 4.8)),
    *(("llama70b", "llama-3-70b", 4, 1283, 74, r) for r in (2.0, 3.0, 3.5)),
)


def dispersion(times: np.ndarray, window: float) -> float:
    """Index of dispersion of the event counts of ``times`` over consecutive ``window``-second bins."""
    counts = np.histogram(times, np.arange(times[0], times[-1], window))[0]
    return float(counts.var() / counts.mean())


def measure(model: str, tp: int, inp: int, out: int, rate: float, slots: int) -> list[float]:
    """Departure dispersion per window of one A100 replica (``slots`` sequences at most)."""
    calls = one_replica_calls(model, tp, inp, out, rate, slots, int(max(6000, rate * 1500)), max_tokens=512)
    ends = np.sort(np.array([c[7] for c in calls]))
    return [dispersion(ends, w) for w in WINDOWS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "llm_departures.md")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    head = " / ".join(f"{w:g}s" for w in WINDOWS)
    lines = ["# Departures of a busy LLM pool (SIMULATED)", "",
             f"`.venv/bin/python benchmarks/llm_departures.py`: one A100 replica, one stage, Poisson arrivals, FCFS, "
             f"the shipped profiles; index of dispersion of its departures over windows of {head} "
             "(1 = Poisson); 'open': 256 sequences at most; 'planner cap': the max_num_seqs the planner "
             f"would set. 1-minute load average before: {load_before:.2f}.", "",
             f"| model | prompt / output tokens | calls/s | prefill share x | 1 + 2x²/(1-x)² | open: {head} | max (open) "
             f"| planner cap | at the cap: {head} | max (cap) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, family, tp, inp, out, rate in CASES:
        profile = next(p for p in profiles_of(family, "A100") if p.tp == tp)
        x = prefill_stall(profile, [(rate, inp)]).share
        spec = LLAMA_8B if model == "llama8b" else LLAMA_70B
        cand = _llm_config(llm("a", model, input_tokens=inp, output_tokens=out, max_tokens=512), spec, profile,
                           Device("A100", 1.0, 64), StageLoad(rate, 1.0), 512, 1, 1.0, 1)
        cap = cand.max_num_seqs if cand is not None else 0
        open_ = measure(model, tp, inp, out, rate, 256)
        capped = measure(model, tp, inp, out, rate, cap) if cap else []
        fmt = lambda xs: " / ".join(f"{v:.1f}" for v in xs) if xs else "-"  # noqa: E731
        lines.append(f"| {model} | {inp} / {out} | {rate:g} | {x:.2f} | {1 + 2 * (x / (1 - x)) ** 2:.1f} | "
                     f"{fmt(open_)} | {max(open_):.1f} | {cap or 'none (unstable)'} | {fmt(capped)} | "
                     f"{max(capped) if capped else float('nan'):.1f} |")
        print(lines[-1], flush=True)
    lines += ["", f"1-minute load average after: {os.getloadavg()[0]:.2f}."]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
