"""Wide fan-outs: the planner's Monte Carlo work is bounded (planner.latency: sampled_runs,
MAX_BRANCH_COPIES). fuzz_plan seed 6 found `width = 99` taking 150 s to plan in headroom mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexlang.compiler import compile_file
from planner.api import plan_program
from planner.latency import (BRANCH_VISIT_BUDGET, DEFAULT_SAMPLES, MAX_BRANCH_COPIES, MIN_SAMPLES, branch_copies,
                             sampled_runs, widest_branch_copies)
from planner.plan import Infeasible, Plan
from tests.conftest import EXAMPLES, deep_research_with_width




def test_every_example_samples_the_full_monte_carlo() -> None:
    for path in sorted(EXAMPLES.glob("*.cortex")):
        program = compile_file(path).program
        for wf in program.workflows:
            assert widest_branch_copies(wf) * DEFAULT_SAMPLES <= BRANCH_VISIT_BUDGET, (path.name, wf.name)
            assert sampled_runs(wf, DEFAULT_SAMPLES) == DEFAULT_SAMPLES


@pytest.mark.parametrize("width, copies, runs", [(10, 10, DEFAULT_SAMPLES), (25, 25, 4000), (99, 99, 1010), (128, 128, 1000)])
def test_a_wide_fanout_samples_fewer_runs_and_the_plan_says_how_many(tmp_path: Path, width: int, copies: int,
                                                                      runs: int) -> None:
    wf = deep_research_with_width(tmp_path, str(width)).workflows[0]
    assert branch_copies(wf) == copies and sampled_runs(wf, DEFAULT_SAMPLES) == runs
    assert runs == DEFAULT_SAMPLES or runs == max(MIN_SAMPLES, BRANCH_VISIT_BUDGET // copies)
    if width == 99:
        plan = plan_program(deep_research_with_width(tmp_path / "again", "99"))
        assert isinstance(plan, Plan) and plan.solver.samples == 1010


def test_more_branch_copies_than_the_planner_samples_is_refused_in_one_line(tmp_path: Path) -> None:
    program = deep_research_with_width(tmp_path, f"8 | {MAX_BRANCH_COPIES + 1} @ 95%")  # the widest option counts
    result = plan_program(program)
    assert isinstance(result, Infeasible) and result.binding == "input"
    assert f"up to {MAX_BRANCH_COPIES + 1} fan-out branch copies per run" in result.message
    assert "narrow the fan-outs' `width`" in result.message
