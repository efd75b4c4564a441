"""`mdyn watch`: the per-layer table and forecast of a store that is still growing, refreshed until interrupted."""

import time
from pathlib import Path
from typing import Annotated

import typer

from fitting.errors import UserError


def watch(
    store_dir: Annotated[Path, typer.Option("--store", help="Store a tracked run (or a sweep) writes into.")],
    model: Annotated[str | None, typer.Option(help="Show only this model (run name). Default: every model.")] = None,
    target: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Forecast the ratio at this step. Default: the run's planned last step (recorded by the tracker), "
            "else each layer's last measured step.",
        ),
    ] = None,
    magnitude: Annotated[float, typer.Option(help="Flag a layer whose |a| exceeds this (Sun et al.: 100) ...")] = 100.0,
    ratio: Annotated[
        float, typer.Option(help="... with a top-1/median ratio of at least this (Sun et al.: 1000).")
    ] = 1000.0,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 10.0,
    once: Annotated[bool, typer.Option(help="Print the table once and exit.")] = False,
) -> None:
    """Print each layer's latest ratio and top-1, and the forecast of its final ratio and peak step.

    The forecast fits Eq. 9 to each layer's ratio series so far and
    extrapolates it, with 95 % intervals from the fit's covariance (delta
    method). A row is flagged when a probe sequence meets the rule now
    (massive) or the forecast's lower bound does (forecast). Refreshes
    every --interval seconds until Ctrl-C; --once prints one table.
    """
    from rich.console import Console

    from dynamics import store
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.tracking import Rule

    root = store.open_store(store_dir, create=False)
    console = Console(soft_wrap=True)
    rule = Rule(magnitude=magnitude, ratio=ratio)
    try:
        while True:
            if not once:
                console.clear()  # before the refresh, so that the warnings it prints stay on screen with its tables
            with warnings_as_messages():
                tables = current_tables(root, model, target, rule)
            if not tables:
                if once:
                    which = f"model {model!r}" if model else "measurements"
                    raise UserError(f"the store {root} holds no {which} yet; start the tracked run, or check --model")
                console.print(f"{root}: waiting for the first measurement ...", markup=False)
            for table in tables:
                console.print(table)
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def current_tables(root: Path, model: str | None, target: int | None, rule) -> list:
    """One rich Table per model of the store: its layers' latest values and forecast."""
    import polars as pl
    from rich.table import Table

    from dynamics import store
    from dynamics.tracking import forecast, live_runs

    measurements = store.load(root, model=model)
    runs = live_runs(root)
    tables = []
    for (name,), rows in sorted(measurements.partition_by("model", as_dict=True).items()):
        record = runs.get(name, {})
        # One probe per table: the run's own, else the one measured last.
        probe_id = record.get("probe_id") or rows.sort("measured_at")["probe_id"][-1]
        rows = rows.filter(pl.col("probe_id") == probe_id)
        planned = target or record.get("total_steps")
        table_rows = forecast(rows, planned, rule)
        last = rows.select(pl.col("measured_at").max().dt.strftime("%Y-%m-%d %H:%M:%S")).item()
        title = (
            f"{name}: {rows['step'].n_unique()} steps measured, last step {rows.select(pl.col('step').max()).item()}"
            f"{f' of {planned}' if planned else ''}, probe {probe_id}, last measured {last} UTC"
        )
        table = Table(title=title, title_justify="left")
        at = f"@{planned}" if planned else "@last"
        for column in ("layer", "ratio", "top-1", f"forecast ratio {at} (95 %)", "peak step (95 %)", "R²", "flag"):
            table.add_column(column, justify="left" if column == "flag" else "right")
        for r in table_rows.iter_rows(named=True):
            flag = ", ".join(f for f, on in (("massive", r["massive_seqs"]), ("forecast", r["forecast_massive"])) if on)
            table.add_row(
                str(r["layer"]),
                _num(r["ratio"]),
                _num(r["top1"]),
                _with_interval(r, "forecast_ratio") if r["forecast_ratio"] is not None else r["message"][:40] or "-",
                _with_interval(r, "peak_step"),
                _num(r["r2"], ".3f"),
                flag,
            )
        tables.append(table)
    return tables


def _num(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _with_interval(row: dict, name: str) -> str:
    low, high = row[f"{name}_lo"], row[f"{name}_hi"]
    interval = f" ({_num(low)}-{_num(high)})" if low is not None and high is not None else ""
    return _num(row[name]) + interval
