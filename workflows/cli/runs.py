"""Run commands: `ohlcv run` (scheduled ticks) and `ohlcv backfill`, each a Ray workflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ohlcv import timeframes
from ohlcv.errors import InputError, OhlcvError
from ohlcv.settings import Settings
from ohlcv.windows import plan_backfill
from workflows.cli.common import (
    console,
    errors,
    parse_time,
    print_commits,
    require_spark_prerequisites,
    require_tables,
    require_writable,
    command_settings,
    show,
    utc_now,
)

if TYPE_CHECKING:
    from ohlcv.store import CommitResult

__all__ = ["run", "TickReport", "tick_report", "backfill", "backfill_with_progress"]


def run(
    timeframe: str = typer.Option(..., "--timeframe", "-t", help="1m, 5m, 30m, 1h, 1d, a comma list, or all."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="The tick's time, ISO-8601 UTC [default: now]."),
    rerun: bool = typer.Option(False, "--rerun", help="Recompute a tick that already ran (e.g. after late trades)."),
) -> None:
    """One scheduled tick per timeframe, each a Ray workflow `ohlcv-<tf>-<as-of>`.

    Running a tick that already succeeded returns its stored result; a failed one is resumed.
    """
    tfs = timeframes.resolve(timeframe)
    tick = parse_time(as_of, "--as-of") if as_of else utc_now()
    settings = command_settings()
    report = _report_from_keeper(settings, timeframe, tick, rerun)
    if report is None:
        report = tick_report(settings, tfs, tick, rerun)
    for line in report.lines:
        console.print(line)
    for note in report.notes:
        errors.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    if report.rows:
        table = Table("workflow", "table", "range", "candles", "inserted", "updated", "unchanged", "snapshot")
        for row in report.rows:
            table.add_row(*row)
        show(table)
    if report.failures:
        for failure in report.failures[:-1]:
            errors.print(f"[red]error:[/] {failure}", soft_wrap=True)
        raise report.failures[-1]


def _report_from_keeper(settings: Settings, timeframe: str, tick: datetime, rerun: bool) -> TickReport | None:
    """The tick run by the warm keeper of `ohlcv up` (workflows/cli/keeper_client.py), or None when
    there is none for these settings: then this process runs it as a Ray driver."""
    from workflows.cli import keeper_client

    keeper = keeper_client.find(settings)
    if keeper is None:
        return None
    try:
        _, payload = keeper.request("/tick", {"timeframe": timeframe, "as_of": tick.isoformat(), "rerun": rerun})
    except keeper_client.NotServed:
        return None
    keeper_client.say_used(keeper)
    return TickReport.from_json(json.loads(payload))


@dataclass
class TickReport:
    """What `ohlcv run` shows: its results table's rows, lines for stdout (late windows), notes
    for stderr (fallbacks a plan took), and the ticks that failed. JSON travels from the keeper."""

    rows: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[OhlcvError] = field(default_factory=list)

    def to_json(self) -> dict:
        failures = [{"kind": type(f).__name__, "message": str(f)} for f in self.failures]
        return {"rows": self.rows, "lines": self.lines, "notes": self.notes, "failures": failures}

    @classmethod
    def from_json(cls, data: dict) -> TickReport:
        from workflows.cli.keeper_client import error_from

        return cls(data["rows"], data["lines"], data["notes"], [error_from(f) for f in data["failures"]])


def tick_report(settings: Settings, tfs: list[timeframes.Timeframe], tick: datetime, rerun: bool) -> TickReport:
    """Run the ticks of `tfs` at `tick` one after another (a tick's lookback is small, and Spark
    is shared), after the checks that fail fast (a warehouse that takes no writes, no tables, no
    Java); failures of the ticks are reported, not raised, so that every timeframe gets its try."""
    from workflows.orchestration import journal, runs

    require_writable(settings)
    require_tables(settings, tfs)
    require_spark_prerequisites(settings)
    report = TickReport()
    for tf in tfs:
        workflow_id, ref = runs.start_tick(settings, tf, tick, rerun=rerun)
        outcome = runs.wait_all([(workflow_id, ref)])[workflow_id]
        summary = (journal.read_step(workflow_id, "plan") or {}).get("summary") or {}
        if summary.get("late_windows"):
            report.lines.append(f"{workflow_id}: {summary['late_windows']:,} late window(s) recomputed, "
                                f"in {summary['ranges'] - 1} range(s)")
        report.notes.extend(summary.get("notes", []))
        if isinstance(outcome, OhlcvError):
            report.failures.append(outcome)
            continue
        for commit in outcome:
            report.rows.append([
                workflow_id, commit.table, str(commit.range), f"{commit.inserted + commit.updated + commit.unchanged:,}",
                f"{commit.inserted:,}", f"{commit.updated:,}", f"{commit.unchanged:,}",
                str(commit.snapshot_id) if commit.snapshot_id else "no change",
            ])
    return report


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
