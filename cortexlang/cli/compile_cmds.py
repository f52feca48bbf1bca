"""``cortexc check | fmt | graph | compile``: the front end's commands."""

from __future__ import annotations

import difflib
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from cortexlang.cli.common import (
    EXIT_ERRORS, compile_or_exit, compile_path, print_diagnostics, read_source, usage_error, write_output,
)


class GraphFormat(str, Enum):
    dot = "dot"
    mermaid = "mermaid"
    json = "json"


def check(files: list[Path] = typer.Argument(..., help="The .cortex files to check.")) -> None:
    """Check files for errors and warnings; print every diagnostic."""
    failed = 0
    for path in files:
        result = compile_path(path)
        print_diagnostics(result)
        if result.ok:
            p = result.program
            stages = sum(len(w.stages) for w in p.workflows)
            typer.echo(f"ok: {path}: {len(p.workflows)} workflow(s), {stages} stage(s), {len(p.models)} model(s)")
        else:
            failed += 1
    if failed:
        raise typer.Exit(EXIT_ERRORS)


def fmt(
    files: list[Path] = typer.Argument(..., help="The .cortex files to format in place."),
    check_only: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if a file is not formatted."),
    show_diff: bool = typer.Option(False, "--diff", help="Change nothing; print what would change."),
) -> None:
    """Rewrite files in the canonical layout (comments are kept); with --check or --diff, only report."""
    from cortexlang.diagnostics import DiagnosticCollector, render_all
    from cortexlang.fmt import format_module
    from cortexlang.syntax.parser import parse

    unformatted, broken = [], 0
    for path in files:
        source = read_source(path)
        diags = DiagnosticCollector(str(path), source)
        module = parse(source, str(path), diags)
        if module is None:
            typer.echo(render_all(diags.sorted(), {str(path): source}), err=True)
            broken += 1
            continue
        formatted = format_module(module)
        if formatted == source:
            continue
        unformatted.append(path)
        if show_diff:
            sys.stdout.writelines(difflib.unified_diff(
                source.splitlines(True), formatted.splitlines(True), f"{path}", f"{path} (formatted)"))
        elif not check_only:
            write_output(formatted, path)
    verb = "would reformat" if check_only or show_diff else "reformatted"
    for path in unformatted:
        typer.echo(f"{verb} {path}", err=True)
    if broken or (check_only and unformatted):
        raise typer.Exit(EXIT_ERRORS)


def graph(
    file: Path = typer.Argument(..., help="A .cortex file."),
    format: GraphFormat = typer.Option(GraphFormat.dot, "--format", "-f", help="Output format."),
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="Which workflow, if the file has several."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
) -> None:
    """Draw a workflow's call graph."""
    from cortexlang.graphviews import RENDERERS

    program = compile_or_exit(file).program
    names = [w.name for w in program.workflows]
    if not names:
        raise usage_error(f"{file} declares no workflow")
    if workflow is None and len(names) > 1:
        raise usage_error(f"{file} has several workflows ({', '.join(names)}); choose one with --workflow")
    if workflow is not None and workflow not in names:
        raise usage_error(f"no workflow `{workflow}` in {file}; it has: {', '.join(names)}")
    write_output(RENDERERS[format.value](program.workflow(workflow)), output)


def compile(
    file: Path = typer.Argument(..., help="A .cortex file."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the IR JSON here instead of stdout."),
) -> None:
    """Compile to the canonical IR JSON."""
    write_output(compile_or_exit(file).program.canonical_json(), output)


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(fmt)
    app.command()(graph)
    app.command()(compile)
