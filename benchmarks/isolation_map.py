"""Isolation map: where dedicated per-stage pools beat one shared pool (simulated engines).

A two-stage workflow (``a`` then ``b``, one call each per run, Llama-3.1-8B: Llama-3-8B's shapes with a
128k context, :func:`cell_program`) runs on the same GPUs, at the same rate, two ways:

* **isolated** -- each stage gets its own replicas (the split, stage ``a``'s share,
  is the best one for Cortex on the tuning seed, so isolation gets its best
  chance), under Cortex (which may borrow another stage's idle replica), under
  Cortex without borrowing (pure isolation) and under FCFS;
* **shared** -- every replica serves both stages, under the Cortex policy
  (``cortex-shared``) and under every baseline.

The cells sweep what the Cortex paper says isolation buys:

* ``prefix`` -- each stage's shared prompt prefix (system prompt, schema), short
  (128 tokens) or long (3000). A shared replica caches both stages' prefixes
  (twice the resident KV of an isolated one); when KV is short the LRU evicts
  them and calls re-prefill their prefix;
* ``kv`` -- KV capacity per replica: the H100 profile's (~430k tokens) or smaller
  overrides (``--kv``: a small device, or a model with more KV bytes per token);
* ``mix`` -- ``uniform`` (both stages 500 uncached prompt tokens, 100 out) or
  ``pd`` (stage ``a`` prefill-heavy: 3000 uncached tokens, 16 out; stage ``b``
  decode-heavy: 200 tokens, 400 out). In the simulator a prefill iteration
  stalls every running decode of its replica for the whole prompt (vLLM without
  chunking: one iteration per admitted prompt batch), so a shared replica's
  decode-heavy calls pay for the other stage's prompts.

Metric: SLO scale for 99% attainment (smaller is better; bisection to 4%) and
attainment at a fixed scale (``--scale``). Loads = ``--loads`` x the shared
layout's analytic capacity (prefix caching counted), per cell.

    .venv/bin/python benchmarks/isolation_map.py [--runs 1000] [--gpus 8] [--quick]

Writes benchmarks/results/isolation_map.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sim_common import (  # noqa: E402
    BASELINES, DEADLINE_AWARE, Setup, full_cluster_layout, simulate, workflow_graph,
)
from cortexlang.ir import SLO, Load, Program, Workflow  # noqa: E402
from runtime.simulator.capacity import capacity_runs_per_s, run_demand  # noqa: E402
from runtime.simulator.cluster import ReplicaSpec  # noqa: E402
from runtime.simulator.records import SimResult  # noqa: E402
from runtime.simulator.slo_scale import min_slo_scales  # noqa: E402
from runtime.simulator.workloads import edge, llm, program  # noqa: E402

OUT = Path(__file__).parent / "results"
TUNING_SEED = 2
PREFIX = {"short": 128, "long": 3000}
MIX = {"uniform": ((500, 100), (500, 100)), "pd": ((3000, 16), (200, 400))}
"""(uncached prompt tokens, output tokens) of stages a and b."""
SHARED_POLICIES = ("cortex-shared", *dict.fromkeys(BASELINES))
BASELINES_DISTINCT = tuple(p for p in BASELINES if p != "autellix-atlas")
"""autellix-atlas ranks exactly like autellix-plas on a chain (one call at a time per run)."""


def two_stage(prefix: int, mix: str) -> Workflow:
    """Stage ``a`` then stage ``b``; each stage's prompt = its own ``prefix``-token shared prefix + the
    uncached part of ``MIX[mix]``."""
    (ua, oa), (ub, ob) = MIX[mix]
    return Workflow(
        name="two_stage", inputs=("q",),
        stages=(llm("a", prefix + ua, oa, prefix=prefix), llm("b", prefix + ub, ob, prefix=prefix)),
        entry="a", edges=(edge("a", "b"), edge("b", "done")),
        slo=SLO(latency_s=60.0, attainment=0.99), load=Load(rate_per_s=1.0),
    )


LONG_CONTEXT = 131_072
"""Llama-3.1-8B's context (tokens): the map's model, so that no cell is bounded by the context."""


def cell_program(wf: Workflow) -> Program:
    """A program for a map cell's workflow on Llama-3.1-8B: Llama-3-8B's shapes (hence the same profile and
    KV size) with a 128k context. On Llama-3-8B's 8,192 tokens the long-prefix ``pd`` cells' 6,000-token
    prompts (drawn with a 0.3 CV) exceed the context 1.6% of the time; the simulator refuses those as vLLM
    does, which held every layout and policy to 98.4% attainment and made every 99% scale infinite.
    The context only bounds the prompts a replica accepts, so the cells that fit are unchanged."""
    prog = program(wf)
    return prog.model_copy(update={"models": tuple(
        m.model_copy(update={"weights": "meta-llama/Llama-3.1-8B", "max_context": LONG_CONTEXT})
        if m.name == "llama8b" else m for m in prog.models)})


def cell_setup(prefix: str, kv: str, mix: str, gpus: int) -> tuple[Setup, tuple[ReplicaSpec, ...]]:
    """The cell's workflow and its shared layout (``gpus`` H100 replicas, the planner's latency-aware
    batch cap at the workload's mean context; KV overridden to ``int(kv)`` tokens unless ``kv='large'``)."""
    wf = two_stage(PREFIX[prefix], mix)
    prog = cell_program(wf)
    devices = {"H100": gpus}
    lay = full_cluster_layout(prog, wf, devices)
    if kv != "large":
        lay = tuple(replace(r, kv_capacity_tokens=int(kv)) if r.kind == "llm" else r for r in lay)
    s = Setup(f"{prefix}/{kv}/{mix}", prog, wf, devices, 0.0)
    s.capacity = shared_capacity(s, lay)
    return s, lay


def shared_capacity(s: Setup, lay: tuple[ReplicaSpec, ...]) -> float:
    """The shared layout's analytic capacity (:func:`capacity_runs_per_s`) with prefix caching counted:
    each replica holds both stages' prefixes once and its sequences only their uncached part, so its
    full batch is ``(KV - prefixes) / (C - prefix)`` rather than ``KV / C`` (passed to the shared
    formula as the equivalent KV capacity ``C x (KV - prefixes) / (C - prefix)``)."""
    g = workflow_graph(s.program, s.workflow, lay)
    prefixes = sum(st.prefix_tokens for st in s.workflow.stages)
    per_seq = (prefixes / 2) / run_demand(g)["ctx"]  # mean prefix share of a call's context
    adj = []
    for r in lay:
        if r.kind == "llm" and r.kv_capacity_tokens:
            eff = int((r.kv_capacity_tokens - prefixes) / max(1.0 - per_seq, 1e-9))
            r = replace(r, kv_capacity_tokens=eff)
        adj.append(r)
    return capacity_runs_per_s(s.program, g, tuple(adj))


def isolate(lay: tuple[ReplicaSpec, ...], n_a: int) -> tuple[ReplicaSpec, ...]:
    """The same replicas, the first ``n_a`` LLM replicas dedicated to stage ``a``, the rest to ``b``."""
    out, i = [], 0
    for r in lay:
        if r.kind == "llm":
            out.append(replace(r, stages=frozenset({"a" if i < n_a else "b"})))
            i += 1
        else:
            out.append(r)
    return tuple(out)


def best_split(s: Setup, lay: tuple[ReplicaSpec, ...], load: float, runs: int) -> int:
    """Stage ``a``'s replica count with the lowest Cortex (scale@99%, scale@95%) on the tuning seed
    (bisection to 8%): isolation is measured at its best split."""
    n = sum(1 for r in lay if r.kind == "llm")
    best = None
    for n_a in range(1, n):
        iso = isolate(lay, n_a)
        sc = min_slo_scales(lambda scale: simulate(s, "cortex", load, scale, runs, TUNING_SEED, layout=iso),
                            (0.95, 0.99), deadline_aware=True, hi0=2.0, rel_tol=0.08)
        key = (sc[0.99], sc[0.95])
        if best is None or key < best[0]:
            best = (key, n_a)
    assert best is not None
    return best[1]


NO_BORROW = {"borrow_idle": False, "borrow_spare": False}
"""Cortex on isolated pools without borrowing other stages' idle replicas: isolation in its pure form."""


def measure(s: Setup, policy: str, layout, load: float, scale: float, runs: int, seed: int,
            params: dict | None = None) -> dict:
    """SLO scale at 95/99% (bisection for deadline-aware policies) and attainment at ``scale``."""
    sims = [0]

    def run(sc: float | None) -> SimResult:
        sims[0] += 1
        return simulate(s, policy, load, sc, runs, seed, params=params, layout=layout)

    aware = policy in DEADLINE_AWARE
    sc = min_slo_scales(run, (0.95, 0.99), deadline_aware=aware, hi0=2.0)
    ref = run(scale)
    summ = ref.summary()
    return {"scale95": round(sc[0.95], 3), "scale99": round(sc[0.99], 3),
            "attain": round(ref.attainment(scale), 4), "p99_s": round(summ["p99_s"], 3),
            "preemptions": sum(e.preemptions for e in ref.engines),
            "kv_peak": round(summ["kv_peak_over_capacity"], 3), "rejected": round(summ["rejected"], 4),
            "simulations": sims[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--loads", default="0.6,0.85", help="fractions of the shared layout's capacity")
    ap.add_argument("--scale", type=float, default=2.0, help="fixed SLO scale for the attainment column")
    ap.add_argument("--kv", default="large,24000,12000",
                    help="KV capacities per replica: 'large' (the H100 profile's) or a number of tokens")
    ap.add_argument("--quick", action="store_true", help="baselines fcfs + hexagent only")
    ap.add_argument("--out", default="isolation_map")
    ap.add_argument("--md-only", action="store_true", help="re-render the .md from the .json (no simulation)")
    ap.add_argument("--check-no-borrow", action="store_true",
                    help="re-measure, on the tuning seed, the cells where Cortex without borrowing was the better "
                         "isolated variant (guards against picking the better of two on the evaluation seed)")
    args = ap.parse_args()
    if args.check_no_borrow:
        check_no_borrow(args)
        return
    if args.md_only:
        rep = json.loads((OUT / f"{args.out}.json").read_text())
        for k in ("runs", "seed", "gpus", "scale", "kv"):
            setattr(args, k, rep[k])
        args.loads = ",".join(str(x) for x in rep["loads"])
        (OUT / f"{args.out}.md").write_text(markdown(rep["rows"], args, rep["wall_s"], BASELINES_DISTINCT))
        return
    baselines = ("fcfs", "hexagent") if args.quick else BASELINES_DISTINCT
    rows = []
    t0 = time.perf_counter()
    loads = [float(x) for x in args.loads.split(",")]
    for prefix, kv, mix in itertools.product(PREFIX, args.kv.split(","), MIX):
        s, lay = cell_setup(prefix, kv, mix, args.gpus)
        for load in loads:
            n_a = best_split(s, lay, load, args.runs // 2)
            iso = isolate(lay, n_a)
            cell = {"prefix": prefix, "kv": kv, "mix": mix, "load": load, "rate": round(load * s.capacity, 3),
                    "split_a": n_a, "kv_tokens": next(r for r in lay if r.kind == "llm").kv_capacity_tokens}
            for label, pol, layout, params in (
                    ("isolated", "cortex", iso, None), ("isolated-no-borrow", "cortex", iso, NO_BORROW),
                    ("isolated", "fcfs", iso, None),
                    *(("shared", p, lay, None) for p in ("cortex-shared", *baselines))):
                m = measure(s, pol, layout, load, args.scale, args.runs, args.seed, params)
                rows.append({**cell, "layout": label, "policy": pol, **m})
                print(f"[simulated] {s.name} load {load} {label} {pol}: {m}", flush=True)
    elapsed = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"label": "simulated", "runs": args.runs, "seed": args.seed, "tuning_seed": TUNING_SEED,
              "gpus": args.gpus, "loads": loads, "scale": args.scale, "kv": args.kv,
              "wall_s": round(elapsed, 1), "rows": rows}
    (OUT / f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / f"{args.out}.md").write_text(markdown(rows, args, elapsed, baselines))
    print((OUT / f"{args.out}.md").read_text())


def check_no_borrow(args) -> None:
    """For each cell of ``<out>.json`` where isolated Cortex without borrowing beat it with borrowing,
    both variants at the same split on the tuning seed; appends a section to ``<out>.md``."""
    rep = json.loads((OUT / f"{args.out}.json").read_text())
    rows = rep["rows"]
    lines = ["", f"## Check on the tuning seed ({TUNING_SEED})", "",
             f"Command: `.venv/bin/python benchmarks/isolation_map.py --check-no-borrow --runs {rep['runs']}`. "
             "Cells where Cortex without borrowing was the better isolated variant on the evaluation seed, "
             f"both variants re-measured at the same split on seed {TUNING_SEED} (scale@99%).", "",
             "| prefix | kv | mix | load | split | with borrowing | without borrowing |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["layout"] != "isolated-no-borrow":
            continue
        key = (r["prefix"], r["kv"], r["mix"], r["load"])
        with_b = next(x for x in rows if (x["prefix"], x["kv"], x["mix"], x["load"]) == key
                      and x["layout"] == "isolated" and x["policy"] == "cortex")
        if r["scale99"] >= with_b["scale99"]:
            continue
        s, lay = cell_setup(r["prefix"], r["kv"], r["mix"], rep["gpus"])
        iso = isolate(lay, r["split_a"])
        got = [measure(s, "cortex", iso, r["load"], rep["scale"], rep["runs"], TUNING_SEED, p)["scale99"]
               for p in (None, NO_BORROW)]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {r['split_a']}:{rep['gpus'] - r['split_a']} | "
                     f"{got[0]:.2f} | {got[1]:.2f} |")
        print(lines[-1], flush=True)
    with (OUT / f"{args.out}.md").open("a") as f:
        f.write("\n".join(lines) + "\n")


def _gain(shared: float, isolated: float) -> float:
    return shared / isolated if math.isfinite(isolated) else 0.0


def markdown(rows: list[dict], args, elapsed: float, baselines: tuple[str, ...]) -> str:
    out = ["# Isolation map: dedicated per-stage pools vs one shared pool (SIMULATED)", "",
           f"Command: `.venv/bin/python benchmarks/isolation_map.py --runs {args.runs} --seed {args.seed} --gpus "
           f"{args.gpus} --loads {args.loads} --scale {args.scale} --kv {args.kv}"
           f"{' --quick' if args.quick else ''}`; {elapsed:.0f} s wall on the shared 2-vCPU machine (other "
           "helpers running). Discrete-event simulator, not real engines.", "",
           f"Workflow: stage a then stage b (Llama-3.1-8B: Llama-3-8B's shapes and profile, a 128k context), "
           f"{args.gpus}x H100, rate = load x the shared "
           "layout's analytic capacity (prefix caching counted: `shared_capacity`). `prefix`: each stage's own "
           "shared prompt prefix (short 128 / long 3000 tokens). `kv`: KV tokens per replica (large = the H100 "
           "profile's, ~430k; else the override). `mix`: uniform "
           "(500 uncached prompt / 100 out per stage) or pd (a: 3000 / 16, prefill-heavy; b: 200 / 400, "
           "decode-heavy). Isolated = the same replicas split between the stages (split `a:b`: Cortex's lowest "
           f"scale@99% on seed {TUNING_SEED}); shared = every replica serves both. Scale = SLO scale for 99% "
           "attainment "
           f"(x standalone latency, lower is better); attain = attainment at scale {args.scale}. Baselines on the "
           f"shared pool: {', '.join(baselines)}.", "",
           "| prefix | kv | mix | load | split a:b | isolated cortex | isolated cortex, no borrowing | isolated fcfs "
           "| cortex-shared | best shared baseline "
           "| gain @99%, Cortex | gain @99%, best isolated | attain iso / shared-best | preemptions iso / shared |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cells = sorted({(r["prefix"], r["kv"], r["mix"], r["load"]) for r in rows})
    gains: dict[tuple, tuple[float, str]] = {}
    for c in cells:
        cr = {r["policy"] + "@" + r["layout"]: r for r in rows if (r["prefix"], r["kv"], r["mix"], r["load"]) == c}
        iso, iso_f, csh = cr["cortex@isolated"], cr["fcfs@isolated"], cr["cortex-shared@shared"]
        iso_nb = cr["cortex@isolated-no-borrow"]
        base = min((r for k, r in cr.items() if k.endswith("@shared") and r["policy"] != "cortex-shared"),
                   key=lambda r: (r["scale99"], -r["attain"]))
        shared_best = min(csh["scale99"], base["scale99"])
        gain = _gain(shared_best, iso["scale99"])
        best_iso = min((iso, iso_nb), key=lambda r: r["scale99"])
        gains[c] = (_gain(shared_best, best_iso["scale99"]), "" if best_iso is iso else " (no borrowing)")
        out.append(f"| {c[0]} | {c[1]} | {c[2]} | {c[3]} | {iso['split_a']}:{args.gpus - iso['split_a']} | "
                   f"{iso['scale99']:.2f} | {iso_nb['scale99']:.2f} | {iso_f['scale99']:.2f} | {csh['scale99']:.2f} | "
                   f"{base['policy']} {base['scale99']:.2f} | {gain:.2f}x | {gains[c][0]:.2f}x{gains[c][1]} | "
                   f"{iso['attain']:.3f} / {max(csh['attain'], base['attain']):.3f} | "
                   f"{iso['preemptions']} / {csh['preemptions']} |")
    out += ["", "## Map", "", "Isolation gain per cell, best isolated variant (Cortex with or without borrowing; "
            "`nb` = without): `ISO` = dedicated pools win (gain >= 1.05), `shared` = the shared pool wins "
            "(gain <= 0.95), `tie` otherwise.", ""]
    cols = sorted({(c[2], c[3]) for c in cells})
    out += ["| prefix / kv | " + " | ".join(f"{m} @ {ld}" for m, ld in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for pk in sorted({(c[0], c[1]) for c in cells}):
        cellv = []
        for m, ld in cols:
            if (*pk, m, ld) not in gains:
                cellv.append("-")
                continue
            g, how = gains[(*pk, m, ld)]
            cellv.append(f"{'ISO' if g >= 1.05 else 'shared' if g <= 0.95 else 'tie'} {g:.2f}x{' nb' if how else ''}")
        out.append(f"| {pk[0]} / {pk[1]} | " + " | ".join(cellv) + " |")
    out += ["", "Isolation gain = best shared scale (Cortex policy or any baseline) / isolated scale (`Cortex`: the "
            "Cortex policy as shipped, borrowing idle replicas of the other stage; `best isolated`: the better of "
            "that and Cortex without borrowing, at the same split, chosen for the borrowing variant): > 1 "
            "means dedicated pools win at the same GPU count; bisection resolution is 4%, so |gain - 1| < 0.05 "
            "is a tie.", "", "## All rows", "",
            "| prefix | kv | mix | load | layout | policy | scale@95% | scale@99% | attain | p99 s | preemptions "
            "| KV peak "
            "| rejected |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['prefix']} | {r['kv']} | {r['mix']} | {r['load']} | {r['layout']} | {r['policy']} | "
                   f"{r['scale95']:.2f} | "
                   f"{r['scale99']:.2f} | {r['attain']:.3f} | {r['p99_s']:.2f} | {r['preemptions']} | "
                   f"{r['kv_peak']:.2f} | {r['rejected']:.3f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
