"""The progress bar of a sweep: one per planned model, advanced by the sweep engine's `on_revision` callback."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def revision_bar(console, the_plan) -> Iterator[Callable[[str, dict], None]]:
    """A rich bar over the plan's revisions; yields the `on_revision(revision, ledger_row)` that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[timing]}"),
    )
    with Progress(*columns, console=console, disable=not the_plan.to_measure, transient=False) as bar:
        task = bar.add_task(the_plan.model, total=len(the_plan.to_measure), timing="")

        def on_revision(revision: str, row: dict) -> None:
            timing = f"{revision}: fetch {row['seconds_fetch'] or 0:.1f}s measure {row['seconds_measure'] or 0:.1f}s"
            bar.update(task, advance=1, description=f"{the_plan.model} {row['status']}", timing=timing)

        yield on_revision
