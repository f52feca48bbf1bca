"""The command-line interfaces.

* ``cortexc`` — the compiler: check, fmt, graph, compile, plan, build.
* ``cortex``  — the runtime: run, serve, dev, simulate.

Each command lives in a module of its own exposing ``register(app)``.
"""

from __future__ import annotations

from typing import Optional

from cortexlang.cli.startup import importing, quick_exit_app

with importing():  # first, and around every heavy import: see cortexlang.cli.startup
    import typer

    from cortexlang import __version__
    from cortexlang.cli import compile_cmds, plan_cmd, run_cmds, simulate_cmd


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cortex {__version__}")
        raise typer.Exit()


def _app(help_text: str, cls: type[typer.Typer] = typer.Typer) -> typer.Typer:
    app = cls(help=help_text, no_args_is_help=True, add_completion=False,
              pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.callback()
    def main(version: Optional[bool] = typer.Option(
            None, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
        pass

    return app


compiler_app = _app("cortexc: compile, check, format and plan Cortex workflows.", quick_exit_app(typer.Typer))
compile_cmds.register(compiler_app)
plan_cmd.register(compiler_app)
run_cmds.register_build(compiler_app)

runtime_app = _app("cortex: run, serve and simulate Cortex workflows.")
run_cmds.register(runtime_app)
simulate_cmd.register(runtime_app)
