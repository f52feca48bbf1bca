"""Where Cortex keeps its caches (stdlib only: imported by ``runtime/__init__`` for every process)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Cortex's cache folder: ``$CORTEX_CACHE_DIR`` if set, else ``~/.cache/cortex``."""
    root = os.environ.get("CORTEX_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "cortex"
