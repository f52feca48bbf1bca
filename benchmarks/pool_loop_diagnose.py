"""Where a plan-vs-simulation miss comes from: the plan's pools coupled (as planned) against the same
pools fed independent Poisson streams (SIMULATED).

    .venv/bin/python benchmarks/pool_loop_diagnose.py random44 [--runs 5000] [--split l2]

For one case of ``benchmarks/plan_vs_sim.py`` (seeds from 30 are its out-of-set cases) the plan is
made as ``cortexc plan`` does, then simulated on its own layout (FCFS, call records, the
verification's seed):

* ``coupled``: the workflow as planned -- each stage's arrivals are the departures of the stages
  before it, so a pool's bursts reach the pools after it (and itself again, through other pools);
* ``poisson``: every stage its own single-stage workflow at its planned rate (Poisson), on the same
  replicas: the pools' per-stage model without any coupling;
* ``--split STAGE`` (a linear chain): the chain cut after ``STAGE``, the stages after it their own
  workflow fed Poisson at the same rate -- a loop over the pools (a pool whose departures reach
  another pool and come back to it as a later stage) opened there, every other coupling kept.

Per stage: planned and simulated per-visit p50/p99 in both runs, the mean wait for a slot (start -
enqueue) in both, the index of dispersion of the stage's arrivals (variance / mean of the counts)
over 1 and 5 s windows -- planned (:func:`planner.dispersion.plan_dispersion`, as the planner's last
second-pass round saw it) and simulated -- and, in the ``poisson`` run, the index of each LLM stage's
departures and the share of them that leave in the same iteration as another (a cohort). If a stage
matches its plan fed Poisson but not coupled, the miss is the arrivals' shape; if its departures are
already bursty fed Poisson, the pool itself makes the bursts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import planner.api as api  # noqa: E402
from benchmarks.plan_vs_sim import cases  # noqa: E402
from cortexlang.cli.plan_verify import plan_and_verify  # noqa: E402
from cortexlang.ir import Condition, Edge, Load, Workflow  # noqa: E402
from runtime.simulator.cluster import layout_from_plan  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402
from runtime.simulator.verify import WARMUP_FRACTION, make_configured_policy  # noqa: E402

WINDOWS = (1.0, 5.0)


def index(times: np.ndarray, w: float) -> float:
    """Index of dispersion of the event counts in windows of ``w`` seconds."""
    t = np.sort(times)
    counts = np.histogram(t, bins=np.arange(t[0], t[-1], w))[0]
    return float(counts.var() / max(counts.mean(), 1e-12))


def together(times: np.ndarray) -> float:
    """Share of the events at the same instant as another."""
    t = np.sort(times)
    gaps = np.diff(t) <= 1e-9
    same = np.zeros(len(t), dtype=bool)
    same[1:] |= gaps
    same[:-1] |= gaps
    return float(same.mean())


def by_stage(calls: list[tuple]) -> dict[str, np.ndarray]:
    """Per stage: rows (enqueue, start, end) after the warm-up (the first tenth of the time)."""
    start = max(c[5] for c in calls) * 0.1
    out: dict[str, list] = {}
    for c in calls:
        if c[5] >= start:
            out.setdefault(c[2], []).append((c[5], c[6], c[7]))
    return {s: np.array(v) for s, v in out.items()}


def cut(program, wf, after: str, wp, layout, seed: int, runs: int) -> dict[str, np.ndarray]:
    """Call rows per stage of the linear chain ``wf`` cut after stage ``after``: the stages up to it one
    workflow (its edge out of ``after`` to done), the rest another, Poisson at the same rate, on ``layout``."""
    order = [wf.entry]
    while True:
        nxt = [e.target for e in wf.edges if e.source == order[-1]]
        if len(nxt) != 1 or nxt[0] in ("done", "fail"):
            break
        order.append(nxt[0])
    i = order.index(after) + 1
    head, tail = set(order[:i]), set(order[i:])
    done = Condition(kind="always")
    a = Workflow(name="head", stages=tuple(st for st in wf.stages if st.name in head), entry=order[0], slo=wf.slo,
                 load=Load(rate_per_s=wp.rate_per_s),
                 edges=tuple(e for e in wf.edges if e.source in head and e.target in head)
                 + (Edge(source=after, target="done", condition=done, probability=1.0),))
    b = Workflow(name="tail", stages=tuple(st for st in wf.stages if st.name in tail), entry=order[i], slo=wf.slo,
                 load=Load(rate_per_s=wp.rate_per_s), edges=tuple(e for e in wf.edges if e.source in tail))
    prog = program.model_copy(update={"workflows": (a, b)})
    res = Simulator(prog, layout, make_configured_policy("fcfs"), [Stream("head", wp.rate_per_s),
                                                                  Stream("tail", wp.rate_per_s)],
                    SimConfig(runs=2 * runs, seed=seed, warmup_fraction=WARMUP_FRACTION, record_calls=True),
                    knobs={"head": wp.knobs, "tail": wp.knobs}).run()
    return by_stage(res.calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case")
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--split", default="", help="a stage of a linear chain: also simulate the chain cut after it, "
                    "the rest its own Poisson workflow at the same rate (the loop over the pools opened there)")
    args = ap.parse_args()
    seed = int(args.case.removeprefix("random").split("+")[0])
    first = 30 if seed >= 30 else 0
    program = dict(cases(30, first))[args.case]
    seen: list[dict[str, float]] = []
    real = api.plan_dispersion
    api.plan_dispersion = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    plan = plan_and_verify(program, runs=args.runs)
    api.plan_dispersion = real
    planned_index = seen[-1] if seen else {}
    wp = plan.workflows[0]
    wf = program.workflow(wp.workflow)
    layout = layout_from_plan(plan, wp.workflow)
    vseed = wp.verification.seed if wp.verification else 0
    cfg = SimConfig(runs=args.runs, seed=vseed, warmup_fraction=WARMUP_FRACTION, record_calls=True)
    coupled = by_stage(Simulator(program, layout, make_configured_policy("fcfs"), [Stream(wp.workflow, wp.rate_per_s)],
                                 cfg, knobs={wp.workflow: wp.knobs}).run().calls)
    # Every stage alone, Poisson at its planned rate, on the same replicas.
    flows, streams, knobs = [], [], {}
    for st in wf.stages:
        pool = wp.pool(st.name)
        rate = next((m.arrival_rate_per_s for m in getattr(pool, "colocated", ()) if m.stage == st.name),
                    pool.arrival_rate_per_s)
        w = Workflow(name=f"solo_{st.name}", stages=(st,), entry=st.name, slo=wf.slo, load=Load(rate_per_s=rate),
                     edges=(Edge(source=st.name, target="done", condition=Condition(kind="always"), probability=1.0),))
        flows.append(w)
        streams.append(Stream(w.name, rate))
        knobs[w.name] = wp.knobs
    solo_prog = program.model_copy(update={"workflows": tuple(flows)})
    solo = by_stage(Simulator(solo_prog, layout, make_configured_policy("fcfs"), streams,
                              SimConfig(runs=args.runs * len(flows), seed=vseed, warmup_fraction=WARMUP_FRACTION,
                                        record_calls=True), knobs=knobs).run().calls)
    split = cut(program, wf, args.split, wp, layout, vseed, args.runs) if args.split else {}
    print(f"[simulated] {args.case}: plan p99 {wp.latency.p99:.2f}s, simulated {wp.verification.latency.p99:.2f}s")
    print("| stage | pool | planned p50 / p99 | coupled p50 / p99 | poisson p50 / p99 | slot wait coupled / poisson "
          "| arrivals' index 1 s / 5 s planned | coupled | departures' index 1 s / 5 s poisson | cohorts poisson "
          "| coupled | departures' index 1 s / 5 s coupled |" + (f" split after {args.split} p50 / p99 | arrivals' index 1 s |"
                                                         if split else ""))
    for st in wf.stages:
        pool = wp.pool(st.name)
        planned = next((m.latency for m in getattr(pool, "colocated", ()) if m.stage == st.name), pool.latency)
        c, s = coupled.get(st.name), solo.get(st.name)
        if c is None or s is None:
            continue
        lc, ls = c[:, 2] - c[:, 0], s[:, 2] - s[:, 0]
        name = getattr(pool, "stage", "?") + ("*" if getattr(pool, "colocated", ()) else "")
        print(f"| {st.name} | {name} | {planned.p50:.2f} / {planned.p99:.2f} | "
              f"{np.quantile(lc, .5):.2f} / {np.quantile(lc, .99):.2f} | {np.quantile(ls, .5):.2f} / "
              f"{np.quantile(ls, .99):.2f} | {np.mean(c[:, 1] - c[:, 0]):.3f} / {np.mean(s[:, 1] - s[:, 0]):.3f} | "
              f"{planned_index.get(st.name, 1.0):.2f} | "
              + " / ".join(f"{index(c[:, 0], w):.1f}" for w in WINDOWS) + " | "
              + " / ".join(f"{index(s[:, 2], w):.1f}" for w in WINDOWS)
              + f" | {together(s[:, 2]):.0%} | {together(c[:, 2]):.0%} | "
              + " / ".join(f"{index(c[:, 2], w):.1f}" for w in WINDOWS) + " |"
              + (f" {np.quantile(split[st.name][:, 2] - split[st.name][:, 0], .5):.2f} / "
                 f"{np.quantile(split[st.name][:, 2] - split[st.name][:, 0], .99):.2f} | "
                 f"{index(split[st.name][:, 0], 1.0):.1f} |" if st.name in split else ""))


if __name__ == "__main__":
    main()
