"""Publish a chunk's candles: each timeframe's target ranges replaced in one commit per table."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from ohlcv.catalog import load_candles, load_trades, open_catalog
from ohlcv.errors import CommitConflict
from ohlcv.settings import Settings
from ohlcv.store import CommitResult, commit_candles, in_ranges, ranges_filter
from ohlcv.watermark import Watermark, is_ancestor_or_same, recorded_watermark, trades_since
from ohlcv.windows import Chunk, WindowRange

__all__ = ["candles_in", "commit_chunk"]


def candles_in(candles: pa.Table, ranges: WindowRange | list[WindowRange]) -> pa.Table:
    """The candles whose window starts inside `ranges` (one range or several)."""
    ranges = [ranges] if isinstance(ranges, WindowRange) else ranges
    return candles.filter(pa.array(in_ranges(candles.column("window_start").cast(pa.int64()).to_numpy(), ranges)))


def commit_chunk(
    settings: Settings, chunk: Chunk, candles: dict[str, pa.Table], now: datetime, trades_snapshot: int | None = None,
) -> list[CommitResult]:
    """Replace each timeframe's target ranges with its candles (`candles` by timeframe name):
    one Iceberg commit per table, none where nothing changed. `now` stamps created_at and
    updated_at. `trades_snapshot`: the trades snapshot the candles were computed from.

    A tick's chunk moves each table's watermark to its pinned snapshot, if the table still
    records the one the tick planned from. A backfill keeps the table's watermark (it absorbed
    only its own range); a table that has none yet starts from `trades_snapshot`.
    """
    catalog = open_catalog(settings)
    results = []
    for tf in chunk.timeframes:
        ranges = chunk.ranges_of(tf)
        table = load_candles(catalog, settings.namespace, tf)
        fresh = candles_in(candles[tf.name], ranges)
        if chunk.advances_watermark:
            watermark = Watermark(chunk.trades_snapshot, chunk.read.end) if chunk.trades_snapshot is not None else None
            result = commit_candles(table, fresh, ranges, now, watermark=watermark, expect_watermark=chunk.watermark_from)
        else:
            result = _commit_backfill(catalog, settings.namespace, table, fresh, ranges, now, trades_snapshot)
        results.append(result)
    return results


def _appended_into(trades, read: int | None, recorded: int, ranges: list[WindowRange]) -> bool:
    """Whether a file appended after trades snapshot `read`, up to `recorded`, can hold trades
    of `ranges` (pyiceberg prunes by the manifests' statistics: no data is read). A log that
    cannot say (the read snapshot gone, trades removed since) counts as yes."""
    since = trades_since(trades, read, recorded)
    if since.state != "appended":
        return since.state != "current"
    scan = trades.incremental_append_scan(from_snapshot_id_exclusive=read, to_snapshot_id_inclusive=recorded,
                                          row_filter=ranges_filter("timestamp", ranges))
    return any(True for _ in scan.plan_files())


def _commit_backfill(catalog, namespace: str, table, fresh: pa.Table, ranges: list[WindowRange], now: datetime,
                     read: int | None) -> CommitResult:
    """A backfill's commit: it absorbed only its own ranges, so the table keeps its watermark.

    - A table without one starts from the snapshot this backfill read, its windows computed up
      to the end of these ranges.
    - A table whose watermark is newer than what this backfill read may hold, in these ranges,
      trades a tick absorbed meanwhile: if any file appended since can hold such trades, the
      commit would lose them, so it fails as a conflict (run the backfill again).
    - Otherwise the watermark stays, and its `closed_before` moves to the end of these ranges
      when they continue right where it was (a backfill running forward in time).
    """
    current = recorded_watermark(table)
    end = max(r.end for r in ranges)
    if current is None:
        initial = Watermark(read, end) if read is not None else None
        return commit_candles(table, fresh, ranges, now, watermark_if_none=initial, expect_watermark=None)
    trades = load_trades(catalog, namespace)
    newer = not is_ancestor_or_same(trades, current.snapshot_id, read)
    if newer and _appended_into(trades, read, current.snapshot_id, ranges):
        raise CommitConflict(
            f"{table.name()[-1]}: trades for {', '.join(map(str, ranges))} arrived after this backfill read trades snapshot "
            f"{read}, and a tick absorbed them; run the backfill again"
        )
    keep = current
    start = min(r.start for r in ranges)
    if not newer and current.closed_before is not None and start <= current.closed_before < end:
        keep = Watermark(current.snapshot_id, end)
    return commit_candles(table, fresh, ranges, now, watermark=keep, expect_watermark=current.snapshot_id)
