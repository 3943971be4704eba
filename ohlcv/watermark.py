"""Watermarks: which snapshot of the trades table each candle table has absorbed, and what
arrived since, read from the two tables' snapshot logs (pure pyiceberg metadata, no data read).

Every candle commit records, in its snapshot summary and atomically with the candles, the trades
snapshot it consumed (`ohlcv.trades-snapshot-id`), as Flink's Iceberg sink records its checkpoint
ids. A tick reads it back by walking the candle table's ancestry, then walks the trades table's
ancestry from the snapshot it pins back to the recorded one:

- only appends since: their files hold the new trades, whatever their age (`appended`);
- the recorded snapshot is the pinned one: nothing new (`current`);
- no recorded snapshot: the first tick, or a table no commit of ours wrote (`none`);
- the recorded snapshot is not an ancestor any more (expired, or the table rolled back), or a
  snapshot since then removed trades (an overwrite or delete): the log cannot say which windows
  changed (`unreachable`, `rewritten`). The tick then recomputes by range, within a bound.

Commits that only move candles about (compaction, retention) carry the watermark forward, so
the newest snapshot of a candle table normally holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Snapshot, ancestors_of

from ohlcv.timeframes import Timeframe
from ohlcv.windows import EPOCH, WindowRange

__all__ = [
    "WATERMARK_KEY",
    "CLOSED_BEFORE_KEY",
    "Watermark",
    "recorded_watermark",
    "watermark_properties",
    "TradesSince",
    "trades_since",
    "is_ancestor_or_same",
    "window_ranges",
    "oldest_watermark_timestamp_ms",
]

WATERMARK_KEY = "ohlcv.trades-snapshot-id"
# The end of the windows that commit had computed: windows from there on were still open, so
# their trades (though absorbed into the watermark) are recomputed by the next tick.
CLOSED_BEFORE_KEY = "ohlcv.closed-before"
_REMOVING = (Operation.OVERWRITE, Operation.DELETE)


def _summary_value(snapshot: Snapshot, key: str) -> str | None:
    return snapshot.summary.get(key) if snapshot.summary is not None else None


@dataclass(frozen=True)
class Watermark:
    """What a candle table has absorbed: every trade of `snapshot_id` in a window that ends by
    `closed_before`; later windows were still open when it was committed."""

    snapshot_id: int
    closed_before: datetime | None = None


def recorded_watermark(candles: Table) -> Watermark | None:
    """The candle table's watermark: the newest one its ancestry records."""
    for snapshot in ancestors_of(candles.current_snapshot(), candles.metadata):
        value = _summary_value(snapshot, WATERMARK_KEY)
        if value is not None:
            closed = _summary_value(snapshot, CLOSED_BEFORE_KEY)
            return Watermark(int(value), datetime.fromisoformat(closed) if closed else None)
    return None


def watermark_properties(watermark: Watermark | None) -> dict[str, str]:
    """The snapshot summary properties that record a watermark (none for None)."""
    if watermark is None:
        return {}
    properties = {WATERMARK_KEY: str(watermark.snapshot_id)}
    if watermark.closed_before is not None:
        properties[CLOSED_BEFORE_KEY] = watermark.closed_before.isoformat()
    return properties


@dataclass(frozen=True)
class TradesSince:
    """What the trades table's log says happened between a recorded and a pinned snapshot."""

    state: str  # "appended", "current", "none", "unreachable" or "rewritten"
    recorded: int | None
    pinned: int | None  # None: the trades table has no snapshot at all
    appends: tuple[int, ...] = ()  # append snapshots after the recorded one, newest first
    appended_rows: int = 0  # rows those appends added: the backlog
    detail: str = ""

    @property
    def trusted(self) -> bool:
        """True when the log says exactly which trades are new (or that none are)."""
        return self.state in ("appended", "current")

    def as_dict(self) -> dict:
        return {"state": self.state, "recorded": self.recorded, "pinned": self.pinned,
                "appends": len(self.appends), "appended_rows": self.appended_rows, "detail": self.detail}


def _added_records(snapshot: Snapshot) -> int:
    value = _summary_value(snapshot, "added-records")
    return int(value) if value else 0


def trades_since(trades: Table, recorded: int | None, pinned: int | None) -> TradesSince:
    """Walk the trades table's ancestry from `pinned` back to `recorded`."""
    if pinned is None:
        return TradesSince("current" if recorded is None else "unreachable", recorded, None,
                           detail="" if recorded is None else "the trades table has no snapshot any more")
    if recorded is None:
        return TradesSince("none", None, pinned, detail="no trades snapshot recorded yet")
    if recorded == pinned:
        return TradesSince("current", recorded, pinned)
    start = trades.metadata.snapshot_by_id(pinned)
    if start is None:
        raise ValueError(f"trades snapshot {pinned} is not in the table's metadata")
    between: list[Snapshot] = []
    found = False
    for snapshot in ancestors_of(start, trades.metadata):
        if snapshot.snapshot_id == recorded:
            found = True
            break
        between.append(snapshot)
    if not found:
        return TradesSince("unreachable", recorded, pinned,
                           detail=f"trades snapshot {recorded} is no longer in the table's history (expired or rolled back)")
    removing = [s for s in between if s.summary is not None and s.summary.operation in _REMOVING
                and int(_summary_value(s, "deleted-records") or 0) > 0]
    if removing:
        first = removing[-1]
        return TradesSince("rewritten", recorded, pinned,
                           detail=f"trades snapshot {first.snapshot_id} ({first.summary.operation.value}) removed trades")
    appends = tuple(s.snapshot_id for s in between if s.summary is not None and s.summary.operation == Operation.APPEND)
    return TradesSince("appended", recorded, pinned, appends, sum(_added_records(s) for s in between if s.snapshot_id in appends))


def is_ancestor_or_same(trades: Table, older: int, newer: int | None) -> bool:
    """Whether trades snapshot `older` is `newer` or one of its ancestors."""
    if newer is None:
        return False
    start = trades.metadata.snapshot_by_id(newer)
    return start is not None and any(s.snapshot_id == older for s in ancestors_of(start, trades.metadata))


def window_ranges(timestamps: pa.Array | pa.ChunkedArray, tf: Timeframe, lo: datetime, hi: datetime) -> list[WindowRange]:
    """The windows of `tf` that hold any of `timestamps`, among those starting in [lo, hi),
    merged into contiguous ranges, oldest first. `lo` and `hi` are window starts of `tf`."""
    if len(timestamps) == 0:
        return []
    micros = pc.cast(timestamps, pa.int64())
    width = tf.width_us
    starts = pc.subtract(micros, pc.subtract(micros, pc.multiply(pc.divide(micros, width), width)))
    # pc.divide truncates toward zero; timestamps before 1970 are not trades, so floor == trunc.
    lo_us, hi_us = (lo - EPOCH) // timedelta(microseconds=1), (hi - EPOCH) // timedelta(microseconds=1)
    inside = pc.and_(pc.greater_equal(starts, lo_us), pc.less(starts, hi_us))
    unique = sorted(set(pc.filter(starts, inside).to_pylist()))
    ranges: list[list[int]] = []
    for start in unique:
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = start + width
        else:
            ranges.append([start, start + width])
    return [WindowRange(EPOCH + timedelta(microseconds=a), EPOCH + timedelta(microseconds=b)) for a, b in ranges]


def oldest_watermark_timestamp_ms(trades: Table, candle_tables: list[Table]) -> int | None:
    """When the oldest snapshot a candle table still needs was committed (ms), or None when no
    candle table records one that the trades table still has. Snapshot expiry on the trades
    table must keep that snapshot and every newer one, or the next tick cannot read what came
    after it."""
    stamps = []
    for candles in candle_tables:
        recorded = recorded_watermark(candles)
        snapshot = trades.metadata.snapshot_by_id(recorded.snapshot_id) if recorded is not None else None
        if snapshot is not None:
            stamps.append(snapshot.timestamp_ms)
    return min(stamps, default=None)
