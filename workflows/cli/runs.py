"""Run commands: `ohlcv run` (scheduled ticks) and `ohlcv backfill`, each a Ray workflow."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ohlcv import timeframes
from ohlcv.errors import InputError, OhlcvError
from ohlcv.settings import Settings
from ohlcv.store import CommitResult
from ohlcv.windows import plan_backfill
from workflows.cli.common import (
    console,
    errors,
    parse_time,
    print_commits,
    require_spark_prerequisites,
    require_tables,
    command_settings,
    show,
    utc_now,
)

__all__ = ["run", "backfill", "backfill_with_progress"]


def _results_table(results: dict) -> Table:
    table = Table("workflow", "table", "range", "candles", "inserted", "updated", "unchanged", "snapshot")
    for workflow_id, commits in results.items():
        for commit in commits:
            table.add_row(
                workflow_id, commit.table, str(commit.range), f"{commit.inserted + commit.updated + commit.unchanged:,}",
                f"{commit.inserted:,}", f"{commit.updated:,}", f"{commit.unchanged:,}",
                str(commit.snapshot_id) if commit.snapshot_id else "no change",
            )
    return table


def run(
    timeframe: str = typer.Option(..., "--timeframe", "-t", help="1m, 5m, 30m, 1h, 1d, a comma list, or all."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="The tick's time, ISO-8601 UTC [default: now]."),
    rerun: bool = typer.Option(False, "--rerun", help="Recompute a tick that already ran (e.g. after late trades)."),
) -> None:
    """One scheduled tick per timeframe, each a Ray workflow `ohlcv-<tf>-<as-of>`.

    Running a tick that already succeeded returns its stored result; a failed one is resumed.
    """
    from workflows.orchestration import runs

    tfs = timeframes.resolve(timeframe)
    tick = parse_time(as_of, "--as-of") if as_of else utc_now()
    settings = command_settings(writes=True)
    require_tables(settings, tfs)
    require_spark_prerequisites(settings)
    results, failures = {}, []
    for tf in tfs:  # one after another: a tick's lookback is small, and Spark is shared
        workflow_id, ref = runs.start_tick(settings, tf, tick, rerun=rerun)
        outcome = runs.wait_all([(workflow_id, ref)])[workflow_id]
        _print_plan_notes(workflow_id)
        if isinstance(outcome, OhlcvError):
            failures.append(outcome)
        else:
            results[workflow_id] = outcome
    if results:
        show(_results_table(results))
    if failures:
        for failure in failures[:-1]:
            errors.print(f"[red]error:[/] {failure}", soft_wrap=True)
        raise failures[-1]


def _print_plan_notes(workflow_id: str) -> None:
    """What the tick's plan said: late windows it absorbed, and any fallback it took."""
    from workflows.orchestration import journal

    summary = (journal.read_step(workflow_id, "plan") or {}).get("summary") or {}
    if summary.get("late_windows"):
        console.print(f"{workflow_id}: {summary['late_windows']:,} late window(s) recomputed, in {summary['ranges'] - 1} range(s)")
    for note in summary.get("notes", []):
        errors.print(f"[yellow]note:[/] {note}", soft_wrap=True)


def backfill(
    timeframe: str = typer.Option(..., "--timeframe", "-t", help="1m, 5m, 30m, 1h, 1d, a comma list, or all."),
    start: str = typer.Option(..., "--start", help="First window start to recompute, ISO-8601 UTC."),
    end: str = typer.Option(..., "--end", help="Recompute windows that start before this, ISO-8601 UTC."),
) -> None:
    """Recompute every window whose start is in [start, end), one day-sized chunk at a time."""
    tfs = timeframes.resolve(timeframe)
    first, last = parse_time(start, "--start"), parse_time(end, "--end")
    if last < first:
        raise InputError(f"--end {end} is before --start {start}")
    settings = command_settings(writes=True)
    require_tables(settings, tfs)
    require_spark_prerequisites(settings)
    commits = backfill_with_progress(settings, tfs, first, last)
    print_commits(commits)


def backfill_with_progress(settings: Settings, tfs: list[timeframes.Timeframe], first: datetime, last: datetime) -> list[CommitResult]:
    """Run a backfill workflow with a progress bar of committed chunks; its commit results."""
    from workflows.orchestration import runs

    now = utc_now()
    if not plan_backfill(tfs, first, last, closed_before=now):
        console.print("nothing to do: no closed window starts in that range")
        return []
    with Progress(
        TextColumn("[bold]backfill[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("starting Spark", total=None)

        def advance(state) -> None:
            if progress.tasks[0].total is None:
                progress.console.print(f"workflow {state.workflow_id}")
            progress.update(task, total=state.chunks, completed=state.committed, description="chunks committed")

        workflow_id, commits = runs.run_backfill(settings, tfs, first, last, now, on_progress=advance)
    if last > now:
        console.print("windows that are still open were left for the scheduled runs")
    return commits
