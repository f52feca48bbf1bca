"""Batch summaries: per-run outcomes, latency percentiles, SLO attainment, KV use per pool.

Used by ``cortex run`` and the demo. :class:`KvSampler` polls every engine's
metrics while a batch runs (KV use is a gauge: its peak and mean over the
batch say more than the value at the end). Runs served by a simulated engine
are labelled so in every table.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from runtime.orchestrator.metrics import percentile
from runtime.orchestrator.orchestrator import Orchestrator
from runtime.orchestrator.results import RunInfo


@dataclass
class KvTrace:
    peak: float = 0.0
    total: float = 0.0
    samples: int = 0
    peak_running: int = 0

    @property
    def mean(self) -> float:
        return self.total / self.samples if self.samples else 0.0


@dataclass
class KvSampler:
    """Samples every replica's KV use every ``interval_s`` until stopped."""

    orchestrator: Orchestrator
    interval_s: float = 0.25
    traces: dict[str, KvTrace] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample()

    def sample(self) -> None:
        for pool in self.orchestrator.pools_by_name.values():
            for r in pool.replicas:
                if r.engine is None:
                    continue
                m = r.engine.metrics()
                t = self.traces.setdefault(r.replica_id, KvTrace())
                t.peak = max(t.peak, m.kv_cache_usage)
                t.total += m.kv_cache_usage
                t.samples += 1
                t.peak_running = max(t.peak_running, m.running)

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)


def latency_line(infos: Sequence[RunInfo]) -> dict[str, float]:
    lat = [i.latency_s for i in infos if i.latency_s is not None]
    return {f"p{q}": percentile(lat, q) for q in (50, 90, 95, 99)} | {"mean": sum(lat) / len(lat) if lat else math.nan}


def slo_attainment(infos: Sequence[RunInfo]) -> float | None:
    counted = [i for i in infos if i.slo_met is not None]
    return sum(1 for i in counted if i.slo_met) / len(counted) if counted else None


def batch_report(orchestrator: Orchestrator, infos: Sequence[RunInfo], sampler: KvSampler | None,
                 wall_s: float, rejected: int = 0) -> dict[str, Any]:
    """Everything the batch summary shows, as plain data (also written as JSON by ``cortex run``)."""
    summary = orchestrator.summary(infos[0].workflow if infos else None)
    statuses: dict[str, int] = {}
    for i in infos:
        statuses[i.status] = statuses.get(i.status, 0) + 1
    pools = {}
    for name, pool in summary["pools"].items():
        if pool["kind"] != "llm":
            continue
        reps = {}
        for rid, rep in pool["replicas"].items():
            trace = sampler.traces.get(rid) if sampler else None
            reps[rid] = {
                "engine": rep.get("engine"), "served": rep["served"], "lent": rep["lent"],
                "kv_capacity_tokens": rep.get("kv_capacity_tokens"),
                "kv_peak": trace.peak if trace else rep.get("kv_cache_usage"),
                "kv_mean": trace.mean if trace else None,
                "kv_peak_blocks_tokens": int((trace.peak if trace else 0.0) * (rep.get("kv_capacity_tokens") or 0)),
                "prefix_cache_hit_rate": rep.get("prefix_cache_hit_rate"), "preemptions": rep.get("preemptions"),
                "healthy": rep["healthy"],
            }
        pools[name] = {"model": pool["model"], "replicas": reps}
    engines = sorted({e for i in infos for e in i.engines})
    return {
        "workflow": summary["workflow"], "runs": len(infos), "rejected": rejected, "statuses": statuses,
        "engines": engines, "simulated": "simulated" in engines, "wall_s": wall_s,
        "throughput_runs_per_s": len(infos) / wall_s if wall_s > 0 else math.nan,
        "latency_s": latency_line(infos), "slo_latency_s": summary["slo_latency_s"],
        "slo_attainment": slo_attainment(infos), "retries": sum(i.retries for i in infos),
        "pruned": sum(i.pruned for i in infos), "stages": summary["stages"], "pools": pools,
        "cache": summary["cache"],
    }


def _s(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render_report(report: dict[str, Any], console: Console) -> None:
    """Print the summary tables."""
    label = " [SIMULATED ENGINES]" if report["simulated"] else ""
    lat = report["latency_s"]
    console.print(f"\n[bold]{report['workflow']}[/bold]{label}: {report['runs']} runs in {report['wall_s']:.1f} s "
                  f"({report['throughput_runs_per_s']:.2f} runs/s); engines: {', '.join(report['engines']) or '-'}")
    console.print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(report["statuses"].items()))
                  + (f"; rejected {report['rejected']}" if report["rejected"] else "")
                  + f"; retries {report['retries']}" + (f" (pruned {report['pruned']})" if report["pruned"] else ""))
    console.print(f"latency p50 {_s(lat['p50'])}  p90 {_s(lat['p90'])}  p95 {_s(lat['p95'])}  p99 {_s(lat['p99'])}")
    if report["slo_latency_s"] is not None:
        console.print(f"SLO attainment (<= {report['slo_latency_s']:g} s): {_pct(report['slo_attainment'])}")
    stages = Table(title="stages" + label, show_lines=False)
    for col in ("stage", "calls", "outcomes", "p50", "p95", "queue p50", "service p50", "TTFT p50", "tok/s p50",
                "cached", "hedged", "borrowed"):
        stages.add_column(col)
    for name, st in report["stages"].items():
        tps = st.get("tokens_per_s_p50")
        stages.add_row(name, str(st["calls"]), ", ".join(f"{k} {v}" for k, v in sorted(st["outcomes"].items())),
                       _s(st["p50_s"]), _s(st["p95_s"]), _s(st.get("queue_p50")), _s(st.get("service_p50")),
                       _s(st.get("ttft_p50")), "-" if tps is None or math.isnan(tps) else f"{tps:.1f}",
                       str(st["cached"]), str(st["hedged"]), str(st["borrowed"]))
    console.print(stages)
    kv = Table(title="KV cache per pool" + label)
    for col in ("pool", "replica", "engine", "served", "lent", "KV peak", "KV mean", "peak tokens", "prefix hits"):
        kv.add_column(col)
    for name, pool in report["pools"].items():
        for rid, rep in pool["replicas"].items():
            kv.add_row(name, rid, str(rep["engine"]), str(rep["served"]), str(rep["lent"]), _pct(rep["kv_peak"]),
                       _pct(rep["kv_mean"]), f"{rep['kv_peak_blocks_tokens']}/{rep['kv_capacity_tokens']}",
                       _pct(rep["prefix_cache_hit_rate"]))
    console.print(kv)
