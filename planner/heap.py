"""Keep the planner's freed array memory in the process instead of handing it back to the kernel.

The planner evaluates sampled latencies with numpy arrays of 10^4 to 10^6 floats, allocated and
freed thousands of times per plan. glibc's malloc serves blocks above its mmap threshold (128 KiB
at first, then adjusted) with fresh ``mmap`` calls and trims the heap's free top back to the
kernel past its trim threshold, so each such array costs page faults that zero its pages again:
measured on a 64-wide fan-out's headroom plan, as much system time as user time (14 s of each);
on the unmodified examples 20-30% of the CPU time. Raising both thresholds
(:func:`retain_freed_memory`) makes freed arrays reusable: the process keeps its peak heap (the
same peak as before), and every number computed is unchanged.

Called by the short-lived processes that plan (``cortexc plan``, ``cortex simulate``'s planned layout,
``benchmarks/plan_bench.py``), not by :func:`planner.api.plan_program` itself: a long-lived server
(``cortex serve``, which also plans on reload and hosts in-process engines) keeps glibc's defaults, so
its memory is never held at a planning peak. glibc only (other C libraries are left as they are);
``CORTEX_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20
"""Blocks up to this size come from the heap (glibc's largest allowed value on 64-bit systems)."""
TRIM_THRESHOLD = 256 << 20
"""Free memory at the heap's top kept before any is returned to the kernel."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
DISABLE_ENV = "CORTEX_MALLOC_TUNING"

_done: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process (see the module docstring); whether
    they are set. Both are needed: setting either one turns off glibc's own adjustment of the other,
    and either one alone measured more system time, not less."""
    global _done
    if _done is None:
        _done = False
        if os.environ.get(DISABLE_ENV, "1") != "0" and platform.system() == "Linux" \
                and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                     TRIM_THRESHOLD))
    return _done
