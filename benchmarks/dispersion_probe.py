"""The planner's arrival dispersion for one case of ``benchmarks/plan_vs_sim.py``, by origin (PLANNER
figures only; set them against ``benchmarks/pool_loop_diagnose.py``'s simulated ones).

    .venv/bin/python benchmarks/dispersion_probe.py random44 [--runs 2000]

The plan is made as ``cortexc plan`` does; the last :func:`planner.dispersion.plan_dispersion` call's
arguments (the chosen pools) are captured and the propagation re-run on them. Per stage: its arrivals'
excess ``I - 1`` by origin (the LLM stage whose departures made it), the window its queue reads it over
(:func:`planner.dispersion.read_window`), the index over that window with and without the pool's own
origins (:func:`planner.dispersion._foreign`: what the planner uses for an LLM stage), and over 1 s;
per origin its :class:`planner.dispersion.OriginScale` (decode stay, prefill relaxation time, cohort part).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import planner.api as api  # noqa: E402
import planner.dispersion as disp  # noqa: E402
from benchmarks.plan_vs_sim import cases  # noqa: E402
from cortexlang.cli.plan_verify import plan_and_verify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case")
    ap.add_argument("--runs", type=int, default=2000, help="the verification's runs")
    args = ap.parse_args()
    seed = int(args.case.removeprefix("random").split("+")[0])
    program = dict(cases(30, 30 if seed >= 30 else 0))[args.case]
    seen: list[tuple] = []
    real = api.plan_dispersion
    api.plan_dispersion = lambda chain, chosen, fw=None: seen.append((chain, dict(chosen), fw)) or real(chain, chosen, fw)
    try:
        plan_and_verify(program, runs=args.runs)
    finally:
        api.plan_dispersion = real
    chain, chosen, fw = seen[-1]
    wf = chain.workflow
    print(f"[planner] {args.case}: edges {[(e.source, e.target, e.probability) for e in wf.edges]}")
    for s, c in chosen.items():
        print(f"  {s}: {c.kind}, {c.units} units at {c.utilisation:.3f}, cap {getattr(c, 'max_num_seqs', '-')}, "
              f"group {c.group_stages or '-'}, {c.arrival_rate_per_s:.2f}/s, mean stay {c.mean:.3f} s")
    scales: dict[str, tuple[float, ...]] = {}
    copies = {s: k for s, (_, k) in disp.branch_multiplicity(wf, fw).items()}

    def departure(stage: str, arrivals):
        c = chosen.get(stage)
        if c is None or c.kind != "llm":
            return arrivals[stage]
        return disp.pool_departure(wf, stage, chosen, arrivals, scales, copies)

    print("| stage | arrivals' excess by origin | read window s | index (all origins) | index (foreign only) | index 1 s |")
    print("|---|---|---|---|---|---|")
    for s, e in disp.stage_dispersion(chain, departure, fw).items():
        c = chosen[s]
        w = disp.read_window(c, wf.stage(s))
        foreign = disp._foreign(e, c.group_stages or (s,)) if c.kind == "llm" else e
        print(f"| {s} | {', '.join(f'{k} {v:.2f}' for k, v in e.items()) or '-'} | "
              f"{'-' if w is None else f'{w:.3f}'} | {disp.index_at(e, w, scales):.2f} | "
              f"{disp.index_at(foreign, w, scales):.2f} | {disp.index_at(e, 1.0, scales):.2f} |")
    for k, sc in scales.items():
        print(f"  origin {k}: decode stay {sc[0]:.3f} s, relaxation {sc[1]:.3f} s, cohort part {sc[2]:.2f}, "
              f"jitter {sc[3]:.3f} s, share over 1 s {disp.OriginScale(*sc).share(1.0):.2f}")


if __name__ == "__main__":
    main()
