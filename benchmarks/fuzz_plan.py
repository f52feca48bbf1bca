"""Long fuzz run of `cortexc plan` and `cortex simulate` over value-mutated examples.

Target (issue 10): no traceback from `cortexc plan` or `cortex simulate` on any input, and no
input over the harness's wall-time bound (tests/planner/plan_fuzzing.py: HANG_S). Inputs are
the examples with one to three numbers set to zero/one/tiny/huge values, or a line deleted or
duplicated; those that compile are planned (a quarter with verification) and simulated under a
random policy. Input ``i`` of seed ``s`` is reproduced with ``make_input(s, i)``
(``--family edges``: ``make_edge_input(s, i)``, tests/planner/edge_fuzzing.py).
Writes benchmarks/results/fuzz_plan.md.

    .venv/bin/python benchmarks/fuzz_plan.py [--inputs 2000] [--seed 1] [--family values|edges] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.planner.edge_fuzzing import make_edge_input  # noqa: E402
from tests.planner.plan_fuzzing import HANG_S, Harness, make_input  # noqa: E402

FAMILIES = {"values": make_input, "edges": make_edge_input}

OUT = Path(__file__).parent / "results" / "fuzz_plan.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--family", choices=sorted(FAMILIES), default="values",
                    help="values: numbers set to zero/one/tiny/huge, lines deleted or duplicated; edges: knobs, "
                         "loop bounds, SLOs and loads at their limits (tests/planner/edge_fuzzing.py)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    load_start, started = os.getloadavg(), datetime.datetime.now(datetime.timezone.utc)
    harness = Harness(Path(tempfile.mkdtemp(prefix="fuzz-plan-")))
    reached, failures, seconds = Counter(), [], []
    start = time.perf_counter()
    for i in range(args.inputs):
        data, policy, verify = FAMILIES[args.family](args.seed, i)
        outcome = harness.run(data, policy, verify)
        reached.update(outcome.stages)
        seconds.append(outcome.seconds)
        if outcome.failure:
            failures.append(f"- input {i} ({policy}, verify={verify}): {outcome.failure}")
            print(failures[-1], flush=True)
    total = time.perf_counter() - start
    lines = [
        "# Fuzzing `cortexc plan` and `cortex simulate`", "",
        f"`python benchmarks/fuzz_plan.py --inputs {args.inputs} --seed {args.seed}"
        + (f" --family {args.family}" if args.family != "values" else "") + "` on this machine "
        f"({os.cpu_count()} cores, load average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; other work "
        f"shared the cores), {started:%Y-%m-%d %H:%M} UTC.", "",
        f"- inputs: {args.inputs}; reached check {reached['check']}, plan {reached['plan']}, "
        f"simulate {reached['simulate']} (the rest stop at a compile diagnostic, as they should)",
        f"- failures (traceback, exit code other than 0/1/2, or over {HANG_S:.0f} s): **{len(failures)}**",
        f"- wall time per input: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s "
        f"(input {seconds.index(max(seconds))}); "
        f"total {total / 60:.1f} min",
    ] + (["", "Failures:"] + failures if failures else [])
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
