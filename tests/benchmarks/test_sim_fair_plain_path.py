"""The ``path probabilities`` ablation of benchmarks/sim_ablation.py: a remaining path that is a plain
sum of stage times (which stages can still run, each once) instead of the probability-weighted one."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sim_ablation import PlainPathCortex, plain_rest, variants
from cortexlang.compiler import compile_file
from runtime.policies.base import CallView
from runtime.simulator.workloads import nl2sql

REPO = Path(__file__).resolve().parents[2]


def _powers(names) -> dict[str, float]:
    """Distinct powers of two: a sum of them names exactly the set of stages summed."""
    return {n: float(2 ** i) for i, n in enumerate(sorted(names))}


def test_plain_rest_sums_each_reachable_stage_once_on_nl2sql() -> None:
    wf = nl2sql()
    t = _powers(s.name for s in wf.stages)
    rest = plain_rest(wf, t)
    assert rest["answer"] == 0.0  # the last stage: nothing follows
    # fix -> execute -> (fix | answer): the repair loop counts once, whatever its probability and budget.
    assert rest["fix"] == t["execute"] + t["answer"]
    assert rest["execute"] == t["fix"] + t["answer"]
    assert rest["schema_link"] == sum(t.values()) - t["schema_link"]


def test_plain_rest_adds_fanout_branches_and_what_follows_them_on_chess() -> None:
    wf = compile_file(REPO / "examples" / "chess_sql.cortex").program.workflow()
    t = _powers(s.name for s in wf.stages)
    rest = plain_rest(wf, t)
    cand = next(f for f in wf.fanouts if f.name == "candidates")
    after_cand = rest["candidates"]
    # A stage inside a branch: the rest of its branch, then everything after the fan-out.
    assert rest["revise"] == t["run"] + after_cand
    assert rest["draft"] == t["run"] + t["revise"] + after_cand
    # The fan-out counts each of its stages once (branches added, not joined), repeat = 3 counts once.
    assert rest["link"] == t["unite"] + t["keywords"] + sum(t[s] for s in cand.stages) + after_cand
    assert rest["select"] == 0.0


def test_plain_path_cortex_replaces_only_the_remaining_path() -> None:
    call = CallView(run_id=1, workflow="w", stage="s", kind="llm", model="m", run_arrival_s=0.0, now_s=10.0,
                    deadline_s=20.0, stage_expected_s=1.0, remaining_critical_path_s=4.0, remaining_std_s=0.5,
                    attained_service_s=0.0, critical_path_service_s=0.0, prefix_key=None, input_tokens=500,
                    output_tokens=50, enqueued_s=9.0)
    pol = PlainPathCortex(rest={"s": 2.5})
    assert pol.priority(call) == (0.0, 20.0 - 3.5, 9.0)  # deadline - (own 1.0 + plain rest 2.5)
    assert call.remaining_critical_path_s == 4.0  # the simulator's view is not mutated
    assert PlainPathCortex().priority(call) == (0.0, 19.0, 9.0)  # unknown stage: only itself
    assert "path probabilities" in variants({"s": 2.5}) and "path probabilities" not in variants()
