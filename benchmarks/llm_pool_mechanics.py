"""Why busy prefill-heavy LLM pools run slower than the planner's batch point (SIMULATED).

One replica of Llama-3-8B on an A100 serves one stage (``--input`` prompt tokens, ``--output``
mean output tokens) at several arrival rates in the discrete-event simulator; for each rate it
prints, beside the planner's operating point (:func:`planner.queueing.llm_batch_point`):

* the share of time spent prefilling (the planner's ``x``);
* the mean iteration time over all iterations, and over the iterations a running call sits through
  (weighted by the sequences in them): the second is what a call's per-token time is made of;
* the mean batch of prefill iterations and of decode-only iterations;
* a call's first iteration (its prefill step): duration, and the prompts admitted with it;
* the per-token time after the first iteration, against the planner's ``t_iter``.

The engine's pure-Python iteration methods are wrapped to log each iteration (read-only; the
compiled build is switched off for the run). Results: benchmarks/results/llm_pool_mechanics.md.

    .venv/bin/python benchmarks/llm_pool_mechanics.py [--rates 5 10 12] [--input 647] [--output 64]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["CORTEX_ACCEL"] = "0"  # the wrappers below patch the pure-Python engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import runtime.simulator.engine as engine_module  # noqa: E402
from cortexlang.ir import SLO, Load, Program, Workflow  # noqa: E402
from planner.candidates import profiles_of  # noqa: E402
from planner.queueing import llm_batch_point  # noqa: E402
from planner.synthetic import LLAMA_8B, LLAMA_70B, edge, gpu_inventory, llm  # noqa: E402

MODELS = {"llama8b": (LLAMA_8B, "llama-3-8b", 1), "llama70b": (LLAMA_70B, "llama-3-70b", 4)}
"""--model -> (model spec, profile family, tensor-parallel degree on the A100)."""
from runtime.policies.registry import make_policy  # noqa: E402
from runtime.simulator.cluster import ReplicaSpec  # noqa: E402
from runtime.simulator.sim import SimConfig, Simulator, Stream  # noqa: E402


class IterationLog:
    """Wraps :class:`runtime.simulator.engine.LLMEngine` to record every epoch (start, end, steps,
    sequences, prefill tokens) and, per admitted call, its first iteration (start, end, prompts
    admitted in it)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[float, float, int, int, int]] = []
        self.first: dict[int, tuple[float, float, int]] = {}
        self._admitted: list[int] = []
        self._prefill = 0
        cls = engine_module.LLMEngine
        self._orig = (cls._admit, cls._schedule, cls._settle, cls._iteration_s)
        log = self

        def _admit(engine, call, *rest):
            log._admitted.append(call.run.run_id)
            return log._orig[0](engine, call, *rest)

        def _schedule(engine):
            log._admitted.clear()
            now = engine.sim.now
            out = log._orig[1](engine)
            if log._admitted and engine.ep_single:
                for run_id in log._admitted:
                    log.first[run_id] = (now, engine.view.busy_until_s, len(log._admitted))
            return out

        def _iteration_s(engine, prefill, b, k):
            log._prefill = prefill
            return log._orig[3](engine, prefill, b, k)

        def _settle(engine):
            log.epochs.append((engine.ep_t0, engine.sim.now, engine.ep_n, engine.ep_b,
                               log._prefill if engine.ep_single else 0))
            return log._orig[2](engine)

        cls._admit, cls._schedule, cls._settle, cls._iteration_s = _admit, _schedule, _settle, _iteration_s

    def close(self) -> None:
        cls = engine_module.LLMEngine
        cls._admit, cls._schedule, cls._settle, cls._iteration_s = self._orig


def measure(rate: float, input_tokens: int, output_tokens: int, runs: int, slots: int,
            model: str = "llama8b") -> dict[str, float]:
    spec, family, tp = MODELS[model]
    wf = Workflow(name="w", stages=(llm("a", model, input_tokens=input_tokens, output_tokens=output_tokens,
                                        max_tokens=256),),
                  entry="a", edges=(edge("a", "done"),), slo=SLO(latency_s=600.0, attainment=0.9),
                  load=Load(rate_per_s=rate))
    program = Program(models=(spec,), workflows=(wf,), inventory=gpu_inventory(a100=tp))
    layout = (ReplicaSpec(name="a-0", kind="llm", device="A100", model=model, tp=tp, stages=frozenset({"a"}),
                          slots=slots),)
    log = IterationLog()
    try:
        res = Simulator(program, layout, make_policy("fcfs"), [Stream("w", rate)],
                        SimConfig(runs=runs, seed=0, warmup_fraction=0.1, record_calls=True)).run()
    finally:
        log.close()
    epochs = np.array(log.epochs[len(log.epochs) // 10:], dtype=float)
    t0, t1, steps, batch, prefill = epochs.T
    dur = t1 - t0
    is_prefill = prefill > 0
    calls = res.calls[runs // 10:]
    first = np.array([log.first[c[0]] for c in calls])
    service = np.array([c[7] - c[6] for c in calls])
    out = np.array([c[9] for c in calls], dtype=float)
    first_s = first[:, 1] - first[:, 0]
    profile = next(p for p in profiles_of(family, "A100") if p.tp == tp)
    point = llm_batch_point(profile, rate, input_tokens, input_tokens, float(out.mean()), 256)
    return {
        "rate": rate,
        "x_planned": profile.prefill_per_token_s * rate * input_tokens,
        "x_simulated": float(profile.prefill_per_token_s * prefill.sum() / dur.sum()),
        "iteration_ms": 1e3 * dur.sum() / steps.sum(),
        "iteration_seen_ms": 1e3 * float(np.sum(batch * dur) / np.sum(batch * steps)),
        "batch_prefill_iterations": float(batch[is_prefill].mean()),
        "batch_decode_iterations": float(np.sum((steps * batch)[~is_prefill]) / steps[~is_prefill].sum()),
        "batch_planned": point.batch,
        "first_iteration_ms": 1e3 * float(first_s.mean()),
        "admitted_with_it": float(first[:, 2].mean()),
        "own_prefill_ms": 1e3 * point.prefill_s,
        "per_token_after_first_ms": 1e3 * float(np.mean((service - first_s) / np.maximum(out - 1, 1))),
        "t_iter_planned_ms": 1e3 * point.t_iter,
        "time_at_cap": float(dur[batch >= slots].sum() / dur.sum()),
        "wait_ms": 1e3 * float(np.mean([c[6] - c[5] for c in calls])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[5.0, 10.0, 12.0, 13.0, 14.0])
    ap.add_argument("--input", type=int, default=647)
    ap.add_argument("--output", type=int, default=64)
    ap.add_argument("--runs", type=int, default=4000)
    ap.add_argument("--slots", type=int, default=50, help="the replica's max_num_seqs")
    ap.add_argument("--model", choices=sorted(MODELS), default="llama8b")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "llm_pool_mechanics.md")
    args = ap.parse_args()
    rows = [measure(r, args.input, args.output, args.runs, args.slots, args.model) for r in args.rates]
    lines = [
        "# Busy prefill-heavy LLM pools: what a call sits through (SIMULATED)", "",
        f"`.venv/bin/python benchmarks/llm_pool_mechanics.py --rates {' '.join(f'{r:g}' for r in args.rates)} "
        f"--input {args.input} --output {args.output} --runs {args.runs} --slots {args.slots} --model {args.model}`: one "
        f"{args.model} replica "
        f"({args.slots} sequences at most) on an A100 (the "
        "shipped profile), one stage, Poisson arrivals, FCFS, in the discrete-event simulator; the planner's batch "
        "point beside it.", "",
        "| calls/s | prefill share planned / simulated | iteration ms: all / as seen by a running call | "
        "batch: prefill iterations / decode iterations / planned | first iteration ms (own prefill planned) | "
        "prompts admitted with it | per-token ms after the first: simulated / planned t_iter | "
        "time at the batch cap | mean wait ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['rate']:g} | {r['x_planned']:.3f} / {r['x_simulated']:.3f} | {r['iteration_ms']:.2f} / "
                     f"{r['iteration_seen_ms']:.2f} | {r['batch_prefill_iterations']:.1f} / "
                     f"{r['batch_decode_iterations']:.1f} / {r['batch_planned']:.1f} | {r['first_iteration_ms']:.0f} "
                     f"({r['own_prefill_ms']:.0f}) | {r['admitted_with_it']:.2f} | {r['per_token_after_first_ms']:.2f} / "
                     f"{r['t_iter_planned_ms']:.2f} | {100 * r['time_at_cap']:.0f}% | {r['wait_ms']:.0f} |")
    lines += ["", "Reading: the planner's batch point spreads the prefill time evenly over iterations "
              "(t_iter = decode step / (1 - x)); a running call sits through more of the long prefill iterations "
              "than their share, because those iterations carry more sequences, and its first iteration carries "
              "the prompts admitted with it. Both make busy prefill-heavy pools slower than planned (docs/planner.md, "
              "'Assumptions and limits')."]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
