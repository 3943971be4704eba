"""Retention: drop whole partitions older than each timeframe's retention period.

The cutoff is the start of the partition that holds `as_of - retention`: that partition is
still (partly) inside the retention period, so it stays, and so does everything after it.
Deleting `window_start < cutoff` on a partition boundary removes whole files only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from pyiceberg.expressions import LessThan
from pyiceberg.table import Table

from ohlcv.store import committing, micros
from ohlcv.timeframes import Timeframe
from ohlcv.watermark import recorded_watermark, watermark_properties
from ohlcv.windows import as_utc, partition_start

__all__ = ["Partition", "partitions", "cutoff", "expired", "RetentionResult", "apply_retention", "retention_all"]


@dataclass(frozen=True)
class Partition:
    start: datetime
    rows: int
    files: int


def _start_of(value) -> datetime:
    """A day partition comes back as a date, a month partition as months since 1970-01."""
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    year, month = divmod(int(value), 12)
    return datetime(1970 + year, month + 1, 1, tzinfo=timezone.utc)


def partitions(table: Table) -> list[Partition]:
    """Every partition of a table with its row and file counts, oldest first."""
    if table.current_snapshot() is None:  # never written: pyiceberg's listing would raise
        return []
    listing = table.inspect.partitions()
    # A snapshot with no manifest (a first commit that recorded only a watermark) lists no
    # spec, so pyiceberg leaves the `partition` column out: no data file, no partition.
    if "partition" not in listing.column_names:
        return []
    found = []
    for row in listing.select(["partition", "record_count", "file_count"]).to_pylist():
        [value] = row["partition"].values()
        found.append(Partition(_start_of(value), row["record_count"], row["file_count"]))
    return sorted(found, key=lambda p: p.start)


def cutoff(tf: Timeframe, as_of: datetime) -> datetime:
    """Partitions that start before this are entirely older than the retention period."""
    return partition_start(as_utc(as_of) - tf.retention, tf)


def expired(table: Table, tf: Timeframe, as_of: datetime) -> list[Partition]:
    limit = cutoff(tf, as_of)
    return [p for p in partitions(table) if p.start < limit]


@dataclass(frozen=True)
class RetentionResult:
    table: str
    cutoff: datetime
    partitions: list[Partition]
    snapshot_id: int | None  # None: nothing was deleted (or a dry run)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)


def apply_retention(table: Table, tf: Timeframe, as_of: datetime, dry_run: bool = False) -> RetentionResult:
    """Delete the expired partitions in one commit; a dry run only lists them."""
    limit = cutoff(tf, as_of)
    doomed = expired(table, tf, as_of)
    if dry_run or not doomed:
        return RetentionResult(table.name()[-1], limit, doomed, None)
    with committing(table, f"retention before {limit:%Y-%m-%d}"):
        # Dropping old windows absorbs no trades: the watermark carries over.
        properties = {"ohlcv.retention": limit.isoformat(), **watermark_properties(recorded_watermark(table))}
        table.delete(LessThan("window_start", micros(limit)), snapshot_properties=properties)
    return RetentionResult(table.name()[-1], limit, doomed, table.current_snapshot().snapshot_id)


def retention_all(catalog, namespace: str, as_of: datetime, dry_run: bool = False) -> list[RetentionResult]:
    """Retention for every candle table (the trades table has no retention period)."""
    from ohlcv.catalog import load_candles
    from ohlcv.timeframes import TIMEFRAMES

    return [apply_retention(load_candles(catalog, namespace, tf), tf, as_of, dry_run) for tf in TIMEFRAMES.values()]
