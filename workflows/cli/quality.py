"""Quality and upkeep commands: `ohlcv validate`, `ohlcv retention`, `ohlcv maintain`."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from ohlcv import timeframes
from ohlcv.errors import InputError
from ohlcv.windows import WindowRange
from workflows.cli.common import command_settings, console, errors, parse_time, require_spark_prerequisites, show, utc_now

if TYPE_CHECKING:
    from ohlcv.validate import CheckResult

__all__ = ["validate", "retention", "maintain"]


def _check_table(title: str, checks: list[CheckResult]) -> Table:
    table = Table("check", "failed", "examples", title=title, title_justify="left")
    for check in checks:
        examples = "\n".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in check.examples[:3])
        table.add_row(check.name, "[red]" + str(check.failed) + "[/]" if check.failed else "0", examples)
    return table


def validate(
    timeframe: str = typer.Option("all", "--timeframe", "-t", help="1m, 5m, 30m, 1h, 1d, a comma list, or all."),
    lookback_days: int = typer.Option(7, "--lookback-days", help="Audit the windows of the last N days."),
) -> int:
    """Audit published candles: invariants, Pandera, cross-timeframe roll-ups, late trades.

    Exit code 0 when clean; 1 with a report (and the backfills that would fix late windows).
    """
    from ohlcv.audit_published import audit_published, read_published
    from ohlcv.catalog import open_catalog
    from workflows.spark.client import trade_counts

    if lookback_days < 1:
        raise InputError("--lookback-days must be at least 1")
    tfs = timeframes.resolve(timeframe)
    settings = command_settings()
    now = utc_now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=lookback_days)
    rng = WindowRange(start, now)
    stored = read_published(open_catalog(settings), settings.namespace, tfs, rng)  # before the trades are counted
    require_spark_prerequisites(settings)
    console.print(f"auditing {rng} of {', '.join(tf.name for tf in tfs)}; counting the trades with Spark")
    counts = trade_counts(settings, tfs, rng)

    audits = audit_published(stored, counts, tfs, str(rng), now, settings.audit_sample)
    for audit in audits:
        show(_check_table(f"{audit.timeframe.table}: {audit.candles:,} candles", audit.checks))
        if audit.pending:
            console.print(f"  {audit.pending} window(s) inside the {audit.timeframe.name} lookback missed trades: the next tick absorbs them")
    failed = sum(audit.failed for audit in audits)
    if failed:
        errors.print(f"[red]validation failed:[/] {failed} check(s) failed")
        for hint in (audit.backfill_hint for audit in audits if audit.backfill_hint):
            errors.print(f"  fix late windows with: {hint}", soft_wrap=True)
        return 1
    console.print("[green]all checks passed[/]")
    return 0


def retention(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; change nothing."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Apply retention as of this time [default: now]."),
) -> None:
    """Delete whole candle partitions older than each timeframe's retention period."""
    from ohlcv.catalog import open_catalog
    from ohlcv.retention import retention_all

    moment = parse_time(as_of, "--as-of") if as_of else utc_now()
    settings = command_settings(writes=not dry_run)
    results = retention_all(open_catalog(settings), settings.namespace, moment, dry_run)
    table = Table("table", "keeps from", "partitions", "rows", "oldest", "newest deleted", title="would delete" if dry_run else "deleted")
    for result in results:
        parts = result.partitions
        table.add_row(
            result.table, f"{result.cutoff:%Y-%m-%d}", f"{len(parts):,}", f"{result.rows:,}",
            f"{parts[0].start:%Y-%m-%d}" if parts else "", f"{parts[-1].start:%Y-%m-%d}" if parts else "",
        )
    show(table)


def maintain(
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Act as of this time [default: now]."),
) -> None:
    """Compact small files of closed partitions, expire old snapshots, delete unreferenced files."""
    from ohlcv.catalog import open_catalog
    from ohlcv.upkeep import run_upkeep_step

    moment = parse_time(as_of, "--as-of") if as_of else utc_now()
    settings = command_settings(writes=True)
    catalog = open_catalog(settings)
    # The daily upkeep's own steps (minus retention, which has its command): one implementation.
    steps = ("compact", "expire", "orphans")
    outcomes = {step: run_upkeep_step(step, catalog, settings.namespace, moment, settings.snapshot_days) for step in steps}
    table = Table("table", "compacted", "snapshots expired", "unreferenced files deleted")
    for name in outcomes["orphans"]:
        table.add_row(name, *(outcomes[step].get(name, "") for step in steps))
    show(table)
    console.print(f"snapshots older than {settings.snapshot_days:g} days before {moment:%Y-%m-%d %H:%M} expired; "
                  "files younger than an hour by the wall clock are never deleted")
