"""End to end on simulated engines (labelled 'simulated') and the real SQLite executor.

The NL2SQL runs use scripted model answers so the SQL is real: a broken first
statement makes the database's own error message reach the fix prompt.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from .conftest import example_spec, run_async, sim_factory, started

GOOD_SQL = "SELECT ROUND(SUM(revenue), 2) AS total_revenue FROM sales WHERE year = 2024"


def test_nl2sql_generate_execute_fix_loop_with_real_sql(sales_db: Path) -> None:
    prompts: dict[str, list[str]] = {"generate": [], "fix": []}

    def script(stage: str, prompt: str) -> str:
        prompts[stage].append(prompt)
        if stage == "generate":
            return "SELECT SUM(revenue) FROM salez WHERE year = 2024;"  # a typo: no such table
        return GOOD_SQL + ";"

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(script))
        try:
            info = await orch.run({"question": "What was our total revenue in 2024?"})
        finally:
            await orch.stop()
        assert info.status == "done" and info.error is None
        assert [(c.stage, c.outcome) for c in info.calls] == [
            ("generate", "ok"), ("execute", "error"), ("fix", "ok"), ("execute", "ok")]
        assert info.retries == 1 and info.loops == {"repair": 1}
        assert info.engines == ["simulated"] and info.simulated
        assert info.output["columns"] == ["total_revenue"] and info.output["row_count"] == 1
        assert info.output["rows"][0][0] > 0
        fix_prompt = prompts["fix"][0]
        assert "no such table: salez" in fix_prompt  # the database's message reaches the fix stage
        assert "salez" in fix_prompt and "What was our total revenue in 2024?" in fix_prompt
        assert info.slo_met is True

    run_async(body())


def test_nl2sql_retry_budget_is_spent_then_fail(sales_db: Path) -> None:
    attempts: list[str] = []

    def script(stage: str, prompt: str) -> str:
        if stage == "fix":
            attempts.append(prompt)
        return "SELECT * FROM customers WHERE segment = 'Nobody';"  # valid, always empty

    async def body() -> None:
        orch = await started(example_spec("nl2sql", sales_db), sim_factory(script))
        try:
            info = await orch.run({"question": "Which customers are nobody?"})
        finally:
            await orch.stop()
        assert info.status == "fail"
        assert info.loops == {"repair": 3} and info.retries == 3
        assert [c.outcome for c in info.calls if c.stage == "execute"] == ["empty"] * 4
        # attempt counts repairs (1-based) and the template uses it; the error builtin says why.
        assert "the query returned no rows" in attempts[0]
        assert "Earlier fixes failed" not in attempts[0] and "(2 so far)" in attempts[2]
        # identical statements hit the agentic-state cache (scope global, keyed by db version)
        assert sum(c.cached for c in info.calls if c.stage == "execute") == 3

    run_async(body())


def test_planned_runs_of_every_example_reach_a_terminal(sales_db: Path) -> None:
    async def one(name: str, n: int) -> list:
        orch = await started(example_spec(name, sales_db), sim_factory())
        try:
            return list(await asyncio.gather(*(orch.run({"question": f"q{i} discount approval"}) for i in range(n))))
        finally:
            await orch.stop()

    async def body() -> None:
        for name in ("nl2sql", "rag", "react_agent", "deep_research", "chess_sql"):
            infos = await one(name, 6)
            assert all(i.status in ("done", "fail") for i in infos), [(i.status, i.error) for i in infos]
            assert all(i.engines and "simulated" in i.engines for i in infos)

    run_async(body(), timeout_s=120)


def test_rag_fanout_joins_all_branches_and_publishes_their_results(sales_db: Path) -> None:
    def script(stage: str, prompt: str) -> str:
        if stage == "verify":
            return json.dumps({"verdict": "supported", "issues": ""})
        if stage == "rewrite":
            return "discount approval matrix"
        return "Discounts above 20% need the VP of Sales [d080]."

    async def body() -> None:
        orch = await started(example_spec("rag"), sim_factory(script))
        try:
            info = await orch.run({"question": "Who approves a 25% discount?"})
            run = orch.get(info.run_id)
        finally:
            await orch.stop()
        assert info.status == "done"
        stages = [c.stage for c in info.calls]
        assert stages[0] == "rewrite" and set(stages[1:4]) == {"dense", "sparse", "web"} and stages[-1] == "verify"
        assert {c.branch for c in info.calls if c.stage in ("dense", "sparse", "web")} == {0, 1, 2}
        retrieve = run.results["retrieve"]
        assert len(retrieve["branches"]) == 3 and "hits" in retrieve["branches"][0]["dense"]
        assert run.results["dense"]["query"] == "discount approval matrix"  # the tool read rewrite's text
        assert any(h["doc_id"] == "d080" for h in run.results["sparse"]["hits"])
        assert [c for c in info.calls if c.kind == "fanout"][0].outcome == "ok"

    run_async(body())


def test_react_field_branches_share_one_step_budget() -> None:
    def script(stage: str, prompt: str) -> str:
        if stage == "think":
            return json.dumps({"thought": "t", "action": "calculate", "input": "3 * 449"})
        return "1347"

    async def body() -> None:
        orch = await started(example_spec("react_agent"), sim_factory(script))
        try:
            info = await orch.run({"question": "What do 3 monitors cost?"})
            run = orch.get(info.run_id)
        finally:
            await orch.stop()
        counts = Counter(c.stage for c in info.calls)
        assert info.status == "done"
        # 10 iterations of "steps" (think -> calculate -> think); the 11th calculate exhausts it -> answer
        assert counts["think"] == 11 and counts["calculate"] == 11 and counts["answer"] == 1
        assert info.loops == {"steps": 10}
        assert run.results["calculate"]["value"] == 1347 or "1347" in json.dumps(run.results["calculate"])

    run_async(body())


def test_deep_research_nested_loop_resets_each_round() -> None:
    rounds = {"n": 0}

    def script(stage: str, prompt: str) -> str:
        if stage == "plan" or stage == "replan":
            return json.dumps({"queries": ["discount approval", "return policy"]})
        if stage == "critique":
            rounds["n"] += 1
            return json.dumps({"verdict": "complete" if rounds["n"] >= 2 else "incomplete", "gaps": ["returns"]})
        return "summary [d080]"

    async def body() -> None:
        spec = example_spec("deep_research")
        spec = spec.model_copy(update={"knobs": spec.knobs.model_copy(update={"fanout_width": {"research": 2}})})
        orch = await started(spec, sim_factory(script))
        try:
            info = await orch.run({"question": "How do discounts and returns work?"})
            run = orch.get(info.run_id)
        finally:
            await orch.stop()
        assert info.status == "done", info.error
        assert info.loops.get("rounds") == 1
        research = run.results["research"]
        assert len(research["branches"]) == 2 and set(research["branches"][0]) == {"search", "summarize"}
        queries = {b["search"]["query"] for b in research["branches"]}
        assert queries == {"discount approval", "return policy"}  # each branch searched its own sub-question
        summaries = [c for c in info.calls if c.stage == "summarize"]
        assert len(summaries) == 4 and {c.branch for c in summaries} == {0, 1}

    run_async(body(), timeout_s=90)


def test_chess_candidates_repair_in_their_own_loops_and_one_tester_runs_per_candidate(sales_db: Path) -> None:
    """CHESS-style: three linked schemas, three candidates of which the second needs one repair of its
    own, one unit test per candidate (the map shares the candidates' width), then a selection."""
    good = GOOD_SQL + ";"

    def script(stage: str, prompt: str) -> str:
        if stage == "link":
            return json.dumps({"tables": ["sales", "regions"]})
        if stage == "keywords":
            return json.dumps({"keywords": ["2024"]})
        if stage == "draft":
            return "SELECT nonsense FROM nowhere;" if "candidate 2" in prompt else good
        if stage == "revise":
            return good
        return json.dumps({"winner": 0})

    async def body() -> None:
        orch = await started(example_spec("chess_sql", sales_db), sim_factory(script))
        try:
            info = await orch.run({"question": "What was our total revenue in 2024?"})
        finally:
            await orch.stop()
        assert info.status == "done", info.error
        stages = [c.stage for c in info.calls]
        assert stages.count("link") == 3 and stages.count("draft") == 3 and stages.count("select") == 1
        # Only candidate 2 (branch 1) repaired, inside its own branch.
        assert [(c.stage, c.branch) for c in info.calls if c.stage == "revise"] == [("revise", 1)]
        assert sorted(c.branch for c in info.calls if c.stage == "run") == [0, 1, 1, 2]
        # One tester per candidate, each given its candidate through `args`.
        assert sorted(c.branch for c in info.calls if c.stage == "unit_test") == [0, 1, 2]

    run_async(body(), timeout_s=120)
