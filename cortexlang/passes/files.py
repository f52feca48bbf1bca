"""Reading ``file("path")``: only regular files inside the workflow's folder, and only so much of them.

A workflow is compiled on a developer's machine and its text ends up in the IR,
in builds and in prompts sent to models, so ``file(...)`` must not become a way
to read arbitrary files (``/proc/self/environ``, ``~/.ssh/id_rsa``), to block on
a FIFO, or to exhaust memory (``/dev/zero``):

* the path is resolved, symbolic links included, and must stay inside the folder;
* it must name a regular file (opened without blocking, then checked);
* at most :data:`MAX_FILE_BYTES` are read, and they must be UTF-8 text.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_FILE_BYTES = 1 << 20  # 1 MiB: far above any prompt or schema


class FileRefused(Exception):
    """Why ``file(...)`` gives no text: ``code`` is the diagnostic to report (CX205 or CX208)."""

    def __init__(self, code: str, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.hint = code, reason, hint


def read_workflow_file(folder: Path, rel: str) -> str:
    """The text of ``rel`` inside ``folder``; raises :class:`FileRefused`."""
    if "\0" in rel:
        raise FileRefused("CX205", "the path contains a NUL character")
    try:
        root = folder.resolve()
        target = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, an over-long name
        raise FileRefused("CX205", _reason(exc))
    if not target.is_relative_to(root):
        lexical = Path(os.path.normpath(root / rel))
        how = "a symbolic link leads" if lexical.is_relative_to(root) else "it is"
        raise FileRefused("CX208", f"{how} outside the workflow's folder",
                          hint="keep prompts and data in the .cortex file's folder or below it")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:  # ValueError: a name the file system cannot encode
        raise FileRefused("CX205", _reason(exc))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused("CX205", "it is a directory" if stat.S_ISDIR(info.st_mode) else "it is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise FileRefused("CX205", f"it is larger than {MAX_FILE_BYTES // 1024} KiB")
        data = _read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FileRefused("CX205", _reason(exc))
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:  # it grew while being read
        raise FileRefused("CX205", f"it is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused("CX205", f"it is not UTF-8 text (byte {exc.start})")


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
