"""Text views of a Plan: the Terraform-like plan view and the diff against a saved plan.

Both are pure functions of :class:`planner.plan.Plan` objects (JSON is the
other view: :meth:`Plan.canonical_json`). Tables are drawn with rich into a
string with a fixed width and no colour, so the output is stable enough for
golden files.

Diff semantics, per pool keyed by (workflow, stage):

* ``+`` a pool in the new plan only (to add);
* ``-`` a pool in the old plan only (to remove);
* ``~`` a pool in both whose device, model, TP, replicas/slots, prefill/decode
  split, chosen knobs or served stages differ (to resize: changed in place).

A prefill/decode-disaggregated pool shows its replicas as ``2P+4D`` (2 prefill,
4 decode replicas).

A shared LLM pool is keyed by its first stage (``LLMPool.stage``); the stages
it serves are in its description.

The summary line counts them: ``Plan: 2 to add, 1 to resize, 0 to remove.``
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table

from planner.plan import ColocatedStage, ExecutorPool, LLMPool, Plan, WorkflowPlan

WIDTH = 140


def _pct_label(attainment: float) -> str:
    return "p" + f"{attainment * 100:.4f}".rstrip("0").rstrip(".")


def _s(x: float) -> str:
    """Seconds, compact: 0.123s, 12.3s."""
    if x < 1:
        return f"{x * 1000:.0f}ms"
    return f"{x:.2f}s" if x < 10 else f"{x:.1f}s"


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _console(buffer: io.StringIO) -> Console:
    return Console(file=buffer, width=WIDTH, color_system=None, force_terminal=False, legacy_windows=False,
                   highlight=False, emoji=False)


def _devices(devices: dict[str, int]) -> str:
    parts = [f"{n}x{k}" for k, n in sorted(devices.items()) if k != "CPU"]
    if devices.get("CPU"):
        parts.append(f"{devices['CPU']} CPU slots")
    return " + ".join(parts) or "nothing"


def _inventory_devices(plan: Plan) -> dict[str, int]:
    out = {g.kind: g.count for g in plan.inventory.gpus}
    if plan.inventory.cpu is not None:
        out["CPU"] = plan.inventory.cpu.slots
    return out


def _replicas(p: LLMPool) -> str:
    """``4``, or ``2P+4D`` for a disaggregated pool (prefill + decode replicas)."""
    return f"{p.prefill_replicas}P+{p.decode_replicas}D" if p.disaggregated else str(p.replicas)


def _llm_table(w: WorkflowPlan) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=None, show_edge=False)
    for col, just in [("stage", "left"), ("model", "left"), ("GPU x replicas", "left"), ("TP", "right"),
                      ("util", "right"), ("p50", "right"), ("p95", "right"), ("p99", "right"),
                      ("KV GiB", "right"), ("seqs", "right"), ("knobs", "left"), ("cost/h", "right")]:
        t.add_column(col, justify=just, no_wrap=True)
    for p in w.llm_pools:
        t.add_row(p.stage, p.model, f"{p.device} x {_replicas(p)}", str(p.tp), f"{p.utilisation:.1%}",
                  _s(p.latency.p50), _s(p.latency.p95), _s(p.latency.p99), f"{p.kv_gib * p.replicas:.1f}",
                  str(p.max_num_seqs), _knobs(p), _money(p.cost_per_hour))
        for c in p.colocated:  # same replicas: only the stage's own knobs and latency
            t.add_row(c.stage, p.model, f"  in {p.stage}'s pool", "", "", _s(c.latency.p50), _s(c.latency.p95),
                      _s(c.latency.p99), "", "", _knobs(c), "")
    return t


def _knobs(p: LLMPool | ColocatedStage) -> str:
    knobs = [f"max_tokens {p.max_tokens}"]
    if p.hedge > 1:
        knobs.append(f"hedge {p.hedge}")
    if p.prewarm:
        knobs.append("prewarm")
    return ", ".join(knobs)


def _layout_line(w: WorkflowPlan) -> str:
    """Which LLM stages share a pool and which have their own."""
    shared = [f"{' + '.join(p.stages)} share {p.model} on {p.device} x {p.replicas}" for p in w.llm_pools if p.shared]
    alone = [p.stage for p in w.llm_pools if not p.shared]
    split = [p.stage for p in w.llm_pools if p.disaggregated]
    pd = f"; prefill/decode disaggregated: {', '.join(split)}" if split else ""
    if not shared:
        return "  layout: stage isolation (a dedicated pool per LLM stage)" + pd
    parts = shared + ([f"dedicated: {', '.join(alone)}"] if alone else [])
    return f"  layout: {w.layout}; " + "; ".join(parts) + pd


def _exec_table(w: WorkflowPlan) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col, just in [("stage", "left"), ("kind", "left"), ("slots", "right"), ("util", "right"), ("p50", "right"),
                      ("p95", "right"), ("p99", "right"), ("cost/h", "right")]:
        t.add_column(col, justify=just, no_wrap=True)
    for p in w.executor_pools:
        t.add_row(p.stage, p.kind, str(p.slots), f"{p.utilisation:.1%}", _s(p.latency.p50), _s(p.latency.p95),
                  _s(p.latency.p99), _money(p.cost_per_hour))
    return t


def _workflow_lines(w: WorkflowPlan) -> list[str]:
    lines = []
    slo = w.slo
    head = f"Workflow {w.workflow}: {w.rate_per_s:g} runs/s"
    if slo:
        head += f", SLO {_pct_label(slo.attainment)} <= {slo.latency_s:g}s"
    lines.append(head + f", {_money(w.cost_per_hour)}/h")
    knobs = []
    if w.knobs.retry_depth:
        knobs += [f"{k} retries {v}" for k, v in sorted(w.knobs.retry_depth.items())]
    if w.knobs.fanout_width:
        knobs += [f"{k} width {v}" for k, v in sorted(w.knobs.fanout_width.items())]
    if knobs or w.knobs.quality < 1:
        lines.append(f"  knobs: {', '.join(knobs) if knobs else 'preferred'}; quality {w.knobs.quality:.1%}")
    d = w.latency
    lines.append(f"  end-to-end: p50 {_s(d.p50)}  p90 {_s(d.p90)}  p95 {_s(d.p95)}  p99 {_s(d.p99)}  "
                 f"mean {_s(d.mean)};  P(done) {w.p_done:.2%}")
    v = w.verification
    sized_for = v.planned_latency_s if v is not None and slo and v.planned_latency_s is not None else None
    if slo and w.slo_attainment is not None:
        ok = "meets" if w.slo_attainment >= slo.attainment else "MISSES"
        within = sized_for if sized_for is not None else slo.latency_s
        tightened = f" (tightened from {slo.latency_s:g}s after simulation)" if within < slo.latency_s else ""
        lines.append(f"  SLO: {w.slo_attainment:.2%} of runs within {within:g}s{tightened} "
                     f"(target {slo.attainment:.2%}): {ok}; headroom {w.headroom:.1%}")
    if v is not None:
        d = v.latency
        lines.append(f"  simulated ({v.policy}, {v.runs:,} runs, seed {v.seed}): p50 {_s(d.p50)}  p90 {_s(d.p90)}  "
                     f"p95 {_s(d.p95)}  p99 {_s(d.p99)}")
        if slo and v.slo_attainment is not None and v.attainment_interval is not None:
            lo, hi = v.attainment_interval
            verdict = "holds" if v.holds else "MISSES the SLO in simulation"
            rounds = f"; {v.rounds} plans simulated" if v.rounds > 1 else ""
            lines.append(f"  simulated SLO: {v.slo_attainment:.2%} of runs within {slo.latency_s:g}s "
                         f"(95% interval {lo:.2%}-{hi:.2%}): {verdict}{rounds}")
    if w.verified_dispersion:
        fed = ", ".join(f"{s} {d.simulated:.2f} (predicted {d.analytic:.2f}) over {_s(d.window_s)}"
                        for s, d in sorted(w.verified_dispersion.items()))
        lines.append(f"  arrivals' dispersion taken from the verification simulation where burstier than "
                     f"predicted: {fed}")
    return lines


def _shared_lines(w: WorkflowPlan) -> list[str]:
    sp = w.shared_pool
    if sp is None:
        return []
    pools = ", ".join(f"{p.model} on {p.device} x {p.replicas}" + (f" tp{p.tp}" if p.tp > 1 else "") for p in sp.pools)
    lines = [f"  shared-pool comparison (one pool per model, {_money(sp.cost_per_hour)}/h): {pools}"]
    if sp.latency is None:
        lines.append("    overloaded at this size: no stable operating point")
    else:
        att = f"; attainment {sp.slo_attainment:.2%}" if sp.slo_attainment is not None else ""
        lines.append(f"    p50 {_s(sp.latency.p50)}  p95 {_s(sp.latency.p95)}  p99 {_s(sp.latency.p99)}{att} "
                     f"(plan: p99 {_s(w.latency.p99)}"
                     + (f"; {w.slo_attainment:.2%}" if w.slo_attainment is not None else "") + ")")
    lines.append(f"    KV in use {sp.kv_in_use_gib:.2f} GiB of {sp.kv_gib:.0f} GiB "
                 f"(plan: {sp.isolated_kv_in_use_gib:.2f} GiB)")
    if w.slo is not None:
        need = f"{sp.replicas_for_slo} replicas" if sp.replicas_for_slo is not None else "not reachable on the inventory"
        lines.append(f"    shared pools meeting the SLO: {need} "
                     f"(plan: {sum(p.replicas for p in w.llm_pools)} replicas)")
    return lines


def render_plan(plan: Plan) -> str:
    """The Terraform-like text view: objective first, then per workflow its pools and predictions."""
    buf = io.StringIO()
    con = _console(buf)
    obj = plan.objective
    value = f"{_money(obj.value)}/h" if obj.unit == "$/h" else f"{obj.value:.1%} of the SLO latency"
    con.print(f"Objective: {obj.description}", soft_wrap=True)
    con.print(f"  value {value}; total cost {_money(plan.cost_per_hour)}/h; solver {plan.solver.status} "
              f"({plan.solver.iterations} CP-SAT solves, {plan.solver.candidates} candidate pools, "
              f"{plan.solver.samples} Monte Carlo runs, seed {plan.solver.seed})", soft_wrap=True)
    con.print(f"  devices: {_devices(plan.devices_used)} of {_devices(_inventory_devices(plan))}", soft_wrap=True)
    if plan.cpu_contention is not None:
        con.print(f"  CPU engines slow each other while both compute: planned with "
                  f"{100 * plan.cpu_contention:.0f}% of the other engines' cores busy (their measured contention)",
                  soft_wrap=True)
    for w in plan.workflows:
        con.print()
        for line in _workflow_lines(w):
            con.print(line, soft_wrap=True)
        if w.llm_pools:
            con.print(_layout_line(w), soft_wrap=True)
            con.print("  LLM pools")
            con.print(_llm_table(w))
        if w.executor_pools:
            con.print("  SQL/tool executor pools")
            con.print(_exec_table(w))
        for line in _shared_lines(w):
            con.print(line, soft_wrap=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class Change:
    action: str  # "+", "~", "-"
    workflow: str
    stage: str
    details: tuple[str, ...]


def _describe(p: LLMPool | ExecutorPool) -> str:
    if isinstance(p, LLMPool):
        return (f"{p.model} on {p.device} x {_replicas(p)}" + (f" tp{p.tp}" if p.tp > 1 else "")
                + (f", shared by {', '.join(p.stages)}" if p.shared else ""))
    return f"{p.kind} executor, {p.slots} slots"


def _changes(old: LLMPool | ExecutorPool, new: LLMPool | ExecutorPool) -> tuple[str, ...]:
    if type(old) is not type(new):
        return (f"{_describe(old)} -> {_describe(new)}",)
    fields = ("model", "device", "tp", "replicas", "prefill_replicas", "max_tokens", "hedge", "prewarm",
              "max_num_seqs", "stages") if isinstance(new, LLMPool) else ("slots",)
    return tuple(f"{f}: {getattr(old, f)} -> {getattr(new, f)}" for f in fields if getattr(old, f) != getattr(new, f))


def diff_plans(old: Plan, new: Plan) -> list[Change]:
    """Pool-level changes from ``old`` to ``new`` (sorted by workflow, stage)."""
    def pools(plan: Plan) -> dict[tuple[str, str], LLMPool | ExecutorPool]:
        return {(w.workflow, p.stage): p for w in plan.workflows for p in (*w.llm_pools, *w.executor_pools)}

    before, after = pools(old), pools(new)
    out = []
    for key in sorted(before.keys() | after.keys()):
        if key not in before:
            out.append(Change("+", *key, (_describe(after[key]),)))
        elif key not in after:
            out.append(Change("-", *key, (_describe(before[key]),)))
        else:
            details = _changes(before[key], after[key])
            if details:
                out.append(Change("~", *key, details))
    return out


def summary_line(changes: list[Change]) -> str:
    n = {a: sum(1 for c in changes if c.action == a) for a in "+~-"}
    return f"Plan: {n['+']} to add, {n['~']} to resize, {n['-']} to remove."


def render_diff(old: Plan, new: Plan) -> str:
    """The ``+ ~ -`` view of the changes, with a legend and the summary line."""
    changes = diff_plans(old, new)
    lines = ["Changes against the saved plan:", "  + add   ~ resize (change in place)   - remove", ""]
    if not changes:
        lines.append("No changes: the saved plan already matches.")
    for c in changes:
        lines.append(f"  {c.action} {c.workflow}.{c.stage}")
        for d in c.details:
            lines.append(f"      {d}")
    lines.append("")
    delta = new.cost_per_hour - old.cost_per_hour
    lines.append(f"Cost: {_money(old.cost_per_hour)}/h -> {_money(new.cost_per_hour)}/h ({'+' if delta >= 0 else '-'}"
                 f"{_money(abs(delta))}/h)")
    lines.append(summary_line(changes))
    return "\n".join(lines) + "\n"


def render_infeasible(result) -> str:
    """The text view of :class:`planner.plan.Infeasible`."""
    lines = [f"No plan: {result.message}"]
    if result.closest:
        lines.append(f"Closest feasible: {result.closest}")
    return "\n".join(lines) + "\n"
