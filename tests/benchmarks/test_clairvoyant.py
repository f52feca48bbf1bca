"""The benchmark-only clairvoyant remaining path (benchmarks/clairvoyant.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks.clairvoyant import ClairvoyantSimulator, realised_remaining
from benchmarks.sim_common import plan_layouts, setup, simulate
from runtime import accel
from runtime.policies.base import CallView, PriorityKey
from runtime.policies.cortex import Cortex
from runtime.simulator.distributions import run_rng
from runtime.simulator.runs import IRRun
from runtime.simulator.sim import SimConfig, Simulator, Stream


def _graph(workload: str):
    s = setup(workload, "mixed12" if workload in ("nl2sql", "react", "fanout") else "inventory")
    sim = Simulator(s.program, plan_layouts(s, 1.0)[1], Cortex(),
                    [Stream(s.workflow.name, 1.0)], SimConfig(runs=1))
    return s, sim.graphs[s.workflow.name]


@pytest.mark.parametrize("workload", ["nl2sql", "react", "fanout", "chess_sql"])
def test_first_call_carries_the_whole_standalone_and_later_calls_less(workload: str) -> None:
    _, g = _graph(workload)
    for i in range(40):
        run = IRRun(g, i, 0.0, run_rng(1000 + i))
        rem = realised_remaining(run)
        first = run.first_calls()
        assert rem, "every scripted call gets a value"
        # A run whose first node is a stage: its remaining is the run's whole standalone latency.
        if len(first[0].key) == 2:
            assert math.isclose(rem[first[0].key], run.standalone_s, rel_tol=1e-9)
        else:  # a branch of an entry fan-out: the slowest branch's first call carries it
            assert math.isclose(max(rem[c.key] for c in first), run.standalone_s, rel_tol=1e-9)
        draws = dict(run.call_draws())
        for key, r in rem.items():
            # Each call's remaining includes its own standalone time and never exceeds the run's.
            assert draws[key][3] - 1e-9 <= r <= run.standalone_s + 1e-9
        # Along the run's own walk (keys of two items), later visits have less left.
        top = sorted(((k, r) for k, r in rem.items() if len(k) == 2), key=lambda kr: -kr[1])
        assert all(a[1] >= b[1] for a, b in zip(top, top[1:]))


@dataclass
class _Spy(Cortex):
    """Cortex that records the remaining path of every call it keys."""

    seen: list = field(default_factory=list)

    def priority(self, call: CallView) -> PriorityKey:
        self.seen.append((call.run_id, call.stage, call.remaining_critical_path_s, call.remaining_std_s))
        return super().priority(call)


def test_clairvoyant_views_carry_the_realised_remaining_and_nothing_else_changes() -> None:
    s, g = _graph("nl2sql")
    lay = plan_layouts(s, 0.5 * s.capacity)[1]
    runs = 60
    online, oracle = _Spy(), _Spy()
    cfg = SimConfig(runs=runs, seed=5, slo_scale=2.0)
    Simulator(s.program, lay, online, [Stream("nl2sql", 0.5 * s.capacity)], cfg).run()
    ClairvoyantSimulator(s.program, lay, oracle, [Stream("nl2sql", 0.5 * s.capacity)], cfg).run()
    assert {r for r, *_ in oracle.seen} == set(range(runs))
    assert all(std == 0.0 for *_, std in oracle.seen)
    # The online estimate is one value per stage; the realised one varies with the run.
    by_stage = {}
    for _, stage, rem, _ in online.seen:
        by_stage.setdefault(stage, set()).add(rem)
    assert all(len(v) == 1 for v in by_stage.values())
    assert len({rem for _, st, rem, _ in oracle.seen if st == "schema_link"}) > runs // 2
    # A policy that reads no remaining path decides the same under both simulators.
    a = simulate(s, "fcfs", 0.5, None, runs, 5)
    b = simulate(s, "fcfs", 0.5, None, runs, 5, clairvoyant=True)
    assert a.end.tolist() == b.end.tolist()


_DIGEST = """
import hashlib
from benchmarks.sim_common import setup, simulate
s = setup("chess_sql", "inventory")
r = simulate(s, "cortex", 0.7, 2.0, 150, 1, clairvoyant=True)
print(hashlib.sha256(repr((r.end.tolist(), r.status.tolist())).encode()).hexdigest())
"""


def test_the_oracle_runs_the_same_in_the_compiled_and_the_pure_build() -> None:
    # The override of the (cpdef, when compiled) call_view must reach every view either way.
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    got = [subprocess.run([sys.executable, "-c", _DIGEST], env=e, cwd=repo, capture_output=True, text=True,
                          timeout=300) for e in (env, {**env, accel.DISABLE_ENV: "0"})]
    assert all(g.returncode == 0 for g in got), [g.stderr[-2000:] for g in got]
    assert got[0].stdout.split()[-1] == got[1].stdout.split()[-1]
