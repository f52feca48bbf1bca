"""Cortex ablations: each mechanism of the Cortex policy switched off in turn (simulated engines).

Every variant runs on the planner's stage-isolated pools at the same rate and
seed as full Cortex (except ``shared pool``: the full policy on the same replicas
pooled); the SLO scale for 95% / 99% attainment says what each mechanism earns
(a variant needing a *larger* scale than full Cortex means the mechanism helps).

Mechanisms (what only Cortex knows or does):

* ``remaining path`` -- priority and slack use the run's expected remaining
  critical path (branch and loop probabilities, retry budgets, from the
  workflow graph). Ablated: the policy sees only the call's own expected time
  (a structure-blind per-call slack, i.e. earliest deadline first less the call);
* ``path probabilities`` -- what the probabilities and loop budgets in that
  path add over knowing only which stages can still run. Ablated: the remaining
  path is a plain sum of stage times (the call's own expected time plus every
  stage reachable after it, each counted once: no branch probabilities, no loop
  or ``repeat`` counts, fan-out branches added rather than joined;
  :func:`plain_rest`);
* ``SLO slack priority`` -- least-slack-first queues. Ablated: FCFS order
  (routing, admission and the rest still see the deadline);
* ``malleability`` (``malleable``), ``marginal-slowdown routing``
  (``marginal_weight`` 0), ``admission``, ``preemption`` (``preemptive``),
  ``borrowing`` (``borrow_idle``/``borrow_spare``), ``pruning`` (``prune_hopeless``);
* ``all off`` -- every one of the above off at once;
* ``shared pool`` -- the full policy on one shared pool (stage isolation off).

    .venv/bin/python benchmarks/sim_ablation.py [--runs 1000] [--seed 1]

Writes benchmarks/results/sim_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sim_common import Setup, plan_layouts, setup, simulate, workflow_graph  # noqa: E402
from benchmarks.sim_fair import load_text  # noqa: E402
from cortexlang.ir import TERMINALS, Graph, Workflow  # noqa: E402
from runtime.policies.base import (  # noqa: E402
    Adaptation, Admission, CallView, PriorityKey, ReplicaView, Route, StageLoad,
)
from runtime.policies.cortex import Cortex  # noqa: E402
from runtime.simulator.slo_scale import min_slo_scales  # noqa: E402

OUT = Path(__file__).parent / "results"
CELLS = (("chess_sql", "inventory", 0.7), ("chess_sql", "inventory", 0.9), ("nl2sql", "mixed12", 0.7),
         ("rag", "inventory", 0.7), ("deep_research", "inventory", 0.7))
"""The CHESS-style workflow (examples/chess_sql.cortex) at two loads, the synthetic NL2SQL goal cell and
the two other examples."""


@dataclass
class StructureBlind(Cortex):
    """Cortex that does not know the workflow's structure: every call's remaining critical path is its
    own expected time (no branch/loop/retry look-ahead); everything else unchanged."""

    name: str = "cortex-no-path"

    @staticmethod
    def _blind(call: CallView) -> CallView:
        return replace(call, remaining_critical_path_s=call.stage_expected_s,
                       remaining_std_s=0.0)

    def priority(self, call: CallView) -> PriorityKey:
        return super().priority(self._blind(call))

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        return super().route(self._blind(call), candidates)

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        return super().admit(self._blind(call), load)

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        return super().adapt(self._blind(call), load)


def plain_rest(wf: Workflow, stage_time: Mapping[str, float]) -> dict[str, float]:
    """Stage -> a structure-blind estimate of the time left *after* it: the plain sum of the standalone
    times of every stage that can still run (reachable along any edge, a loop's exhaustion edge
    included), each counted once.

    Contract, for a node ``n`` of a graph ``g`` (the workflow, or one fan-out branch's sub-flow) with
    ``after`` the rest outside ``g`` (0 for the workflow)::

        rest(n) = sum_{m in reach_g(n)} T(m) - T(n) + after

    where ``reach_g(n)`` holds ``n`` and every non-terminal node reachable from it, ``T(stage)`` is
    ``stage_time`` and ``T(fan-out)`` the sum of ``T`` over every stage inside it (branches added, not
    joined). A node inside a fan-out's branch gets ``after = rest(fan-out)``; a node in several
    branches keeps the largest value. Compared with :class:`runtime.simulator.graph.WorkflowGraph`'s
    ``R(n) - t(n)``,
    this drops edge probabilities, loop and ``repeat`` counts and the parallelism of fan-outs.
    """
    fanouts = {f.name: f for f in wf.fanouts}

    def node_time(n: str) -> float:
        if n in fanouts:
            return sum(stage_time.get(m, 0.0) for m in fanouts[n].stages)
        return stage_time[n]

    out: dict[str, float] = {}

    def walk(g: Graph, nodes: Sequence[str], after: float) -> None:
        adj: dict[str, set[str]] = {n: {e.target for e in g.out_edges(n)} for n in nodes}
        for e in g.edges:  # a loop edge can also lead, once its budget is spent, to on_exhausted
            if e.loop is not None:
                adj[e.source].add(g.loop(e.loop).on_exhausted)
        for n in nodes:
            seen, stack = {n}, [n]
            while stack:
                for nxt in adj.get(stack.pop(), ()):
                    if nxt not in seen and nxt not in TERMINALS:
                        seen.add(nxt)
                        stack.append(nxt)
            rest = sum(node_time(m) for m in seen) - node_time(n) + after
            out[n] = max(out.get(n, 0.0), rest)
            if n in fanouts:
                for b in fanouts[n].branches:
                    walk(b, b.nodes, rest)

    walk(wf, wf.nodes, 0.0)
    return out


@dataclass
class PlainPathCortex(Cortex):
    """Cortex whose remaining critical path is the call's own expected time plus :func:`plain_rest`
    (which stages can still run, without the probabilities, loop budgets and joins the workflow graph
    weights them by); everything else unchanged. Stages missing from ``rest`` count only themselves."""

    name: str = "cortex-plain-path"
    rest: Mapping[str, float] = field(default_factory=dict)

    def _plain(self, call: CallView) -> CallView:
        return replace(call, remaining_critical_path_s=call.stage_expected_s + self.rest.get(call.stage, 0.0))

    def priority(self, call: CallView) -> PriorityKey:
        return super().priority(self._plain(call))

    def route(self, call: CallView, candidates: Sequence[ReplicaView]) -> Route | None:
        return super().route(self._plain(call), candidates)

    def admit(self, call: CallView, load: Mapping[str, StageLoad]) -> Admission:
        return super().admit(self._plain(call), load)

    def adapt(self, call: CallView, load: StageLoad) -> Adaptation:
        return super().adapt(self._plain(call), load)


@dataclass
class FifoCortex(Cortex):
    """Cortex with FCFS queues (no SLO-slack priority); routing, admission, malleability unchanged.
    Preemption needs a slack key, so it never fires (``preempts`` sees a 2-tuple)."""

    name: str = "cortex-fifo"

    def priority(self, call: CallView) -> PriorityKey:
        return (0.0, call.enqueued_s)


@dataclass
class Bare(StructureBlind):
    """Every mechanism off at once: structure-blind, FCFS queues (and the ``OFF`` switches, set by the caller)."""

    name: str = "cortex-bare"

    def priority(self, call: CallView) -> PriorityKey:
        return (0.0, call.enqueued_s)


OFF: dict[str, dict] = {
    "malleability": {"malleable": False},
    "marginal-slowdown routing": {"marginal_weight": 0.0},
    "admission": {"admission": False},
    "preemption": {"preemptive": False},
    "borrowing": {"borrow_idle": False, "borrow_spare": False},
    "pruning": {"prune_hopeless": False},
}


def variants(rest: Mapping[str, float] | None = None) -> dict[str, Callable[[], Cortex]]:
    """Variant name -> a fresh policy object (policies are not shared between simulations);
    ``rest`` (:func:`plain_rest` of the cell's workflow) adds the ``path probabilities`` variant."""
    out: dict[str, Callable[[], Cortex]] = {"full": Cortex, "remaining path": StructureBlind}
    if rest is not None:
        out["path probabilities"] = lambda: PlainPathCortex(rest=dict(rest))
    out["SLO slack priority"] = FifoCortex
    for name, params in OFF.items():
        out[name] = lambda p=params: Cortex(**p)
    every = {k: v for p in OFF.values() for k, v in p.items()}
    out["all off"] = lambda: Bare(**every)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-num-seqs", type=int, default=None,
                    help="cap every LLM replica's batch (both layouts), so that queues form")
    ap.add_argument("--cells", default=None, help="comma-separated workload:cluster:load subset of CELLS")
    ap.add_argument("--load", type=float, default=None, help="run the selected cells at this load instead")
    ap.add_argument("--out", default="sim_ablation", help="result file stem in benchmarks/results/")
    ap.add_argument("--waits", action="store_true",
                    help="only measure how long full Cortex's LLM calls wait in queue per cell (at the scale "
                         "sim_ablation.json found) and append it to sim_ablation.md")
    args = ap.parse_args()
    if args.waits:
        queue_waits(args)
        return
    t0 = time.perf_counter()
    load0 = os.getloadavg()  # the machine is shared: wall times mean little without it
    rows = []
    setups = {}
    cells = [c for c in CELLS if args.cells is None or f"{c[0]}:{c[1]}:{c[2]}" in args.cells.split(",")]
    if args.load is not None:
        cells = list(dict.fromkeys((w, c, args.load) for w, c, _ in cells))
    for workload, cluster, load in cells:
        s = setups.get((workload, cluster)) or setups.setdefault(
            (workload, cluster), setup(workload, cluster, args.max_num_seqs))
        iso, shared, planned = plan_layouts(s, load * s.capacity)
        todo = [(name, make, iso) for name, make in variants(cell_plain_rest(s, iso)).items()]
        todo.append(("shared pool", Cortex, shared))
        for name, make, layout in todo:
            sc = min_slo_scales(lambda scale, make=make, layout=layout: simulate(
                s, make(), load, scale, args.runs, args.seed, layout=layout), (0.95, 0.99), deadline_aware=True,
                hi0=2.0)
            ref = simulate(s, make(), load, sc[0.99] if math.isfinite(sc[0.99]) else None, args.runs, args.seed,
                           layout=layout).summary()
            rows.append({"workload": workload, "cluster": cluster, "load": load, "variant": name,
                         "planner_pools": planned, "scale95": round(sc[0.95], 3), "scale99": round(sc[0.99], 3),
                         "rejected": round(ref["rejected"], 4), "pruned_runs": ref["pruned_runs"],
                         "degraded_runs": round(ref["degraded_runs"], 4), "quality": round(ref["mean_quality"], 4)})
            print(f"[simulated] {workload}:{cluster}:{load} {name}: {sc}", flush=True)
    elapsed = time.perf_counter() - t0
    loads = (load0, os.getloadavg())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.out}.json").write_text(json.dumps({"label": "simulated", "runs": args.runs, "seed": args.seed,
                                                      "max_num_seqs": args.max_num_seqs, "wall_s": round(elapsed, 1),
                                                      "load_average_start_end": [list(x) for x in loads],
                                                      "rows": rows}, indent=2) + "\n")
    (OUT / f"{args.out}.md").write_text(markdown(rows, args, elapsed, loads))
    print((OUT / f"{args.out}.md").read_text())


def cell_plain_rest(s: Setup, layout) -> dict[str, float]:
    """:func:`plain_rest` of the cell's workflow with the stage times the simulator uses on ``layout``."""
    return plain_rest(s.workflow, workflow_graph(s.program, s.workflow, layout).stage_time)


def queue_waits(args) -> None:
    """Queue wait (enqueue -> admitted to a batch) of full Cortex's LLM calls, per cell: what a priority
    key can reorder at all."""
    rows = json.loads((OUT / f"{args.out}.json").read_text())["rows"]
    lines = ["", "## How long LLM calls wait in queue (full Cortex)", "",
             f"Command: `.venv/bin/python benchmarks/sim_ablation.py --waits --runs {args.runs} --seed {args.seed}"
             + (f" --max-num-seqs {args.max_num_seqs}" if args.max_num_seqs else "")
             + (f" --out {args.out}" if args.out != "sim_ablation" else "") + "`. "
             "One simulation per cell at full Cortex's scale@99%; wait = enqueue to admission into a batch.", "",
             "| workload | cluster | load | LLM calls | waited > 1 ms | mean wait s | p99 wait s | mean service s |",
             "|---|---|---|---|---|---|---|---|"]
    for workload, cluster, load in dict.fromkeys((r["workload"], r["cluster"], r["load"]) for r in rows):
        full = next(r for r in rows if (r["workload"], r["cluster"], r["load"], r["variant"])
                    == (workload, cluster, load, "full"))
        s = setup(workload, cluster, args.max_num_seqs)
        res = simulate(s, Cortex(), load, full["scale99"], args.runs, args.seed, record_calls=True)
        calls = [c for c in res.calls if c[3] == "llm"]  # (run, workflow, stage, kind, replica, enq, start, end, ..)
        waits = sorted(c[6] - c[5] for c in calls)
        service = sum(c[7] - c[6] for c in calls) / len(calls)
        lines.append(f"| {workload} | {cluster} | {load} | {len(calls)} | "
                     f"{sum(w > 1e-3 for w in waits) / len(waits):.2f} | {sum(waits) / len(waits):.4f} | "
                     f"{waits[min(len(waits) - 1, int(0.99 * len(waits)))]:.3f} | {service:.3f} |")
        print(lines[-1], flush=True)
    with (OUT / f"{args.out}.md").open("a") as f:
        f.write("\n".join(lines) + "\n")


def markdown(rows: list[dict], args, elapsed: float,
             loads: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> str:
    out = ["# Cortex ablations (SIMULATED)", "",
           f"Command: `.venv/bin/python benchmarks/sim_ablation.py --runs {args.runs} --seed {args.seed}"
           + (f" --max-num-seqs {args.max_num_seqs}" if args.max_num_seqs else "")
           + (f" --cells {args.cells}" if args.cells else "")
           + (f" --load {args.load}" if args.load is not None else "")
           + (f" --out {args.out}" if args.out != "sim_ablation" else "") + "`; "
           + (f"every LLM replica's batch capped at {args.max_num_seqs} (both layouts; load relative to the capped "
              "capacity), so that calls queue; " if args.max_num_seqs else "") +
           f"{elapsed:.0f} s wall on a 2-vCPU machine (other jobs may share it{load_text(loads)}). "
           "Discrete-event simulator, "
           "not real engines. Cortex at its shipped defaults on the planner's stage-isolated pools (`shared pool`: "
           "the same replicas pooled); SLO scale for 95% / 99% attainment (x standalone latency, lower is better, "
           "bisection to 4%). `cost` = variant's scale / full Cortex's scale at 99%: > 1.04 means the mechanism "
           "earns that much, < 0.96 means switching it off helps, in between is a tie.", "",
           "| workload | cluster | load | variant | scale@95% | scale@99% | cost @95% | cost @99% | rejected "
           "| pruned runs | degraded runs |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in dict.fromkeys((r["workload"], r["cluster"], r["load"]) for r in rows):
        cr = [r for r in rows if (r["workload"], r["cluster"], r["load"]) == cell]
        full = next(r for r in cr if r["variant"] == "full")
        for r in cr:
            out.append(f"| {cell[0]} | {cell[1]} | {cell[2]} | {r['variant']} | {r['scale95']:.2f} | "
                       f"{r['scale99']:.2f} | {r['scale95'] / full['scale95']:.2f} | "
                       f"{r['scale99'] / full['scale99']:.2f} | {r['rejected']:.3f} | {r['pruned_runs']} | "
                       f"{r['degraded_runs']:.3f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
