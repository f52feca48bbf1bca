"""A prewarmed replica starts with its stages' shared prefixes resident: the first calls prefill only the rest."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cortexlang.ir import SLO, Load, Program, Workflow
from planner.synthetic import LLAMA_8B, edge, gpu_inventory, llm
from runtime.policies.registry import make_policy
from runtime.simulator.cluster import ReplicaSpec
from runtime.simulator.sim import SimConfig, Simulator, Stream


def _first_calls(prewarm: frozenset[str]) -> np.ndarray:
    wf = Workflow(name="w", stages=(llm("a", input_tokens=3000, output_tokens=2, max_tokens=4, prefix_tokens=2800),),
                  entry="a", edges=(edge("a", "done"),), slo=SLO(latency_s=60.0, attainment=0.9),
                  load=Load(rate_per_s=0.05))
    program = Program(models=(LLAMA_8B,), workflows=(wf,), inventory=gpu_inventory(a100=1))
    rep = ReplicaSpec(name="a-0", kind="llm", device="A100", model="llama8b", stages=frozenset({"a"}))
    res = Simulator(program, (replace(rep, prewarm=prewarm),), make_policy("fcfs"), [Stream("w", 0.05)],
                    SimConfig(runs=3, seed=0, warmup_fraction=0.0, record_calls=True)).run()
    return np.array([c[7] - c[6] for c in res.calls])  # service time of each call, in order


def test_the_first_call_of_a_prewarmed_replica_prefills_only_what_follows_the_prefix() -> None:
    cold, warm = _first_calls(frozenset()), _first_calls(frozenset({"a"}))
    assert warm[0] < 0.5 * cold[0]  # 200 of 3,000 tokens to prefill instead of all of them
    assert np.allclose(cold[1:], warm[1:])  # after the first call the cold replica holds the prefix too
