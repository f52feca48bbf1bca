"""The text views: the plan view's sections and the +/~/- diff with its summary line."""

from __future__ import annotations

from planner.api import plan_program
from planner.render import diff_plans, render_diff, render_plan, summary_line
from planner.synthetic import nl2sql_program, research_program


def test_plan_view_shows_objective_pools_latency_and_shared_pool() -> None:
    text = render_plan(plan_program(nl2sql_program(rate=60.0, slo_s=2.5)))
    lines = text.splitlines()
    assert lines[0] == "Objective: minimise cost per hour subject to every SLO"
    for needle in ("Workflow nl2sql: 60 runs/s, SLO p99 <= 2.5s", "LLM pools", "SQL/tool executor pools",
                   "end-to-end: p50", "of runs within 2.5s (target 99.00%): meets", "shared-pool comparison",
                   "KV in use"):
        assert needle in text, needle


def test_diff_counts_adds_resizes_and_removes() -> None:
    old = plan_program(nl2sql_program(rate=20.0, slo_s=3.0))
    new = plan_program(nl2sql_program(rate=200.0, slo_s=3.0))
    changes = diff_plans(old, new)
    assert changes and all(c.action == "~" for c in changes)
    text = render_diff(old, new)
    assert "+ add   ~ resize (change in place)   - remove" in text
    assert text.rstrip().endswith(summary_line(changes))
    assert summary_line(changes) == f"Plan: 0 to add, {len(changes)} to resize, 0 to remove."
    other = plan_program(research_program())
    mixed = diff_plans(old, other)
    assert {c.action for c in mixed} == {"+", "-"}
    n_add = sum(c.action == "+" for c in mixed)
    assert render_diff(old, other).rstrip().endswith(f"Plan: {n_add} to add, 0 to resize, {len(mixed) - n_add} to remove.")
    assert diff_plans(old, old) == [] and "No changes" in render_diff(old, old)
