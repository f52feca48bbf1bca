"""Measuring LLM engines where they serve, and fitting a latency profile with its spread.

``cortex calibrate`` and the demo call :func:`calibrate_orchestrator` on the engines of a
runtime spec *as they will serve*: the same backend (an in-process engine, or one ``vllm
serve`` process per engine), the same core pinning, every engine of the layout running.
Timings come from the :class:`~runtime.engines.base.Engine` interface (``ttft_s``,
``total_s``), i.e. through the serving path (HTTP and streaming included for ``vllm-server``).

Two measurements, because engines that share a machine's cores, caches or memory bandwidth
slow each other down only while both compute:

* the profile's coefficients come from each engine family measured **alone** (one engine
  probed while the others idle): how an engine serves when it has the machine to itself;
* the **contention** (:attr:`planner.profiles.LatencyProfile.contention_prefill` and
  ``contention_decode``), with two or more CPU engines: the same prefill and decode probe,
  alone on each engine and then on every engine at once, alternated ``rounds`` times;
  ``contention = median(at once) / median(alone) - 1`` per engine, the median over the
  family's engines. The planner and the simulator scale an iteration by ``1 + contention x``
  with ``x`` the fraction of the other engines' cores busy, so one calibration describes the
  engines at low load (rarely together) and at high load (always together). A layout of one
  engine cannot measure it: the machine's last measured contention is kept.

Probes, each repeated ``repeats`` times:

* prefill: one prompt of ``n`` random words with ``max_tokens=1``; TTFT is one
  prefill iteration of ``n`` tokens (no shared prefix: random words);
* decode: ``b`` concurrent counting prompts (``List k: 1, 2, ...,``: the model keeps
  counting, so it does not stop early), short or padded to a long context; the step time
  is ``(total - ttft) / (output_tokens - 1)`` of the request admitted last
  (:func:`batch_step_s`: the others may decode through its prefill).

The profile is a linear model (``planner.profiles``) and the engines are not linear:
on vLLM-CPU a 640-token context nearly doubled a short context's decode step (135 vs
71 ms), while 3 such sequences took no longer than one (136 ms), so no single fit of
``F + S b + K k`` holds everywhere. :func:`probes_for` therefore shapes the probes like
the workload the engines will serve -- its prompt lengths, its batch sizes -- so the fit
is exact where the calls run.

:func:`fit` gives the profile's coefficients (:mod:`planner.profiles`) by
non-negative least squares on the per-probe medians, and the *spread*: the
same fit on the per-probe fastest and slowest measurements, the largest
slowest/fastest ratio of any probe, and the fit's mean absolute error. A noisy
machine yields a wide spread, never a refusal: the spread is part of the profile.

One slow sample (a host hiccup) would bend a fit of few samples (the quick probes
take one per probe), so :func:`suspect_probes` names the probes that look like one:
the fit misses their median by more than :data:`REPROBE_MISS`, or, where the fit is
exact (as many probes as coefficients: nothing to miss), the machine's previous
calibration does by more than :data:`REPROBE_DRIFT`. Those are measured
:data:`REPROBES` more times and the fit is made again on the medians, which a single
outlier no longer moves. The record lists the probes measured again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engines.base import Engine, GenerationRequest, GenerationResult

WORDS = ("the sales table lists each order with its region quarter amount customer product date and "
         "status so a query can group sum count filter sort join compare rank average").split()

COEFFICIENTS = ("prefill_fixed_ms", "prefill_us_per_token", "decode_fixed_ms", "decode_ms_per_seq",
                "decode_ns_per_kv_token")


@dataclass(frozen=True)
class Probes:
    """What :func:`measure` sends. The default takes about a minute per repeat on a 2-core CPU
    through ``vllm serve`` (SmolLM2-135M); GPUs finish in seconds."""

    prefill_lengths: tuple[int, ...] = (64, 384, 1024)
    decode_batches: tuple[int, ...] = (1, 4, 8)
    decode_tokens: int = 24
    long_contexts: tuple[tuple[int, int], ...] = ((1, 768), (4, 768))
    """(batch, padding tokens) of the decode probes with a long context (separate the per-KV-token cost)."""
    repeats: int = 2


QUICK = Probes(prefill_lengths=(64, 768), decode_batches=(1, 4), decode_tokens=16, long_contexts=((1, 640), (3, 640)),
               repeats=1)
"""A smaller set (about half the time): for demos and tests."""


@dataclass
class Sample:
    """One measurement on one engine: a prefill of ``tokens`` or a decode step of ``batch`` sequences
    holding ``kv_tokens``; ``seconds`` is the TTFT or the median step time."""

    kind: str
    probe: str
    """Which probe: ``prefill-<length>`` or ``decode-<batch>+<padding>`` (same probe = same request shape)."""
    engine: int
    repeat: int
    seconds: float
    tokens: int = 0
    batch: int = 0
    kv_tokens: int = 0
    min_output_tokens: int = 0


@dataclass
class Calibration:
    """A fitted profile's coefficients, their spread and the samples behind them."""

    coefficients: dict[str, float]
    fastest: dict[str, float]
    slowest: dict[str, float]
    max_spread: float
    """Largest slowest/fastest ratio of any probe, minus 1 (0.3 = the slowest run of some probe took 30% longer)."""
    prefill_error: float
    decode_error: float
    """Mean absolute relative error of the fit on the per-probe medians."""
    samples: list[Sample] = field(default_factory=list)
    engines: int = 1
    """Engines running while it was measured (the coefficients come from one engine probed alone)."""
    load_average: tuple[float, float] = (0.0, 0.0)
    contention: dict[str, Any] | None = None
    """The ``cpu_contention`` record (:func:`contention_of`), None where not measured."""
    reprobed: list[str] = field(default_factory=list)
    """Probes measured again because one sample looked like an outlier (:func:`suspect_probes`)."""

    def record(self) -> dict[str, Any]:
        """The ``calibration`` record stored with the profile."""
        return {
            "engines_at_once": self.engines, "measured": "alone", "fastest": self.fastest, "slowest": self.slowest,
            "max_probe_spread": round(self.max_spread, 3), "fit_error": {
                "prefill": round(self.prefill_error, 3), "decode": round(self.decode_error, 3)},
            "load_average_before_after": [round(x, 2) for x in self.load_average],
            "reprobed": list(self.reprobed),
            "samples": [asdict(s) for s in self.samples],
        }


COUNTING_PROMPT_TOKENS = 25
"""Tokens of an unpadded :func:`counting_prompt` (SmolLM2's tokenizer), subtracted from the padding."""


def probes_for(spec: Any, quick: bool = False) -> Probes:
    """Probes shaped like the calls of ``spec``'s workflow: prefills up to its typical prompt, decodes at
    that context with batches from 1 to its engines' batch cap (at most 8; 4 when ``quick``)."""
    stages = [s for s in spec.program.workflow(spec.workflow).stages if s.kind == "llm"]
    context = int(statistics.median(s.input_tokens for s in stages)) if stages else 512
    cap = max((r.engine.max_num_seqs or 8) for pool in spec.llm_pools for r in pool.replicas) if spec.llm_pools else 8
    batch = max(min(cap, 4 if quick else 8), 2)
    pad = max(context - COUNTING_PROMPT_TOKENS, 0)
    decodes = tuple(dict.fromkeys(((1, pad), (1, pad // 2), (max(batch // 2, 2), pad), (batch, pad))))
    base = QUICK if quick else Probes()
    prefills = (64, context) if quick else (64, max(context // 2, 65), context, min(2 * context, 1536))
    return Probes(prefill_lengths=tuple(dict.fromkeys(prefills)), decode_batches=(), decode_tokens=base.decode_tokens,
                  long_contexts=decodes, repeats=base.repeats)


def filler(tokens_hint: int, salt: int) -> str:
    """About ``tokens_hint`` tokens of common words (~1 token each), shuffled by ``salt``."""
    rng = random.Random(salt)
    return " ".join(rng.choice(WORDS) for _ in range(max(tokens_hint, 1)))


def counting_prompt(salt: int, pad_tokens: int = 0) -> str:
    """A prompt the model answers by counting on (it does not stop early)."""
    pad = (filler(pad_tokens, salt) + "\n") if pad_tokens else ""
    return pad + f"List {salt}: " + ", ".join(str(i) for i in range(1, 9)) + ","


def nonneg_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0: drop the most negative term and refit."""
    active = list(range(x.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (coef >= 0).all():
            full = np.zeros(x.shape[1])
            full[active] = coef
            return full
        active.pop(int(np.argmin(coef)))


async def measure(engines: Sequence[Engine], probes: Probes = Probes(),
                  progress: Callable[[str], None] = lambda _: None, ids: Sequence[int] | None = None,
                  salt: int = 0) -> list[Sample]:
    """Run ``probes`` on every engine of ``engines`` at once (one engine: alone); they must be started.
    A sample's ``engine`` is the engine's position in ``engines``, or ``ids[position]``. Prompts differ
    per engine, repeat and ``salt`` (no probe may hit a prefix cached by an earlier one)."""
    n = len(engines)
    ids = list(range(n)) if ids is None else list(ids)

    async def on_all(make: Callable[[int], list[GenerationRequest]]) -> list[list[GenerationResult]]:
        return await asyncio.gather(*(asyncio.gather(*(e.generate(r) for r in make(i)))
                                      for i, e in enumerate(engines)))

    await on_all(lambda i: [GenerationRequest(prompt=f"warm up {i}", max_tokens=2)])
    samples: list[Sample] = []
    decodes = [(b, 0) for b in probes.decode_batches] + list(probes.long_contexts)
    for rep in range(probes.repeats):
        for length in probes.prefill_lengths:
            results = await on_all(lambda i: [GenerationRequest(
                prompt=filler(length, 7919 * (rep + 1) + 104729 * i + length + salt), max_tokens=1)])
            for i, (r,) in enumerate(results):
                if r.timing.ttft_s is not None:
                    samples.append(Sample("prefill", f"prefill-{length}", ids[i], rep, r.timing.ttft_s,
                                          tokens=r.prompt_tokens))
            progress(f"prefill {length} tokens x {n} engine(s): "
                     + ", ".join(f"{rs[0].timing.ttft_s or float('nan'):.3f} s" for rs in results))
        for probe, (batch, pad) in enumerate(decodes):
            results = await on_all(lambda i: [GenerationRequest(
                prompt=counting_prompt(1000 * probe + 100 * rep + 10 * i + j + 10_000 * (rep + 1) + salt, pad),
                max_tokens=probes.decode_tokens) for j in range(batch)])
            for i, rs in enumerate(results):
                step = batch_step_s(rs)
                if step is None:
                    continue
                kv = statistics.mean(r.prompt_tokens + r.output_tokens / 2 for r in rs) * batch
                samples.append(Sample("decode", f"decode-{batch}+{pad}", ids[i], rep, step,
                                      batch=batch, kv_tokens=int(kv), min_output_tokens=min(r.output_tokens for r in rs)))
            progress(f"decode batch {batch}{f' (+{pad} context)' if pad else ''} x {n} engine(s): "
                     + ", ".join(f"{s.seconds * 1e3:.1f} ms/step" for s in samples[-n:] if s.kind == "decode"))
    return samples


def batch_step_s(results: Sequence[GenerationResult]) -> float | None:
    """The decode step time of a probe's batch: ``(total - ttft) / (output_tokens - 1)`` of the request
    admitted last (the largest TTFT), None when no request decoded.

    The batch's requests arrive together but an engine may admit the first alone and the others an
    iteration later; the first then decodes through the others' prefill iterations (a 700-token
    prefill took 3 s on a vLLM-CPU core, adding ~100 ms to each of 24 steps), and with two requests
    the median is that inflated mean. The request admitted last decodes only beside requests that
    already decode: its steps are the batch's."""
    timed = [r for r in results if r.timing.ttft_s is not None and r.output_tokens > 1]
    if not timed:
        return None
    last = max(timed, key=lambda r: r.timing.ttft_s)
    return (last.timing.total_s - last.timing.ttft_s) / (last.output_tokens - 1)


CONTENTION_ROUNDS = 3
"""Alone / at-once alternations of :func:`measure_contention` (the median damps a noisy host)."""


async def measure_contention(engines: Sequence[Engine], probes: Probes = Probes(),
                             progress: Callable[[str], None] = lambda _: None,
                             rounds: int = CONTENTION_ROUNDS) -> list[Sample]:
    """Contention samples (see module docstring): per round, the longest prefill probe and the
    largest decode probe, first on each engine alone, then on all at once. Sample ``probe`` names are
    ``alone-<probe>`` and ``together-<probe>``; engines must be started and warm."""
    length = max(probes.prefill_lengths)
    decodes = [(b, 0) for b in probes.decode_batches] + list(probes.long_contexts)
    batch, pad = max(decodes)
    out: list[Sample] = []
    for rnd in range(rounds):
        for tag, groups in (("alone", [[i] for i in range(len(engines))]), ("together", [list(range(len(engines)))])):
            for group in groups:
                got = await measure([engines[i] for i in group], Probes(
                    prefill_lengths=(length,), decode_batches=(), long_contexts=((batch, pad),),
                    decode_tokens=probes.decode_tokens, repeats=1), ids=group,
                    salt=1_000_003 * (1 + rnd) + 7_919 * len(out) + 101 * group[0])
                for x in got:
                    x.probe, x.repeat = f"{tag}-{x.probe}", rnd
                out.extend(got)
        progress(f"contention round {rnd + 1}/{rounds}: " + "; ".join(
            f"{name} at once / alone x{ratio:.2f}" for name, ratio in _ratios(out).items()))
    return out


def _ratios(samples: Sequence[Sample]) -> dict[str, float]:
    """Per probe kind, the median over engines of median(together) / median(alone)."""
    out: dict[str, float] = {}
    for kind in ("prefill", "decode"):
        per_engine = []
        for e in sorted({s.engine for s in samples if s.kind == kind}):
            alone = [s.seconds for s in samples if s.kind == kind and s.engine == e and s.probe.startswith("alone-")]
            together = [s.seconds for s in samples
                        if s.kind == kind and s.engine == e and s.probe.startswith("together-")]
            if alone and together:
                per_engine.append(statistics.median(together) / max(statistics.median(alone), 1e-9))
        if per_engine:
            out[kind] = statistics.median(per_engine)
    return out


def contention_of(samples: Sequence[Sample], engines: int) -> dict[str, Any]:
    """The ``cpu_contention`` record of a profile from :func:`measure_contention`'s samples of its
    family's engines: ``prefill`` and ``decode`` slowdowns with every other engine busy (fractions,
    never below 0), how many engines ran at once, and the samples."""
    ratios = _ratios(samples)
    return {"prefill": round(max(ratios.get("prefill", 1.0) - 1.0, 0.0), 3),
            "decode": round(max(ratios.get("decode", 1.0) - 1.0, 0.0), 3),
            "engines_at_once": engines, "date": dt.date.today().isoformat(),
            "samples": [asdict(s) for s in samples]}


def _groups(samples: Sequence[Sample], kind: str) -> dict[str, list[Sample]]:
    """Samples of each probe across engines and repeats."""
    out: dict[str, list[Sample]] = {}
    for s in samples:
        if s.kind == kind:
            out.setdefault(s.probe, []).append(s)
    return out


def _prefill_s(c: dict[str, float], tokens: float) -> float:
    """A prefill of ``tokens`` under coefficients ``c`` (ms/us/ns, as a profile file stores them)."""
    return c["prefill_fixed_ms"] * 1e-3 + c["prefill_us_per_token"] * 1e-6 * tokens


def _decode_step_s(c: dict[str, float], batch: float, kv_tokens: float) -> float:
    """A decode step of ``batch`` sequences holding ``kv_tokens`` under coefficients ``c`` (as stored)."""
    return (c["decode_fixed_ms"] * 1e-3 + c["decode_ms_per_seq"] * 1e-3 * batch
            + c["decode_ns_per_kv_token"] * 1e-9 * kv_tokens)


def _fit(points: list[tuple[float, ...]], decode: bool) -> dict[str, float]:
    arr = np.array(points, dtype=float)
    if decode:
        coef = nonneg_lstsq(np.column_stack([np.ones(len(arr)), arr[:, 0], arr[:, 1]]), arr[:, 2])
        return {"decode_fixed_ms": round(float(coef[0]) * 1e3, 3), "decode_ms_per_seq": round(float(coef[1]) * 1e3, 3),
                "decode_ns_per_kv_token": round(float(coef[2]) * 1e9, 1)}
    coef = nonneg_lstsq(np.column_stack([np.ones(len(arr)), arr[:, 0]]), arr[:, 1])
    return {"prefill_fixed_ms": round(float(coef[0]) * 1e3, 3), "prefill_us_per_token": round(float(coef[1]) * 1e6, 2)}


def fit(samples: Sequence[Sample], engines: int = 1, load_average: tuple[float, float] = (0.0, 0.0)) -> Calibration:
    """Coefficients from the per-probe medians, and the spread (see module docstring).

    Raises ValueError without at least two prefill lengths and three decode configurations.
    """
    pre, dec = _groups(samples, "prefill"), _groups(samples, "decode")
    if len(pre) < 2 or len(dec) < 3:
        raise ValueError(f"too few probes to fit a profile ({len(pre)} prefill lengths, {len(dec)} decode "
                         "configurations; need 2 and 3)")

    def points(pick: Callable[[list[float]], float]) -> tuple[list, list]:
        p = [(statistics.mean(s.tokens for s in g), pick([s.seconds for s in g])) for g in pre.values()]
        d = [(g[0].batch, statistics.mean(s.kv_tokens for s in g), pick([s.seconds for s in g])) for g in dec.values()]
        return p, d

    mid_p, mid_d = points(statistics.median)
    coef = _fit(mid_p, False) | _fit(mid_d, True)
    fast = _fit(points(min)[0], False) | _fit(points(min)[1], True)
    slow = _fit(points(max)[0], False) | _fit(points(max)[1], True)
    spread = max(max(s.seconds for s in g) / max(min(s.seconds for s in g), 1e-9) - 1.0
                 for g in [*pre.values(), *dec.values()])

    def err(rows: list, predict: Callable[..., float]) -> float:
        return statistics.mean(abs(predict(*r[:-1]) - r[-1]) / r[-1] for r in rows)

    p_err = err(mid_p, lambda n: _prefill_s(coef, n))
    d_err = err(mid_d, lambda b, k: _decode_step_s(coef, b, k))
    return Calibration({k: coef[k] for k in COEFFICIENTS}, {k: fast[k] for k in COEFFICIENTS},
                       {k: slow[k] for k in COEFFICIENTS}, spread, p_err, d_err, list(samples), engines, load_average)


REPROBE_MISS = 0.10
"""A probe whose median the fit misses by more than this is measured again (runtime.drift's
``MAX_FIT_ERROR``: a fit missing its probes by more is left out of the drift margin)."""
REPROBE_DRIFT = 0.30
"""Where the fit is exact, a probe this far from the machine's previous calibration is measured again."""
REPROBES = 2
"""Extra measurements of a suspect probe: with the first, a median of three, which one outlier cannot move."""

_FREE_COEFFICIENTS = {"prefill": 2, "decode": 3}
"""Coefficients each fit has: with no more probes than these, the fit goes through every probe."""


def _predicted(kind: str, samples: Sequence[Sample], c: dict[str, float]) -> float:
    """What coefficients ``c`` (a profile's, in ms/us/ns) predict for a probe's samples."""
    if kind == "prefill":
        return _prefill_s(c, statistics.mean(s.tokens for s in samples))
    return _decode_step_s(c, samples[0].batch, statistics.mean(s.kv_tokens for s in samples))


def suspect_probes(samples: Sequence[Sample], previous: dict[str, float] | None = None) -> list[str]:
    """Probes whose median looks bent by an outlier (module docstring): the fit of ``samples`` misses
    it by more than :data:`REPROBE_MISS`, or, for a kind with no more probes than coefficients, the
    ``previous`` calibration's coefficients (ms/us/ns as stored; None: none on this machine) miss it by
    more than :data:`REPROBE_DRIFT`. Probes with three samples or more are never suspect (their median
    already rejects one outlier). Empty when ``samples`` are too few to fit."""
    try:
        coef = fit(samples).coefficients
    except ValueError:
        return []
    out = []
    for kind in ("prefill", "decode"):
        groups = _groups(samples, kind)
        exact = len(groups) <= _FREE_COEFFICIENTS[kind]
        for probe, g in groups.items():
            if len(g) >= 3:
                continue
            median = statistics.median(s.seconds for s in g)
            reference, limit = (previous, REPROBE_DRIFT) if exact else (coef, REPROBE_MISS)
            if reference is not None and abs(_predicted(kind, g, reference) / max(median, 1e-9) - 1.0) > limit:
                out.append(probe)
    return out


def probes_named(names: Sequence[str], like: Probes) -> Probes:
    """The probes of ``names`` (``prefill-<n>``, ``decode-<b>+<pad>``) once each, ``like``'s decode length."""
    prefills = tuple(int(n.split("-", 1)[1]) for n in names if n.startswith("prefill-"))
    decodes = tuple(tuple(int(x) for x in n.split("-", 1)[1].split("+")) for n in names if n.startswith("decode-"))
    return Probes(prefill_lengths=prefills, decode_batches=(), long_contexts=decodes,  # type: ignore[arg-type]
                  decode_tokens=like.decode_tokens, repeats=1)


async def measure_alone(engine: Engine, engine_id: int, probes: Probes, previous: dict[str, float] | None,
                        progress: Callable[[str], None] = lambda _: None) -> tuple[list[Sample], list[str]]:
    """:func:`measure` on one engine, then :data:`REPROBES` more samples of each :func:`suspect_probes`
    probe; returns the samples and the probes measured again."""
    samples = await measure([engine], probes, progress, ids=[engine_id])
    suspects = suspect_probes(samples, previous)
    if suspects:
        progress(f"measuring again (one sample looks like an outlier): {', '.join(suspects)}")
        for extra in range(REPROBES):
            samples += await measure([engine], probes_named(suspects, probes), progress, ids=[engine_id],
                                     salt=3_000_017 * (extra + 1))
    return samples, suspects


def profile_data(calibration: Calibration, *, model: str, device: str, tp: int, kv_cache_gib: float | None,
                 device_memory_gib: float, memory_utilization: float, how: str, where: str,
                 machine_key: str) -> dict[str, Any]:
    """A profile file's content (the ``planner/profile_data`` schema) with its ``calibration`` record
    and, on the CPU, the calibration's ``cpu_contention`` record."""
    today = dt.date.today().isoformat()
    cpu = device.upper() == "CPU"
    contention = calibration.contention
    data: dict[str, Any] = {
        "model": model, "gpu": device, "tp": tp, **calibration.coefficients,
        "device_memory_gib": device_memory_gib, "memory_utilization": memory_utilization,
        "sources": [f"calibrated on {today} by {how}; {where}"],
        "notes": f"measured alone, {calibration.engines} engine(s) running"
                 + (f", each pinned to {tp} core(s)" if cpu else "")
                 + (f"; {contention_line(contention)}" if cpu and contention else "")
                 + "; spread: fastest and slowest fits "
                 f"in calibration; largest probe spread {100 * calibration.max_spread:.0f}%",
        "calibration": {"machine_key": machine_key, "machine": where, "date": today, "how": how,
                        **calibration.record()},
    }
    if cpu and contention:
        data["cpu_contention"] = contention
    if kv_cache_gib is not None:
        data["kv_cache_gib"] = kv_cache_gib
    return data


def contention_line(contention: dict[str, Any] | None) -> str:
    """The contention of a calibration in words (``cortex calibrate`` and the demo print it)."""
    if not contention:
        return "contention: not measured (one engine; the planner assumes none until a layout of several is)"
    where = (f"kept from {contention['inherited_from']}" if "inherited_from" in contention
             else f"measured {contention.get('date', 'here')}")
    return (f"contention with every other engine busy ({contention['engines_at_once']} at once): prefill "
            f"+{100 * contention['prefill']:.0f}%, decode +{100 * contention['decode']:.0f}% ({where})")


def kept_contention(previous: Any) -> dict[str, Any] | None:
    """The ``cpu_contention`` record of ``previous`` (a profile this machine calibrated before), to keep
    when a layout of one engine cannot measure contention; None when there is none."""
    path = getattr(previous, "path", None)
    if not path:
        return None
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8")).get("cpu_contention")
    except (OSError, ValueError):
        return None
    if not record:
        return None
    return {k: v for k, v in record.items() if k != "samples"} | {
        "inherited_from": record.get("inherited_from", path)}


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


@dataclass
class Calibrated:
    """One profile written by :func:`calibrate_orchestrator`."""

    model: str
    device: str
    tp: int
    path: str
    calibration: Calibration
    previous: dict[str, float] | None
    """The coefficients the lookups returned before (shipped or an older calibration), None if there was none."""
    previous_path: str | None


def calibration_missing(spec: Any) -> list[str]:
    """What this machine's calibrated profiles lack to describe ``spec``'s LLM engines, in words: a
    (model, device, width) with no profile measured here at that width, or, for two or more CPU engines,
    a contention nobody measured. Empty: the profiles hold for these engines, whatever their count (the
    coefficients are an engine alone; the contention covers several at once)."""
    from planner.profiles import get_profile
    from runtime.profiles import describe

    missing = []
    keys = [(r.profile, r.device, r.tp) for pool in spec.llm_pools for r in (*pool.replicas, *pool.prefill_replicas)]
    for key in dict.fromkeys(keys):
        use = describe(*key)
        if use is None or not use.calibrated or use.measured_tp is not None:
            missing.append(f"{key[0]} on {key[1]} tp{key[2]}: not calibrated on this machine")
    cpu = [k for k in keys if k[1].upper() == "CPU"]
    if len(cpu) >= 2 and not missing and not any(kept_contention(get_profile(*k)) for k in dict.fromkeys(cpu)):
        missing.append(f"{len(cpu)} CPU engines: their contention was never measured")
    return missing


def _calibrated_before(model: str, device: str, tp: int) -> dict[str, float] | None:
    """The coefficients (ms/us/ns as stored) of this machine's calibration of (model, device, tp) at
    that width, None when there is none (the shipped profiles were measured elsewhere)."""
    from planner.profiles import get_profile
    from runtime.profiles import describe

    use = describe(model, device, tp)
    if use is None or not use.calibrated or use.measured_tp is not None:
        return None
    return coefficients_of(get_profile(model, device, tp))


def coefficients_of(profile: Any) -> dict[str, float]:
    """A :class:`planner.profiles.LatencyProfile`'s coefficients in the units a profile file stores."""
    return {"prefill_fixed_ms": profile.prefill_fixed_s * 1e3,
            "prefill_us_per_token": profile.prefill_per_token_s * 1e6, "decode_fixed_ms": profile.decode_fixed_s * 1e3, "decode_ms_per_seq": profile.decode_per_seq_s * 1e3,
            "decode_ns_per_kv_token": profile.decode_per_kv_token_s * 1e9}


async def calibrate_orchestrator(orchestrator: Any, probes: Probes | None = None, *, how: str,
                                 progress: Callable[[str], None] = lambda _: None) -> list[Calibrated]:
    """Measure the LLM engines of a started orchestrator (``probes``, default :func:`probes_for` its
    spec): one engine per (model family, device, tp) alone, then the CPU engines' contention when there
    are several (module docstring); fit one profile per family and store it for this machine
    (:mod:`runtime.profiles`)."""
    probes = probes or probes_for(orchestrator.spec)
    from planner.profiles import ProfileNotFound, get_profile
    from runtime import profiles as cache

    replicas = [(rep, orchestrator.pools_by_name[pool.name]) for pool in orchestrator.spec.llm_pools
                for rep in pool.replicas]
    engines: list[Engine] = []
    family: list[tuple[str, str, int]] = []
    kv: dict[tuple[str, str, int], int | None] = {}
    for rep, pool in replicas:
        live = next((r for r in pool.replicas if r.replica_id == rep.replica_id), None)
        if live is None or live.engine is None:
            continue
        engines.append(live.engine)
        key = (rep.profile, rep.device, rep.tp)
        family.append(key)
        kv.setdefault(key, rep.engine.kv_cache_bytes)
    if not engines:
        raise ValueError("the layout has no running LLM engine to calibrate")
    before = load_average()
    samples: list[Sample] = []
    reprobed: dict[tuple[str, str, int], list[str]] = {}
    for key in dict.fromkeys(family):
        first = family.index(key)
        progress(f"{key[0]} on {key[1]} tp{key[2]}: engine {first} alone, {len(engines)} running")
        got, reprobed[key] = await measure_alone(engines[first], first, probes, _calibrated_before(*key), progress)
        samples += got
    cpu = [i for i, k in enumerate(family) if k[1].upper() == "CPU"]
    together: list[Sample] = []
    if len(cpu) >= 2:
        progress(f"contention: {len(cpu)} CPU engines alone, then at once")
        together = await measure_contention([engines[i] for i in cpu], probes, progress,
                                            rounds=CONTENTION_ROUNDS if probes.repeats > 1 else 2)
        for s in together:
            s.engine = cpu[s.engine]
    load = (before, load_average())
    out: list[Calibrated] = []
    for key in dict.fromkeys(family):
        mine = [i for i, k in enumerate(family) if k == key]
        model, device, tp = key
        try:
            prev = get_profile(model, device, tp)
        except ProfileNotFound:
            prev = None
        contention = (contention_of([s for s in together if s.engine in mine], len(cpu))
                      if together and device.upper() == "CPU" else kept_contention(prev))
        calibration = fit([s for s in samples if s.engine in mine], engines=len(engines), load_average=load)
        calibration.contention = contention
        calibration.reprobed = reprobed[key]
        previous = None if prev is None else coefficients_of(prev)
        kv_bytes = kv[key] or (prev.kv_cache_bytes if prev is not None else None)
        data = profile_data(
            calibration, model=model, device=device, tp=tp,
            kv_cache_gib=None if kv_bytes is None else kv_bytes / (1 << 30),
            device_memory_gib=(prev.device_memory_bytes / (1 << 30)) if prev is not None else 24.0,
            memory_utilization=prev.memory_utilization if prev is not None else 0.9,
            how=how, where=cache.machine_text(), machine_key=cache.machine_key())
        path = cache.write_profile(data)
        out.append(Calibrated(model, device, tp, str(path), calibration, previous,
                              prev.path if prev is not None else None))
    cache.activate()
    return out
