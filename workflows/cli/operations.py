"""Operations commands: `ohlcv workflows ...`, `ohlcv schedule`, `ohlcv status`."""

from __future__ import annotations

import signal
import time
from typing import Optional

import typer
from rich.table import Table

from ohlcv import timeframes
from ohlcv.errors import InputError, RunFailed
from ohlcv.windows import tick_range
from workflows.cli.common import (
    command_settings,
    console,
    errors,
    parse_time,
    print_commits,
    require_spark_prerequisites,
    show,
    utc_now,
    when,
)

# The `ohlcv workflows ...` subcommands are registered on workflows_app by their decorators.
__all__ = ["workflows_app", "list_runs", "prune_runs", "show_run", "resume_run", "resume_all", "cancel_run", "schedule", "status"]

workflows_app = typer.Typer(help="List, inspect, resume and cancel workflow runs.", no_args_is_help=True)

STATUSES = ("RUNNING", "SUCCESSFUL", "FAILED", "RESUMABLE", "CANCELED", "PENDING")


def _connect():
    from workflows.orchestration import runs

    return runs.connect(command_settings())


@workflows_app.command("list")
def list_runs(
    status_filter: Optional[str] = typer.Option(None, "--status", help=f"Only this status: {', '.join(STATUSES)}."),
    limit: int = typer.Option(50, "--limit", help="Show the newest N."),
) -> None:
    """Workflow runs in storage, newest first."""
    if status_filter is not None and status_filter.upper() not in STATUSES:
        raise InputError(f"--status {status_filter!r}: choose one of {', '.join(STATUSES)}")
    from workflows.orchestration import history

    workflow = _connect()
    shown, total = history.newest(workflow, limit, status_filter.upper() if status_filter else None)
    table = Table("workflow", "status", "kind", "started (UTC)", "ended (UTC)")
    for workflow_id, state in shown:  # metadata of the shown runs only: the cost of --limit, not of the history
        meta = workflow.get_metadata(workflow_id)
        stats, user = meta.get("stats", {}), meta.get("user_metadata", {})
        table.add_row(workflow_id, state, user.get("kind", ""), when(stats.get("start_time")), when(stats.get("end_time")))
    show(table)
    if total > limit:
        console.print(f"{total - limit} older run(s) not shown (--limit)")


@workflows_app.command("prune")
def prune_runs(
    older_than: Optional[float] = typer.Option(None, "--older-than", help="Days to keep [default: OHLCV_RUN_HISTORY_DAYS, 14]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; remove nothing."),
    include_failed: bool = typer.Option(False, "--include-failed", help="Remove old FAILED runs too."),
) -> None:
    """Remove finished runs (checkpoints and journals) older than the run history window."""
    from datetime import timedelta

    from workflows.orchestration import history

    settings = command_settings(writes=not dry_run)
    days = settings.run_history_days if older_than is None else older_than
    if days < 0:
        raise InputError(f"--older-than {days:g}: a number of days, 0 or more")
    _connect()
    result = history.prune(utc_now() - timedelta(days=days), include_failed=include_failed, dry_run=dry_run)
    verb = "would be removed" if dry_run else "removed"
    console.print(f"{len(result.removed)} run(s) older than {days:g} days {verb}")
    if result.failed_kept:
        console.print(
            f"{len(result.failed_kept)} failed run(s) older than that kept, e.g. {result.failed_kept[0]}: "
            "resume them (ohlcv workflows resume ID), cancel them (ohlcv workflows cancel ID), or prune with --include-failed"
        )


@workflows_app.command("show")
def show_run(workflow_id: str = typer.Argument(..., help="A workflow id from `ohlcv workflows list`.")) -> None:
    """One run: its steps, their status, tries, timings and outputs' summaries or errors."""
    from workflows.orchestration import journal
    from workflows.orchestration.runs import require_workflow

    workflow = _connect()
    status = require_workflow(workflow, workflow_id)
    meta = workflow.get_metadata(workflow_id)
    stats = meta.get("stats", {})
    console.print(f"[bold]{workflow_id}[/]  {status}")
    console.print(f"started {when(stats.get('start_time'))}  ended {when(stats.get('end_time'))}")
    for key, value in meta.get("user_metadata", {}).items():
        console.print(f"  {key}: {value}")
    entries = journal.read_workflow(workflow_id)
    table = Table("step", "status", "tries", "seconds", "output / error")
    for task_id, entry in sorted(entries.items(), key=lambda item: item[1].get("attempts", [{}])[0].get("started", "")):
        attempts = entry.get("attempts", [])
        seconds = sum(a.get("seconds", 0) for a in attempts)
        detail = entry.get("error") or entry.get("summary") or ""
        retried = [f"try {a['attempt']}: {a['outcome']}: {a.get('error', '')}" for a in attempts if a.get("outcome") not in (None, "ok")]
        if retried and entry.get("status") == "SUCCESSFUL":
            detail = f"{detail}  (earlier: {'; '.join(retried)})"
        table.add_row(task_id, entry.get("status", ""), str(len(attempts)), f"{seconds:.2f}", str(detail))
    show(table)
    for task_id, entry in entries.items():
        if "report" in entry:
            _show_report(task_id, entry["report"])


def _show_report(task_id: str, report: dict) -> None:
    """The audit report a step kept: each failing check, its count and example rows."""
    console.print(f"[bold]audit report of {task_id}[/]: {report['timeframe']} {report['range']}, {report['candles']} candles")
    table = Table("check", "failed", "example rows")
    for check in report["checks"]:
        if check["failed"]:
            examples = "\n".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in check["examples"])
            table.add_row(check["name"], str(check["failed"]), examples)
    show(table)


@workflows_app.command("resume")
def resume_run(workflow_id: str = typer.Argument(..., help="The workflow to continue.")) -> None:
    """Continue a failed or interrupted run: only its unfinished steps run again."""
    from workflows.orchestration import runs

    commits = runs.resume(command_settings(writes=True), workflow_id)
    console.print(f"{workflow_id} SUCCESSFUL")
    print_commits(commits)


@workflows_app.command("resume-all")
def resume_all(
    include_failed: bool = typer.Option(True, "--include-failed/--interrupted-only", help="Also resume FAILED runs."),
) -> None:
    """Resume every interrupted run (and, by default, every failed one)."""
    from workflows.orchestration import runs

    workflow = _connect()
    started = workflow.resume_all(include_failed=include_failed)
    if not started:
        console.print("nothing to resume")
        return
    results = runs.wait_all(list(started))
    failed = [outcome for outcome in results.values() if isinstance(outcome, RunFailed)]
    for workflow_id, outcome in results.items():
        console.print(f"{workflow_id}: {'FAILED: ' + str(outcome) if isinstance(outcome, RunFailed) else 'SUCCESSFUL'}")
    if failed:
        raise RunFailed(f"{len(failed)} of {len(results)} resumed run(s) failed again")


@workflows_app.command("cancel")
def cancel_run(workflow_id: str = typer.Argument(..., help="The workflow to cancel.")) -> None:
    """Cancel a run; its committed chunks stay, the rest never runs (resume is not possible)."""
    from workflows.orchestration.runs import require_workflow

    workflow = _connect()
    require_workflow(workflow, workflow_id)
    workflow.cancel(workflow_id)
    console.print(f"{workflow_id} canceled")


def schedule(
    once: bool = typer.Option(False, "--once", help="Fire every tick due now (or at --as-of), wait for them, and exit."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="With --once: the time to act at, ISO-8601 UTC."),
) -> None:
    """Fire each timeframe's tick workflow on its cron; meant to run as a Ray job (see README)."""
    from workflows.orchestration.ids import UPKEEP
    from workflows.scheduling.cron import Job
    from workflows.scheduling.launcher import WorkflowLauncher
    from workflows.scheduling.loop import Scheduler

    if as_of is not None and not once:
        raise InputError("--as-of needs --once: a long-running scheduler follows the real clock")
    settings = command_settings(writes=True)
    require_spark_prerequisites(settings)
    moment = parse_time(as_of, "--as-of") if as_of else None
    clock = (lambda: moment) if moment is not None else utc_now

    def say(event) -> None:
        tick = f" {event.tick:%Y-%m-%dT%H:%MZ}" if event.tick else ""
        colour = {"failed": "red", "skipped": "yellow", "coalesced": "yellow"}.get(event.kind, "")
        text = f"{event.at:%Y-%m-%dT%H:%M:%SZ} {event.timeframe:>3} {event.kind}{tick} {event.detail}".rstrip()
        console.print(f"[{colour}]{text}[/]" if colour else text, soft_wrap=True)

    jobs = [*timeframes.resolve("all"), Job(UPKEEP, settings.upkeep_cron)]
    scheduler = Scheduler(jobs, WorkflowLauncher(settings), clock, settings.catchup, settings.overlap, on_event=say)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: scheduler.stop())
    if once:
        scheduler.start_up()
        scheduler.drain(sleep=time.sleep)
        failed = [e for e in scheduler.events if e.kind == "failed"]
        if failed:
            raise RunFailed(f"{len(failed)} tick(s) failed: " + "; ".join(e.detail for e in failed))
        return
    # Say "started" once the start-up (resume, catch-up) is done: from then on a SIGTERM is
    # answered within a poll, well inside `ray job stop`'s grace period.
    scheduler.start_up()
    console.print(f"scheduler started: catch-up {settings.catchup}, overlap {settings.overlap}; stop with SIGTERM (ray job stop)")
    scheduler.run()
    running = scheduler.in_flight()
    console.print(
        "scheduler stopped" + (f"; still running, to finish on their own: {', '.join(running)}" if running else "")
    )


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} d"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 60:.0f} min"


def _backlog(settings) -> dict[str, tuple[str, str]]:
    """Per timeframe: the trades snapshot its table has absorbed, and what was appended since
    (from the snapshot logs alone: nothing is read)."""
    from ohlcv.catalog import load_candles, load_trades, open_catalog
    from ohlcv.watermark import recorded_watermark, trades_since

    catalog = open_catalog(settings)
    trades = load_trades(catalog, settings.namespace)
    current = trades.current_snapshot()
    pinned = current.snapshot_id if current is not None else None
    found = {}
    for tf in timeframes.TIMEFRAMES.values():
        since = trades_since(trades, recorded_watermark(load_candles(catalog, settings.namespace, tf)), pinned)
        if since.state == "appended":
            behind = f"{since.appended_rows:,} trades in {len(since.appends)} append(s)"
        elif since.state == "current":
            behind = "0"
        else:
            behind = f"unknown: {since.detail}"
        found[tf.name] = (str(since.recorded) if since.recorded is not None else "none yet", behind)
    return found


def status() -> None:
    """Per timeframe (and the daily upkeep): last success, freshness lag, last failure, next tick."""
    from workflows.orchestration import runs
    from workflows.orchestration.ids import UPKEEP
    from workflows.scheduling.cron import Job, next_tick
    from workflows.scheduling.launcher import scheduled_statuses

    settings = command_settings()
    workflow = _connect()
    now = utc_now()
    runs_by_job: dict[str, list] = {}
    for workflow_id, name, tick, state in scheduled_statuses(workflow):
        runs_by_job.setdefault(name, []).append((workflow_id, tick, state))
    table = Table("job", "last success (as-of)", "freshness lag", "running", "last failure", "next tick",
                  "trades snapshot consumed", "backlog (trades since)")
    jobs = [*timeframes.TIMEFRAMES.values(), Job(UPKEEP, settings.upkeep_cron)]
    backlog = _backlog(settings)
    for job in jobs:
        mine = runs_by_job.get(job.name, [])
        last = max((r for r in mine if r[2] == "SUCCESSFUL"), key=lambda r: r[1], default=None)
        worst = max((r for r in mine if r[2] == "FAILED"), key=lambda r: r[1], default=None)
        running = sum(1 for r in mine if r[2] == "RUNNING")
        lag = ""
        if last is not None and job.name in timeframes.TIMEFRAMES:
            lag = _duration((now - tick_range(timeframes.get(job.name), last[1]).end).total_seconds())
        failure = f"{worst[1]:%Y-%m-%d %H:%M}: {runs.failure_of(worst[0]).split(': ', 1)[1]}" if worst else ""
        table.add_row(
            job.name, f"{last[1]:%Y-%m-%d %H:%M}" if last else "never", lag, str(running) if running else "",
            failure, f"{next_tick(job, now):%Y-%m-%d %H:%M}", *backlog.get(job.name, ("", "")),
        )
    show(table)
    errors.print(f"times in UTC; now {now:%Y-%m-%d %H:%M}")
