"""Compiling the hot modules with Cython into the binary cache (see :mod:`runtime.accel`)."""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

from runtime.accel import (
    COMPILE_ARGS, CYTHON_DIRECTIVES, HOT_MODULES, AccelBuildError, AccelUnavailable, accel_dir, binary_path,
    source_path,
)


def c_compiler() -> str | None:
    """The C compiler Python's build would call (``$CC``, else the interpreter's), if on PATH."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0])


def build(modules: tuple[str, ...] = HOT_MODULES, *, jobs: int | None = None) -> list[Path]:
    """Compile every module of ``modules`` that has no binary for its current source; return the
    binaries of all of them. Raises :class:`AccelUnavailable` when Cython or a C compiler is
    missing, :class:`AccelBuildError` when they reject a module (a defect, reported as such).

    The source bytes are hashed and compiled from one snapshot (a copy in a scratch folder), so a
    binary always matches its key even if the file is edited during the build; each binary is
    moved into place atomically, so a concurrent reader sees it whole or not at all."""
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as e:
        raise AccelUnavailable(f"the compiled build needs Cython ({e}); pip install cython") from e
    if c_compiler() is None:
        raise AccelUnavailable("the compiled build needs a C compiler (none found on PATH)")
    sources = {m: source_path(m).read_bytes() for m in modules}
    todo = [m for m in modules if not binary_path(m, sources[m]).is_file()]
    if todo:
        out = accel_dir()
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cortex-accel-") as tmp:
            scratch = Path(tmp)
            exts = []
            for m in todo:
                snapshot = scratch / "src" / (m.replace(".", "_") + ".py")
                snapshot.parent.mkdir(parents=True, exist_ok=True)
                snapshot.write_bytes(sources[m])
                exts.append(Extension(m, [str(snapshot)], extra_compile_args=list(COMPILE_ARGS)))
            try:
                exts = cythonize(exts, build_dir=str(scratch / "c"), quiet=True,
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
