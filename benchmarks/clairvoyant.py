"""BENCHMARK-ONLY oracle: a simulator whose call views carry each run's *realised* remaining path.

Never used by the product (nothing under ``runtime/`` imports it; off unless a benchmark asks for
it). It answers one question: what could a better remaining-critical-path estimate earn a
deadline-aware policy? The simulator scripts every run up front (the dry walk at arrival draws
every call's sizes and every edge: :meth:`runtime.simulator.runs.IRRun.call_draws`), so the
remaining standalone time of a call's run, *as it will actually unfold*, is known in advance. An
online policy sees only the stage's probability-weighted expectation
(``WorkflowGraph.remaining``, the same for every visit of a stage); :class:`ClairvoyantSimulator`
replaces it in every :class:`~runtime.policies.base.CallView` by the realised value, with its
standard deviation set to 0 (nothing is uncertain any more). Everything else -- the runs, their
scripts, deadlines, engines -- is untouched, so the difference between the two is the value of
perfect information about the rest of the run.

Realised remaining of a call (:func:`realised_remaining`), from the run's script walked by the same
rules as the simulator's dry walk (standalone times, idle warm cluster, fastest device): the rest
of the call's own walk from the call's start (inclusive), plus, for a call inside a fan-out branch,
what follows the fan-out's join on the enclosing walk (recursively) -- the definition the online
estimate uses (``WorkflowGraph._branch_remaining``), with realised instead of expected times. A
call the script did not foresee (the walk left the scripted path because a policy pruned a retry)
keeps the online estimate.
"""

from __future__ import annotations

from cortexlang.semantics import Semantics, join_waits_for_all
from runtime.policies.base import CallView
from runtime.simulator.calls import Call
from runtime.simulator.runs import IRRun, fanout_width
from runtime.simulator.sim import Simulator

_ENDS = ("done", "fail")


def realised_remaining(run: IRRun) -> dict[tuple, float]:
    """Visit key -> realised remaining standalone seconds from that call's start to the run's end,
    for every call of ``run``'s scripted path (module docstring). The run's first call maps to its
    ``standalone_s`` (up to rounding)."""
    _, _, rem = _walk(run, run.sem, (), run.g.start_counters, run.g.workflow.entry, {})
    return rem


def _walk(run: IRRun, sem: Semantics, prefix: tuple, counters: tuple, entry: str,
          widths: dict[str, int]) -> tuple[float, bool, dict[tuple, float]]:
    """One walk of the script (the run's own, or one branch run): ``(its standalone seconds, whether
    it reached done, key -> remaining seconds to the end of this walk)``. Same draws, same rules as
    ``IRRun._dry_walk`` / ``_dry_branch``: a stage's time and edge draw from its script entry, a
    fan-out's edge and width draws from ``key + ("edge",)`` / ``key + ("width",)``."""
    script, fanouts = run.script, run.g.fanouts
    t, node, visits = 0.0, entry, {}
    starts: list[tuple[tuple, float]] = []  # (call key, start offset on this walk)
    nested: list[tuple[dict[tuple, float], float]] = []  # (a fan-out's calls' remaining to its join, join offset)
    for _ in range(100_000):
        if node in _ENDS:
            break
        v = visits.get(node, 0)
        visits[node] = v + 1
        key = prefix + (node, v)
        if node in fanouts:
            span, inner = _fan(run, sem, node, key, widths)
            t += span
            nested.append((inner, t))
            u = script[key + ("edge",)][-1]
        else:
            starts.append((key, t))
            entry_draws = script[key]
            t += entry_draws[3]
            u = entry_draws[2]
        step = sem.take(counters, sem.draw_edge(node, u))
        node, counters = step.target, step.counters
    else:
        raise RuntimeError(f"workflow {run.workflow!r}: scripted walk did not terminate")
    rem = {key: t - start for key, start in starts}
    for inner, join in nested:
        for key, r in inner.items():
            rem[key] = r + (t - join)
    return t, node == "done", rem


def _fan(run: IRRun, sem: Semantics, node: str, key: tuple,
         widths: dict[str, int]) -> tuple[float, dict[tuple, float]]:
    """A fan-out visit: its standalone seconds (the slowest branch, or for ``first`` the fastest
    that reaches done) and its calls' remaining seconds to its join (each branch's own rest)."""
    width = fanout_width(sem, node, run.g.fanouts, widths, lambda: run.script[key + ("width",)][-1])
    rem: dict[tuple, float] = {}
    spans: list[tuple[float, bool]] = []
    for b in range(width):
        bsem = sem.branch(node, sem.branch_index(node, b))
        span, ok, inner = _walk(run, bsem, key + (b,), bsem.initial_counters(), bsem.graph.entry, widths)
        spans.append((span, ok))
        rem.update(inner)
    if not spans:
        return 0.0, rem
    if not join_waits_for_all(sem.fanout(node).join):
        ok = [s for s, reached in spans if reached]
        if ok:
            return min(ok), rem
    return max(s for s, _ in spans), rem


class ClairvoyantSimulator(Simulator):
    """BENCHMARK-ONLY: :class:`Simulator` whose call views carry the realised remaining path
    (module docstring). ``call_view`` is overridden (a cpdef method in the compiled build, so the
    simulator's own calls reach this override too)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._realised: dict[int, dict[tuple, float]] = {}
        """Run id -> :func:`realised_remaining` of that run (walked once, at its first view)."""

    def call_view(self, call: Call) -> CallView:
        v = Simulator.call_view(self, call)
        run = call.run
        if not isinstance(run, IRRun):  # a trace run has no script: the online estimate stays
            return v
        rem = self._realised.get(run.run_id)
        if rem is None:
            rem = self._realised[run.run_id] = realised_remaining(run)
        got = rem.get(call.key)
        if got is not None:
            v.remaining_critical_path_s = got
            v.remaining_std_s = 0.0
        return v
