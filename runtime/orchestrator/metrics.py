"""The orchestrator's own measurements, and their Prometheus text rendering.

Cheap to update on the hot path: counters are plain ints, latencies go into a
fixed-bucket histogram *and* a bounded reservoir of the latest samples (for
exact recent percentiles in summaries). Gauges (queue depth, KV use, ...) are
read from the live pools and engines when rendered, never stored.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterable, Sequence

LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RESERVOIR = 10_000


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; nan when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class Histogram:
    """Cumulative-bucket histogram plus the latest ``RESERVOIR`` samples."""

    __slots__ = ("buckets", "counts", "total", "count", "recent")

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=RESERVOIR)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1
        self.recent.append(value)

    def percentile(self, q: float) -> float:
        return percentile(self.recent, q)


TOKENS_PER_S_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
"""Time per output token: from a GPU's ~1 ms to a busy CPU engine's ~0.2-1 s."""


class StageStats:
    """Per-stage counters and latency, split where it is spent.

    ``latency`` = ``queue`` (waiting for a slot in Cortex's pool) + ``service`` (everything
    after: prompt rendering and, for LLM calls, the engine's own queue, prefill and decode).
    For LLM calls the engine's figures add ``engine_queue`` (waiting inside the engine's
    batch, where the engine reports it), ``ttft`` (dispatch to first token) and
    ``tokens_per_s`` (decode rate: output tokens after the first per second after it) and its
    inverse ``tpot`` (time per output token after the first); ``prompt_tokens`` and
    ``output_tokens`` count the tokens every call read and generated.
    """

    __slots__ = ("outcomes", "latency", "queue", "service", "engine_queue", "ttft", "tokens_per_s", "tpot",
                 "prompt_tokens", "output_tokens", "cached", "hedged", "borrowed", "swapped", "failovers")

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.latency = Histogram()
        self.queue = Histogram()
        self.service = Histogram()
        self.engine_queue = Histogram()
        self.ttft = Histogram()
        self.tokens_per_s = Histogram(TOKENS_PER_S_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS_S)
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.cached = 0
        self.hedged = 0
        self.borrowed = 0
        self.swapped = 0
        self.failovers = 0

    def observe_call(self, latency_s: float, queue_s: float, *, engine_queue_s: float | None = None,
                     ttft_s: float | None = None, engine_s: float | None = None, prompt_tokens: int = 0,
                     output_tokens: int = 0) -> None:
        """Account one finished call (engine figures only where the engine reported them)."""
        self.latency.observe(latency_s)
        self.queue.observe(queue_s)
        self.service.observe(max(latency_s - queue_s, 0.0))
        self.prompt_tokens += prompt_tokens
        self.output_tokens += output_tokens
        if engine_queue_s is not None:
            self.engine_queue.observe(engine_queue_s)
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
            if engine_s is not None and output_tokens > 1 and engine_s > ttft_s:
                self.tokens_per_s.observe((output_tokens - 1) / (engine_s - ttft_s))
                self.tpot.observe((engine_s - ttft_s) / (output_tokens - 1))

    def summary(self) -> dict[str, float]:
        """p50/p95 of each figure (nan where nothing was observed), for batch summaries."""
        out: dict[str, float] = {}
        for name in ("latency", "queue", "service", "engine_queue", "ttft", "tokens_per_s", "tpot"):
            hist: Histogram = getattr(self, name)
            out[f"{name}_p50"] = hist.percentile(50)
            out[f"{name}_p95"] = hist.percentile(95)
        return out


class RunStats:
    """Per-workflow run counters: by final status, latency, SLO attainment, rejections.

    SLO attainment counts the runs that ended on their own (``cancelled`` runs are counted in
    ``statuses`` only: a caller's cancellation is no SLO miss)."""

    __slots__ = ("statuses", "latency", "slo_met", "slo_counted", "rejected", "retries", "pruned")

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.latency = Histogram()
        self.slo_met = 0
        self.slo_counted = 0
        self.rejected = 0
        self.retries = 0
        self.pruned = 0

    @property
    def slo_attainment(self) -> float | None:
        return self.slo_met / self.slo_counted if self.slo_counted else None


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class PromText:
    """Builds a Prometheus text-format (0.0.4) exposition, one family at a time."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._declared: set[str] = set()

    def family(self, name: str, kind: str, help_text: str) -> None:
        if name not in self._declared:
            self._declared.add(name)
            self._lines.append(f"# HELP {name} {help_text}")
            self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self._lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, hist: Histogram, **labels: str) -> None:
        acc = 0
        for bound, count in zip((*hist.buckets, math.inf), hist.counts):
            acc += count
            le = "+Inf" if math.isinf(bound) else repr(bound)
            self._lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {acc}")
        self._lines.append(f"{name}_sum{_labels(labels)} {_num(hist.total)}")
        self._lines.append(f"{name}_count{_labels(labels)} {hist.count}")

    def extend(self, lines: Iterable[str]) -> None:
        self._lines.extend(lines)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
