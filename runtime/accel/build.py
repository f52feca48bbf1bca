"""Compiling the hot modules with Cython into the binary cache (see :mod:`runtime.accel`)."""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

from runtime.accel import (
    COMPILE_ARGS, CYTHON_DIRECTIVES, HOT_MODULES, AccelBuildError, AccelUnavailable, accel_dir, binary_path,
    pxd_path, source_path,
)


def c_compiler() -> str | None:
    """The C compiler Python's build would call (``$CC``, else the interpreter's), if on PATH."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0])


def build(modules: tuple[str, ...] = HOT_MODULES, *, jobs: int | None = None) -> list[Path]:
    """Compile every module of ``modules`` that has no binary for its current source; return the
    binaries of all of them. Raises :class:`AccelUnavailable` when Cython or a C compiler is
    missing, :class:`AccelBuildError` when they reject a module (a defect, reported as such).

    The sources and every hot module's ``.pxd`` are hashed and compiled from one snapshot (a copy
    in a scratch folder, laid out as the package so that the declarations files are found), so a
    binary always matches its key even if a file is edited during the build; each binary is moved
    into place atomically, so a concurrent reader sees it whole or not at all."""
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as e:
        raise AccelUnavailable(f"the compiled build needs Cython ({e}); pip install cython") from e
    if c_compiler() is None:
        raise AccelUnavailable("the compiled build needs a C compiler (none found on PATH)")
    sources = {m: source_path(m).read_bytes() for m in modules}
    pxds = {m: pxd_path(m).read_bytes() for m in HOT_MODULES if pxd_path(m).is_file()}
    todo = [m for m in modules if not binary_path(m, sources[m]).is_file()]
    if todo:
        out = accel_dir()
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cortex-accel-") as tmp:
            scratch = Path(tmp)
            src = scratch / "src"
            for m, data in pxds.items():
                _snapshot(src, m, ".pxd").write_bytes(data)
            exts = []
            for m in todo:
                snapshot = _snapshot(src, m, ".py")
                snapshot.write_bytes(sources[m])
                exts.append(Extension(m, [str(snapshot)], extra_compile_args=list(COMPILE_ARGS)))
            try:
                exts = cythonize(exts, build_dir=str(scratch / "c"), quiet=True, include_path=[str(src)],
                                 compiler_directives=dict(CYTHON_DIRECTIVES))
                dist = Distribution({"ext_modules": exts, "script_name": "runtime.accel"})
                cmd = dist.get_command_obj("build_ext")
                cmd.build_lib = str(scratch / "lib")
                cmd.build_temp = str(scratch / "tmp")
                cmd.parallel = jobs or os.cpu_count() or 1
                cmd.ensure_finalized()
                cmd.run()
            except Exception as e:  # Cython's CompileError, distutils' CCompilerError/LinkError, ...
                raise AccelBuildError(f"compiling the simulator failed: {type(e).__name__}: {e}") from e
            for m in todo:
                built = Path(cmd.get_ext_fullpath(m))
                dest = binary_path(m, sources[m])
                part = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # concurrent builds: own file each
                shutil.copyfile(built, part)
                os.replace(part, dest)
    return [binary_path(m, sources[m]) for m in modules]


def _snapshot(root: Path, module: str, suffix: str) -> Path:
    """Where ``module``'s file with ``suffix`` goes in a package-shaped copy under ``root`` (its
    packages get an empty ``__init__.py``, so Cython resolves ``cimport`` of a sibling's ``.pxd``)."""
    parts = module.split(".")
    folder = root.joinpath(*parts[:-1])
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, len(parts)):
        init = root.joinpath(*parts[:i], "__init__.py")
        if not init.exists():
            init.write_bytes(b"")
    return folder / (parts[-1] + suffix)
