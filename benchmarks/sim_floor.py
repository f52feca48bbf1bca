"""How low can any policy go? The decode-stretch floor next to the measured SLO scales (analytic + simulated).

For the NL2SQL workload on the mixed cluster, :func:`runtime.simulator.floor.min_mean_stretch`
gives the least token-weighted mean decode stretch any policy can reach at each load: on
every device decoding with prefill for free (a floor for *any* deployment, colocated or
disaggregated), and on the decode replicas of each prefill/decode split the SLO-scale sweep
chose. To meet q attainment at scale S, the runs that make it (a share q of the runs) must each
finish within S times their standalone latency, so their tokens average a stretch of about S at
most; their decode load alone (about q x L tokens/s) already costs at least ``floor(q x L)`` on
average, other runs only add to it. So ``floor(q x L)`` approximates the least S any policy can
reach, and ``best baseline scale / floor(q x L)`` the most any policy can gain on the best baseline
(approximate: a run's stretch weighs its own calls, the floor weighs tokens).
Reads ``benchmarks/results/sim_slo_scale.json`` (run ``sim_slo_scale.py`` first).

    .venv/bin/python benchmarks/sim_floor.py

Writes benchmarks/results/sim_floor.{md,json}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sim_common import BASELINES, workflow_graph, full_cluster_layout, pd_layout, setup  # noqa: E402
from runtime.simulator.capacity import run_demand  # noqa: E402
from runtime.simulator.cluster import ReplicaSpec, model_profile  # noqa: E402
from runtime.simulator.floor import DecodeReplica, min_mean_stretch  # noqa: E402

OUT = Path(__file__).parent / "results"
TARGETS = (0.95, 0.99)


def decode_replicas(s, layout: tuple[ReplicaSpec, ...], ctx: float) -> list[DecodeReplica]:
    """The step model of every replica that decodes in ``layout`` (mixed or decode role)."""
    out = []
    for r in layout:
        if r.kind == "llm" and r.role != "prefill":
            p = model_profile(s.program, r.model or "", r.device, r.tp)
            out.append(DecodeReplica(p.decode_fixed_s, p.decode_per_seq_s + p.decode_per_kv_token_s * ctx, r.slots))
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    sweep = json.loads((OUT / "sim_slo_scale.json").read_text())
    s = setup("nl2sql", "mixed12")
    full = full_cluster_layout(s.program, s.workflow, s.devices)
    demand = run_demand(workflow_graph(s.program, s.workflow, full))
    ctx = demand["ctx"]
    model = next(r.model for r in full if r.kind == "llm")
    ref = min(model_profile(s.program, model or "", r.device, r.tp).decode_step_s(1, int(ctx))
              for r in full if r.kind == "llm")
    rows = []
    cells = sorted({(r["cluster"], r["load"]) for r in sweep["rows"]
                    if r["workload"] == "nl2sql" and r["cluster"].startswith("mixed12")})
    for cluster, load in cells:
        cell = [r for r in sweep["rows"] if r["workload"] == "nl2sql" and (r["cluster"], r["load"]) == (cluster, load)]
        tokens = load * s.capacity * demand["output"]
        row = {"cluster": cluster, "load": load, "decode_tokens_per_s": round(tokens)}
        for q in TARGETS:
            key = f"scale{round(q * 100)}"
            best = min((r for r in cell if r["policy"] in BASELINES), key=lambda r: r[key])
            cortex = next(r for r in cell if r["policy"] == "cortex")
            floor_any = min_mean_stretch(decode_replicas(s, full, ctx), q * tokens, ref)
            row[f"floor_any_{key}"] = round(floor_any, 3)
            row[f"best_baseline_{key}"] = f"{best['policy']} {best[key]:.2f}"
            row[f"cortex_{key}"] = cortex[key]
            row[f"ceiling_{key}"] = round(best[key] / floor_any, 3)
            if cortex.get("prefill_split"):
                lay = pd_layout(s, cortex["prefill_split"])
                row[f"floor_split_{key}"] = round(min_mean_stretch(decode_replicas(s, lay, ctx), q * tokens, ref), 3)
        rows.append(row)
    report = {"label": "analytic floor vs simulated scales", "reference_step_s": ref, "mean_context": ctx,
              "rows": rows}
    (OUT / "sim_floor.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Decode-stretch floor vs measured SLO scales (analytic floor; scales simulated)", "",
             "Command: `.venv/bin/python benchmarks/sim_floor.py` (after `benchmarks/sim_slo_scale.py`). "
             "NL2SQL (Llama-3-8B) on 4xA100 + 4xH100 + 4xH200. `floor(q)`: the least token-weighted mean "
             "decode stretch any policy can reach on the decode load of a share q of the runs "
             "(runtime/simulator/floor.py), every device decoding and prefill free (any deployment); "
             "`split floor`: on the decode replicas of Cortex's prefill/decode split. `ceiling` = best "
             "baseline's scale / floor(q): the most any policy could gain on it.", "",
             "| cluster | load | target | best baseline | Cortex | floor (any deployment) | split floor | ceiling |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for q in TARGETS:
            key = f"scale{round(q * 100)}"
            lines.append(f"| {r['cluster']} | {r['load']:.1f} | {q:.0%} | {r[f'best_baseline_{key}']} | "
                         f"{r[f'cortex_{key}']:.2f} | {r[f'floor_any_{key}']:.2f} | "
                         f"{_fmt(r.get(f'floor_split_{key}'))} | {r[f'ceiling_{key}']:.2f}x |")
    (OUT / "sim_floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
