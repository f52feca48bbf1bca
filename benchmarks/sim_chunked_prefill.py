"""Chunked prefill in the engine model: what it changes, before vs after (simulated engines).

The engine model (runtime/simulator/engine.py) spends vLLM V1's per-step token budget
(``max_batched_tokens``): one token per decoding sequence, then prompt chunks; a prompt longer
than what is left is prefilled over several iterations. Before, an iteration's prefill alone was
capped at the budget, decodes were not counted, and a prompt longer than the budget was
prefilled whole in one iteration. This benchmark runs the same cells on both engine models:

* ``before``: the repository at ``--before`` (default: the parent of the commit that introduced
  chunking);
* ``after``: the repository at ``--after`` (default: HEAD).

Both are exported with ``git archive`` into a temporary folder (the working tree, and whatever is
uncommitted in it, is not used).

Cells: sim_fair.py's colocated examples and NL2SQL at their default 8192-token budget, and
chess_sql with a 2048- and a 1024-token budget, where its 2.4-2.8k-token linking/drafting prompts
exceed the budget (as the issue's 10k-token prompts exceed 8192). Policies: FCFS, HexAGenT and Cortex at the
parameters tuned by sim_fair.py (results/sim_fair_tuned.json); Cortex on the planner's pools, the
others on the same replicas pooled (benchmarks/sim_common.py). Metric: the smallest SLO scale met by
95% / 99% of runs (min_slo_scales, bisection to 4%, as sim_fair.py), plus the result digest (equal:
bit-identical simulations), engine iterations, preemptions and the CPU seconds of one simulation at
a fixed scale. Each tree runs in its own process with its own compiled build (``CORTEX_CACHE_DIR``),
alternating trees per repetition.

    .venv/bin/python benchmarks/sim_chunked_prefill.py [--runs 1000] [--repeat 2] [--before REV]

Writes benchmarks/results/sim_chunked_prefill.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "results"
CHUNKING_COMMIT = "235bbbf"
"""The commit that introduced chunked prefill (``--before`` defaults to its parent)."""
CELLS = (
    ("chess_sql", "inventory", 0.7, 8192), ("chess_sql", "inventory", 0.9, 8192),
    ("nl2sql", "mixed12", 0.7, 8192), ("rag", "inventory", 0.7, 8192),
    ("deep_research", "inventory", 0.7, 8192),
    ("chess_sql", "inventory", 0.7, 2048), ("chess_sql", "inventory", 0.9, 2048),
    ("chess_sql", "inventory", 0.7, 1024),
)
"""(workload, cluster, load, max_batched_tokens)."""
POLICIES = ("fcfs", "hexagent", "cortex")
TARGETS = (0.95, 0.99)
SEED = 1
TIMED_SCALE = 2.0


def _digest(res) -> str:
    data = repr((res.end.tolist(), res.status.tolist(), res.pruned.tolist())).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def worker(runs: int, out: Path) -> None:
    """Run every cell in this process's tree (the one this file sits in) and write JSON."""
    from benchmarks.sim_common import DEADLINE_AWARE, setup, simulate
    from runtime.simulator import engine
    from runtime.simulator.slo_scale import min_slo_scales

    tuned = json.loads((REPO / "benchmarks" / "results" / "sim_fair_tuned.json").read_text())["tuned"]
    rows = []
    for workload, cluster, load, budget in CELLS:
        s = setup(workload, cluster)
        for policy in POLICIES:
            params = tuned[f"{workload}:{cluster}"].get(policy, {}).get("best", {})

            def run(scale, policy=policy, params=params):
                return simulate(s, policy, load, scale, runs, SEED, params=params, max_batched_tokens=budget)

            sc = min_slo_scales(run, TARGETS, deadline_aware=policy in DEADLINE_AWARE, hi0=2.0)
            t0 = time.process_time()
            res = run(TIMED_SCALE)
            cpu = time.process_time() - t0
            rows.append({"workload": workload, "cluster": cluster, "load": load, "budget": budget, "policy": policy,
                         "scale95": sc[0.95], "scale99": sc[0.99], "digest": _digest(res), "cpu_s": cpu,
                         "iterations": sum(e.iterations for e in res.engines),
                         "preemptions": sum(e.preemptions for e in res.engines)})
    out.write_text(json.dumps({"compiled": not engine.__file__.endswith(".py"), "rows": rows}))


def _export(rev: str, dest: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shutil.copy(Path(__file__), dest / "benchmarks" / Path(__file__).name)


def _run_tree(root: Path, cache: Path, runs: int, out: Path) -> None:
    env = {**os.environ, "CORTEX_CACHE_DIR": str(cache)}
    env.pop("CORTEX_ACCEL", None)
    py = str(REPO / ".venv" / "bin" / "python")
    subprocess.run([py, "-m", "runtime.accel", "build"], cwd=root, env=env, check=True, capture_output=True)
    subprocess.run([py, str(root / "benchmarks" / Path(__file__).name), "--worker", str(out), "--runs", str(runs)],
                   cwd=root, env=env, check=True)


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2, help="repetitions per tree (CPU time: the fastest is kept)")
    ap.add_argument("--before", default=f"{CHUNKING_COMMIT}~1")
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.runs, args.worker)
        return
    load0, t0 = _load(), time.time()
    before_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.before], check=True,
                                capture_output=True, text=True).stdout.strip()
    after_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.after], check=True,
                               capture_output=True, text=True).stdout.strip()
    results: dict[str, list[list[dict]]] = {"before": [], "after": []}
    compiled: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        trees = {"before": tmp_path / "before", "after": tmp_path / "after"}
        for name, rev in (("before", args.before), ("after", args.after)):
            trees[name].mkdir()
            _export(rev, trees[name])
        for i in range(args.repeat):
            for name, root in trees.items():
                out = tmp_path / f"{name}-{i}.json"
                _run_tree(root, tmp_path / f"cache-{name}", args.runs, out)
                got = json.loads(out.read_text())
                results[name].append(got["rows"])
                compiled[name] = got["compiled"]
    rows = []
    for b_rows, a_rows in zip(zip(*results["before"]), zip(*results["after"])):
        b, a = b_rows[0], a_rows[0]
        assert all(r["digest"] == b["digest"] for r in b_rows) and all(r["digest"] == a["digest"] for r in a_rows)
        rows.append({**{k: a[k] for k in ("workload", "cluster", "load", "budget", "policy")},
                     "before": {**b, "cpu_s": min(r["cpu_s"] for r in b_rows)},
                     "after": {**a, "cpu_s": min(r["cpu_s"] for r in a_rows)},
                     "identical": a["digest"] == b["digest"]})
    meta = {"label": "simulated", "command": " ".join(["benchmarks/sim_chunked_prefill.py", *sys.argv[1:]]),
            "before": before_rev, "after": after_rev, "runs": args.runs, "seed": SEED, "repeat": args.repeat,
            "compiled": compiled, "load_start": load0, "load_end": _load(), "wall_s": round(time.time() - t0, 1),
            "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0))}
    OUT.mkdir(exist_ok=True)
    (OUT / "sim_chunked_prefill.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (OUT / "sim_chunked_prefill.md").write_text(_markdown(meta, rows))
    print(_markdown(meta, rows))


def _markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Chunked prefill: before vs after (SIMULATED)", "",
        f"Command: `.venv/bin/python {meta['command']}`; {meta['utc']} UTC, {meta['wall_s']} s wall; load average "
        f"(1/5/15 min) {meta['load_start']} at start, {meta['load_end']} at end (shared 2-vCPU machine). Before = "
        f"{meta['before']} (whole-prompt prefill, decode tokens not counted), after = {meta['after']} (vLLM V1 "
        f"token budget with chunked prefill). Seed {meta['seed']}, {meta['runs']} runs per simulation; SLO scale "
        "= x standalone latency met by 95% / 99% of runs (bisection to 4%, lower is better); policies at "
        "sim_fair.py's tuned parameters. `same` = bit-identical results (digest of every run's end and status). "
        f"CPU s = one simulation at scale {TIMED_SCALE}, fastest of {meta['repeat']} (compiled engine: "
        f"{meta['compiled']}).", "",
        "| workload | cluster | load | budget | policy | same | @95% before | @95% after | @99% before | "
        "@99% after | iterations before | after | preemptions before | after | CPU s before | after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, a = r["before"], r["after"]
        lines.append(
            f"| {r['workload']} | {r['cluster']} | {r['load']} | {r['budget']} | {r['policy']} | "
            f"{'yes' if r['identical'] else 'no'} | {b['scale95']:.2f} | {a['scale95']:.2f} | {b['scale99']:.2f} | "
            f"{a['scale99']:.2f} | {b['iterations']} | {a['iterations']} | {b['preemptions']} | {a['preemptions']} | "
            f"{b['cpu_s']:.2f} | {a['cpu_s']:.2f} |")
    lines += ["", "Cortex vs HexAGenT (ratio of SLO scales, > 1: Cortex better):", "",
              "| workload | load | budget | @95% before | @95% after | @99% before | @99% after |",
              "|---|---|---|---|---|---|---|"]
    by = {(r["workload"], r["cluster"], r["load"], r["budget"], r["policy"]): r for r in rows}
    for (w, c, ld, bud, p), r in by.items():
        if p != "cortex":
            continue
        h = by[(w, c, ld, bud, "hexagent")]
        ratio = {f"{t}{q}": h[t][f"scale{q}"] / r[t][f"scale{q}"] for t in ("before", "after") for q in (95, 99)}
        lines.append(f"| {w} | {ld} | {bud} | {ratio['before95']:.2f}x | {ratio['after95']:.2f}x | "
                     f"{ratio['before99']:.2f}x | {ratio['after99']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
