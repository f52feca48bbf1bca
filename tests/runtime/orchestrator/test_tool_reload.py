"""Edited tool modules (and the project helpers they import) are reloaded on the next deploy."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from runtime.dev import WATCHED_SUFFIXES
from runtime.orchestrator.versions import (
    ToolImportError, _project_modules, import_tool, reload_changed_project_modules,
)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A project folder with a tool package ``<pkg>.main:tool`` that imports a helper module."""
    pkg = f"tools_{uuid.uuid4().hex[:8]}"  # unique: sys.modules is process-wide
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "helper.py").write_text("def word():\n    return 'old'\n")
    (tmp_path / pkg / "main.py").write_text(f"from {pkg}.helper import word\n\n\ndef tool(x):\n    return word()\n")
    yield tmp_path, pkg
    for name in [m for m in sys.modules if m.partition(".")[0] == pkg]:
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def edit(path: Path, text: str) -> None:
    """Write ``text`` with a later mtime (saves within one clock tick must still count)."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_an_edited_helper_reaches_the_tool_on_the_next_import(project: tuple[Path, str]) -> None:
    root, pkg = project
    assert import_tool(f"{pkg}.main:tool", root)(1) == "old"
    assert reload_changed_project_modules(root) == []  # nothing edited: nothing re-executed
    edit(root / pkg / "helper.py", "def word():\n    return 'new'\n")
    assert import_tool(f"{pkg}.main:tool", root)(1) == "new"
    edit(root / pkg / "main.py", "def tool(x):\n    return 'rewritten'\n")
    assert import_tool(f"{pkg}.main:tool", root)(1) == "rewritten"


def test_a_broken_edit_is_a_clear_error_and_the_fix_loads(project: tuple[Path, str]) -> None:
    root, pkg = project
    tool = import_tool(f"{pkg}.main:tool", root)
    good = (root / pkg / "main.py").read_text()
    edit(root / pkg / "main.py", "def tool(x:\n")
    with pytest.raises(ToolImportError, match=f"cannot reload '{pkg}.main'.*SyntaxError"):
        import_tool(f"{pkg}.main:tool", root)
    assert tool(1) == "old"  # the function already deployed keeps working
    edit(root / pkg / "main.py", good.replace("return word()", "return word() + '!'"))
    assert import_tool(f"{pkg}.main:tool", root)(1) == "old!"


def test_installed_packages_are_never_project_modules(project: tuple[Path, str], monkeypatch) -> None:
    """A project folder that holds the virtual environment: its packages are not reloaded."""
    root, pkg = project
    import_tool(f"{pkg}.main:tool", root)
    monkeypatch.setattr(sys, "prefix", str(root / pkg))  # as if the venv were inside the project
    assert _project_modules(root) == []
    monkeypatch.setattr(sys, "prefix", str(root / ".venv"))
    assert [name for name, _, _ in _project_modules(root)] == [pkg, f"{pkg}.helper", f"{pkg}.main"]


def test_cortex_dev_watches_python_files() -> None:
    assert ".py" in WATCHED_SUFFIXES


def test_a_reload_that_fails_at_run_time_changes_nothing(project: tuple[Path, str]) -> None:
    root, pkg = project
    tool = import_tool(f"{pkg}.main:tool", root)
    helper = sys.modules[f"{pkg}.helper"]
    edit(root / pkg / "helper.py", "def word():\n    return 'half-edited'\n\n\nraise RuntimeError('boom')\n")
    with pytest.raises(ToolImportError, match=f"cannot reload '{pkg}.helper'.*RuntimeError: boom"):
        import_tool(f"{pkg}.main:tool", root)
    assert sys.modules[f"{pkg}.helper"] is helper and tool(1) == "old"  # not even half of the edit


def test_runs_in_flight_keep_their_version_of_the_tool(project: tuple[Path, str]) -> None:
    root, pkg = project
    old = import_tool(f"{pkg}.main:tool", root)
    edit(root / pkg / "helper.py", "def word():\n    return 'new'\n")
    new = import_tool(f"{pkg}.main:tool", root)
    assert (old(1), new(1)) == ("old", "new")
    assert getattr(sys.modules[pkg], "helper") is sys.modules[f"{pkg}.helper"]


def test_a_deleted_module_is_dropped_not_reloaded(project: tuple[Path, str]) -> None:
    root, pkg = project
    (root / pkg / "extra.py").write_text("X = 1\n")
    import_tool(f"{pkg}.main:tool", root)
    __import__(f"{pkg}.extra")  # a project module no tool names
    (root / pkg / "extra.py").unlink()
    edit(root / pkg / "main.py", "def tool(x):\n    return 'after delete'\n")
    assert import_tool(f"{pkg}.main:tool", root)(1) == "after delete"
    assert f"{pkg}.extra" not in sys.modules


def test_a_script_run_as_main_in_the_project_is_left_alone(project: tuple[Path, str], monkeypatch) -> None:
    root, pkg = project
    script = root / "serve.py"
    script.write_text("print('serving')\n")
    main = ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    import_tool(f"{pkg}.main:tool", root)
    edit(script, "print('serving!')\n")
    edit(root / pkg / "helper.py", "def word():\n    return 'new'\n")
    assert import_tool(f"{pkg}.main:tool", root)(1) == "new"
    assert sys.modules["__main__"] is main
