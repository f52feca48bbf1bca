"""The orchestrator's view of a workflow's call graph: the IR's run rules plus estimates.

:class:`ExecGraph` answers, for the run walker:

* the run rules under the deployed knobs (retry depths, fan-out widths):
  :attr:`ExecGraph.semantics`, the one definition in :mod:`cortexlang.semantics`
  shared with the compiler, the planner and the simulator (which edge an
  outcome selects, taking loop edges, exhaustion, nested resets, fan-out
  branches and joins);
* which loop a node belongs to, for the ``attempt`` builtin
  (:meth:`cortexlang.semantics.Semantics.innermost_loops`);
* estimates for the policies: each node's expected standalone time and the
  expected remaining critical path from it, from
  :class:`runtime.simulator.graph.WorkflowGraph` (the same estimator the
  simulator uses, so policies see the same numbers in both executors).
"""

from __future__ import annotations

from collections.abc import Mapping

from cortexlang.ir import FanOut, LLMStage, Program, Workflow
from cortexlang.semantics import Semantics, field_text
from planner.profiles import LatencyProfile, all_profiles
from runtime.simulator.graph import KnobChoices, WorkflowGraph

__all__ = ["ExecGraph", "field_text"]


class ExecGraph:
    """Lookups for one workflow version (see module docstring)."""

    def __init__(self, program: Program, workflow: Workflow, profiles: Mapping[str, LatencyProfile],
                 knobs: KnobChoices | None = None) -> None:
        self.workflow = workflow
        self.stages = {s.name: s for s in workflow.stages}
        self.fanouts: dict[str, FanOut] = {f.name: f for f in workflow.fanouts}
        self.loops = {lp.name: lp for lp in workflow.loops}
        self._estimates = WorkflowGraph(program, workflow, _complete_profiles(program, workflow, profiles), knobs)
        self.semantics: Semantics = self._estimates.semantics
        self.innermost_loop = self.semantics.innermost_loops()

    # ------------------------------------------------------------------ estimates
    def expected_s(self, node: str) -> float:
        """Expected standalone time of a stage or fan-out."""
        if node in self._estimates.node_time:
            return self._estimates.node_time[node]
        return self._estimates.stage_time.get(node, 0.0)

    def remaining_s(self, node: str) -> float:
        """Expected standalone time from ``node`` (inclusive) to the end of the run."""
        return self._estimates.remaining.get(node, self.expected_s(node))

    def remaining_std_s(self, node: str) -> float:
        return self._estimates.remaining_std.get(node, 0.0)


def _complete_profiles(program: Program, workflow: Workflow,
                       profiles: Mapping[str, LatencyProfile]) -> dict[str, LatencyProfile]:
    """``profiles`` plus a stand-in for every model a stage prefers that has none.

    The stand-in is the model's declared profile family on any device, else
    the first shipped profile: estimates only rank calls, they promise nothing.
    """
    out = dict(profiles)
    for s in workflow.stages:
        if isinstance(s, LLMStage):
            for option in s.models:  # a knob may run any declared option
                model = option.model
                if model in out:
                    continue
                family = program.model(model).profile
                candidates = [p for p in all_profiles() if p.model == family] or list(all_profiles())
                out[model] = candidates[0]
    return out
