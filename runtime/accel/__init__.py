"""Optional compiled build of the simulator's hot modules (Cython), keyed to their exact source.

The discrete-event simulator spends its time in a few modules (event loop, engine
model, run walker, policies). ``benchmarks/sim_speed.py`` measures the compiled
build against the pure-Python source in the same run. The Python source stays
the reference and the only thing anyone edits for behaviour:

* **Typed where it pays.** Beside some modules an *augmenting* ``.pxd`` (Cython's
  name for a declarations file read when the ``.py`` of the same name is
  compiled; Python ignores it) turns the simulator's state classes (``Call``,
  ``LLMEngine``, ``ExecutorGroup``, ``Run``/``IRRun``, ``Simulator``, and the policies' views
  ``CallView``/``ReplicaView``/``Route``/``StageLoad``/``Adaptation``, whose fields stay Python
  objects except the views' counts and times, typed as below) into C
  structs with typed fields and their hot methods into C-callable ``cpdef``
  methods with typed locals; a policy's per-call decisions
  (``base.Decisions``, Cortex's subclass) are C methods the simulator calls
  through a vtable. Only counts (tokens, steps, sequence numbers) are
  C integers (64-bit, checked for overflow: :data:`CYTHON_DIRECTIVES`) and only
  values that are always Python floats are C doubles, so every operation
  computes what the Python operation computes.
* **Same results.** Elsewhere the build (:data:`CYTHON_DIRECTIVES`) does not read
  annotations as C types and infers C types for locals only where Cython proves
  it semantics-preserving (C doubles, never C integers); there is no fused
  multiply-add (:data:`COMPILE_ARGS`). A compiled simulation is bit-identical to
  the interpreted one (``tests/runtime/test_accel.py`` checks the regression
  fingerprints and a range of workloads, layouts and policies both ways).
* **Never stale, never mixed.** :func:`build` stores each module as
  ``<cache>/accel/<module>-<key><EXT_SUFFIX>`` where ``key`` hashes the module's
  source bytes, every hot module's ``.pxd`` (one module's compiled code reads
  another's C struct layout) and :data:`BUILD_FLAGS`; ``EXT_SUFFIX`` names the
  interpreter ABI. :func:`install` (run by ``runtime/__init__``) adds an import
  finder that loads the binaries only when every hot module has one for the
  source as it is now (a set, since they share C types); after an edit the
  modules import from their ``.py`` until they are rebuilt.
* **Trusted only.** A binary is native code: it is loaded only when it and its
  folder belong to this user and nobody else can write them (:func:`trusted`;
  the build creates the folder ``0700``); one that does not load here (another
  platform's, truncated) falls back to the source with a warning.
* **Optional.** Without a build, without Cython or without a C compiler nothing
  changes. ``CORTEX_ACCEL=0`` turns the finder off (e.g. to step through the
  simulator in a debugger, or if a cached binary no longer loads on this
  machine: ``python -m runtime.accel clean`` deletes them); ``$CORTEX_CACHE_DIR``
  moves the cache.

Build and inspect::

    python -m runtime.accel build     # compile what is missing (needs Cython and a C compiler;
                                      # runtime.accel.build does it)
    python -m runtime.accel status    # per module: compiled, stale or not built
    python -m runtime.accel clean     # delete the binaries
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import stat
import sys
import sysconfig
import warnings
from pathlib import Path

from runtime.paths import cache_root

HOT_MODULES: tuple[str, ...] = (
    "runtime.simulator.sim",
    "runtime.simulator.events",
    "runtime.simulator.engine",
    "runtime.simulator.executor",
    "runtime.simulator.runs",
    "runtime.simulator.calls",
    "runtime.simulator.distributions",
    "runtime.simulator.mt",
    "runtime.simulator.graph",
    "runtime.policies.base",
    "runtime.policies.placement",
    "runtime.policies.disaggregation",
    "runtime.policies.fcfs",
    "runtime.policies.autellix",
    "runtime.policies.hexgen",
    "runtime.policies.hexagent",
    "runtime.policies.cortex",
)
"""Modules compiled by :func:`build` and loaded compiled by the finder (the simulation's hot path)."""

CYTHON_DIRECTIVES: dict[str, object] = {
    "language_level": "3",
    # A C integer declared in a .pxd raises OverflowError rather than wrapping.
    "overflowcheck": True,
    # Python semantics throughout: annotations are not C types (``x: int`` would truncate a float,
    # ``-> int`` coerce a result); only Cython's "safe" inference (None), which types a local as a C
    # double only where that cannot change a result -- given no fused multiply-add, below -- and
    # never as a C integer (overflow). Measured: ~7% faster for FCFS than no inference at all.
    "annotation_typing": False,
    "infer_types": None,
}
COMPILE_ARGS: tuple[str, ...] = ("-ffp-contract=off",)
"""No fused multiply-add: on CPUs that have it (aarch64), ``a * b + c`` must still round twice."""

BUILD_FLAGS = f"cython {sorted(CYTHON_DIRECTIVES.items())} cc {COMPILE_ARGS}; v3"
"""Part of every binary's key: a binary built another way is never loaded."""

EXT_SUFFIX: str = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
DISABLE_ENV = "CORTEX_ACCEL"


class AccelUnavailable(RuntimeError):
    """The compiled build cannot be made here: no Cython or no C compiler."""


class AccelBuildError(RuntimeError):
    """Cython or the C compiler rejected a hot module: a defect to fix, not a missing tool."""


def accel_dir() -> Path:
    """Where binaries live: ``$CORTEX_CACHE_DIR/accel`` or ``~/.cache/cortex/accel``."""
    return cache_root() / "accel"


def enabled() -> bool:
    """False when ``CORTEX_ACCEL=0`` (the finder then never loads a binary)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def source_key(source: bytes) -> str:
    """The key of a binary built from ``source``: SHA-256 of the bytes, of every hot module's
    ``.pxd`` (:func:`declarations`) and of :data:`BUILD_FLAGS`."""
    return hashlib.sha256(BUILD_FLAGS.encode() + b"\0" + declarations() + b"\0" + source).hexdigest()[:20]


def pxd_path(module: str) -> Path:
    """The augmenting declarations file of ``module`` (beside its ``.py``; it may not exist)."""
    return source_path(module).with_suffix(".pxd")


def declarations() -> bytes:
    """Every hot module's ``.pxd`` (name and bytes, in :data:`HOT_MODULES` order): part of every
    key, since a compiled module uses the C layout of the classes other modules declare."""
    parts = []
    for m in HOT_MODULES:
        pxd = pxd_path(m)
        if pxd.is_file():
            parts.append(m.encode() + b"\0" + pxd.read_bytes())
    return b"\0\0".join(parts)


def binary_path(module: str, source: bytes) -> Path:
    """The cached binary of ``module`` compiled from exactly ``source`` (it may not exist)."""
    return accel_dir() / f"{module}-{source_key(source)}{EXT_SUFFIX}"


def source_path(module: str) -> Path:
    """The ``.py`` file of ``module``, a module of the ``runtime`` package (located without
    importing anything: the finder asks while an import is in progress)."""
    top, _, rest = module.partition(".")
    if top != "runtime" or not rest:
        raise AccelUnavailable(f"{module}: not a module of the runtime package")
    path = _RUNTIME_DIR.joinpath(*rest.split(".")).with_suffix(".py")
    if not path.is_file():
        raise AccelUnavailable(f"{module}: no Python source found")
    return path


_RUNTIME_DIR = Path(__file__).resolve().parents[1]
"""The ``runtime`` package's folder (this module is ``runtime/accel/__init__.py``)."""


def trusted(path: Path) -> bool:
    """Whether native code at ``path`` may be loaded: the file and its folder are owned by this
    user and writable by no one else (a shared or planted cache is never trusted)."""
    if not hasattr(os, "getuid"):  # no POSIX ownership to check (Windows): the user's own profile
        return path.is_file()
    try:
        file, folder = path.stat(), path.parent.stat()
    except OSError:
        return False
    return stat.S_ISREG(file.st_mode) and all(
        st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) for st in (file, folder))


class _CompiledOrSourceLoader(importlib.machinery.ExtensionFileLoader):
    """Loads the binary; if it does not load here (another platform's, truncated, ...), warns and
    runs the module's Python source instead, so a bad cache never breaks an import."""

    def __init__(self, fullname: str, binary: str, source: importlib.machinery.ModuleSpec):
        super().__init__(fullname, binary)
        self._source = source
        self._fallback = False

    def create_module(self, spec):
        try:
            return super().create_module(spec)
        except ImportError as exc:
            warnings.warn(f"compiled {self.name} did not load ({exc}); running {self._source.origin}"
                          " (python -m runtime.accel clean removes the binaries)", RuntimeWarning, stacklevel=2)
            self._fallback = True
            return None  # a plain module object, filled by exec_module from the source

    def exec_module(self, module):
        if not self._fallback:
            return super().exec_module(module)
        module.__file__ = self._source.origin
        module.__spec__ = self._source
        module.__loader__ = self._source.loader
        self._source.loader.exec_module(module)


class _CompiledModuleFinder(importlib.abc.MetaPathFinder):
    """Loads a hot module from its binary when every hot module has a trusted binary for its
    current source (they share C types, so it is all or none); else defers to the normal import
    of the ``.py``."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in HOT_MODULES or not enabled():
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return None
        binaries = current_binaries()
        if binaries is None:
            return None
        loader = _CompiledOrSourceLoader(fullname, str(binaries[fullname]), spec)
        return importlib.util.spec_from_file_location(fullname, binaries[fullname], loader=loader)


def current_binaries() -> dict[str, Path] | None:
    """Every hot module's binary for its current source, if all of them exist and are trusted;
    else None (the pure-Python modules are imported)."""
    out = {}
    for m in HOT_MODULES:
        try:
            binary = binary_path(m, source_path(m).read_bytes())
        except (AccelUnavailable, OSError):
            return None
        if not binary.exists() or not trusted(binary):
            return None
        out[m] = binary
    return out


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent). Hot modules imported afterwards
    load compiled where a current binary exists."""
    if not any(isinstance(f, _CompiledModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _CompiledModuleFinder())


def compiled_modules() -> list[str]:
    """The hot modules this process imported from a binary."""
    return [m for m in HOT_MODULES if str(getattr(sys.modules.get(m), "__file__", "")).endswith(EXT_SUFFIX)
            and str(sys.modules[m].__file__).startswith(str(accel_dir()))]


def status() -> dict[str, str]:
    """Per hot module: ``compiled`` (a binary matches the source), ``untrusted`` (it does, but its
    owner or permissions forbid loading it), ``stale`` (binaries exist, none for this source) or
    ``not built``."""
    out = {}
    for module in HOT_MODULES:
        src = source_path(module).read_bytes()
        binary = binary_path(module, src)
        if binary.exists() and not trusted(binary):
            out[module] = "untrusted"
        elif binary.is_file():
            out[module] = "compiled"
        elif any(accel_dir().glob(f"{module}-*{EXT_SUFFIX}")):
            out[module] = "stale"
        else:
            out[module] = "not built"
    return out
