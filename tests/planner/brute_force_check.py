"""The solver's cross-check against exhaustive search, shared by the planner's randomised tests."""

from __future__ import annotations

from planner.solver import WorkflowProblem, brute_force, objective_milli, solve


def assert_matches_brute_force(problem: WorkflowProblem, limits: dict[str, int], time_limit_s: float = 30.0) -> None:
    """CP-SAT proves the optimum that brute force finds, with a consistent plan that meets the SLO
    (or both find no plan)."""
    reference = brute_force([problem], limits)
    result = solve([problem], limits, time_limit_s=time_limit_s)
    if reference is None:
        assert result.assignments is None
        return
    assert result.assignments is not None and result.status == "optimal"
    assert problem.consistent(result.assignments[0]) and problem.feasible(result.assignments[0])
    assert objective_milli([problem], result.assignments) == objective_milli([problem], reference[1])
