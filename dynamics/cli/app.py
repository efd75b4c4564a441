"""The `mdyn` application: registers the commands and turns a `UserError` into one line and exit status 2.

Each command lives in its own module and imports heavy libraries (torch, transformers) inside the command,
so that `mdyn --help` answers at once.
"""

import atexit
import contextlib
import os
import sys
import threading
from typing import Annotated

import typer

from dynamics.cli import demo, figures, fit, import_paper, measure, predict, report, suite, sweep, train, watch
from dynamics.cli.command import CONTEXT_SETTINGS, Command, Group
from fitting.contracts import package_version
from fitting.errors import UserError

app = typer.Typer(
    name="mdyn",
    help="Track how massive activations emerge over a transformer's training checkpoints, fit their "
    "emergence curve per layer, and predict it for an architecture before training it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=Group,
    context_settings=CONTEXT_SETTINGS,
)


def _version(show: bool) -> None:
    if show:
        print(f"mdyn {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    # Options of `mdyn` itself, before the command; typer takes them from this callback's signature.
    return None


app.command("measure", cls=Command)(measure.measure)
app.command("sweep", cls=Command)(sweep.sweep)
app.command("status", cls=Command)(sweep.status)
app.command("watch", cls=Command)(watch.watch)
app.command("sweep-task", hidden=True, cls=Command)(sweep.sweep_task)
app.command("fit", cls=Command)(fit.fit)
app.command("train", cls=Command)(train.train)
app.command("predict", cls=Command)(predict.predict)
app.command("figures", cls=Command)(figures.figures)
app.command("report", cls=Command)(report.report)
app.command("import-paper", cls=Command)(import_paper.import_paper)
app.add_typer(suite.app, name="suite", cls=Group)
app.command("demo", cls=Command)(demo.demo)


def main() -> None:
    """Run the command line in this process; exits through SystemExit (tests call this)."""
    try:
        app()
    except UserError as err:
        print(f"mdyn: error: {err}", file=sys.stderr)
        sys.exit(2)


def entry() -> None:
    """Console-script entry point: `main`, then leave without the interpreter's teardown.

    Finalizing torch and transformers takes about 0.9 s (benchmarks.sweep_vs_transformerlens) and does nothing
    for mdyn: by then every result is written and closed. The exit handlers still run and the streams are
    flushed; with any other thread alive, the ordinary exit waits for it instead.
    """
    try:
        main()
        code: int = 0
    except SystemExit as done:
        if isinstance(done.code, str):  # sys.exit("message"), as click does for some usage errors
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`mdyn status | head`) or stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # `python -m dynamics.cli.app`, as the Slurm job script runs each task
    entry()
