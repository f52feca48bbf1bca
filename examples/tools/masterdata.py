"""Access to :mod:`examples.data.catalog` from the tools, however the tools were imported.

Workflows name tools relative to the ``.cortex`` file's directory
(``entry = "tools.lookup:lookup"``), so the runtime may import this package as
top-level ``tools``; tests import it as ``examples.tools``. In the first case
the catalogue is not importable as a package member, so it is loaded from its
file. It is pure data, so a second copy in one process is harmless.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CATALOG_FILE = Path(__file__).resolve().parents[1] / "data" / "catalog.py"


def _load_catalog() -> ModuleType:
    if __package__ and __package__.count(".") >= 1:  # imported as examples.tools
        from ..data import catalog as module
        return module
    name = "_cortex_examples_catalog"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CATALOG_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the example catalogue from {CATALOG_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


catalog = _load_catalog()
