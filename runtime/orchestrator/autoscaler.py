"""The monitor: per LLM pool, from live signals, scale out or in within the replicas it is allowed.

Every ``interval_s`` :meth:`Autoscaler.tick` samples each LLM pool (grants to its
replicas, calls waiting in Cortex's queue, calls running, requests waiting inside
the engines) and keeps the samples of the last ``window_s``. From them it measures,
per pool, over the window and over the last ``fast_window_s`` (scaling out reads the
short window too, while calls are waiting, so a load step is acted on within
seconds; scaling in needs both windows to agree):

* the arrival rate ``lambda`` (calls granted + growth of the queue, per second),
* the throughput ``X`` (grants per second) and the mean calls running ``L``, hence
  the service time per call ``S = L / X`` (Little's law; the graph's standalone
  estimate before any traffic),
* the mean wait in Cortex's queue ``Wq = mean queued / lambda``, the requests
  waiting inside the engines and the mean KV cache use of the replicas,

and, per workflow, the SLO attainment of the runs that finished in the window.

**Sizing** uses the planner's queueing model (:func:`planner.queueing.mgc_wait`, the
Allen-Cunneen M/G/c wait the planner sizes pools with) with the planner's batching
model (:func:`planner.queueing.llm_batch_point`): a replica running ``e`` calls at
once (``1 <= e <= slots``, ``slots`` = its ``max_num_seqs``) serves each in
``S(e) = S1 (1 + r (e - 1))``, where ``r = d1 / (d0 + d1)`` is the share of a
decode step that one more sequence adds (``d0`` the step's fixed time, ``d1`` one
sequence's time at the pool's typical context, from the replica's latency
profile; ``r = 0`` without one: slots are independent servers) and ``S1`` is
calibrated from the *measured* service time at the measured batch
(``S1 = S / (1 + r (e_now - 1))``): the profile gives the shape, the live
signals the level. At ``n`` replicas the operating batch ``b`` solves Little's law
``b = (lambda / n) S(b)`` (unstable when ``(lambda / n) S1 r >= 1``), and the pool
is ``n x k`` servers of service time ``S(b)``, with ``k = slots S(b) / S(slots)``
the servers one replica is worth at that batch (its full-batch throughput
``slots / S(slots)`` times ``S(b)``; ``k = slots`` when ``r = 0``, ``k = 1`` when
batching adds no throughput, ``r = 1``, as on a CPU whose step time is linear in
the batch). The wanted size is the smallest ``n`` within ``[min, max]`` whose
predicted utilisation (``lambda S(b) / (n k)``: the fraction of the full-batch
throughput used) is at most ``target_utilisation`` and whose predicted mean wait
is at most ``wait_budget`` x ``S(b)``. A pool missing its SLO in the window
(attainment under ``slo_target``) with calls waiting gets at least one more replica,
and so does a KV-bound one (mean KV cache use over the short window at least
``kv_high`` with calls waiting: the model counts slots, not KV blocks); a scale-in
must leave the KV load under ``kv_high`` on the replicas kept.

**No flapping** comes from the measurement's own uncertainty, not from a fixed
utilisation band: a rate measured from ``N`` arrivals over ``T`` seconds is
known to ``+- z sqrt(N) / T`` (Poisson counts, ``z = confidence_z``). Scaling out
sizes for the *lower* confidence bound of the rate (over the window, or over the
short window while calls are waiting): only a significant rise adds replicas.
Scaling in sizes for the window's point estimate (and never below what the short
window's lower bound or the scale-out rule wants), so right after a scale-in the
scale-out rule cannot fire unless the rate rises significantly; the band between
the two is the hysteresis, and it narrows as the load (and so ``N``) grows.
Scaling out happens at once (after ``scale_out_cooldown_s`` since the pool's last
action), by as many replicas as the model asks; scaling in needs the model to want
fewer replicas continuously for ``scale_in_stable_s``, not within
``scale_in_cooldown_s`` of the last action, and removes at most ``scale_in_step``
replicas per action (None: down to the largest size the model wanted over the
last ``fast_window_s`` at once, so a pool grown for a step returns to its low-load size in
one action, not one replica per cool-down, and one noisy window does not take it
below what the load needs), never while the window's attainment is under target.
``scale_in_utilisation`` (None by default) can add a fixed band on top: scale-in
sizes at that utilisation. ``budget_per_hour``
caps the replica-hours a scale-out may add (a replica's price: the plan's pool
cost per replica; unpriced replicas are not capped).

**Decision latency**: the monitor remembers when the model first wanted a size other
than the current one (the signal crossing); every decision carries ``pending_s``, the
time from that crossing to the decision (cool-downs and the scale-in stability
period included), in its signals.

Every decision that changes something or is held back by a limit is a
:class:`Decision` (logged with its reason and signals, kept in ``decisions``, sent
to ``listeners``: the SSE stream; counted in :meth:`metrics_text`). Actions run
through :class:`~runtime.orchestrator.scaling.PoolScaler` in the background; a pool
with an action in progress is not decided on again until it ends.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from planner.queueing import mgc_wait
from runtime.orchestrator.metrics import PromText
from runtime.orchestrator.pools import Pool, Replica
from runtime.orchestrator.results import RunInfo
from runtime.orchestrator.scaling import PoolScaler

if TYPE_CHECKING:
    from cortexlang import ir
    from runtime.orchestrator.orchestrator import Orchestrator

log = logging.getLogger("cortex.autoscaler")


@dataclass(frozen=True)
class PoolLimits:
    """The inventory one pool may use."""

    min_replicas: int = 1
    max_replicas: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 <= min <= max replicas (got min={self.min_replicas}, max={self.max_replicas})")


@dataclass(frozen=True)
class AutoscalerConfig:
    """The monitor's settings (see module docstring)."""

    default: PoolLimits = PoolLimits()
    pools: dict[str, PoolLimits] = field(default_factory=dict)
    """Per pool (spec name, e.g. ``generate``) limits; others get ``default``."""
    interval_s: float = 0.5
    window_s: float = 20.0
    """Signals for scaling in (and the SLO attainment) are measured over this long."""
    fast_window_s: float = 4.0
    """Signals for scaling out: a short window, so a load step is acted on within seconds."""
    target_utilisation: float = 0.8
    scale_in_utilisation: float | None = None
    """None: scale-in sizes at ``target_utilisation`` (the hysteresis is the rate's confidence band); a
    number: at that utilisation, a fixed band on top."""
    confidence_z: float = 2.0
    """Width of the rate's confidence band in standard deviations (Poisson counts): scaling out needs the
    lower bound to want more replicas."""
    wait_budget: float = 0.5
    """Predicted mean queue wait allowed, as a fraction of the measured service time."""
    slo_target: float = 0.95
    kv_high: float = 0.9
    """KV cache use (mean over a pool's replicas) above which waiting calls are KV-bound: scale out."""
    scale_out_cooldown_s: float = 5.0
    scale_in_cooldown_s: float = 30.0
    scale_in_stable_s: float = 20.0
    scale_in_step: int | None = None
    """The most replicas one scale-in removes (None: down to the model's size in one action)."""
    budget_per_hour: float | None = None

    def limits(self, pool: str, stages: Iterable[str] = ()) -> PoolLimits:
        """The limits of runtime pool ``pool`` (its name without a version suffix), else of the first of the
        ``stages`` it serves that has some, else ``default``."""
        for key in (pool.partition("@")[0], *stages):
            if key in self.pools:
                return self.pools[key]
        return self.default


def declared_config(workflow: "ir.Workflow") -> AutoscalerConfig | None:
    """The limits ``workflow``'s ``autoscale`` block declares (None when it has none), keyed by stage: a
    block naming a shared ``pool =`` applies to each stage on it (the runtime pool serving them is named
    after one of them)."""
    autoscale = workflow.autoscale
    if autoscale is None:
        return None
    pools = {}
    for name, lim in autoscale.pools.items():
        stages = [st.name for st in workflow.stages if getattr(st, "pool", None) == name] or [name]
        pools.update({stage: PoolLimits(lim.min_replicas, lim.max_replicas) for stage in stages})
    return AutoscalerConfig(default=PoolLimits(autoscale.default.min_replicas, autoscale.default.max_replicas),
                            pools=pools, budget_per_hour=autoscale.budget_per_hour)


def parse_limits(items: list[str], base: AutoscalerConfig | None = None) -> AutoscalerConfig:
    """``[POOL:]min=N,max=M`` items (``cortex serve --autoscale``, repeatable; ``budget=$/h`` on one
    without a pool sets the hourly budget) over ``base`` (the ``.cortex`` file's limits: each item
    overrides only what it names) -> a config; ValueError with the offending item."""
    base = base or AutoscalerConfig()
    default, pools, budget = base.default, dict(base.pools), base.budget_per_hour
    for item in items:
        pool, _, spec = item.rpartition(":")
        values: dict[str, float] = {}
        for part in filter(None, spec.split(",")):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("min", "max", "budget"):
                raise ValueError(f"--autoscale {item!r}: expected [POOL:]min=N,max=M[,budget=DOLLARS_PER_HOUR]")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--autoscale {item!r}: {key} must be a number") from None
        current = pools.get(pool, default)
        limits = PoolLimits(int(values.get("min", current.min_replicas)), int(values.get("max", current.max_replicas)))
        if pool:
            pools[pool] = limits
        else:
            default = limits
        budget = values.get("budget", budget)
    return replace(base, default=default, pools=pools, budget_per_hour=budget)


@dataclass(frozen=True)
class Signals:
    """What the monitor measured for one pool over the window."""

    arrival_rate: float
    throughput: float
    running: float
    queued: float
    service_s: float
    queue_wait_s: float
    engine_waiting: float
    attainment: float | None
    replicas: int
    kv_usage: float = 0.0
    """Mean used fraction of the replicas' KV caches over the window."""
    span_s: float = 0.0
    """Seconds the signals cover (0: unknown; the arrival rate is then taken as exact)."""

    def rate_bounds(self, z: float) -> tuple[float, float]:
        """The arrival rate's ``z``-sigma confidence bounds: ``N`` arrivals in ``span_s`` seconds are a
        Poisson count, known to ``+- z sqrt(N)`` (the upper bound adds ``z^2``, so that no arrival does not
        read as a certain zero); (rate, rate) when the span is unknown."""
        if self.span_s <= 0:
            return self.arrival_rate, self.arrival_rate
        n = self.arrival_rate * self.span_s
        return max(n - z * math.sqrt(n), 0.0) / self.span_s, (n + z * math.sqrt(n) + z * z) / self.span_s


@dataclass(frozen=True)
class Decision:
    """One decision of the monitor (see module docstring)."""

    t: float
    pool: str
    action: str
    """``scale_out``, ``scale_in`` or ``hold`` (held back by a limit, a cool-down or the budget)."""
    current: int
    desired: int
    reason: str
    signals: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": "decision"}


@dataclass(frozen=True)
class BatchModel:
    """Per-call service time of a replica against the calls it runs at once (see module docstring):
    ``S(e) = S1 (1 + slope (e - 1))`` for ``e`` clipped to ``[1, slots]``."""

    slots: int = 1
    slope: float = 0.0
    """``r``: the share of a decode step that one more sequence adds (0: slots are independent servers,
    1: batching adds no throughput)."""

    def stretch(self, batch: float) -> float:
        """``S(b) / S1``: a call on a replica running ``batch`` calls on average runs among
        ``min(max(batch, 1), slots)`` (at least itself, at most the slots)."""
        return 1.0 + self.slope * (min(max(batch, 1.0), self.slots) - 1.0)

    def operating_batch(self, offered: float) -> float | None:
        """Mean calls running on a replica offered ``offered = (lambda / n) S1``: the fixed point of
        ``b = offered x stretch(b)`` (``b = offered`` while under one call; above, linear in ``b``:
        ``b = offered (1 - r) / (1 - offered r)``); None when it has none within the slots (then
        ``offered >= slots / stretch(slots)``: more than the replica's full-batch throughput). With no
        batching model (``r = 0`` or one slot) ``offered`` itself, the M/G/c model judging stability."""
        if offered <= 1.0 or self.slope <= 0.0 or self.slots <= 1:
            return offered
        if offered * self.slope >= 1.0:
            return None
        batch = offered * (1.0 - self.slope) / (1.0 - offered * self.slope)
        return batch if batch < self.slots else None

    def servers(self, batch: float) -> float:
        """Servers of service time ``S(batch)`` one replica is worth: its full-batch throughput
        ``slots / S(slots)`` times ``S(batch)``."""
        return self.slots * self.stretch(batch) / self.stretch(self.slots)


def size_pool(signals: Signals, slots: int, limits: PoolLimits, utilisation: float, wait_budget: float, *,
              rate: float | None = None, slope: float = 0.0) -> int:
    """The smallest replica count in ``limits`` whose M/G/c model predicts a utilisation of at most
    ``utilisation`` and a mean queue wait of at most ``wait_budget`` x the service time, at arrival rate
    ``rate`` (default: the measured one), with the batching model of the module docstring (``slope`` = its
    ``r``; the measured service time, at the measured batch ``running / replicas``, calibrates ``S1``);
    ``limits.max_replicas`` when none does, ``limits.min_replicas`` when there is no load to size for.
    With ``slope = 0`` (or one slot) the pool is ``n x slots`` servers of the measured service time."""
    rate = signals.arrival_rate if rate is None else rate
    if rate <= 0 or signals.service_s <= 0:
        return limits.min_replicas
    model = BatchModel(max(slots, 1), min(max(slope, 0.0), 1.0))
    s1 = signals.service_s / model.stretch(signals.running / max(signals.replicas, 1))
    for n in range(limits.min_replicas, limits.max_replicas + 1):
        batch = model.operating_batch(rate * s1 / n)
        if batch is None:
            continue
        service = s1 * model.stretch(batch)
        servers = n * model.servers(batch)
        if rate * service > utilisation * servers:
            continue
        wait = mgc_wait(max(int(servers + 1e-9), 1), rate, service, cs2=1.0)
        if wait is not None and wait.mean <= wait_budget * service:
            return n
    return limits.max_replicas


def batch_slope(pool: Pool) -> float:
    """The pool's ``r`` (see module docstring) from its first replica with a latency profile, at the
    pool's typical context (input + half the output tokens); 0 with no profile or one slot."""
    profile = next((r.profile for r in pool.replicas if r.profile is not None), None)
    if profile is None or max((r.slots for r in pool.replicas), default=1) <= 1:
        return 0.0
    context = pool.call_tokens[0] + pool.call_tokens[1] / 2.0
    d0 = profile.decode_fixed_s
    d1 = profile.decode_per_seq_s + profile.decode_per_kv_token_s * context
    return d1 / (d0 + d1) if d0 + d1 > 0 else 0.0


class _Sample:
    __slots__ = ("t", "grants", "queued", "running", "engine_waiting", "kv_usage")

    def __init__(self, t: float, grants: int, queued: int, running: int, engine_waiting: int,
                 kv_usage: float = 0.0) -> None:
        self.t, self.grants, self.queued, self.running, self.engine_waiting = t, grants, queued, running, engine_waiting
        self.kv_usage = kv_usage


class Autoscaler:
    """Scales each LLM pool from live signals with the planner's queueing model (see module docstring)."""

    def __init__(self, orchestrator: "Orchestrator", scaler: PoolScaler, config: AutoscalerConfig | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.orchestrator = orchestrator
        self.scaler = scaler
        self.config = config or AutoscalerConfig()
        self.clock = clock
        self.decisions: collections.deque[Decision] = collections.deque(maxlen=1000)
        self.listeners: list[Callable[[Decision], None]] = []
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.desired: dict[str, int] = {}
        self.signals: dict[str, Signals] = {}
        self._samples: dict[str, collections.deque[_Sample]] = {}
        self._grants: dict[str, dict[str, tuple[Replica, int]]] = {}
        """Pool -> replica id -> (the replica, grants seen: its ``served`` counter, to count grants by
        difference)."""
        self._totals: dict[str, int] = collections.defaultdict(int)
        self._runs: dict[str, collections.deque[tuple[float, bool]]] = collections.defaultdict(collections.deque)
        self._last_action: dict[str, float] = {}
        self._fewer_since: dict[str, tuple[float, collections.deque[tuple[float, int]]]] = {}
        """Pool -> (since when the model has wanted fewer replicas, what it wanted at each tick of the last
        ``fast_window_s``)."""
        self._crossed: dict[str, tuple[str, float]] = {}
        """Pool -> (direction, when) the model first wanted more (``out``) or fewer (``in``) replicas than
        the current ones, since the last action."""
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        orchestrator.run_listeners.append(self._on_run)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Tick every ``interval_s`` in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="autoscaler")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._busy.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._on_run in self.orchestrator.run_listeners:
            self.orchestrator.run_listeners.remove(self._on_run)

    async def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug in a tick must not stop the monitor
                log.exception("autoscaler tick failed")
            await asyncio.sleep(self.config.interval_s)

    # ------------------------------------------------------------------ signals
    def _on_run(self, info: RunInfo) -> None:
        if info.slo_met is not None:
            self._runs[info.workflow].append((self.clock(), info.slo_met))

    def _attainment(self, workflow: str, now: float) -> float | None:
        runs = self._runs[workflow]
        while runs and runs[0][0] < now - self.config.window_s:
            runs.popleft()
        return sum(met for _, met in runs) / len(runs) if runs else None

    def _sample(self, pool: Pool, now: float) -> None:
        seen = self._grants.setdefault(pool.name, {})
        for r in pool.replicas:
            # Keyed by id but checked by identity: a scale-out may reuse a removed replica's id, and the new
            # replica's counter starts at 0 (counting it from the old one's would read as negative grants).
            previous, served = seen.get(r.replica_id, (None, 0))
            self._totals[pool.name] += r.served - (served if previous is r else 0)
            seen[r.replica_id] = (r, r.served)
        metrics = [r.engine.metrics() for r in pool.replicas if r.engine is not None]
        waiting = sum(m.waiting for m in metrics)
        kv = sum(m.kv_cache_usage for m in metrics) / len(metrics) if metrics else 0.0
        samples = self._samples.setdefault(pool.name, collections.deque())
        samples.append(_Sample(now, self._totals[pool.name], pool.queued, pool.running, waiting, kv))
        while len(samples) > 2 and samples[0].t < now - self.config.window_s:
            samples.popleft()

    def measure(self, pool: Pool, workflow: str, now: float, span_s: float | None = None) -> Signals | None:
        """The pool's signals over the last ``span_s`` (default: the window); None until the samples
        cover half of it (too short to tell a rate from noise)."""
        span_s = min(span_s or self.config.window_s, self.config.window_s)
        samples = [s for s in self._samples.get(pool.name, ()) if s.t >= now - span_s]
        if len(samples) < 2 or samples[-1].t - samples[0].t < span_s / 2:
            return None
        first, last = samples[0], samples[-1]
        span = last.t - first.t
        grants = last.grants - first.grants
        throughput = grants / span
        arrival = max(grants + last.queued - first.queued, 0) / span
        running = sum(s.running for s in samples) / len(samples)
        queued = sum(s.queued for s in samples) / len(samples)
        service = running / throughput if throughput > 0 else max(pool.expected_s, 1e-3)
        return Signals(arrival_rate=arrival, throughput=throughput, running=running, queued=queued,
                       service_s=service, queue_wait_s=queued / arrival if arrival > 0 else 0.0,
                       engine_waiting=sum(s.engine_waiting for s in samples) / len(samples),
                       kv_usage=sum(s.kv_usage for s in samples) / len(samples),
                       attainment=self._attainment(workflow, now), replicas=len(pool.replicas), span_s=span)

    def size(self, signals: Signals, slots: int, limits: PoolLimits, utilisation: float, *,
             rate: float | None = None, slope: float = 0.0) -> int:
        """:func:`size_pool` with this monitor's wait budget."""
        return size_pool(signals, slots, limits, utilisation, self.config.wait_budget, rate=rate, slope=slope)

    # ------------------------------------------------------------------ deciding
    def tick(self) -> list[Decision]:
        """Sample every LLM pool, decide, start the actions decided; the decisions made."""
        now = self.clock()
        made = []
        for version in list(self.orchestrator.versions.values()):
            for pool in {p.name: p for p in version.pools.values() if p.kind == "llm"}.values():
                self._sample(pool, now)
                if pool.name in self._busy:
                    continue
                try:
                    decision = self._decide(pool, version.name, now)
                except Exception:  # a bug deciding one pool must not stop the others
                    log.exception("autoscaler: deciding pool %s failed", pool.name)
                    continue
                if decision is not None:
                    made.append(decision)
                    self._record(decision)
        return made

    def _decide(self, pool: Pool, workflow: str, now: float) -> Decision | None:
        version = self.orchestrator.versions.get(workflow)
        stages = sorted(s for s, p in version.pools.items() if p is pool) if version is not None else []
        cfg, limits = self.config, self.config.limits(pool.name, stages)
        recent = self.measure(pool, workflow, now, cfg.fast_window_s)
        signals = self.measure(pool, workflow, now)
        if recent is None:
            return None
        self.signals[pool.name] = signals or recent
        slots = max((r.slots for r in pool.replicas), default=1)
        current = len(pool.replicas)
        slope = batch_slope(pool)
        windowed = signals is not None
        base = signals or recent  # the service time and batch: from the window (more calls, less noise)
        z = cfg.confidence_z

        def sized(rate: float, utilisation: float = cfg.target_utilisation) -> int:
            return self.size(base, slots, limits, utilisation, rate=rate, slope=slope)

        # Up when the rate's lower confidence bound wants more: over the window, or over the short window (a
        # load step shows within seconds) while calls are waiting (a burst of arrivals that finds free slots
        # is noise, not a step). A standing queue (at least a call waiting per replica over the short window,
        # the admission policy's test) is itself the evidence that capacity is short: the short window's
        # point estimate then sizes the pool, so a step is met in one action, not over the window.
        pressed = recent.queued >= 0.5 or recent.engine_waiting >= 0.5
        standing = recent.queued + recent.engine_waiting >= max(current, 1)
        sustained = sized(signals.rate_bounds(z)[0]) if signals else limits.min_replicas
        sudden = (sized(recent.arrival_rate) if standing else sized(recent.rate_bounds(z)[0]) if pressed
                  else limits.min_replicas)
        want = max(sustained, sudden)
        signals = recent if signals is None or sudden > sustained else signals
        missing_slo = signals.attainment is not None and signals.attainment < cfg.slo_target
        if missing_slo and signals.queued >= 1 and want <= current:
            want = min(current + 1, limits.max_replicas)
        # KV-bound: the engines cannot admit the calls waiting although slots look free (the M/G/c model
        # counts slots, not KV blocks), so one more replica.
        kv_full = recent.kv_usage >= cfg.kv_high and pressed
        if kv_full and want <= current:
            want = min(current + 1, limits.max_replicas)
        want = max(want, limits.min_replicas)
        self.desired[pool.name] = want
        since = now - self._last_action.get(pool.name, -math.inf)
        facts: dict[str, Any] = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(signals).items()}
        facts["batch_slope"] = round(slope, 4)
        why = (f"lambda={signals.arrival_rate:.2f}/s S={signals.service_s:.3f}s "
               f"rho={signals.arrival_rate * signals.service_s / max(current * slots, 1):.2f} "
               f"Wq={signals.queue_wait_s:.3f}s queued={signals.queued:.1f}"
               + (f" attainment={signals.attainment:.3f}" if signals.attainment is not None else ""))
        if want > current:
            self._fewer_since.pop(pool.name, None)
            facts["pending_s"] = self._pending(pool.name, "out", now)
            if since < cfg.scale_out_cooldown_s:
                return None  # the last action's effect is not measured yet
            affordable = self._affordable(pool, want - current)
            if affordable <= 0:
                return Decision(now, pool.name, "hold", current, want, f"budget reached; {why}", facts)
            target = current + affordable
            model = f"M/G/c model wants {want} replicas" + (" (SLO missed in the window)" if missing_slo else "") \
                + (f" (KV {recent.kv_usage:.0%} used with calls waiting)" if kv_full else "")
            return Decision(now, pool.name, "scale_out", current, target, f"{model}: {why}", facts)
        # Down to what the window's point estimate needs, never below what the short window's lower bound
        # (a significant rise, queue or not) or the scale-out rule wants: right after a scale-in, the
        # scale-out rule cannot fire without a significant rise.
        in_util = cfg.scale_in_utilisation or cfg.target_utilisation
        fewer = max(sized(base.arrival_rate, in_util), sized(recent.rate_bounds(z)[0], in_util), want)
        # Scaling in must leave the KV load room: the replicas kept would hold it below kv_high.
        kv_room = max(signals.kv_usage, recent.kv_usage) * current / max(fewer, 1) < cfg.kv_high
        if (not windowed or fewer >= current or missing_slo or signals.queued >= 1 or recent.queued >= 1
                or not kv_room):  # no scale-in before the window has signals: the short one is too noisy
            self._fewer_since.pop(pool.name, None)
            self._crossed.pop(pool.name, None)
            return None
        first, wanted = self._fewer_since.setdefault(pool.name, (now, collections.deque()))
        wanted.append((now, fewer))
        while wanted[0][0] < now - cfg.fast_window_s:
            wanted.popleft()
        # Scale in to the largest size the model wanted over the last short window (one noisy tick does not
        # set the size), not since it first wanted fewer: a pool shrinking after a step would keep the sizes
        # of the step's tail for another stable period.
        most = max(n for _, n in wanted)
        facts["pending_s"] = self._pending(pool.name, "in", now)
        if now - first < cfg.scale_in_stable_s or since < cfg.scale_in_cooldown_s:
            return None
        target = max(most, current - cfg.scale_in_step) if cfg.scale_in_step else most
        return Decision(now, pool.name, "scale_in", current, target,
                        f"{most} replicas would serve at utilisation <= {in_util:g} "
                        f"for {now - first:.0f} s: {why}", facts)

    def _pending(self, pool: str, direction: str, now: float) -> float:
        """Seconds since the model first wanted to scale ``pool`` in ``direction`` (0 at the crossing)."""
        crossed = self._crossed.get(pool)
        if crossed is None or crossed[0] != direction:
            crossed = self._crossed[pool] = (direction, now)
        return round(now - crossed[1], 4)

    def _affordable(self, pool: Pool, more: int) -> int:
        """How many of ``more`` replicas the hourly budget allows (all when unpriced or unbudgeted)."""
        budget = self.config.budget_per_hour
        price = self._price(pool)
        if budget is None or price <= 0:
            return more
        spent = sum(len(p.replicas) * self._price(p) for p in self.orchestrator.pools_by_name.values()
                    if p.kind == "llm")
        return max(min(more, int((budget - spent) // price)), 0)

    def _price(self, pool: Pool) -> float:
        """$/h of one replica of ``pool``: its plan pool's cost per replica (0 when unplanned)."""
        for version in self.orchestrator.versions.values():
            plan = version.spec.plan
            if plan is None:
                continue
            for w in plan.workflows:
                for p in w.llm_pools:
                    if version.pools.get(p.stage) is pool:
                        return p.cost_per_hour / max(p.replicas, 1)
        return 0.0

    def _record(self, decision: Decision) -> None:
        self.decisions.append(decision)
        self.counts[(decision.pool, decision.action)] += 1
        log.info("autoscaler: pool %s %s %d -> %d: %s", decision.pool, decision.action, decision.current,
                 decision.desired, decision.reason)
        for listener in self.listeners:
            try:
                listener(decision)
            except Exception:
                log.exception("autoscaler listener %r failed", listener)
        if decision.action == "hold":
            return
        self._last_action[decision.pool] = decision.t
        self._fewer_since.pop(decision.pool, None)
        self._crossed.pop(decision.pool, None)
        task = asyncio.get_running_loop().create_task(self._act(decision), name=f"autoscale:{decision.pool}")
        self._busy[decision.pool] = task

    async def _act(self, decision: Decision) -> None:
        try:
            await self.scaler.resize(decision.pool, decision.desired, reason=f"autoscaler: {decision.reason}")
        except Exception as exc:  # ScalingError, or a pool retired meanwhile: the next tick decides again
            log.warning("autoscaler: pool %s could not %s: %s", decision.pool, decision.action, exc)
        finally:
            self._busy.pop(decision.pool, None)
            self._last_action[decision.pool] = self.clock()  # cool-downs count from the action's end

    # ------------------------------------------------------------------ metrics
    def metrics_text(self) -> str:
        """Prometheus text: per pool the desired replicas and measured signals, decisions by action."""
        out = PromText()
        gauges = (("cortex_autoscaler_desired_replicas", "Replicas the monitor wants for the pool.", None),
                  ("cortex_autoscaler_arrival_rate", "Calls per second into the pool (window).", "arrival_rate"),
                  ("cortex_autoscaler_service_seconds", "Measured service time per call (window).", "service_s"),
                  ("cortex_autoscaler_queue_wait_seconds", "Mean wait in Cortex's queue (window).", "queue_wait_s"))
        for name, help_text, attr in gauges:
            out.family(name, "gauge", help_text)
            for pool, signals in sorted(self.signals.items()):
                value = self.desired.get(pool, signals.replicas) if attr is None else getattr(signals, attr)
                out.sample(name, value, pool=pool)
        out.family("cortex_autoscaler_decisions_total", "counter", "Monitor decisions by pool and action.")
        for (pool, action), n in sorted(self.counts.items()):
            out.sample("cortex_autoscaler_decisions_total", n, pool=pool, action=action)
        return out.text()


__all__ = ["Autoscaler", "AutoscalerConfig", "BatchModel", "Decision", "PoolLimits", "Signals", "batch_slope",
           "declared_config", "parse_limits", "size_pool"]
