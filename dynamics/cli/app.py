"""The `mdyn` application: registers the commands and turns a `UserError` into one line and exit status 2.

Each command lives in its own module and imports heavy libraries (torch, transformers) inside the command,
so that `mdyn --help` answers at once.
"""

import sys

import typer

from dynamics.cli import demo, figures, fit, import_paper, measure, predict, report, suite, sweep, train
from fitting.errors import UserError

app = typer.Typer(
    name="mdyn",
    help="Track how massive activations emerge over a transformer's training checkpoints, fit their "
    "emergence curve per layer, and predict it for an architecture before training it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("measure")(measure.measure)
app.command("sweep")(sweep.sweep)
app.command("status")(sweep.status)
app.command("sweep-task", hidden=True)(sweep.sweep_task)
app.command("fit")(fit.fit)
app.command("train")(train.train)
app.command("predict")(predict.predict)
app.command("figures")(figures.figures)
app.command("report")(report.report)
app.command("import-paper")(import_paper.import_paper)
app.add_typer(suite.app, name="suite")
app.command("demo")(demo.demo)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except UserError as err:
        print(f"mdyn: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # `python -m dynamics.cli.app`, as the Slurm job script runs each task
    main()
