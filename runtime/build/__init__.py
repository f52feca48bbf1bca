"""Plan -> runtime: the runtime spec, its layouts, and the inspectable build directory."""

from runtime.build.layout import BuildError, default_spec, share_engines, spec_from_plan
from runtime.build.render import load_build, write_build
from runtime.build.spec import RuntimeSpec

__all__ = ["RuntimeSpec", "BuildError", "default_spec", "spec_from_plan", "share_engines", "write_build",
           "load_build"]
