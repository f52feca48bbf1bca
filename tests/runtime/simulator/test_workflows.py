"""Graph walking, conservation, determinism, disaggregation and layouts."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlang.ir import FanOut, IntKnob, Loop, Workflow
from runtime.policies.fcfs import FCFS
from runtime.policies.registry import POLICIES, make_policy
from runtime.simulator.cluster import LayoutError, ReplicaSpec, disaggregate, isolated_layout, shared_layout
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import edge, fanout, llm, nl2sql, program, react
from tests.runtime.simulator.helpers import engines, executors, one_llm, prog


def _run(wf, layout, policy=None, runs=300, rate=20.0, **cfg):
    return Simulator(program(wf), layout, policy or FCFS(), [Stream(wf.name, rate)],
                     SimConfig(runs=runs, warmup_fraction=0.0, record_calls=True, **cfg)).run()


def test_every_run_finishes_or_is_rejected_under_every_policy():
    wf = nl2sql()
    layout = shared_layout({"A100": 1, "H100": 1}, "llama8b", workflow=wf)
    iso = isolated_layout({"A100": 2, "H100": 2}, program(wf), wf, {"schema_link": 1, "generate": 1, "fix": 1,
                                                                      "answer": 1})
    for name in POLICIES:
        res = _run(wf, iso if name == "cortex" else layout, make_policy(name), runs=200, rate=15.0, slo_scale=2.0)
        assert len(res.status) == 200, name
        assert set(res.status) <= {"done", "fail", "rejected"}, name
        assert np.all(res.end >= res.arrival), name
        done = (res.status != "rejected") & (res.pruned == 0)
        assert np.all(res.end[done] - res.arrival[done] >= res.standalone[done] * (1 - 1e-9)), name


def test_same_seed_same_result_and_other_seed_differs():
    wf = react()
    layout = shared_layout({"H100": 2}, "llama8b", workflow=wf, executor_slots=32)
    a = _run(wf, layout, runs=200, seed=11)
    b = _run(wf, layout, runs=200, seed=11)
    c = _run(wf, layout, runs=200, seed=12)
    assert np.array_equal(a.end, b.end) and a.calls == b.calls
    assert not np.array_equal(a.end, c.end)


def test_same_workload_across_policies():
    """Scripted sampling: standalone latencies (paths, sizes) do not depend on the policy."""
    wf = nl2sql()
    layout = shared_layout({"H100": 2}, "llama8b", workflow=wf)
    a = _run(wf, layout, make_policy("fcfs"), runs=200)
    b = _run(wf, layout, make_policy("autellix-plas"), runs=200)
    assert np.array_equal(a.standalone, b.standalone)


def test_retry_loop_budget_then_on_exhausted():
    """execute fails always: the loop edge fix->execute is taken max_iterations times; the next
    time it would be taken the run goes to the loop's on_exhausted (fail)."""
    wf = nl2sql(retry_p=1.0, max_repairs=3)
    res = _run(wf, shared_layout({"H100": 1}, "llama8b", workflow=wf), runs=20, rate=1.0)
    assert set(res.status) == {"fail"}
    stages = [c[2] for c in res.calls if c[0] == 0]
    assert stages == ["schema_link", "generate", "execute"] + ["fix", "execute"] * 3 + ["fix"]


def test_nested_loop_resets_on_parent_iteration():
    inner = Loop(name="inner", max_iterations=IntKnob.fixed(1), parent="outer")
    outer = Loop(name="outer", max_iterations=IntKnob.fixed(2), on_exhausted="done")
    wf = Workflow(name="nest", stages=(llm("a", 100, 2), llm("b", 100, 2)), entry="a",
                  edges=(edge("a", "b", loop="inner"), edge("b", "a", loop="outer")), loops=(inner, outer))
    res = _run(wf, engines(1), runs=1, rate=1.0)
    # a -(inner 1)-> b -(outer 1, resets inner)-> a -(inner 1)-> b -(outer 2, resets)-> a -(inner 1)-> b
    # -> outer spent -> done. Without the reset the inner budget would end the run at the second a -> fail.
    assert [c[2] for c in res.calls] == ["a", "b", "a", "b", "a", "b"]
    assert res.status[0] == "done"


def test_fanout_all_runs_every_branch():
    wf = fanout(width=3)
    res = _run(wf, shared_layout({"H100": 1}, "llama8b", workflow=wf), runs=5, rate=1.0)
    per_run = [c[2] for c in res.calls if c[0] == 0]
    assert per_run.count("search") == 3 and per_run.count("summarize") == 3
    assert per_run[0] == "plan" and per_run[-1] == "synthesize"


def test_fanout_first_cancels_the_rest():
    wf = Workflow(name="race", stages=(llm("fast", 100, 5), llm("slow", 100, 400), llm("after", 100, 5)),
                  fanouts=(FanOut(name="f", branches=(("fast",), ("slow",)), join="first"),), entry="f",
                  edges=(edge("f", "after"), edge("after", "done")))
    res = _run(wf, engines(1), runs=1, rate=1.0)
    assert [c[2] for c in res.calls] == ["fast", "after"]
    assert res.status[0] == "done"
    assert res.engines[0].kv_peak_tokens <= res.engines[0].kv_capacity_tokens


def test_disaggregated_prefill_decode_pair():
    wf = one_llm(1000, 40)
    layout = [ReplicaSpec(name="p", kind="llm", device="H100", model="llama8b", role="prefill"),
              ReplicaSpec(name="d", kind="llm", device="H200", model="llama8b", role="decode",
                          link_bytes_per_s=1e9)]
    res = Simulator(prog(wf), layout, FCFS(), [Stream(wf.name, 1.0)],
                    SimConfig(runs=3, warmup_fraction=0.0, token_cv=0.0, record_calls=True)).run()
    assert set(res.status) == {"done"}
    transfer = 1001 * 131072 / 1e9
    assert all(c[4] == "d" for c in res.calls)
    lat = res.end - res.arrival
    assert np.all(lat > res.standalone + transfer * 0.99)


def test_isolated_layout_uses_same_devices_as_shared():
    wf = nl2sql()
    dev = {"A100": 3, "H100": 4, "H200": 2}
    shared = shared_layout(dev, "llama8b", workflow=wf)
    iso = isolated_layout(dev, program(wf), wf, {"schema_link": 1, "generate": 1, "fix": 0.8, "answer": 1})
    count = lambda lay: sorted(r.device for r in lay if r.kind == "llm")  # noqa: E731
    assert count(shared) == count(iso)
    assert {s for r in iso if r.stages for s in r.stages} >= {"schema_link", "generate", "fix", "answer"}


def test_missing_replica_for_stage_is_a_clear_error():
    wf = one_llm()
    with pytest.raises(Exception, match="no replica serves stage"):
        Simulator(prog(wf), executors(2) + engines(1, stages=frozenset({"other"})), FCFS(),
                  [Stream(wf.name, 1.0)], SimConfig(runs=2)).run()


def test_pruned_runs_count_as_misses():
    """A run whose retry a policy pruned ends early on ``on_exhausted``; it must never count as meeting
    its SLO (else pruning would buy attainment for free)."""
    from runtime.policies.base import Policy

    class PruneAll(Policy):
        def prune_retry(self, call, loop, iteration, load):
            return True

    wf = nl2sql(retry_p=0.9)
    res = _run(wf, shared_layout({"H100": 2}, "llama8b", workflow=wf), PruneAll(), runs=200, rate=5.0)
    pruned = res.pruned[res.measured] > 0
    assert pruned.any()
    assert np.all(np.isinf(res.ratios()[pruned]))
    assert res.attainment(1e9) == pytest.approx(1.0 - pruned.mean())


def test_priority_matters_only_when_batch_slots_are_contended():
    """Why autellix-plas and autellix-atlas gave identical numbers everywhere: keys only order a
    replica's *waiting* queue, and with the plan's KV-sized max_num_seqs nothing waits. With a
    binding batch cap the fan-out workload (where a run's critical-path service differs from its
    total service) separates them; on a sequential workflow the two keys are equal by definition."""
    wf = fanout()
    roomy = engines(2, slots=256) + executors(64)
    tight = engines(2, slots=8) + executors(64)
    plas = _run(wf, roomy, make_policy("autellix-plas"), runs=300, rate=3.0)
    atlas = _run(wf, roomy, make_policy("autellix-atlas"), runs=300, rate=3.0)
    assert np.array_equal(plas.end, atlas.end)
    plas = _run(wf, tight, make_policy("autellix-plas"), runs=300, rate=3.0)
    atlas = _run(wf, tight, make_policy("autellix-atlas"), runs=300, rate=3.0)
    assert not np.array_equal(plas.end, atlas.end)


def test_engine_view_reports_what_completion_estimates_need():
    wf = one_llm(500, 50)
    sim = Simulator(prog(wf), engines(1), FCFS(), [Stream(wf.name, 1000.0, pattern="constant")],
                    SimConfig(runs=3, warmup_fraction=0.0, token_cv=0.0))
    seen = []
    real_route = sim.policy.route

    def spy(call, candidates):
        v = candidates[0]
        seen.append((v.running, v.queue_len, v.pending_decode_tokens, v.profile is not None))
        return real_route(call, candidates)

    sim.policy.route = spy
    sim.run()
    assert seen[0] == (0, 0, 0, True)
    # Later arrivals see the first call running with most of its 50 tokens still to go.
    assert seen[1][0] + seen[1][1] == 1 and (seen[1][0] == 0 or 0 < seen[1][2] <= 50)


def test_disaggregate_turns_the_first_replicas_of_each_kind_into_one_prefill_pool():
    wf = nl2sql()
    iso = isolated_layout({"A100": 2, "H100": 2, "H200": 2}, program(wf), wf,
                          {"schema_link": 1, "generate": 1, "fix": 1, "answer": 1})
    # fix: H200 + H100, generate: A100 + H200, answer: H100, schema_link: A100 (layout order).
    pd = disaggregate(iso, {"H200": 1, "A100": 1})
    llm_reps = [r for r in pd if r.kind == "llm"]
    pre = [r for r in llm_reps if r.role == "prefill"]
    assert sorted(r.name for r in pre) == ["fix-H200-0", "generate-A100-2"]
    assert all(r.stages is None for r in pre)                      # one shared prefill pool
    dec = [r for r in llm_reps if r.role == "decode"]
    assert len(dec) == 4 and all(r.stages for r in dec)            # decode pools keep their stages
    assert [r.device for r in pd] == [r.device for r in iso]       # same devices, same order
    with pytest.raises(LayoutError, match="not enough"):
        disaggregate(iso, {"A100": 3})
    with pytest.raises(LayoutError, match="needs both prefill and decode"):
        disaggregate(iso, {"A100": 2, "H100": 2, "H200": 2})
    with pytest.raises(LayoutError, match="schema_link would keep no llama8b decode replica"):
        disaggregate(iso, {"A100": 2})


def test_disaggregate_one_model_leaves_the_others_colocated():
    layout = engines(2, "H100") + engines(1, "H200", prefix="big") + executors(4)
    layout[2] = ReplicaSpec(name="big0", kind="llm", device="H200", model="other")
    pd = disaggregate(layout, {"H100": 1}, model="llama8b")
    assert [(r.name, r.role) for r in pd if r.kind == "llm"] == [("e0", "prefill"), ("e1", "decode"),
                                                                  ("big0", "mixed")]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_call_is_prefilled_on_a_prefill_replica_and_decoded_on_a_decode_replica(policy):
    wf = nl2sql()
    layout = disaggregate(shared_layout({"A100": 2, "H100": 1, "H200": 2}, "llama8b", workflow=wf,
                                        executor_slots=32), {"A100": 2})
    sim = Simulator(program(wf), layout, make_policy(policy), [Stream(wf.name, 6.0)],
                    SimConfig(runs=120, seed=3, slo_scale=3.0, record_calls=True))
    res = sim.run()
    assert set(res.status) <= {"done", "fail"} and len(res.status) == 120   # conservation, nothing rejected
    roles = {r.name: r.role for r in layout}
    llm_calls = [c for c in res.calls if c[3] == "llm"]
    assert llm_calls and all(roles[c[4]] == "decode" for c in llm_calls)    # the decode side records the call
    busy = {e.name: e.iterations for e in sim.engines}
    assert all(busy[n] > 0 for n, role in roles.items() if role == "prefill")
    assert all(e.kv_peak_tokens <= e.kv_capacity_tokens for e in res.engines)


def test_malleability_swaps_are_charged_their_declared_quality():
    """One stage declaring ``llama70b | llama8b @ 90%``, one 70B replica that saturates and a
    generic 8B pool: Cortex swaps calls to the 8B model under pressure (rather than rejecting
    runs) and each swapped run's answer is recorded at 0.9; FCFS never swaps."""
    from cortexlang.ir import Program
    from runtime.simulator.workloads import LLAMA70B, LLAMA8B

    wf = Workflow(name="gen", stages=(llm("write", 800, 200, models=("llama70b", "llama8b")),), entry="write",
                  edges=(edge("write", "done"),))
    prog70 = Program(models=(LLAMA70B, LLAMA8B), workflows=(wf,))
    layout = [ReplicaSpec(name="big", kind="llm", device="H100", model="llama70b", tp=4, slots=8),
              *engines(2, "H100", slots=64, prefix="small")]
    results = {}
    for name in ("fcfs", "cortex"):
        results[name] = Simulator(prog70, layout, make_policy(name), [Stream(wf.name, 4.0)],
                                  SimConfig(runs=300, seed=4, slo_scale=1.5, warmup_fraction=0.0)).run()
    fcfs, cortex = results["fcfs"], results["cortex"]
    assert fcfs.mean_quality() == 1.0 and fcfs.degraded_fraction() == 0.0
    assert set(np.unique(cortex.quality)) == {0.9, 1.0}
    assert 0.2 < cortex.degraded_fraction() < 0.8 and cortex.rejected_fraction() == 0.0
    assert cortex.min_scale(0.95) < fcfs.min_scale(0.95)   # the speed it bought, at the quality above
    assert cortex.mean_quality() == pytest.approx(1.0 - 0.1 * cortex.degraded_fraction())
    s = cortex.summary()
    assert s["mean_quality"] == cortex.mean_quality() and s["degraded_runs"] == cortex.degraded_fraction()


def test_remaining_critical_path_respects_loop_budgets_and_repeat():
    """``R(entry)`` is the run's expected standalone time: with a ``repeat = 3`` stage (lowered to a
    loop whose back edge is certain and which ends only by exhausting its budget) before NL2SQL's
    bounded repair loop, it matches the mean standalone latency of simulated runs on an idle
    cluster (a chain: no fan-out max). Following loop edges by probability alone gave the repeated
    stage 200 times."""
    base = nl2sql(retry_p=0.6, max_repairs=2)
    repeat = Loop(name="think.repeat", max_iterations=IntKnob.fixed(2), on_exhausted=base.entry)
    wf = base.model_copy(update={
        "stages": (llm("think", 800, 60), *base.stages), "entry": "think",
        "edges": (edge("think", "think", loop="think.repeat"), *base.edges),
        "loops": (repeat, *base.loops)})
    layout = shared_layout({"H100": 4}, "llama8b", workflow=wf, executor_slots=64)
    sim = Simulator(program(wf), layout, FCFS(), [Stream(wf.name, 0.5)],
                    SimConfig(runs=4000, seed=3, warmup_fraction=0.0))
    graph = sim.graphs[wf.name]
    res = sim.run()
    expected = graph.expected_standalone_s()
    assert expected == pytest.approx(float(np.mean(res.standalone)), rel=0.03)
    rest = graph.remaining[base.entry]
    assert expected == pytest.approx(3 * graph.stage_time["think"] + rest)
