"""``python -m runtime.accel build|status|clean``: make, inspect or delete the compiled simulator."""

from __future__ import annotations

import sys

from runtime.accel import DISABLE_ENV, EXT_SUFFIX, AccelBuildError, AccelUnavailable, accel_dir, enabled, status
from runtime.accel.build import build


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime.accel build|status|clean``."""
    args = sys.argv[1:] if argv is None else argv
    cmd = args[0] if args else "status"
    if cmd == "build":
        try:
            paths = build()
        except (AccelUnavailable, AccelBuildError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"compiled simulator: {len(paths)} modules in {accel_dir()}")
        return 0
    if cmd == "status":
        states = status()
        for module, state in states.items():
            print(f"{state:10s} {module}")
        if any(state != "compiled" for state in states.values()):
            print("the binaries load only as a set: until every module is compiled, all run from source")
        if not enabled():
            print(f"{DISABLE_ENV}=0: binaries are not loaded")
        return 0
    if cmd == "clean":  # e.g. a binary that no longer loads on this machine
        removed = [p for pattern in (f"runtime.*{EXT_SUFFIX}", f"runtime.*{EXT_SUFFIX}.*.part")
                   for p in accel_dir().glob(pattern) if p.is_file()]
        for p in removed:
            p.unlink()
        print(f"removed {len(removed)} compiled modules from {accel_dir()}")
        return 0
    print("usage: python -m runtime.accel build|status|clean", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
