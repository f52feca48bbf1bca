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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROFILE_DIR = Path(__file__).with_name("profile_data")
GIB = 1024**3


@dataclass(frozen=True)
class LatencyProfile:
    """Latency and memory model of one model family on one device kind at one TP degree."""

    model: str
    device: str
    tp: int
    prefill_per_token_s: float
    prefill_fixed_s: float
    decode_fixed_s: float
    decode_per_seq_s: float
    decode_per_kv_token_s: float
    device_memory_bytes: int
    memory_utilization: float
    kv_cache_bytes: int | None
    sources: tuple[str, ...]

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
    def from_dict(cls, data: dict) -> "LatencyProfile":
        kv = data.get("kv_cache_gib")
        return cls(
            model=data["model"],
            device=data["gpu"],
            tp=int(data["tp"]),
            prefill_per_token_s=data["prefill_us_per_token"] * 1e-6,
            prefill_fixed_s=data["prefill_fixed_ms"] * 1e-3,
            decode_fixed_s=data["decode_fixed_ms"] * 1e-3,
            decode_per_seq_s=data["decode_ms_per_seq"] * 1e-3,
            decode_per_kv_token_s=data["decode_ns_per_kv_token"] * 1e-9,
            device_memory_bytes=int(data["device_memory_gib"] * GIB),
            memory_utilization=float(data.get("memory_utilization", 0.9)),
            kv_cache_bytes=int(kv * GIB) if kv is not None else None,
            sources=tuple(data.get("sources", ())),
        )


class ProfileNotFound(LookupError):
    """No profile for the requested (model, device, tp)."""


@lru_cache(maxsize=None)
def all_profiles(directory: Path = PROFILE_DIR) -> tuple[LatencyProfile, ...]:
    """Every profile in ``directory``, sorted by (model, device, tp)."""
    found = [LatencyProfile.from_dict(json.loads(p.read_text())) for p in sorted(directory.glob("*.json"))]
    return tuple(sorted(found, key=lambda p: (p.model, p.device, p.tp)))


def profiles_for(model: str, device: str | None = None, directory: Path = PROFILE_DIR) -> tuple[LatencyProfile, ...]:
    """Profiles of ``model`` (optionally on one device kind), lowest TP first."""
    return tuple(
        p for p in all_profiles(directory)
        if p.model == model and (device is None or p.device.lower() == device.lower())
    )


def get_profile(model: str, device: str, tp: int = 1, directory: Path = PROFILE_DIR) -> LatencyProfile:
    for p in profiles_for(model, device, directory):
        if p.tp == tp:
            return p
    known = ", ".join(f"{p.model}/{p.device}/tp{p.tp}" for p in all_profiles(directory))
    raise ProfileNotFound(f"no profile for {model} on {device} at tp={tp}; known: {known}")
