"""planner.heap: freed planner arrays stay in the process (counted in page faults, not wall time).

A plan allocates and frees arrays of 10^5 floats thousands of times; with glibc's default thresholds
the heap's free top went back to the kernel after each round and came back as page faults (as much
system time as user time on the edge fuzz's 64-wide fan-out)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc only")

_ROUNDS = """
import resource
import numpy as np
from planner.heap import retain_freed_memory
print(retain_freed_memory())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    held = [np.ones(1 << 17) for _ in range(8)]  # eight 1 MiB arrays (256 pages each), then all freed
    del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_ROUND = 8 * 256


def _faults(tuning: str) -> tuple[str, int]:
    """(whether the thresholds were set, minor page faults over 100 rounds) in a fresh interpreter."""
    env = dict(os.environ, CORTEX_MALLOC_TUNING=tuning, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _ROUNDS], env=env, capture_output=True, text=True, check=True)
    done, faults = out.stdout.split()
    return done, int(faults)


def test_freed_arrays_are_reused_not_faulted_in_again() -> None:
    done, faults = _faults("1")
    assert done == "True"
    assert faults < 3 * PAGES_PER_ROUND  # the first round's pages, then none


def test_the_opt_out_leaves_glibc_as_it_was() -> None:
    done, faults = _faults("0")
    assert done == "False"
    assert faults > 50 * PAGES_PER_ROUND  # glibc's default: the freed top trimmed, faulted in every round
