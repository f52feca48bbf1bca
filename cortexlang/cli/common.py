"""Helpers shared by the CLI commands: reading and compiling files, printing diagnostics.

Exit codes for every command: 0 success, 1 errors found in the input, 2 usage
error (bad flags, unreadable file). Diagnostics go to stderr; results to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # the compiler loads when a command compiles, so `--version` and `--help` start fast
    from cortexlang.compiler import CompileResult

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
MAX_SOURCE_BYTES = 16 << 20  # a .cortex file is a few KB; this bounds what `cortexc check /dev/zero` reads
MAX_DATA_BYTES = 256 << 20
"""Bound on a trace or an input file (~100k recorded runs): `--observed /dev/zero` stops here, not at OOM."""


def usage_error(message: str) -> "typer.Exit":
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


class SourceError(Exception):
    """A source file cannot be read; the message says which and why."""


def read_utf8(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of ``path``, read once and at most ``max_bytes`` (a pipe works; ``/dev/zero`` does
    not run out of memory); :class:`SourceError` with the reason alone (no such file, a directory, too
    large, not UTF-8 with the line, or the system's words) when it cannot be had."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise SourceError("no such file")
    except IsADirectoryError:
        raise SourceError("is a directory, not a file")
    except OSError as exc:
        raise SourceError(str(exc.strerror or exc))
    if len(data) > max_bytes:
        raise SourceError(f"larger than {max_bytes >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(f"not UTF-8 text (line {line})")


def load_source(path: Path) -> str:
    """The file's text; raises :class:`SourceError` when it is missing, unreadable, too large or not UTF-8."""
    try:
        return read_utf8(path, MAX_SOURCE_BYTES)
    except SourceError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None


def read_source(path: Path) -> str:
    """:func:`load_source`, with a usage error (exit 2) when the file cannot be read."""
    try:
        return load_source(path)
    except SourceError as exc:
        raise usage_error(str(exc))


def compile_path(path: Path) -> CompileResult:
    """Compile one file (``file(...)`` reads from its folder); usage error (exit 2) if it cannot be read."""
    from cortexlang.compiler import compile_source

    return compile_source(read_source(path), str(path), path.parent)


def print_diagnostics(result: CompileResult) -> None:
    from cortexlang.diagnostics import render_all

    if result.diagnostics:
        typer.echo(render_all(result.diagnostics, {result.path: result.source}), err=True)


def compile_or_exit(path: Path) -> CompileResult:
    """Compile; print diagnostics; exit 1 when there are errors."""
    result = compile_path(path)
    print_diagnostics(result)
    if not result.ok:
        raise typer.Exit(EXIT_ERRORS)
    return result


def read_text(path: Path, label: str, max_bytes: int | None = None) -> str:
    """:func:`read_utf8` (at most ``max_bytes``, default :data:`MAX_DATA_BYTES`), with a usage error
    (exit 2) starting with ``label`` when the file cannot be read."""
    try:
        return read_utf8(path, MAX_DATA_BYTES if max_bytes is None else max_bytes)
    except SourceError as exc:
        raise usage_error(f"{label}: {exc}") from None


def read_lines(path: Path, label: str) -> list[str]:
    """The lines of the UTF-8 text file ``path`` (see :func:`read_text`)."""
    return read_text(path, label).splitlines()


def load_plan(path: Path, label: str) -> Any:
    """A saved plan (``cortexc plan -o``) from ``path``; a usage error starting with ``label`` when it
    cannot be read, is not a plan (the message names the first invalid field) or does not fit its own
    inventory (:meth:`planner.plan.Plan.oversized_pool`)."""
    from pydantic import ValidationError

    from planner.plan import Plan

    text = read_text(path, label, MAX_SOURCE_BYTES)
    try:
        plan = Plan.from_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the top level"
        raise usage_error(f"{label} is not a saved plan (write one with `cortexc plan FILE -o plan.json`): "
                          f"{first['msg']} at {where}")
    except ValueError as exc:
        raise usage_error(f"{label} is not a saved plan (write one with `cortexc plan FILE -o plan.json`): "
                          f"{str(exc).splitlines()[0]}")
    problem = plan.oversized_pool()
    if problem is not None:
        raise usage_error(f"{label}: {problem}")
    return plan


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise usage_error(f"cannot write {output}: {exc}")
