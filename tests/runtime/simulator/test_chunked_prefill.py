"""Chunked prefill in the engine model (vLLM V1's per-step token budget).

The engine is driven directly on a minimal event loop, so every iteration's cost can be written
out by hand from the profile: ``prefill_s(P)`` when nothing decodes, else
``decode_step_s(b, k) + C P`` (``LatencyProfile.iteration_s``).
"""

from __future__ import annotations

from heapq import heappop

import pytest

from planner.profiles import get_profile
from runtime.policies.fcfs import FCFS
from runtime.simulator.calls import Call
from runtime.simulator.engine import LLMEngine
from runtime.simulator.events import SimClock
from runtime.simulator.sim import SimConfig, Simulator, Stream
from runtime.simulator.workloads import LLAMA8B, edge, llm
from cortexlang.ir import Workflow
from tests.runtime.simulator.helpers import engines, prog

PROFILE = get_profile("llama-3-8b", "H100", 1)


class Loop(SimClock):
    """The part of the Simulator an engine talks to (the clock, the event heap: SimClock), recording
    when each call finished."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: dict[str, float] = {}

    def call_finished(self, call: Call) -> None:
        self.finished[call.key] = self.now

    def run(self, until: float = float("inf")) -> None:
        while self._events and self._events[0][0] <= until:
            t, _, handler, arg = heappop(self._events)
            self.now = t
            handler(arg)


def _engine(loop: Loop, budget: int, kv: int = 100_000, **kw) -> LLMEngine:
    return LLMEngine(loop, engines(1)[0], PROFILE, LLAMA8B.kv_bytes_per_token, kv, max_batched_tokens=budget, **kw)


def _call(key: str, seq: int, inp: int, out: int, prefix_key: str | None = None, prefix: int = 0) -> Call:
    c = Call(None, key, "gen", "llm", "llama8b", input_tokens=inp, output_tokens=out, prefix_key=prefix_key,
             prefix_tokens=prefix)
    c.seq = seq
    return c


def _decode_s(b: int, k0: int, n: int) -> float:
    """``n`` decode steps of ``b`` sequences from ``k0`` KV tokens, step by step."""
    return sum(PROFILE.decode_step_s(b, k0 + b * j) for j in range(n))


def _assert_drained(eng: LLMEngine) -> None:
    """Every counter is back to zero once the engine has nothing left: the chunk bookkeeping balances."""
    assert eng.chunking is None and not eng.running and eng.nwaiting == 0
    assert eng.kv_own == 0 and eng.kv_attn == 0 and eng.sum_finish == 0
    assert eng.queued_prefill == 0 and eng.queued_out == 0


def test_a_long_prompt_takes_three_chunks_while_another_sequence_decodes():
    """Budget 2048. The long prompt arrives during the short call's prefill and waits for the
    iteration boundary; from then on the decoding call takes one token of each step's budget and
    the long prompt the rest: 2047, 2047, then the last 5000 - 4094 = 906 tokens. Its first token
    comes with its last chunk."""
    loop = Loop()
    eng = _engine(loop, budget=2048)
    short, long_ = _call("short", 1, 100, 400), _call("long", 2, 5000, 1)
    eng.enqueue(short, (0.0,))
    eng.enqueue(long_, (1.0,))
    it1 = PROFILE.prefill_s(100)
    loop.run(until=it1)
    assert eng.chunking is long_ and long_.chunk_left == 5000 - 2047 and long_.own_tokens == 2047
    loop.run()
    C = PROFILE.prefill_per_token_s
    # The short call reads its KV before each new token: 100, 101, 102 tokens.
    chunks = PROFILE.decode_step_s(1, 100) + C * 2047 + PROFILE.decode_step_s(1, 101) + C * 2047 \
        + PROFILE.decode_step_s(1, 102) + C * 906
    assert loop.finished["long"] - it1 == pytest.approx(chunks, rel=1e-12)
    assert long_.t_start == it1
    # The short call decoded through the chunks: 4 tokens by then, the other 396 alone afterwards.
    assert loop.finished["short"] == pytest.approx(it1 + chunks + _decode_s(1, 103, 396), rel=1e-12)
    assert eng.iterations == 400 and eng.preemptions == 0
    _assert_drained(eng)


def test_a_prompt_within_the_budget_is_prefilled_in_one_iteration():
    """Without chunking nothing changes: the profile's standalone time (prefill_s, then decodes)."""
    loop = Loop()
    eng = _engine(loop, budget=2048)
    eng.enqueue(_call("a", 1, 2048, 20), (0.0,))
    loop.run()
    assert loop.finished["a"] == pytest.approx(PROFILE.request_s(2048, 20), rel=1e-12)
    assert eng.iterations == 20


def test_decode_tokens_count_against_the_budget():
    """With one sequence decoding, a prompt of exactly the budget no longer fits in one step."""
    loop = Loop()
    eng = _engine(loop, budget=2048)
    eng.enqueue(_call("d", 1, 10, 50), (0.0,))
    loop.run(until=0.0)  # the first iteration is under way: the next prompt waits for its end
    late = _call("p", 2, 2048, 1)
    eng.enqueue(late, (1.0,))
    t1 = PROFILE.prefill_s(10)
    loop.run(until=t1)
    assert eng.chunking is late and late.chunk_left == 1
    loop.run()
    C = PROFILE.prefill_per_token_s
    expected = t1 + PROFILE.decode_step_s(1, 10) + C * 2047 + PROFILE.decode_step_s(1, 11) + C * 1
    assert loop.finished["p"] == pytest.approx(expected, rel=1e-12)
    _assert_drained(eng)


def test_a_resident_prefix_is_not_recomputed_and_a_new_one_is_chunked_first():
    """3000 tokens with a 1200-token shared prefix, budget 2048: cold, two chunks (2048 + 952); with
    the prefix resident only the 1800 own tokens are prefilled, in one iteration."""
    loop = Loop()
    eng = _engine(loop, budget=2048)
    cold = _call("cold", 1, 3000, 1, prefix_key="sys", prefix=1200)
    eng.enqueue(cold, (0.0,))
    # First chunk: the prefix (1200 tokens, 1200 rounded to blocks) and 848 own tokens.
    assert eng.prefix_total == 1200 and cold.own_tokens == 848
    loop.run()
    assert loop.finished["cold"] == pytest.approx(PROFILE.prefill_s(2048) + PROFILE.prefill_s(952), rel=1e-12)
    t0 = loop.now
    eng.enqueue(_call("warm", 2, 3000, 1, prefix_key="sys", prefix=1200), (1.0,))
    assert eng.chunking is None
    loop.run()
    assert loop.finished["warm"] - t0 == pytest.approx(PROFILE.prefill_s(1800), rel=1e-12)
    _assert_drained(eng)


def test_a_preempted_partial_prefill_starts_over_and_finishes_when_room_frees():
    """KV for 2048 tokens: the long prompt's second chunk would overflow next to the decoding call,
    so the partial prefill (the worst key) is preempted and recomputed from the start; it completes
    once the decoding call has finished and freed its KV."""
    loop = Loop()
    eng = _engine(loop, budget=1024, kv=2048)
    short, long_ = _call("short", 1, 100, 300), _call("long", 2, 2000, 1)
    eng.enqueue(short, (0.0,))
    eng.enqueue(long_, (1.0,))
    loop.run()
    assert eng.preemptions > 0 and eng.partial_prefills == eng.preemptions + 1  # restarted each time
    assert loop.finished["long"] > loop.finished["short"]
    assert eng.kv_peak <= eng.cap
    # Alone at last: two chunks (1024 + 976) after the short call left.
    assert loop.finished["long"] - loop.finished["short"] <= PROFILE.prefill_s(1024) + PROFILE.prefill_s(976) + 1e-12
    _assert_drained(eng)


def test_a_prompt_larger_than_the_kv_cache_waits_instead_of_thrashing():
    """A prompt whose KV could never be held whole is not started in chunks (no endless recompute)."""
    loop = Loop()
    eng = _engine(loop, budget=512, kv=1024)
    big = _call("big", 1, 4000, 1)
    eng.enqueue(big, (0.0,))
    loop.run()
    assert eng.chunking is None and eng.nwaiting == 1 and not loop.finished and eng.iterations == 0


def test_a_cancelled_partial_prefill_frees_its_kv():
    loop = Loop()
    eng = _engine(loop, budget=1024)
    long_ = _call("long", 1, 3000, 5)
    eng.enqueue(long_, (0.0,))
    loop.run(until=PROFILE.prefill_s(1024) / 2)
    eng.cancel(long_)
    loop.run()
    assert "long" not in loop.finished
    _assert_drained(eng)


def test_a_prefill_replica_hands_over_after_the_last_chunk():
    """Disaggregation: the prefill side of a pair leaves after its first token, i.e. its last chunk."""
    loop = Loop()
    spec = engines(1)[0]
    eng = LLMEngine(loop, type(spec)(**{**spec.__dict__, "role": "prefill"}), PROFILE, LLAMA8B.kv_bytes_per_token,
                    100_000, max_batched_tokens=1024)
    c = _call("p", 1, 2500, 50)
    c.phase = "prefill"
    eng.enqueue(c, (0.0,))
    loop.run()
    assert loop.finished["p"] == pytest.approx(2 * PROFILE.prefill_s(1024) + PROFILE.prefill_s(452), rel=1e-12)
    _assert_drained(eng)


@pytest.mark.parametrize("policy", ["fcfs", "cortex", "autellix-plas"])
def test_simulations_with_chunked_long_prompts_complete(policy):
    """Whole simulations whose prompts (about 5000 tokens, drawn under the 8k context: longer ones
    are refused, see test_context_refusal.py) exceed a 1024-token budget, with KV pressure: every
    run completes and no engine's KV exceeds its capacity."""
    from runtime.policies.registry import make_policy

    wf = Workflow(name="long", stages=(llm("read", 5000, 40, prefix=1500), llm("answer", 900, 120)),
                  entry="read", edges=(edge("read", "answer"), edge("answer", "done")))
    sim = Simulator(prog(wf), engines(2, kv=16 * 900), make_policy(policy), [Stream(wf.name, 3.0)],
                    SimConfig(runs=80, seed=3, max_batched_tokens=1024))
    res = sim.run()
    assert set(res.status) == {"done"} and len(res.status) == 80
    assert sum(e.partial_prefills for e in sim.engines) >= 80  # every long prompt was chunked
    for e in res.engines:
        assert e.kv_peak_tokens <= e.kv_capacity_tokens


def test_a_step_that_preempts_admits_nothing_and_the_next_one_admits_again():
    """vLLM schedules waiting requests only in a step that preempted nothing (``if not preempted_reqs``).
    With KV for 2048 tokens, the long prompt's second chunk cannot grow beside the decoding call: each
    step that preempts it leaves it waiting (nothing admitted, not even its own first chunk again), and
    the very next step admits it again -- the every-other-step recompute a too-small KV cache costs."""
    loop = Loop()
    eng = _engine(loop, budget=1024, kv=2048)
    eng.enqueue(_call("short", 1, 100, 300), (0.0,))
    eng.enqueue(_call("long", 2, 2000, 1), (1.0,))
    preempting_steps = []
    while loop._events:
        before = eng.preemptions
        t, _, handler, arg = heappop(loop._events)
        loop.now = t
        handler(arg)
        if eng.preemptions > before:
            assert eng.chunking is None and eng.nwaiting == 1  # preempted, and nothing admitted in its step
            preempting_steps.append(eng.step)
    assert len(preempting_steps) > 100
    # Admitted again at the next step each time: preemptions two steps apart, one restart per preemption.
    assert all(b - a == 2 for a, b in zip(preempting_steps, preempting_steps[1:]))
    assert eng.partial_prefills == eng.preemptions + 1
    assert loop.finished["long"] > loop.finished["short"]
    _assert_drained(eng)
