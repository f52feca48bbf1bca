"""Performance profiles: how long LLM engine iterations take on a device.

A profile describes one (model family, device kind, tensor-parallel degree)
triple. Profiles are versioned data files in ``planner/profile_data/`` with
their sources cited; both the planner and the simulator read them through this
module, so their latency models agree by construction.

The latency model (per engine iteration under continuous batching):

* prefill of ``n`` prompt tokens in one iteration::

      t_prefill(n) = prefill_fixed + prefill_per_token * n

* one decode step for a batch of ``b`` sequences holding ``k`` KV tokens in all::

      t_decode(b, k) = decode_fixed + decode_per_seq * b + decode_per_kv_token * k

* an iteration that mixes prefill chunks and decodes (chunked prefill) costs the
  decode step plus the prefill's per-token part (the fixed part is paid once)::

      t_mixed(n, b, k) = t_decode(b, k) + prefill_per_token * n

The KV capacity of one replica (``tp`` devices) in tokens is::

      kv_capacity = (tp * memory * utilisation - weight_bytes) / kv_bytes_per_token

or, where a profile fixes the KV space (CPU engines), ``kv_cache_bytes /
kv_bytes_per_token``.

**Calibrated profiles.** The shipped files are measurements of other machines.
:func:`use_calibrated` puts a directory of profiles measured where Cortex
serves (``cortex calibrate``; ``runtime/profiles.py`` keys them by machine)
ahead of the shipped ones: every lookup in the default directory then returns
the calibrated profile of a (model, device, tp) where one exists, the shipped
one otherwise. ``LatencyProfile.path`` says which file a profile came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

PROFILE_DIR = Path(__file__).with_name("profile_data")
GIB = 1024**3
LINK_BYTES_PER_S = 50e9
"""Default KV-transfer bandwidth between a prefill and a decode replica (400 Gb/s RDMA), in bytes per
second: a hardware input, like the profiles, read by the planner's P/D model (:mod:`planner.disaggregation`)
and the simulator's layouts (``runtime.simulator.cluster.DEFAULT_LINK_BYTES_PER_S``). Not a measurement."""


@dataclass(frozen=True)
class LatencyProfile:
    """Latency and memory model of one model family on one device kind at one TP degree.

    On GPUs ``tp`` is the tensor-parallel degree: the GPUs one replica spans. On the CPU it is the
    *width* of one engine: the cores (inventory ``cpu`` slots) its threads are pinned to. A CPU engine's
    speed depends on that width, so a profile holds only for engines of its width (``runtime.build``
    pins each CPU engine to ``tp`` cores; calibration writes the profile under the width it measured).
    """

    model: str
    device: str
    tp: int
    """GPUs per replica (tensor parallelism), or cores per engine on the CPU."""
    prefill_per_token_s: float
    prefill_fixed_s: float
    decode_fixed_s: float
    decode_per_seq_s: float
    decode_per_kv_token_s: float
    device_memory_bytes: int
    memory_utilization: float
    kv_cache_bytes: int | None
    sources: tuple[str, ...]
    path: str | None = None
    """The file it was read from (None when built in code)."""
    constrained_decode_factor: float = 1.0
    """Decode time per output token under an output constraint (structured output), relative to free
    text: the grammar mask computed and applied every step. Measured per profile; 1.0 where unknown."""
    grammar_compile_s: float = 0.0
    """One-off time to compile a constraint's grammar, paid by the first call that uses it (a start-up
    cost: the steady-state planner does not add it to calls; it is reported)."""
    contention_prefill: float = 0.0
    contention_decode: float = 0.0
    """CPU engines that share a machine slow each other down (caches, memory bandwidth, SMT siblings):
    the fraction by which a prefill (decode) iteration gets slower when every *other* CPU engine of the
    machine is busy. An iteration with a fraction ``x`` of the other engines' cores busy takes
    ``1 + contention * x`` times the profile's time (:meth:`under_contention`). Measured by
    ``cortex calibrate`` with several engines (``runtime.calibrate``); 0 where not measured and on GPUs,
    whose engines own their devices."""

    def under_contention(self, busy_others: float) -> "LatencyProfile":
        """This profile with a fraction ``busy_others`` (0..1) of the other CPU engines' cores busy:
        prefill coefficients times ``1 + contention_prefill * busy_others``, decode coefficients times
        ``1 + contention_decode * busy_others``. The same profile when that changes nothing."""
        fp = 1.0 + self.contention_prefill * busy_others
        fd = 1.0 + self.contention_decode * busy_others
        if fp == 1.0 and fd == 1.0:
            return self
        return replace(self, prefill_per_token_s=self.prefill_per_token_s * fp,
                       prefill_fixed_s=self.prefill_fixed_s * fp, decode_fixed_s=self.decode_fixed_s * fd,
                       decode_per_seq_s=self.decode_per_seq_s * fd, decode_per_kv_token_s=self.decode_per_kv_token_s * fd)

    def iteration_parts(self, prefill_tokens: int, batch: int, kv_tokens: int) -> tuple[float, float]:
        """:meth:`iteration_s` split into its decode part and its prefill part (they sum to it): what
        :meth:`contention_factor` weighs."""
        if batch <= 0:
            return 0.0, self.prefill_s(prefill_tokens)
        return self.decode_step_s(batch, kv_tokens), self.prefill_per_token_s * prefill_tokens

    def contention_factor(self, decode_part: float, prefill_part: float, busy_others: float) -> float:
        """How much longer an iteration of these parts takes with a fraction ``busy_others`` of the other
        CPU engines' cores busy: ``(d (1 + c_d x) + p (1 + c_p x)) / (d + p)`` (1 for an empty iteration).

        Engines slow each other only *while* both compute, so the simulators apply it as a rate: an
        iteration progresses at ``1 / factor`` and the factor changes when another engine starts or
        stops (fluid time-sharing of the shared caches and memory bandwidth)."""
        total = decode_part + prefill_part
        if total <= 0.0 or busy_others <= 0.0:
            return 1.0
        return (decode_part * (1.0 + self.contention_decode * busy_others)
                + prefill_part * (1.0 + self.contention_prefill * busy_others)) / total

    def decode_factor(self, constrained: bool) -> float:
        """What multiplies a call's decode time per token: ``constrained_decode_factor`` when it is constrained."""
        return self.constrained_decode_factor if constrained else 1.0

    def prefill_s(self, tokens: int) -> float:
        """Time of one iteration that prefills ``tokens`` prompt tokens and nothing else."""
        return self.prefill_fixed_s + self.prefill_per_token_s * tokens if tokens > 0 else 0.0

    def decode_step_s(self, batch: int, kv_tokens: int) -> float:
        """Time of one decode iteration for ``batch`` sequences holding ``kv_tokens`` in all."""
        if batch <= 0:
            return 0.0
        return self.decode_fixed_s + self.decode_per_seq_s * batch + self.decode_per_kv_token_s * kv_tokens

    def iteration_s(self, prefill_tokens: int, batch: int, kv_tokens: int) -> float:
        """Time of a mixed iteration: ``prefill_tokens`` of prefill plus a decode step of ``batch``."""
        if batch <= 0:
            return self.prefill_s(prefill_tokens)
        return self.decode_step_s(batch, kv_tokens) + self.prefill_per_token_s * prefill_tokens

    def request_s(self, input_tokens: int, output_tokens: int) -> float:
        """Standalone latency of one request on an idle replica (prefill, then decode alone)."""
        decode = sum(
            self.decode_step_s(1, input_tokens + i) for i in range(max(output_tokens - 1, 0))
        ) if output_tokens > 1 else 0.0
        return self.prefill_s(input_tokens) + decode

    def kv_capacity_tokens(self, weight_bytes: int, kv_bytes_per_token: int) -> int:
        """KV tokens one replica can hold; 0 when the weights alone do not fit."""
        if self.kv_cache_bytes is not None:
            free = self.kv_cache_bytes
        else:
            free = self.tp * self.device_memory_bytes * self.memory_utilization - weight_bytes
        return max(int(free // kv_bytes_per_token), 0)

    @classmethod
    def from_dict(cls, data: dict, path: str | None = None) -> "LatencyProfile":
        """A profile from a profile file's content; ValueError (naming the field) for a value no
        engine has: a time coefficient that is not a finite number in ``[0, MAX_COEFFICIENT]``, no
        time at all per prefill or per decode step, a ``tp`` below 1, or a memory figure that is not
        finite and positive (a calibrated file is user-writable: NaN, Infinity or 0 here became a
        traceback or a division by zero deep in the planner)."""
        kv = data.get("kv_cache_gib")
        coefficient = {k: _number(data, k, 0.0, MAX_COEFFICIENT) for k in TIME_COEFFICIENTS}
        if coefficient["prefill_fixed_ms"] + coefficient["prefill_us_per_token"] <= 0.0:
            raise ValueError("prefill_fixed_ms and prefill_us_per_token are both 0: a prefill takes no time")
        if coefficient["decode_fixed_ms"] + coefficient["decode_ms_per_seq"] <= 0.0:
            raise ValueError("decode_fixed_ms and decode_ms_per_seq are both 0: a decode step takes no time")
        return cls(
            model=_name(data, "model"),
            device=_name(data, "gpu"),
            tp=int(_number(data, "tp", 1.0, MAX_TP)),
            prefill_per_token_s=coefficient["prefill_us_per_token"] * 1e-6,
            prefill_fixed_s=coefficient["prefill_fixed_ms"] * 1e-3,
            decode_fixed_s=coefficient["decode_fixed_ms"] * 1e-3,
            decode_per_seq_s=coefficient["decode_ms_per_seq"] * 1e-3,
            decode_per_kv_token_s=coefficient["decode_ns_per_kv_token"] * 1e-9,
            device_memory_bytes=int(_number(data, "device_memory_gib", 1e-9, MAX_GIB) * GIB),
            memory_utilization=_number(data, "memory_utilization", 1e-9, 1.0, default=0.9),
            kv_cache_bytes=int(_number(data, "kv_cache_gib", 0.0, MAX_GIB) * GIB) if kv is not None else None,
            sources=tuple(data.get("sources", ())),
            path=path,
            constrained_decode_factor=_number(data.get("structured_output", {}), "decode_factor", 1e-9, 1e3,
                                              default=1.0),
            grammar_compile_s=_number(data.get("structured_output", {}), "grammar_compile_ms", 0.0, MAX_COEFFICIENT,
                                      default=0.0) * 1e-3,
            contention_prefill=_contention(data, "prefill"),
            contention_decode=_contention(data, "decode"),
        )


TIME_COEFFICIENTS = ("prefill_fixed_ms", "prefill_us_per_token", "decode_fixed_ms", "decode_ms_per_seq",
                     "decode_ns_per_kv_token")
"""A profile file's time coefficients (their units are in their names)."""
MAX_COEFFICIENT = 1e6
"""Largest time coefficient a profile file may hold (1000 s per decode step in ms): finite sums and
products with any token count, where 1e300 overflowed."""
MAX_TP = 4096
MAX_GIB = 1e6


def _number(data: dict, key: str, low: float, high: float, default: float | None = None) -> float:
    """``data[key]`` (or ``default`` when absent) as a float in ``[low, high]``; ValueError naming ``key``
    otherwise (a string, NaN, Infinity, out of range)."""
    value = data.get(key, default) if default is not None else data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{key} must be a number in [{low:g}, {high:g}] (got {value!r})")
    return float(value)


def _name(data: dict, key: str) -> str:
    """``data[key]`` as a non-empty string; ValueError naming ``key`` otherwise (profiles are sorted and
    looked up by model and device: an integer there failed the sort with a TypeError)."""
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string (got {value!r})")
    return value


def _contention(data: dict, kind: str) -> float:
    """``cpu_contention.<kind>`` of a profile file: a finite slowdown fraction >= 0 (0 when absent)."""
    value = float(data.get("cpu_contention", {}).get(kind, 0.0))
    if not 0.0 <= value < float("inf"):
        raise ValueError(f"cpu_contention.{kind} must be a finite fraction >= 0 (got {value})")
    return value


class ProfileNotFound(LookupError):
    """No profile for the requested (model, device, tp)."""


_calibrated: tuple[Path, ...] = ()
_cpu_busy_others: float = 0.0


def use_calibrated(*directories: Path) -> None:
    """Profiles in ``directories`` (earlier first) take precedence over the shipped ones in every
    lookup of the default directory, for this process; no argument restores the shipped profiles."""
    global _calibrated
    _calibrated = tuple(Path(d) for d in directories)


def calibrated_directories() -> tuple[Path, ...]:
    """The directories :func:`use_calibrated` put ahead of the shipped profiles."""
    return _calibrated


_unreadable: dict[str, str] = {}


@lru_cache(maxsize=None)
def _read(directory: Path) -> tuple[LatencyProfile, ...]:
    """The profiles of ``directory``. A calibrated directory's unreadable file (hand-edited, truncated)
    is skipped, and :func:`unreadable_profiles` says why; the shipped profiles must all read."""
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            out.append(LatencyProfile.from_dict(json.loads(path.read_text()), str(path)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            if directory == PROFILE_DIR:
                raise
            _unreadable[str(path)] = f"{type(exc).__name__}: {exc}"
    return tuple(out)


def unreadable_profiles() -> dict[str, str]:
    """Calibrated profile files skipped because they do not read as a profile: path -> why."""
    return dict(_unreadable)


@lru_cache(maxsize=None)
def _merged(directory: Path, overlays: tuple[Path, ...], busy_others: float = 0.0) -> tuple[LatencyProfile, ...]:
    found = {(p.model, p.device.lower(), p.tp): p for p in _read(directory)}
    for overlay in reversed(overlays):
        found.update({(p.model, p.device.lower(), p.tp): _with_structured_output_of(p, found.get(
            (p.model, p.device.lower(), p.tp))) for p in _read(overlay)})
    if busy_others:
        found = {k: p.under_contention(busy_others) if p.device.upper() == "CPU" else p for k, p in found.items()}
    return tuple(sorted(found.values(), key=lambda p: (p.model, p.device, p.tp)))


@contextmanager
def cpu_engines_busy(busy_others: float) -> Iterator[None]:
    """Within this block, every lookup returns CPU profiles under contention (:meth:`LatencyProfile.
    under_contention`) with a fraction ``busy_others`` of the other CPU engines' cores busy: the
    planner's mean-field view of engines that slow each other (``planner.api``). Process-wide, like
    :func:`use_calibrated`: the simulators model contention themselves and must run outside it."""
    global _cpu_busy_others
    before, _cpu_busy_others = _cpu_busy_others, float(busy_others)
    try:
        yield
    finally:
        _cpu_busy_others = before


def _with_structured_output_of(profile: LatencyProfile, shipped: LatencyProfile | None) -> LatencyProfile:
    """A calibrated profile without a structured-output measurement keeps the shipped one's: the
    decode factor is relative to the machine's own decode time, so it carries over."""
    if shipped is None or profile.constrained_decode_factor != 1.0 or profile.grammar_compile_s != 0.0:
        return profile
    return replace(profile, constrained_decode_factor=shipped.constrained_decode_factor,
                   grammar_compile_s=shipped.grammar_compile_s)


def all_profiles(directory: Path = PROFILE_DIR) -> tuple[LatencyProfile, ...]:
    """Every profile in ``directory`` (for the default one, calibrated profiles first: see
    :func:`use_calibrated`), sorted by (model, device, tp)."""
    return _merged(*_lookup(directory))


def _lookup(directory: Path | str) -> tuple[Path, tuple[Path, ...], float]:
    """What a lookup in ``directory`` reads now: the directory, the calibrated overlays and the CPU contention."""
    directory = directory if isinstance(directory, Path) else Path(directory)
    return directory, _calibrated if directory == PROFILE_DIR else (), _cpu_busy_others


def clear_cache() -> None:
    """Forget profiles read so far (after a calibration rewrote a file)."""
    _read.cache_clear()
    _merged.cache_clear()
    _selected.cache_clear()
    _unreadable.clear()


def profiles_for(model: str, device: str | None = None, directory: Path = PROFILE_DIR) -> tuple[LatencyProfile, ...]:
    """Profiles of ``model`` (optionally on one device kind, case-insensitive), lowest TP first."""
    return _selected(*_lookup(directory), model, None if device is None else device.lower())


@lru_cache(maxsize=None)
def _selected(directory: Path, overlays: tuple[Path, ...], busy_others: float, model: str,
              device: str | None) -> tuple[LatencyProfile, ...]:
    """:func:`profiles_for` of one lookup (memoised: the planner asks for the same few hundreds of
    times per workflow)."""
    return tuple(p for p in _merged(directory, overlays, busy_others)
                 if p.model == model and (device is None or p.device.lower() == device))


def get_profile(model: str, device: str, tp: int = 1, directory: Path = PROFILE_DIR) -> LatencyProfile:
    """The profile of ``model`` on ``device`` at ``tp``.

    A CPU engine of a width nobody measured (e.g. the no-isolation baseline's engine pinned to the
    union of the isolated engines' cores) takes the profile of the widest measured width below it: a
    conservative estimate, since more cores never slow an engine down. Its ``tp`` says which width was
    measured (:func:`runtime.profiles.describe` reports the stand-in). GPUs have no such fallback: a
    tensor-parallel degree changes memory and communication, not only speed."""
    found = profiles_for(model, device, directory)
    for p in found:
        if p.tp == tp:
            return p
    narrower = [p for p in found if p.tp < tp]
    if device.upper() == "CPU" and narrower:
        return narrower[-1]
    known = ", ".join(f"{p.model}/{p.device}/tp{p.tp}" for p in all_profiles(directory))
    raise ProfileNotFound(f"no profile for {model} on {device} at tp={tp}; known: {known}")
