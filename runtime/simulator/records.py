"""What a simulation recorded, and the SLO-attainment arithmetic on it.

SLO scale (HexAGenT's metric): a run meets SLO scale ``s`` when it finishes
within ``s`` times its *standalone latency* (its own path on an idle cluster,
fastest devices). A rejected run never meets it. With ``r_i = latency_i /
standalone_i`` (``inf`` for rejected runs), attainment at ``s`` is the fraction
of measured runs with ``r_i <= s`` (pruned runs count as misses too), and the smallest scale reaching a target
``q`` is the ``q``-quantile of ``r`` (lower order statistic, ``ceil(q n)``-th
smallest). Runs in the warm-up fraction (by arrival order) are excluded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from runtime.simulator.sim import Simulator

LABEL = "simulated"


@dataclass
class EngineStats:
    name: str
    device: str
    stages: tuple[str, ...] | None
    kv_capacity_tokens: int
    kv_peak_tokens: int
    preemptions: int
    iterations: int
    busy_s: float


@dataclass
class SimResult:
    """Outcome of one simulation (simulated time)."""

    policy: str
    run_id: np.ndarray
    workflow: np.ndarray
    arrival: np.ndarray
    end: np.ndarray
    standalone: np.ndarray
    status: np.ndarray
    pruned: np.ndarray
    warmup: int
    llm_calls: int
    wall_s: float
    sim_end_s: float
    engines: list[EngineStats]
    quality: np.ndarray | None = None
    """Per run: declared quality of its answer (1 = every call on its stage's preferred model;
    malleability's lighter options multiply in their declared quality, once per stage)."""
    kv_samples: list[tuple[float, str, int]] = field(default_factory=list)
    calls: list[tuple] = field(default_factory=list)
    label: str = LABEL

    @classmethod
    def build(cls, sim: "Simulator", wall_s: float) -> "SimResult":
        recs = sorted(sim.run_records)
        n = len(recs)
        warm = int(n * sim.cfg.warmup_fraction)
        engines = [EngineStats(e.name, e.spec.device, tuple(sorted(e.spec.stages)) if e.spec.stages else None,
                               e.cap, e.kv_peak, e.preemptions, e.iterations, e.busy_s) for e in sim.engines]
        return cls(
            policy=sim.policy.name,
            run_id=np.array([r[0] for r in recs], dtype=np.int64),
            workflow=np.array([r[1] for r in recs], dtype=object),
            arrival=np.array([r[2] for r in recs], dtype=float),
            end=np.array([r[3] for r in recs], dtype=float),
            standalone=np.array([r[4] for r in recs], dtype=float),
            status=np.array([r[6] for r in recs], dtype=object),
            pruned=np.array([r[8] for r in recs], dtype=np.int64),
            quality=np.array([r[9] for r in recs], dtype=float),
            warmup=warm, llm_calls=sim.llm_calls, wall_s=wall_s, sim_end_s=sim.now,
            engines=engines, kv_samples=sim.kv_samples, calls=sim.call_records,
        )

    # -- derived ---------------------------------------------------------------
    @property
    def measured(self) -> slice:
        return slice(self.warmup, None)

    def latency(self) -> np.ndarray:
        """End-to-end latency of measured, admitted runs."""
        m = self.measured
        ok = self.status[m] != "rejected"
        return (self.end[m] - self.arrival[m])[ok]

    def ratios(self) -> np.ndarray:
        """``latency / standalone`` per measured run; ``inf`` for rejected runs and for runs whose
        retries a policy pruned (they end early, on their loop's ``on_exhausted`` path, without the
        answer the full retry budget might have produced: a miss, never a cheap success)."""
        m = self.measured
        r = (self.end[m] - self.arrival[m]) / np.maximum(self.standalone[m], 1e-12)
        r[(self.status[m] == "rejected") | (self.pruned[m] > 0)] = math.inf
        return r

    def attainment(self, scale: float) -> float:
        r = self.ratios()
        return float(np.mean(r <= scale * (1 + 1e-12))) if len(r) else 0.0

    def min_scale(self, target: float) -> float:
        """Smallest SLO scale met by at least ``target`` of the measured runs."""
        r = np.sort(self.ratios())
        if not len(r):
            return math.inf
        k = max(math.ceil(target * len(r)) - 1, 0)
        return float(r[k])

    def rejected_fraction(self) -> float:
        return float(np.mean(self.status[self.measured] == "rejected")) if len(self.status) else 0.0

    def failed_fraction(self) -> float:
        return float(np.mean(self.status[self.measured] == "fail")) if len(self.status) else 0.0

    def mean_quality(self) -> float:
        """Mean declared answer quality of the measured runs that were not rejected (1.0 = no run
        ran any call on a lighter model option)."""
        if self.quality is None or not len(self.quality):
            return 1.0
        m = self.measured
        q = self.quality[m][self.status[m] != "rejected"]
        return float(np.mean(q)) if len(q) else 1.0

    def degraded_fraction(self) -> float:
        """Share of measured runs with at least one call on a lighter model option."""
        if self.quality is None or not len(self.quality):
            return 0.0
        return float(np.mean(self.quality[self.measured] < 1.0))

    def summary(self) -> dict:
        lat = self.latency()
        pct = (lambda q: float(np.percentile(lat, q)) if len(lat) else math.nan)
        return {
            "label": self.label, "policy": self.policy, "runs": int(len(self.status) - self.warmup),
            "p50_s": pct(50), "p99_s": pct(99), "scale95": self.min_scale(0.95), "scale99": self.min_scale(0.99),
            "rejected": self.rejected_fraction(), "failed": self.failed_fraction(),
            "pruned_runs": int(np.sum(self.pruned[self.measured] > 0)),
            "mean_quality": self.mean_quality(),
            "degraded_runs": self.degraded_fraction(),
            "llm_calls": self.llm_calls, "wall_s": self.wall_s,
            "llm_calls_per_wall_s": self.llm_calls / self.wall_s if self.wall_s > 0 else math.inf,
            "kv_peak_over_capacity": max((e.kv_peak_tokens / e.kv_capacity_tokens for e in self.engines),
                                         default=0.0),
        }
