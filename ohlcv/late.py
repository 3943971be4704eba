"""A tick's plan: its lookback, plus the closed windows of any age that trades appended since
the candle table's watermark touched.

The tick pins the trades snapshot current now and reads, from the files appended since the
recorded watermark only, the timestamps of the new trades older than its lookback. Every window
of the timeframe they fall in is recomputed whole, with all of its trades as of the pinned
snapshot, together with the lookback and in the same commit, which records the pinned snapshot
as the new watermark. Windows older than the timeframe's retention are not brought back.

Where the snapshot log cannot say what changed (no watermark yet, a watermark that is no
longer in the trades table's history, or a snapshot since then that removed trades), the tick
says so and recomputes by range instead: the lookback on a first tick; otherwise the last
`recompute_limit` before the lookback, with a note of what lies beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from pyiceberg.table import Table

from ohlcv.retention import cutoff as retention_cutoff
from ohlcv.store import plan_trade_files, range_filter, timestamps_in
from ohlcv.timeframes import Timeframe
from ohlcv.watermark import TradesSince, recorded_watermark, trades_since, window_ranges
from ohlcv.windows import EPOCH, Chunk, WindowRange, floor, tick_range

__all__ = ["TickPlan", "plan_tick"]

# The journal keeps this many of a tick's ranges (with the count of all of them).
SUMMARY_RANGES = 10


@dataclass(frozen=True)
class TickPlan:
    """What a tick recomputes, from which trades snapshot, and what people should know about it."""

    chunk: Chunk
    since: TradesSince
    late_windows: int  # windows older than the lookback that new trades touched
    notes: tuple[str, ...] = ()  # fallbacks taken and what they left unchecked

    def summary(self) -> dict:
        """For the run journal: bounded however many late windows the tick found."""
        ranges = self.chunk.ranges_of(self.chunk.timeframes[0])
        return {
            "ranges": len(ranges),
            "first_ranges": [str(r) for r in ranges[:SUMMARY_RANGES]],
            "late_windows": self.late_windows,
            "trades_snapshot": self.chunk.trades_snapshot,
            "watermark_from": self.chunk.watermark_from,
            "trades_log": self.since.as_dict(),
            "notes": list(self.notes),
        }


def plan_tick(trades: Table, candles: Table, tf: Timeframe, as_of: datetime, recompute_limit: timedelta) -> TickPlan:
    """Plan the tick of `tf` at `as_of` from the two tables' snapshot logs."""
    lookback = tick_range(tf, as_of)
    oldest = floor(max(retention_cutoff(tf, as_of), EPOCH), tf)  # older windows stay gone
    limit_start = max(floor(lookback.start - recompute_limit, tf), oldest)
    current = trades.current_snapshot()
    pinned = current.snapshot_id if current is not None else None
    recorded = recorded_watermark(candles)
    since = trades_since(trades, recorded.snapshot_id if recorded is not None else None, pinned)
    late: list[WindowRange] = []
    notes: list[str] = []
    if since.trusted and pinned is not None:
        found = []
        if since.state == "appended" and oldest < lookback.start:
            # Trades appended since the watermark, of any age the retention keeps.
            before = WindowRange(oldest, lookback.start)
            appended = trades.incremental_append_scan(from_snapshot_id_exclusive=since.recorded, to_snapshot_id_inclusive=pinned,
                                                      row_filter=range_filter("timestamp", before))
            found.append(timestamps_in(trades, list(appended.plan_files()), before))
        opened = floor(recorded.closed_before, tf) if recorded is not None and recorded.closed_before is not None else None
        if opened is not None and opened < lookback.start:
            # Windows still open at the last commit (a tick missed, or a backfill before this
            # tick): their trades are in the watermark but were never computed.
            gap_start = max(opened, limit_start)
            if opened < gap_start and plan_trade_files(trades, [WindowRange(opened, gap_start)], pinned):
                notes.append(
                    f"{tf.table}: windows from {opened:%Y-%m-%dT%H:%MZ} to {gap_start:%Y-%m-%dT%H:%MZ} were still open at the last "
                    "commit and are beyond OHLCV_RECOMPUTE_LIMIT_DAYS: not recomputed (`ohlcv backfill` them)"
                )
            if gap_start < lookback.start:
                gap = WindowRange(gap_start, lookback.start)
                found.append(timestamps_in(trades, plan_trade_files(trades, [gap], pinned), gap))
        if found:
            stamps = pa.chunked_array([chunk for column in found for chunk in column.chunks], type=pa.timestamp("us", tz="UTC"))
            late = window_ranges(stamps, tf, oldest, lookback.start)
    elif since.state == "none":
        notes.append(f"{tf.table}: {since.detail}: this tick recomputes its lookback and records trades snapshot {pinned}")
    elif since.state in ("unreachable", "rewritten"):
        if limit_start < lookback.start:
            late = [WindowRange(limit_start, lookback.start)]
        notes.append(
            f"{tf.table}: {since.detail}; recomputed [{limit_start:%Y-%m-%dT%H:%MZ}, {lookback.end:%Y-%m-%dT%H:%MZ}) by range "
            f"(OHLCV_RECOMPUTE_LIMIT_DAYS); windows before {limit_start:%Y-%m-%dT%H:%MZ} were not checked: "
            "`ohlcv validate` finds late ones there"
        )
    late_windows = sum((r.end - r.start) // tf.width for r in late) if since.trusted else 0
    ranges = tuple(sorted([*late, lookback]))
    read = WindowRange(ranges[0].start, lookback.end)
    chunk = Chunk(read, tuple((tf, r) for r in ranges), reads=ranges, trades_snapshot=pinned,
                  advances_watermark=True, watermark_from=since.recorded)
    return TickPlan(chunk, since, late_windows, tuple(notes))
