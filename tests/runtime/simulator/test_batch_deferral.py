"""Batch deferral (``Policy.batch_hold``): a call with ample slack is left waiting while a call that
outranks it in the running batch is at risk, at most until its own hold ends.

The engine is driven directly (``helpers.Loop``) with Cortex's hold (:class:`SlackHold`) on keys
``(hopeless, latest start, enqueued)``: a call's slack at ``now`` is ``latest start - now``. Every
call here expects 1 s of service; the hold factor is 4 (hold while slack >= 4 s) and the urgency
factor 1.5 (at risk while slack < 1.5 s).
"""

from __future__ import annotations

import pytest

from planner.profiles import get_profile
from runtime.policies.cortex import Cortex, SlackHold
from runtime.simulator.calls import Call
from runtime.simulator.engine import LLMEngine
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import LLAMA8B, nl2sql, program
from runtime.simulator.cluster import shared_layout
from tests.runtime.simulator.helpers import Loop, engines

PROFILE = get_profile("llama-3-8b", "H100", 1)
HOLD = SlackHold(hold_factor=4.0, urgent_factor=1.5)


def _engine(loop: Loop, hold: SlackHold | None) -> LLMEngine:
    return LLMEngine(loop, engines(1)[0], PROFILE, LLAMA8B.kv_bytes_per_token, 100_000, hold=hold)


def _call(key: str, seq: int, inp: int, out: int, expected_s: float = 1.0) -> Call:
    c = Call(None, key, "gen", "llm", "llama8b", input_tokens=inp, output_tokens=out, expected_s=expected_s)
    c.seq = seq
    return c


def _pair(hold: SlackHold | None, running_latest_start: float, waiting_latest_start: float,
          running_expected_s: float = 1.0):
    """A 100-token prompt decoding 200 tokens keyed ``running_latest_start`` starts at 0; a second call
    keyed ``waiting_latest_start`` arrives during its prefill. Returns the loop, engine and calls, run
    to the end."""
    loop = Loop()
    eng = _engine(loop, hold)
    first, second = _call("first", 1, 100, 200, running_expected_s), _call("second", 2, 500, 20)
    eng.enqueue(first, (0.0, running_latest_start, 0.0))
    eng.enqueue(second, (0.0, waiting_latest_start, 0.0))
    loop.run()
    assert eng.nwaiting == 0 and not eng.running and set(loop.finished) == {"first", "second"}
    return loop, eng, first, second


def test_a_call_with_ample_slack_waits_until_the_at_risk_call_leaves():
    """The running call has 0.5 s of slack (< 1.5: at risk) and outranks the waiting one, whose 100 s
    of slack (>= 4) would hold it until 96 s: it joins only when the running call finishes, which
    therefore finishes sooner than when the second call shares its batch."""
    loop, eng, first, second = _pair(HOLD, 0.5, 100.0)
    assert eng.holds > 0
    assert second.t_start == loop.finished["first"]
    plain_loop, plain, _, plain_second = _pair(None, 0.5, 100.0)
    assert plain_second.t_start == PROFILE.prefill_s(100)  # without the hold: the next iteration boundary
    assert plain.holds == 0
    assert loop.finished["first"] < plain_loop.finished["first"]


def test_the_hold_ends_at_its_bound_even_while_the_at_risk_call_still_runs():
    """Waiting slack 4.3 s: held until 0.3 s, then admitted at the end of the decode step in progress,
    long before the 200-token decode ends (no starvation)."""
    loop, eng, first, second = _pair(HOLD, 0.5, 4.3)
    until = 4.3 - 4.0
    assert until <= second.t_start < until + PROFILE.decode_step_s(1, 400)
    assert second.t_start < loop.finished["first"]


@pytest.mark.parametrize("running_latest_start, waiting_latest_start, running_expected_s, why", [
    (50.0, 100.0, 1.0, "the running call has ample slack: nothing at risk"),
    (0.5, 3.0, 1.0, "the waiting call's slack (3 s) is below the hold factor x its expected time"),
    (60.0, 50.0, 100.0, "the running call is at risk (60 s < 1.5 x 100 s) but keyed after the waiting one"),
])
def test_no_hold_without_a_call_at_risk_that_outranks_a_call_with_ample_slack(
        running_latest_start, waiting_latest_start, running_expected_s, why):
    _, eng, _, second = _pair(HOLD, running_latest_start, waiting_latest_start, running_expected_s)
    assert eng.holds == 0, why
    assert second.t_start == PROFILE.prefill_s(100), why


def test_cortex_defers_only_when_the_parameter_is_set():
    assert Cortex().batch_hold() is None
    hold = Cortex(defer_slack_factor=3.0, urgent_slack_factor=1.5).batch_hold()
    assert isinstance(hold, SlackHold) and (hold.hold_factor, hold.urgent_factor) == (3.0, 1.5)
    assert hold.until((0.0,), 1.0) == float("-inf")  # no deadline
    assert hold.until((1.0, 10.0, 0.0), 1.0) == float("-inf")  # a hopeless run's call is never held
    assert not hold.at_risk((1.0, 0.0, 0.0), 1.0, 5.0)  # ... nor protected


def test_a_simulation_with_deferral_holds_calls_and_finishes_every_run():
    """NL2SQL on a small shared pool at a tight SLO: some steps hold their head, and every run ends."""
    wf = nl2sql()
    layout = shared_layout({"A100": 1, "H100": 1}, "llama8b", workflow=wf, executor_slots=32)

    def run(factor: float):
        sim = Simulator(program(wf), layout, Cortex(defer_slack_factor=factor), [Stream(wf.name, 6.0)],
                        SimConfig(runs=200, seed=3, slo_scale=2.0))
        return sim, sim.run()

    sim, res = run(2.0)
    assert sum(e.holds for e in sim.engines) > 0
    assert len(res.status) == 200 and set(res.status) <= {"done", "fail", "rejected"}
