"""CPU engines that share a machine slow each other while both compute (runtime/simulator/engine.py).

The model is fluid: an engine's iterations progress at ``1 / contention_factor`` of the other
engines busy *now* (:meth:`planner.profiles.LatencyProfile.contention_factor`). So over an overlap
of ``L`` seconds in which both engines compute, a decoding engine does ``L / (1 + c_d)`` seconds of
its work and a prefilling one ``L / (1 + c_p)``; outside the overlap each runs at its own pace. The
tests drive two engines directly on a minimal event loop and check those sums against the same
scenario without contention.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.profiles import get_profile
from runtime.engines.shared_cores import SharedCores
from runtime.simulator.engine import LLMEngine
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.cluster import ReplicaSpec
from runtime.policies.fcfs import FCFS
from cortexlang.ir import ModelSpec, Program, Workflow
from runtime.simulator.workloads import edge, llm
from tests.runtime.simulator.test_chunked_prefill import Loop, _call

CPU = get_profile("smollm2-135m", "CPU", 1)


def _pair(profile, shared: bool) -> tuple[Loop, LLMEngine, LLMEngine]:
    loop = Loop()
    spec = ReplicaSpec(name="a", kind="llm", device="CPU", model="m", slots=8)
    a = LLMEngine(loop, spec, profile, 1000, 50_000)
    b = LLMEngine(loop, replace(spec, name="b"), profile, 1000, 50_000)
    if shared:
        cores = SharedCores()
        a.share_cores(cores)
        b.share_cores(cores)
    return loop, a, b


def _scenario(profile, shared: bool, b_at: float = 0.5) -> tuple[float, float]:
    """A decodes 200 tokens from t=0; B prefills 1000 tokens from ``b_at``; their finish times."""
    loop, a, b = _pair(profile, shared)
    a.enqueue(_call("a", 1, 10, 200), (0,))
    loop.run(b_at)
    loop.now = b_at
    b.enqueue(_call("b", 2, 1000, 1), (0,))
    loop.run()
    return loop.finished["a"], loop.finished["b"]


@pytest.mark.parametrize("kp,kd", [(1.0, 0.5), (0.3, 0.0), (0.0, 0.8)])
def test_two_busy_engines_share_the_machine_fluidly(kp: float, kd: float) -> None:
    contending = replace(CPU, contention_prefill=kp, contention_decode=kd)
    alone_a, alone_b = _scenario(contending, shared=False)
    a_end, b_end = _scenario(contending, shared=True)
    work_b = alone_b - 0.5
    # B computes entirely while A decodes: its prefill takes (1 + kp) times as long (a one-token call
    # ends with its prefill iteration: work_b is that prefill).
    assert alone_a > b_end  # the overlap is all of B's time
    overlap = b_end - 0.5
    assert work_b == pytest.approx(CPU.prefill_s(1000), rel=1e-12)
    assert overlap == pytest.approx(work_b * (1 + kp), rel=1e-9)
    # A loses what it did not do during the overlap.
    assert a_end == pytest.approx(alone_a + overlap * kd / (1 + kd), rel=1e-9)


def test_without_a_shared_machine_or_contention_nothing_changes() -> None:
    none = replace(CPU, contention_prefill=0.0, contention_decode=0.0)
    assert _scenario(none, shared=True) == _scenario(none, shared=False) == _scenario(CPU, shared=False)


def test_simultaneous_prefills_both_take_twice_as_long_at_contention_one() -> None:
    loop, a, b = _pair(replace(CPU, contention_prefill=1.0), shared=True)
    a.enqueue(_call("a", 1, 800, 1), (0,))
    b.enqueue(_call("b", 2, 800, 1), (0,))
    loop.run()
    # One token each: the call ends with its prefill iteration. The second to start sees the first busy
    # and runs at half pace; the first is rescaled when the second starts: both end at twice alone.
    assert loop.finished["a"] == pytest.approx(2 * CPU.prefill_s(800), rel=1e-9)
    assert loop.finished["b"] == pytest.approx(loop.finished["a"], rel=1e-12)


def _simulated_mean_latency(tmp_path, contention: dict | None) -> tuple[bool, float]:
    """Two CPU engines serving one stage; with ``contention``, the profile lookups return a calibrated
    SmolLM2 profile that carries it. Whether the engines share a machine, and the mean run latency."""
    import json

    from planner.profiles import PROFILE_DIR, clear_cache, use_calibrated

    data = json.loads((PROFILE_DIR / "smollm2-135m__cpu__tp1.json").read_text())
    if contention is not None:
        data["cpu_contention"] = contention
    (tmp_path / "smollm2-135m__cpu__tp1.json").write_text(json.dumps(data))
    model = ModelSpec(name="m", weights="SmolLM2-135M-Instruct", params=1.35e8, max_context=8192,
                      kv_bytes_per_token=30_720, profile="smollm2-135m")
    wf = Workflow(name="w", stages=(llm("g", 400, 30, model="m"),), entry="g", edges=(edge("g", "done"),))
    layout = [ReplicaSpec(name=f"e{i}", kind="llm", device="CPU", model="m", slots=4) for i in range(2)]
    use_calibrated(tmp_path)
    clear_cache()
    try:
        sim = Simulator(Program(models=(model,), workflows=(wf,)), layout, FCFS(), [Stream("w", 1.0)],
                        SimConfig(seed=1, runs=400))
        shared = all(e.cores is not None for e in sim.engines)
        result = sim.run()
    finally:
        use_calibrated()
        clear_cache()
    return shared, float((result.end - result.arrival).mean())


def test_the_simulator_puts_its_cpu_engines_on_one_machine_only_when_their_profile_contends(tmp_path) -> None:
    shared, plain = _simulated_mean_latency(tmp_path, None)
    assert not shared  # the shipped profile measured no contention: engines stay independent
    shared, slowed = _simulated_mean_latency(tmp_path, {"prefill": 1.0, "decode": 1.0, "engines_at_once": 2})
    assert shared and slowed > plain
