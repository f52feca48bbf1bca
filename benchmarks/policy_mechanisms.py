"""Cortex with candidate routing mechanisms, on the tuning seed, every sim_fair (workload, cluster) (SIMULATED).

Each pair runs Cortex at its sim_fair parameters (``results/sim_fair_tuned.json``) plus each variant's
extra parameters (a JSON list of dicts), at load 0.7 on seed 2, bisection to 2%:

    .venv/bin/python benchmarks/policy_mechanisms.py '[{}, {"reserve_weight": 1.0}]' [--seed 2] [--runs 500]

Prints one line per pair: the variants' scale@95% / scale@99%.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sim_common import setup, simulate  # noqa: E402
from benchmarks.sim_fair import CELLS, TUNE_LOAD, TUNING_SEED  # noqa: E402
from runtime.simulator.slo_scale import min_slo_scales  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", help="JSON list of parameter dicts added to the tuned ones")
    ap.add_argument("--seed", type=int, default=TUNING_SEED)
    ap.add_argument("--runs", type=int, default=500)
    args = ap.parse_args()
    variants = json.loads(args.variants)
    tuned = json.loads((Path(__file__).parent / "results" / "sim_fair_tuned.json").read_text())["tuned"]
    for workload, cluster in dict.fromkeys((w, c) for w, c, _ in CELLS):
        s = setup(workload, cluster)
        base = tuned[f"{workload}:{cluster}"]["cortex"]["best"]
        out = []
        for v in variants:
            p = {**base, **v}
            sc = min_slo_scales(lambda x: simulate(s, "cortex", TUNE_LOAD, x, args.runs, args.seed, params=p),
                                (0.95, 0.99), deadline_aware=True, hi0=2.0, rel_tol=0.02)
            out.append(f"{json.dumps(v)} {sc[0.95]:.3f}/{sc[0.99]:.3f}")
        print(f"[simulated] {workload}:{cluster}:{TUNE_LOAD} {base} | " + " | ".join(out), flush=True)


if __name__ == "__main__":
    main()
