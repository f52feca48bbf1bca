"""Where the plan of NL2SQL as observed misses its simulation: per stage, wait against service, the pool's
batch, Poisson-fed against coupled arrivals, and the runs' correlation (SIMULATED).

    .venv/bin/python benchmarks/nl2sql_observed_miss.py [--runs 6000] [--out FILE]

The case is ``benchmarks/output_law.py``'s row ``nl2sql (observed)``: the program ``cortexc plan
--observed`` learns from ``benchmarks/results/real_vs_sim_trace.jsonl``, planned on this machine's
profiles as that benchmark plans it (the calibrated profile in use, no drift margin; the planner and the
simulator read the same :func:`planner.profiles.get_profile`). Its plan is simulated (FCFS, seed 1,
call records) three ways:

* ``coupled``: the workflow as planned, what ``output_law`` compares with;
* ``poisson``: each LLM stage its own one-stage workflow fed Poisson at its planned rate, on the same
  replicas: the pool's own model (batching, slot wait) without the loop's coupling;
* ``shuffled``: the coupled run's visits permuted across runs per stage (as
  ``benchmarks/plan_vs_sim_correlation.py``): the same per-stage marginals composed independently.
  The learnt program's alike output lengths (``output_correlation``, which the planner composes with a
  copula) are one within-run coupling; ``--alike-off`` sets them to 0 on both sides to separate them
  from the pool's.

Printed: the plan's and the simulation's end-to-end p99; per LLM stage, planned and simulated p50 / p99
per visit, the share of calls that wait for a batch slot (more than 0.3 s: a prefill alone is ~0.15 s)
and their mean wait (planned: the M/G/c wait's ``p_wait`` and mean if waiting); the pool's planned batch
``B*`` (times the replicas) against the simulated time-average of running sequences; and the sequence-seen iteration time
(decode seconds per token of the simulated calls, prefill taken out) against the planner's ``t_seq``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import planner.colocation as colocation  # noqa: E402
from benchmarks.alike_outputs import with_alike  # noqa: E402
from benchmarks.plan_vs_sim_correlation import decompose  # noqa: E402
from cortexlang.compiler import compile_file  # noqa: E402
from cortexlang.ir import Condition, Edge, Load, Workflow  # noqa: E402
from planner.api import plan_program  # noqa: E402
from planner.observed import observe, read_trace  # noqa: E402
from planner.profiles import get_profile  # noqa: E402
from runtime import profiles  # noqa: E402
from runtime.simulator.cluster import layout_from_plan  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402
from runtime.simulator.verify import WARMUP_FRACTION, make_configured_policy, simulate_runs  # noqa: E402

TRACE = REPO / "benchmarks" / "results" / "real_vs_sim_trace.jsonl"
SLOT_WAIT_S = 0.3
"""A call that waits longer than this for its first iteration waited for a batch slot (a prefill alone,
~80 uncached tokens on the CPU profile, takes ~0.15 s)."""


def _after_warmup(calls: list[tuple]) -> list[tuple]:
    start = max(c[5] for c in calls) * WARMUP_FRACTION
    return [c for c in calls if c[5] >= start]


def _running_mean(calls: list[tuple], stages: set[str]) -> float:
    """Time-average number of the ``stages``' calls in service (start to end) over the calls' span."""
    rows = np.array([(c[6], c[7]) for c in calls if c[2] in stages])
    edges = np.concatenate([np.c_[rows[:, 0], np.ones(len(rows))], np.c_[rows[:, 1], -np.ones(len(rows))]])
    edges = edges[np.argsort(edges[:, 0], kind="stable")]
    count = np.cumsum(edges[:, 1])[:-1]
    dt = np.diff(edges[:, 0])
    return float((count * dt).sum() / dt.sum())


def _poisson_fed(program, plan, wp, rates: dict[str, float], runs: int) -> list[tuple]:
    """Each of ``rates``' stages its own workflow, Poisson at its planned rate, on the plan's replicas."""
    wf = program.workflow(wp.workflow)
    flows, streams, knobs = [], [], {}
    for st in wf.stages:
        if st.name in rates:
            w = Workflow(name=f"solo_{st.name}", stages=(st,), entry=st.name, slo=wf.slo,
                         load=Load(rate_per_s=rates[st.name]),
                         edges=(Edge(source=st.name, target="done", condition=Condition(kind="always"),
                                     probability=1.0),))
            flows.append(w)
            streams.append(Stream(w.name, rates[st.name]))
            knobs[w.name] = wp.knobs
    solo = program.model_copy(update={"workflows": tuple(flows)})
    cfg = SimConfig(runs=runs * len(flows), seed=1, warmup_fraction=WARMUP_FRACTION, record_calls=True)
    return _after_warmup(Simulator(solo, layout_from_plan(plan, wp.workflow), make_configured_policy("fcfs"),
                                   streams, cfg, knobs=knobs).run().calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6000)
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--alike-off", action="store_true",
                    help="every LLM stage's output_correlation 0 (the learnt loadings couple a run's output lengths)")
    ap.add_argument("--out", type=Path, default=None, help="also write the printed lines to this file")
    args = ap.parse_args()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    profiles.activate()
    nl2sql = compile_file(REPO / "examples" / "nl2sql.cortex").program
    program = observe(nl2sql, read_trace(args.trace.read_text(encoding="utf-8").splitlines(), str(args.trace))).program
    if args.alike_off:
        program = with_alike(program, 0.0)
    waits = []  # the shared pools' M/G/c waits as the planner computes them, the chosen one's last
    real_wait = colocation.mgc_wait
    colocation.mgc_wait = lambda *a, **k: waits.append((a, real_wait(*a, **k))) or waits[-1][1]
    plan = plan_program(program, rate=None, time_limit_s=60.0)
    colocation.mgc_wait = real_wait
    wp = plan.workflows[0]
    pool = wp.llm_pools[0]
    members = {pool.stage: pool, **{m.stage: m for m in pool.colocated}}
    prof = get_profile(program.model(pool.model).profile, pool.device, pool.tp)
    chosen = next(w for a, w in reversed(waits) if a[0] == pool.replicas * pool.max_num_seqs)
    res = simulate_runs(program, plan, wp.workflow, args.runs, 1, record_calls=True)
    m = res.measured
    sim_p99 = float(np.quantile((res.end[m] - res.arrival[m]), 0.99))
    coupled = _after_warmup(res.calls)
    solo = _poisson_fed(program, plan, wp, {s: p.arrival_rate_per_s for s, p in members.items()}, args.runs)
    first_seen: dict[int, float] = {}
    for c in res.calls:
        first_seen[c[0]] = min(first_seen.get(c[0], c[5]), c[5])
    start = max(c[5] for c in res.calls) * WARMUP_FRACTION
    d = decompose([(c[0], c[2], c[5], c[7]) for c in res.calls if first_seen[c[0]] >= start], np.random.default_rng(0))
    say(f"[simulated] profile {prof.path}: d0 {prof.decode_fixed_s * 1e3:.1f} ms, d1 "
          f"{prof.decode_per_seq_s * 1e3:.1f} ms/seq; rate {wp.rate_per_s:.4f} runs/s; pool {pool.replicas} x "
          f"{pool.max_num_seqs} slots")
    say(f"end-to-end p99: planned {wp.latency.p99:.2f} s, simulated {sim_p99:.2f} s (ratio {sim_p99 / wp.latency.p99:.2f}); "
          f"runs' visits shuffled {d['shuffled']:.2f} s, coupled {d['coupled']:.2f} s (coupled / shuffled "
          f"{d['coupled'] / d['shuffled']:.2f}; consecutive visits' rank corr. {d['rho']:.2f})")
    stages = set(members)
    batch = pool.utilisation * pool.max_num_seqs
    say(f"pool's running sequences, all replicas: planned {pool.replicas} x B* = {pool.replicas * batch:.2f}, simulated "
        f"time-average {_running_mean(coupled, stages):.2f} coupled, {_running_mean(solo, stages):.2f} Poisson-fed")
    say(f"slot wait: planned P(wait) {chosen.p_wait:.3f}, mean if waiting {chosen.mean_if_waiting:.2f} s")
    say("| stage | planned p50 / p99 | coupled p50 / p99 | poisson p50 / p99 | P(wait > 0.3 s) coupled / poisson "
          "| mean wait if waiting coupled / poisson | decode s/token coupled |")
    for name, member in members.items():
        cells = []
        for calls in (coupled, solo):
            rows = np.array([(c[5], c[6], c[7], c[9]) for c in calls if c[2] == name])
            cells.append(rows)
        c, s = cells
        lat_c, lat_s = c[:, 2] - c[:, 0], s[:, 2] - s[:, 0]
        w_c, w_s = c[:, 1] - c[:, 0], s[:, 1] - s[:, 0]
        stage = program.workflow(wp.workflow).stage(name)
        prefill = prof.prefill_s(max(stage.input_tokens - stage.prefix_tokens, 1))
        per_token = float(np.mean((c[:, 2] - c[:, 1] - prefill) / np.maximum(c[:, 3], 1)))
        say(f"| {name} | {member.latency.p50:.2f} / {member.latency.p99:.2f} | {np.quantile(lat_c, .5):.2f} / "
              f"{np.quantile(lat_c, .99):.2f} | {np.quantile(lat_s, .5):.2f} / {np.quantile(lat_s, .99):.2f} | "
              f"{np.mean(w_c > SLOT_WAIT_S):.3f} / {np.mean(w_s > SLOT_WAIT_S):.3f} | "
              f"{w_c[w_c > SLOT_WAIT_S].mean():.2f} / {w_s[w_s > SLOT_WAIT_S].mean():.2f} | {per_token * 1e3:.1f} ms |")
    d1 = prof.decode_per_seq_s
    say(f"planner's step: t_iter(B*) = d0 + d1 B* = {(prof.decode_fixed_s + d1 * batch) * 1e3:.1f} ms; a sequence's "
          f"t_seq = t_iter + d1 = {(prof.decode_fixed_s + d1 * (batch + 1.0)) * 1e3:.1f} ms (prefill share x ~0 here)")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
