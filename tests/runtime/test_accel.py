"""The compiled simulator (runtime.accel): keyed to the exact source, optional, and bit-identical."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import accel
from runtime.accel.build import build

REPO = Path(__file__).resolve().parents[2]
MODULE = "runtime.simulator.engine"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CORTEX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(accel.DISABLE_ENV, raising=False)
    return tmp_path / "accel"


def _engine_dir() -> list[str]:
    return [str(REPO / "runtime" / "simulator")]


def _plant(cache: Path, modules=accel.HOT_MODULES, content: bytes = b"") -> None:
    """Write a binary for the current source of each of ``modules`` (only specs are made from
    empty ones; nothing is loaded)."""
    cache.mkdir(parents=True, mode=0o700, exist_ok=True)
    for m in modules:
        accel.binary_path(m, accel.source_path(m).read_bytes()).write_bytes(content)


def test_a_binary_is_keyed_to_the_source_bytes(cache):
    src = accel.source_path(MODULE).read_bytes()
    assert accel.binary_path(MODULE, src) == accel.binary_path(MODULE, bytes(src))
    assert accel.binary_path(MODULE, src) != accel.binary_path(MODULE, src + b"\n# edited\n")
    assert accel.binary_path(MODULE, src).parent == cache


def test_a_binary_is_keyed_to_every_declarations_file(cache, monkeypatch):
    """A module's compiled code reads the C layout of classes other modules declare: editing any
    .pxd changes every key."""
    src = accel.source_path(MODULE).read_bytes()
    before = accel.binary_path(MODULE, src)
    assert accel.pxd_path("runtime.simulator.calls").is_file()
    real = accel.declarations()
    monkeypatch.setattr(accel, "declarations", lambda: real + b"\n# calls.pxd edited\n")
    assert accel.binary_path(MODULE, src) != before


def test_the_finder_loads_only_a_binary_built_from_the_current_source(cache, monkeypatch):
    finder = accel._CompiledModuleFinder()
    assert finder.find_spec(MODULE, _engine_dir()) is None  # nothing built: the .py is imported
    _plant(cache, [m for m in accel.HOT_MODULES if m != MODULE])
    (cache / f"{MODULE}-0123456789abcdef0123{accel.EXT_SUFFIX}").write_bytes(b"")  # another source's
    assert finder.find_spec(MODULE, _engine_dir()) is None
    # ... and then no other hot module loads compiled either (they share C types: all or none).
    assert finder.find_spec("runtime.simulator.calls", _engine_dir()) is None
    current = accel.binary_path(MODULE, accel.source_path(MODULE).read_bytes())
    current.write_bytes(b"")  # only the spec is made; nothing is loaded
    spec = finder.find_spec(MODULE, _engine_dir())
    assert spec is not None and spec.origin == str(current)
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert finder.find_spec("runtime.simulator.cluster", _engine_dir()) is None  # not a hot module
    monkeypatch.setenv(accel.DISABLE_ENV, "0")
    assert finder.find_spec(MODULE, _engine_dir()) is None


def test_status_tells_compiled_from_stale_and_missing(cache):
    cache.mkdir(parents=True)
    (cache / f"{MODULE}-0123456789abcdef0123{accel.EXT_SUFFIX}").write_bytes(b"")
    accel.binary_path("runtime.policies.cortex", accel.source_path("runtime.policies.cortex").read_bytes()).write_bytes(b"")
    states = accel.status()
    assert states[MODULE] == "stale"
    assert states["runtime.policies.cortex"] == "compiled"
    assert states["runtime.simulator.sim"] == "not built"


def test_without_cython_the_build_says_so(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "Cython.Build", None)  # import fails as if not installed
    with pytest.raises(accel.AccelUnavailable, match="needs Cython"):
        build()
    assert not cache.exists() or not any(cache.iterdir())


_FINGERPRINTS = """
import json, sys
from runtime import accel
from tests.runtime.simulator.test_regression import _fingerprint, _simulate
from tests.runtime.sim_matrix import digests
out = {}
for policy in ("fcfs", "hexagent", "cortex"):
    res = _simulate(policy)
    out[policy] = [_fingerprint(res), res.llm_calls, res.min_scale(0.95)]
print(json.dumps({"compiled": accel.compiled_modules(), "results": out, "matrix": digests()}))
"""


def _fingerprints(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", _FINGERPRINTS], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_binary_others_can_write_is_never_loaded(cache):
    finder = accel._CompiledModuleFinder()
    _plant(cache)
    binary = accel.binary_path(MODULE, accel.source_path(MODULE).read_bytes())
    binary.chmod(0o664)  # group-writable: someone else could have planted it
    assert finder.find_spec(MODULE, _engine_dir()) is None
    assert accel.status()[MODULE] == "untrusted"
    binary.chmod(0o644)
    cache.chmod(0o777)  # a folder anyone can write into
    assert finder.find_spec(MODULE, _engine_dir()) is None
    cache.chmod(0o700)
    assert finder.find_spec(MODULE, _engine_dir()) is not None


def test_a_binary_that_does_not_load_falls_back_to_the_source(cache):
    _plant(cache, content=b"not a shared object")
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import runtime.policies.fcfs as m\n"
            "print(m.__file__); print(m.FCFS().name)")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(REPO / "runtime" / "policies" / "fcfs.py"), "fcfs"]
    assert "did not load" in done.stderr and "running" in done.stderr


def test_the_compiled_simulator_gives_bit_identical_results(cache):
    try:
        binaries = build()
    except accel.AccelUnavailable as e:  # no Cython or no C compiler on this machine (not a build error)
        pytest.skip(f"compiled simulator unavailable here: {e}")
    assert all(p.is_file() and p.parent == cache and accel.trusted(p) for p in binaries)
    assert build() == binaries  # up to date: nothing rebuilt, same binaries
    env = dict(os.environ)
    compiled = _fingerprints(env)
    pure = _fingerprints({**env, accel.DISABLE_ENV: "0"})
    assert compiled["compiled"] == list(accel.HOT_MODULES)
    assert pure["compiled"] == []
    assert compiled["results"] == pure["results"]
    # Every policy, several workloads and layouts (tests/runtime/sim_matrix.py): the same simulations.
    assert len(pure["matrix"]) >= 30
    assert compiled["matrix"] == pure["matrix"]
    # ... and both equal the fingerprints recorded in test_regression.
    from tests.runtime.simulator.test_regression import EXPECTED
    expected = {row[0]: list(row[1:]) for row in EXPECTED}
    assert pure["results"] == expected
