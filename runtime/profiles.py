"""Calibrated latency profiles, cached per machine (``cortex calibrate`` writes them).

A profile measured on one machine is wrong on another (the shipped SmolLM2 CPU
profile was measured on an AVX-512 machine; in-process rather than through the
serving path; with one engine where the plan runs two). So profiles measured
where Cortex serves live in a local cache keyed by the machine::

    $CORTEX_PROFILE_CACHE (default ~/.cache/cortex/profiles)/<machine key>/<model>__<device>__tp<N>.json

Within a machine a profile is keyed by (model, device, tp), and a CPU engine's ``tp`` is
its width, the cores it is pinned to (:class:`planner.profiles.LatencyProfile`): an engine
alone on two cores and two engines on one core each are different configurations, with
profiles of their own. The calibration record says how many engines ran at once.

The machine key names what the latency depends on: the CPU model, its widest vector
extension and core count, and the GPU kind and count where there are GPUs (e.g.
``intel-xeon-processor-amx-2c`` or ``nvidia-h100-80gb-hbm3-x8-amd-epyc-9654-avx512-192c``).
The vector extension is there because virtual machines report one model name for different
hosts: two 2-vCPU "AMD EPYC" machines, one with AVX-512 and one with AVX2 only, prefilled
SmolLM2 at 1.3-2.7 and about 4.7 ms per token, and must not share a calibration. Where the model
name carries no model number (a hypervisor's "AMD EPYC"), the x86 family and model numbers join the key
(``amd-epyc-f25m17-avx512-2c``: Zen 4 and Zen 5 hosts both report "AMD EPYC" with AVX-512);
``CORTEX_MACHINE_KEY`` overrides it. :func:`activate` puts this machine's
directory ahead of the shipped profiles (:func:`planner.profiles.use_calibrated`)
so the planner, the simulator, the simulated engines and the orchestrator's
estimates all use the calibrated figures; the shipped files stay as a labelled
fallback. :func:`describe` says which file a (model, device, tp) comes from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from planner.profiles import (
    PROFILE_DIR, LatencyProfile, ProfileNotFound, calibrated_directories, clear_cache, get_profile, use_calibrated,
)
from runtime.drift import record as record_calibration


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return re.sub(r"\(R\)|\(TM\)|\bCPU\b|@.*$", "", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_generation() -> str | None:
    """``f<family>m<model>`` from ``/proc/cpuinfo`` (x86's CPU family and model numbers), or None where absent.

    Used in the machine key only when :func:`cpu_model` names no model number: hypervisors report "AMD EPYC" for
    Zen 4 (family 25) and Zen 5 (family 26) hosts alike, and the two run the same engine at different speeds.
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if not line.strip():
                    break  # the first processor's block is enough
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        return None
    family, model = fields.get("cpu family"), fields.get("model")
    return f"f{family}m{model}" if family and model and family.isdigit() and model.isdigit() else None


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpus() -> tuple[str, int] | None:
    """(GPU kind, count) from ``nvidia-smi``, or None without NVIDIA GPUs."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return (names[0], len(names)) if names else None


VECTOR_EXTENSIONS = (("amx", ("amx_tile",)), ("avx512", ("avx512f",)), ("avx2", ("avx2",)), ("neon", ("asimd", "neon")))
"""(key part, any of these ``/proc/cpuinfo`` flags), widest first: what CPU kernels (oneDNN, vLLM's CPU
attention) dispatch on."""


def vector_extension(flags: set[str] | None = None) -> str | None:
    """The widest vector extension of :data:`VECTOR_EXTENSIONS` among ``flags`` (default: this CPU's
    ``/proc/cpuinfo`` flags), or None where none is known."""
    if flags is None:
        flags = _cpu_flags()
    return next((name for name, wanted in VECTOR_EXTENSIONS if flags.intersection(wanted)), None)


def _cpu_flags() -> set[str]:
    """The first CPU's feature flags (``flags`` on x86, ``Features`` on ARM); empty if unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_key() -> str:
    """The cache key of this machine (see module docstring)."""
    override = os.environ.get("CORTEX_MACHINE_KEY")
    if override:
        return _slug(override)
    extension = vector_extension()
    model = cpu_model()
    generation = None if re.search(r"\d", model) else cpu_generation()
    cpu = (f"{_slug(model)}-{generation + '-' if generation else ''}"
           f"{extension + '-' if extension else ''}{cpu_cores()}c")
    gpu = gpus()
    return f"{_slug(gpu[0])}-x{gpu[1]}-{cpu}" if gpu else cpu


def machine_text() -> str:
    """This machine in words, for reports."""
    gpu = gpus()
    cpu = f"{cpu_model()}, {cpu_cores()} cores"
    return f"{gpu[1]}x {gpu[0]}; {cpu}" if gpu else cpu


def cache_root() -> Path:
    env = os.environ.get("CORTEX_PROFILE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cortex" / "profiles"


def machine_dir(key: str | None = None) -> Path:
    """Where this machine's (or ``key``'s) calibrated profiles live."""
    return cache_root() / (key or machine_key())


def profile_filename(model: str, device: str, tp: int) -> str:
    """The file name of a profile, as in ``planner/profile_data``."""
    return f"{model}__{device.lower()}__tp{tp}.json"


def write_profile(data: dict, key: str | None = None) -> Path:
    """Store a calibrated profile (the ``planner/profile_data`` schema plus a ``calibration`` record)
    for this machine and make it visible to lookups; returns its path."""
    LatencyProfile.from_dict(data)  # the schema every reader expects, or KeyError here rather than later
    directory = machine_dir(key)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / profile_filename(data["model"], data["gpu"], int(data["tp"]))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    record_calibration(directory, data)  # the machine's history: plans keep a margin for its drift
    clear_cache()
    return path


def activate(key: str | None = None) -> Path | None:
    """Use this machine's calibrated profiles ahead of the shipped ones (in this process);
    returns their directory, or None (shipped profiles only) when none were calibrated here."""
    directory = machine_dir(key)
    if directory.is_dir() and any(directory.glob("*.json")):
        use_calibrated(directory)
        clear_cache()
        return directory
    use_calibrated()
    return None


@dataclass(frozen=True)
class ProfileUse:
    """Which profile serves one (model family, device, tp), in words."""

    model: str
    device: str
    tp: int
    calibrated: bool
    path: str | None
    source: str
    measured_tp: int | None = None
    """The width the profile was measured at, where it stands in for another (a CPU engine of an
    unmeasured width: :func:`planner.profiles.get_profile`); None when it is the engine's own."""

    def line(self) -> str:
        kind = "calibrated on this machine" if self.calibrated else "SHIPPED FALLBACK (not measured here: run " \
                                                                  "`cortex calibrate FILE` to measure this machine)"
        if self.measured_tp is not None:
            kind += f"; MEASURED AT tp{self.measured_tp}, not this width (a conservative stand-in)"
        return f"profile {self.model} on {self.device} tp{self.tp}: {kind}; {self.path or '-'}"


def describe(model: str, device: str, tp: int = 1) -> ProfileUse | None:
    """Which profile the lookups return for (model, device, tp); None when there is none."""
    try:
        prof = get_profile(model, device, tp)
    except ProfileNotFound:
        return None
    calibrated = prof.path is not None and any(Path(prof.path).parent == d for d in calibrated_directories())
    return ProfileUse(model, device, tp, calibrated, prof.path, prof.sources[0] if prof.sources else "",
                      measured_tp=prof.tp if prof.tp != tp else None)


def shipped_path(model: str, device: str, tp: int) -> Path:
    return PROFILE_DIR / profile_filename(model, device, tp)
