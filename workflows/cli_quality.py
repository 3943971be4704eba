"""Quality and upkeep commands: `ohlcv validate`, `ohlcv retention`, `ohlcv maintain`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

import typer
from rich.table import Table

from ohlcv import timeframes
from ohlcv.settings import from_environment
from ohlcv.validate import CheckResult
from ohlcv.windows import WindowRange
from workflows.clock import parse_time, utc_now
from workflows.console import console, errors, show

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
    import pyarrow as pa

    from ohlcv.catalog import load_candles, open_catalog
    from ohlcv.crosscheck import backfill_command, rollup_check, stale_windows
    from ohlcv.store import read_candles
    from ohlcv.validate import audit_candles
    from workflows.cli import require_spark_prerequisites
    from workflows.pipeline import trade_counts

    if lookback_days < 1:
        from ohlcv.errors import InputError

        raise InputError("--lookback-days must be at least 1")
    tfs = timeframes.resolve(timeframe)
    settings = from_environment()
    now = utc_now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=lookback_days)
    rng = WindowRange(start, now)
    catalog = open_catalog(settings)
    stored = {tf.name: read_candles(load_candles(catalog, settings.namespace, tf), rng) for tf in tfs}
    one_minute = timeframes.get("1m")
    if any(tf.name != "1m" for tf in tfs) and "1m" not in stored:
        stored["1m"] = read_candles(load_candles(catalog, settings.namespace, one_minute), rng)
    require_spark_prerequisites(settings)
    console.print(f"auditing {rng} of {', '.join(tf.name for tf in tfs)}; counting the trades with Spark")
    counts = trade_counts(settings, tfs, rng)

    failed, hints = 0, []
    one_minute_frame = stored["1m"].to_pandas()
    for tf in tfs:
        candles = stored[tf.name]
        report = audit_candles(candles, tf, str(rng), sample_spec=settings.audit_sample)
        staleness = stale_windows(candles.to_pandas(), counts[tf.name].to_pandas(), tf, now)
        checks = report.checks + [staleness.check()]
        if tf.name != "1m":
            checks.append(rollup_check(one_minute_frame, candles.to_pandas(), tf))
        show(_check_table(f"{tf.table}: {candles.num_rows:,} candles", checks))
        if len(staleness.pending):
            console.print(f"  {len(staleness.pending)} window(s) inside the {tf.name} lookback missed trades: the next tick absorbs them")
        failed += sum(1 for c in checks if c.failed)
        if (hint := backfill_command(staleness)) is not None:
            hints.append(hint)
    if failed:
        errors.print(f"[red]validation failed:[/] {failed} check(s) failed")
        for hint in hints:
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
    settings = from_environment()
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
    from ohlcv.upkeep import compact_all, expire_all, remove_unreferenced_all

    moment = parse_time(as_of, "--as-of") if as_of else utc_now()
    settings = from_environment()
    catalog = open_catalog(settings)
    by_name = {c.table: c for c in compact_all(catalog, settings.namespace, moment)}
    expired = expire_all(catalog, settings.namespace, moment - timedelta(days=settings.snapshot_days))
    removed = remove_unreferenced_all(catalog, settings.namespace, moment)
    table = Table("table", "partitions compacted", "files before", "files after", "snapshots expired", "files deleted", "bytes freed")
    for orphans in removed:
        name = orphans.table
        c = by_name.get(name)
        table.add_row(
            name, f"{c.partitions:,}" if c else "", f"{c.files_before:,}" if c else "", f"{c.files_after:,}" if c else "",
            f"{expired[name]:,}", f"{orphans.deleted:,}", f"{orphans.bytes:,}",
        )
    show(table)
    console.print(f"snapshots older than {settings.snapshot_days:g} days expired; files younger than an hour are never deleted")
