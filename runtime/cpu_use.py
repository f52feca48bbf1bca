"""Where a machine's CPU time went while Cortex served: its own process, the engines' processes.

On a CPU deployment the engines are pinned to cores, but the processes around them are not: the
Cortex process (orchestrator, SQL executors, the trace recorder) and each ``vllm serve`` front end
(HTTP, tokenisation, detokenisation) run wherever the kernel puts them, cores the engines were
calibrated to have to themselves included. :class:`CpuUse` measures, between :meth:`CpuUse.start`
and :meth:`CpuUse.stop`, the CPU seconds of this process and of each of its descendants, split into
the engine loops (vLLM's ``EngineCore`` processes) and everything else, so a run's report can say how
many cores the serving path around the engines took from them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

ENGINE_LOOP_MARKERS = ("EngineCore", "engine_core")
"""A descendant whose process name or command line holds one of these is an engine loop (vLLM V1)."""


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _is_engine_loop(proc: psutil.Process) -> bool:
    try:
        text = proc.name() + " " + " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(m in text for m in ENGINE_LOOP_MARKERS)


@dataclass
class CpuShare:
    """Cores used on average over ``wall_s`` (CPU seconds / wall seconds) by each group."""

    wall_s: float
    cortex: float
    """This process: orchestrator, SQL executors, recorder."""
    engine_loops: float
    """vLLM's engine-core processes (the model's compute)."""
    engine_front_ends: float
    """The other descendants: ``vllm serve``'s API servers (HTTP, tokenisation)."""
    cores: int
    inprocess_engines: int = 0
    """Engines running inside this process (``vllm-inproc``): their compute is in ``cortex``, which
    then cannot be told apart from the orchestrator's own."""

    def line(self) -> str:
        return (f"CPU during the runs ({self.cores} cores): engine loops {self.engine_loops:.2f} cores, "
                f"engine front ends {self.engine_front_ends:.2f}, {cortex_label(self.inprocess_engines)} {self.cortex:.2f}")

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": self.wall_s, "cortex_cores": self.cortex, "engine_loop_cores": self.engine_loops,
                "engine_front_end_cores": self.engine_front_ends, "cores": self.cores,
                "inprocess_engines": self.inprocess_engines}


def cortex_label(inprocess_engines: int) -> str:
    """``Cortex's own process``, naming the engines that run inside it when there are any."""
    if not inprocess_engines:
        return "Cortex's own process"
    return f"Cortex's own process with its {inprocess_engines} in-process engine{'s' * (inprocess_engines > 1)}"


class CpuUse:
    """CPU seconds of this process and its descendants between :meth:`start` and :meth:`stop`, read at
    both ends: a descendant started in between counts from zero; one that ended in between is not
    counted (the engines of a run live through it)."""

    def __init__(self, inprocess_engines: int = 0) -> None:
        self.inprocess_engines = inprocess_engines
        self._me = psutil.Process(os.getpid())
        self._start: dict[int, float] = {}
        self._loops: set[int] = set()
        self._t0 = 0.0

    def read(self) -> dict[int, float]:
        """CPU seconds so far of this process and each live descendant, by pid."""
        out = {self._me.pid: _cpu_s(self._me)}
        for child in self._me.children(recursive=True):
            try:
                out[child.pid] = _cpu_s(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if _is_engine_loop(child):
                self._loops.add(child.pid)
        return out

    def start(self) -> "CpuUse":
        self._start = self.read()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> CpuShare:
        end = self.read()
        wall = max(time.monotonic() - self._t0, 1e-9)
        used = {pid: end[pid] - self._start.get(pid, 0.0) for pid in end}
        loops = sum(v for pid, v in used.items() if pid in self._loops)
        cortex = used.get(self._me.pid, 0.0)
        front = sum(used.values()) - loops - cortex
        return CpuShare(wall, cortex / wall, loops / wall, front / wall, psutil.cpu_count() or 1,
                        self.inprocess_engines)
