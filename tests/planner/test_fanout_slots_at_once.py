"""A fan-out's branch slots are evaluated at once (planner.latency: FanoutVisits.all_slots,
disjoint_union): bit-identical to evaluating them one by one, at a number of numpy calls that does
not grow with the slots. fuzz_plan's edge family (seed 1, input 186: deep_research at width 128)
took ~30 s to plan and simulate when every slot was its own 45 us of calls."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from cortexlang.cli import compiler_app, runtime_app
from cortexlang.ir import Workflow
from cortexlang.semantics import join_waits_for_all
from planner.candidates import U_GRID, FanoutSplit
from planner.latency import GraphSample, PathSample, disjoint_union, sample_paths
from planner.visits import build_chain
from tests.cortexlang.helpers import llm, workflow
from tests.conftest import EXAMPLES
from tests.planner.plan_fuzzing import Harness

BRANCH_STAGES = ("draft", "check", "revise", "test")
"""The stages inside the map below (its sub-flow and the fan-out nested in it)."""


def _workflow(widths: str = "2 @ 30% | 5 @ 70%", listed_join: str = "first") -> Workflow:
    """A map with a retry loop and a nested fan-out in its sub-flow, then a listed fan-out."""
    stages = (llm("plan", "output = json") + llm("draft") + llm("revise") + llm("pick")
              + "".join(f'tool {t} {{ entry = "t:{t}"  service = 10ms }}\n' for t in ("check", "test", "a", "b", "c")))
    fanouts = f"""fanout inner {{ width = 2  flow {{ test -> done }} }}
fanout candidates {{
  over   = plan.ideas
  widths = {widths}
  join   = all
  flow {{
    draft -> inner -> check
    on check {{ ok -> done  error (30%) -> revise }}
    revise -> check loop fixes max 2 then fail
  }}
}}
fanout pickers {{ branches = [a, b, c]  join = {listed_join} }}
"""
    result = workflow(stages + fanouts + "flow { plan -> candidates -> pickers -> pick -> done }")
    assert result.program is not None, [str(d) for d in result.diagnostics]
    return result.program.workflows[0]


def _paths(wf: Workflow, n: int = 400) -> PathSample:
    return sample_paths(build_chain(wf), n=n, seed=3)


def _tables(wf: Workflow, seed: int) -> tuple[dict[str, np.ndarray], dict[str, FanoutSplit]]:
    """Random non-decreasing quantile tables for every stage, and a shared-wait split for the
    map's stages (``own`` shorter than the widest width: the later slots take its last entry)."""
    rng = np.random.default_rng(seed)

    def table() -> np.ndarray:
        return np.sort(rng.exponential(size=len(U_GRID)))

    tables = {s.name: table() for s in wf.stages}
    splits = {s: FanoutSplit(wait=table(), own=(0.0, 0.25, 0.5), service=table()) for s in BRANCH_STAGES}
    return tables, splits


def _slot_by_slot(g: GraphSample, tables: Mapping[str, np.ndarray], splits: Mapping[str, FanoutSplit]) -> np.ndarray:
    """The reference: each fan-out's slots evaluated one branch sample at a time, recursively (the
    slowest active branch, or the fastest for ``first``), summed over the nodes in ``g``'s order."""
    total = np.zeros(g.n)
    for node in g.nodes:
        if node in g.stage_visits:
            total += g.node_latency(node, tables, splits)
            continue
        fan = g.fanouts[node]
        if len(fan.runs) == 0:
            continue
        per_slot = np.stack([_slot_by_slot(b, tables, splits) for b in fan.branches])
        if join_waits_for_all(fan.join):
            per_visit = np.where(fan.active, per_slot, 0.0).max(axis=0)
        else:
            fastest = np.where(fan.active, per_slot, np.inf).min(axis=0)
            per_visit = np.where(np.isfinite(fastest), fastest, 0.0)
        total += np.bincount(fan.runs, weights=per_visit, minlength=g.n)
    return total


@pytest.mark.parametrize("listed_join", ["first", "all"])
@pytest.mark.parametrize("seed", [0, 1])
def test_all_slots_at_once_is_bit_identical_to_slot_by_slot(listed_join: str, seed: int) -> None:
    wf = _workflow(listed_join=listed_join)
    paths = _paths(wf)
    tables, splits = _tables(wf, seed)
    candidates = paths.fanouts["candidates"]
    assert len(candidates.branches) == 5 and not candidates.active.all()  # a map of varying width
    assert any(np.any(b.stage_visits["check"].runs[1:] == b.stage_visits["check"].runs[:-1])
               for b in candidates.branches)  # retries: later visits take the marginal table
    for with_splits in (splits, {}):
        np.testing.assert_array_equal(paths.latency(tables, with_splits), _slot_by_slot(paths, tables, with_splits))
        for fan in paths.fanouts.values():
            rows = fan.all_slots.latency(tables, with_splits).reshape(len(fan.branches), fan.runs.size)
            for b, branch in enumerate(fan.branches):
                np.testing.assert_array_equal(rows[b], _slot_by_slot(branch, tables, with_splits))


def test_the_disjoint_union_keeps_each_sample_in_its_block() -> None:
    wf = _workflow()
    tables, splits = _tables(wf, 2)
    branches = _paths(wf).fanouts["candidates"].branches
    samples = [branches[3], branches[0], branches[3]]  # any order, repeats allowed
    union = disjoint_union(samples)
    latency = union.latency(tables, splits)
    assert union.n == sum(g.n for g in samples) == latency.size
    start = 0
    for g in samples:
        np.testing.assert_array_equal(latency[start: start + g.n], g.latency(tables, splits))
        np.testing.assert_array_equal(union.done[start: start + g.n], g.done)
        start += g.n


def test_the_numpy_calls_per_evaluation_do_not_grow_with_the_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    inner = GraphSample.node_latency

    def counted(self: GraphSample, *args: object, **kwargs: object) -> np.ndarray:
        calls["n"] += 1
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(GraphSample, "node_latency", counted)
    per_width = {}
    for width in (2, 16):
        wf = _workflow(widths=f"{width}")
        paths = _paths(wf, n=200)
        assert len(paths.fanouts["candidates"].branches) == width
        tables, splits = _tables(wf, 0)
        calls["n"] = 0
        paths.latency(tables, splits)
        per_width[width] = calls["n"]
    assert per_width[2] == per_width[16]


def test_fuzz_edge_input_186_a_width_128_fan_out_plans_and_simulates(tmp_path: Path) -> None:
    """What fuzz_plan --family edges --seed 1 sent as input 186 (before the output-length law's mutations
    renumbered the stream): deep_research with ``width = 128 | 1 @ 99.9999%`` (``cortex simulate`` plans in
    headroom mode first), its SLO attainment 99.9999%, simulated under hexgen-text2sql. No timing assertion:
    the fuzz run checks that."""
    data = (EXAMPLES / "deep_research.cortex").read_bytes()
    for old, new in ((b"width = 4 | 2 @ 90%", b"width = 128 | 1 @ 99.9999%"),
                     (b"slo { latency = 60s  attainment = 95% }", b"slo { latency = 60s  attainment = 99.9999% }")):
        assert data.count(old) == 1
        data = data.replace(old, new)
    policy = "hexgen-text2sql"
    harness = Harness(tmp_path)  # the examples' prompts, schemas and tools beside the input
    harness.path.write_bytes(data)
    plan = harness.runner.invoke(compiler_app, ["plan", str(harness.path), "--no-verify"])
    assert plan.exit_code == 0 and "Traceback" not in plan.output, plan.output
    assert "1000 Monte Carlo runs" in plan.output, plan.output  # the bounded sample (planner.latency.sampled_runs)
    simulated = harness.runner.invoke(runtime_app, ["simulate", str(harness.path), "--runs", "40", "--policy", policy])
    assert simulated.exit_code == 0 and "Traceback" not in simulated.output, simulated.output
