"""Pass 5: is the SLO satisfiable, in principle, before any planning?

Two profile-free necessary conditions:

1. **Success probability.** A run that ends in ``fail`` misses its SLO. With
   the declared branch probabilities and loop budgets, the probability that a
   run reaches ``done`` is its reach probability in the expanded run-state
   chain of :mod:`cortexlang.semantics` (exact). If it is below the
   attainment, no plan can meet the SLO (CX501).
2. **Time floor.** Declared SQL/tool service times along the fastest run to
   ``done`` (loop iterations it cannot avoid included) (LLM stages counted as zero) must fit the latency target (CX501);
   per-stage budgets on that path should too (CX502, a warning).
"""

from __future__ import annotations

from cortexlang import ir
from cortexlang.diagnostics import DiagnosticCollector, Span
from cortexlang.semantics import Semantics, SemanticsError, join_waits_for_all

MAX_STATES = 200_000


def success_probability(wf: ir.Workflow, max_states: int = MAX_STATES) -> float | None:
    """P(a run reaches ``done``) under the declared probabilities and preferred loop budgets, or
    an upper bound within :data:`~cortexlang.semantics.CUT_TOLERANCE` of it when long loops are
    cut (a check refusing an SLO only when even the bound is below it refuses nothing more).

    The reach probability of ``done`` in the expanded chain of
    :mod:`cortexlang.semantics`, plus the cut's mass. Returns None when the chain has more than
    ``max_states`` states or cannot be expanded (the check is then skipped;
    the flow pass reports a malformed graph).
    """
    try:
        chain = Semantics(wf).expand_bounded(max_states=max_states)
    except SemanticsError:
        return None
    return chain.reach()[chain.done_index] + chain.cut


def _node_floor(sem: Semantics, node: str, use_budget: bool) -> float:
    """A lower bound on a node's time: declared service (sql/tool) or budget, LLM = 0; a fan-out
    waits for its branches' fastest runs (the slowest of them, or the fastest for ``first``)."""
    if node in ir.TERMINALS:
        return 0.0
    if sem.workflow.node_kind(node) != "fanout":
        return _stage_floor(sem.workflow.stage(node), use_budget)
    fo = sem.fanout(node)
    if min(w for w, _ in sem.width_pmf(node)) == 0:
        return 0.0  # a map over an empty list runs no branch
    floors = [_fastest(sem.branch(node, i), use_budget)[0] for i in range(len(fo.branches))]
    return max(floors) if join_waits_for_all(fo.join) else min(floors)


def _stage_floor(stage, use_budget: bool) -> float:
    if use_budget:
        return stage.budget_s or 0.0
    return 0.0 if stage.kind == "llm" else stage.service_s


def _fastest(sem: Semantics, use_budget: bool) -> tuple[float, list[str]]:
    return sem.fastest_path(lambda node: _node_floor(sem, node, use_budget))


def fastest_path_s(wf: ir.Workflow, use_budget: bool = False) -> tuple[float, list[str]]:
    """The cheapest run from the entry to ``done`` over node floors: (seconds, nodes visited).

    Searches run states (:meth:`cortexlang.semantics.Semantics.fastest_path`),
    so a path that can only reach ``done`` by spending a loop's budget pays for
    every iteration.
    """
    return _fastest(Semantics(wf), use_budget)


def check_slo(wf: ir.Workflow, slo_span: Span | None, diags: DiagnosticCollector) -> None:
    if wf.slo is None:
        return
    slo = wf.slo
    p = success_probability(wf)
    if p is not None and p + 1e-12 < slo.attainment:
        diags.error("CX501", f"the SLO asks {slo.attainment * 100:.4g}% of runs of `{wf.name}` to finish in time, "
                    f"but by the declared probabilities only {p * 100:.4g}% reach `done`", slo_span,
                    hint="raise a retry budget, lower the attainment, or revisit the branch probabilities")
    floor, path = fastest_path_s(wf)
    if floor > slo.latency_s:
        diags.error("CX501", f"the SQL and tool stages on the fastest path ({' -> '.join(path)}) are expected to "
                    f"take {floor:.3g}s, more than the {slo.latency_s:.3g}s SLO", slo_span)
    budget, bpath = fastest_path_s(wf, use_budget=True)
    if budget > slo.latency_s:
        diags.warning("CX502", f"stage budgets on the fastest path ({' -> '.join(bpath)}) add up to {budget:.3g}s, "
                      f"more than the {slo.latency_s:.3g}s SLO", slo_span)
