"""Pure planning of window ranges: no I/O and no clock, every time comes in as an argument.

All times are tz-aware UTC datetimes. A range is a half-open pair `[start, end)` of window
starts: a candle belongs to the range when its `window_start` lies in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from ohlcv.errors import InputError
from ohlcv.timeframes import Timeframe

__all__ = [
    "WindowRange",
    "as_utc",
    "floor",
    "ceil",
    "tick_range",
    "backfill_range",
    "partition_start",
    "next_partition_start",
    "EPOCH",
    "Chunk",
    "tick_chunks",
    "plan_backfill",
    "split_by_day",
]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, order=True)
class WindowRange:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window ranges take tz-aware datetimes")
        if self.end < self.start:
            raise InputError(f"end {self.end.isoformat()} is before start {self.start.isoformat()}")

    @property
    def empty(self) -> bool:
        return self.end <= self.start

    def __str__(self) -> str:
        return f"[{_iso(self.start)}, {_iso(self.end)})"


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_utc(ts: datetime) -> datetime:
    """Naive datetimes mean UTC; aware ones are converted to UTC."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


def floor(ts: datetime, tf: Timeframe) -> datetime:
    """Start of the window of `tf` that contains `ts` (windows are aligned to the Unix epoch)."""
    offset = (as_utc(ts) - EPOCH) // tf.width
    return EPOCH + offset * tf.width


def ceil(ts: datetime, tf: Timeframe) -> datetime:
    """Start of the first window of `tf` that starts at or after `ts`."""
    floored = floor(ts, tf)
    return floored if floored == as_utc(ts) else floored + tf.width


def tick_range(tf: Timeframe, as_of: datetime) -> WindowRange:
    """The closed windows a scheduled run at `as_of` recomputes: `[floor(T) - lookback, floor(T))`."""
    end = floor(as_of, tf)
    return WindowRange(end - tf.lookback, end)


def backfill_range(tf: Timeframe, start: datetime, end: datetime, closed_before: datetime | None = None) -> WindowRange:
    """Every window of `tf` whose start lies in `[start, end)`.

    `closed_before` (the clock, passed in by the caller) keeps a backfill from writing windows
    that are still open: their candles would be missing the trades still to come.
    """
    start, end = as_utc(start), as_utc(end)
    if end < start:
        raise InputError(f"--end {_iso(end)} is before --start {_iso(start)}")
    lo, hi = ceil(start, tf), ceil(end, tf)
    if closed_before is not None:
        hi = min(hi, floor(closed_before, tf))
    return WindowRange(lo, max(lo, hi))


def partition_start(ts: datetime, tf: Timeframe) -> datetime:
    """Start of the table partition (UTC day or month) holding windows that start at `ts`."""
    ts = as_utc(ts)
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1) if tf.partition == "month" else day


def next_partition_start(ts: datetime, tf: Timeframe) -> datetime:
    start = partition_start(ts, tf)
    if tf.partition == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return start + timedelta(days=1)


@dataclass(frozen=True)
class Chunk:
    """One unit of work: aggregate the trades of `read` once, then replace each target range.

    Every target range is aligned to its own timeframe and lies inside `read`, so each of its
    windows sees all of its trades; candles computed outside a target are not committed. A
    timeframe may have several target ranges (a tick's lookback and the old windows late trades
    touched): they are replaced together, in one commit per table.

    `reads`: the disjoint ranges to read when that is less than all of `read` (a tick with late
    windows days back reads those windows, not the days between). `trades_snapshot`: read the
    trades as of that snapshot, the one a tick planned from. `advances_watermark`: the commit
    records `trades_snapshot` as the table's watermark, provided the table still records
    `watermark_from` (a tick); otherwise (a backfill) the table keeps its watermark.
    """

    read: WindowRange
    targets: tuple[tuple[Timeframe, WindowRange], ...]
    reads: tuple[WindowRange, ...] = ()
    trades_snapshot: int | None = None
    advances_watermark: bool = False
    watermark_from: int | None = None

    @property
    def timeframes(self) -> list[Timeframe]:
        """Each timeframe of the chunk once, in target order."""
        return list(dict.fromkeys(tf for tf, _ in self.targets))

    @property
    def read_ranges(self) -> tuple[WindowRange, ...]:
        return self.reads or (self.read,)

    def ranges_of(self, tf: Timeframe) -> list[WindowRange]:
        """The target ranges of one timeframe, oldest first."""
        return sorted(rng for target, rng in self.targets if target.name == tf.name)


def tick_chunks(tfs: list[Timeframe], as_of: datetime) -> list[Chunk]:
    """A scheduled run: each timeframe reads and replaces its own lookback range."""
    chunks = []
    for tf in tfs:
        rng = tick_range(tf, as_of)
        chunks.append(Chunk(rng, ((tf, rng),)))
    return chunks


def _intersect(a: WindowRange, b: WindowRange) -> WindowRange | None:
    start, end = max(a.start, b.start), min(a.end, b.end)
    return WindowRange(start, end) if start < end else None


def split_by_day(rng: WindowRange) -> list[WindowRange]:
    """Cut a range at UTC midnights."""
    chunks: list[WindowRange] = []
    cursor = rng.start
    while cursor < rng.end:
        boundary = min(as_utc(cursor).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1), rng.end)
        chunks.append(WindowRange(cursor, boundary))
        cursor = boundary
    return chunks


def plan_backfill(
    tfs: list[Timeframe], start: datetime, end: datetime, closed_before: datetime | None = None,
    trades_per_day: Mapping[date, int] | None = None, chunk_trades: int = 0,
) -> list[Chunk]:
    """Chunks, in time order, that recompute every window whose start is in `[start, end)`.

    Every timeframe shares the chunks: a chunk's trades are read and aggregated once, and the
    coarser candles are rolled up from the finer ones of the same pass. A chunk is whole days (a
    day is the largest window and the smallest partition, so the 1d candles of a day are a
    day-sized range of their month partition; the upkeep compacts those commits).

    With `trades_per_day` (estimated from the manifests) and `chunk_trades`, consecutive days
    share one chunk while their trades add up to at most `chunk_trades`: a pass has a fixed
    cost (Spark jobs, five commits, the workflow's steps) that small days would each pay. A day
    above the budget is a chunk of its own. Without them, every day is a chunk.
    """
    ranges = {tf.name: backfill_range(tf, start, end, closed_before) for tf in tfs}
    live = [tf for tf in tfs if not ranges[tf.name].empty]
    if not live:
        return []
    union = WindowRange(min(ranges[tf.name].start for tf in live), max(ranges[tf.name].end for tf in live))
    days = []
    for day in split_by_day(union):
        targets = tuple((tf, part) for tf in live if (part := _intersect(ranges[tf.name], day)) is not None)
        if targets:
            days.append(Chunk(WindowRange(min(r.start for _, r in targets), max(r.end for _, r in targets)), targets))
    if not trades_per_day or chunk_trades <= 0:
        return days
    groups: list[list[Chunk]] = []
    total = 0
    for chunk in days:
        trades = trades_per_day.get(chunk.read.start.date(), 0)
        if not groups or total + trades > chunk_trades:
            groups.append([])
            total = 0
        groups[-1].append(chunk)
        total += trades
    return [_joined(group) for group in groups]


def _joined(days: list[Chunk]) -> Chunk:
    """One chunk for consecutive day chunks: each timeframe's day ranges joined into one."""
    if len(days) == 1:
        return days[0]
    joined: dict[str, tuple[Timeframe, WindowRange]] = {}
    for chunk in days:
        for tf, rng in chunk.targets:
            if tf.name in joined:
                previous = joined[tf.name][1]
                if previous.end != rng.start:
                    raise ValueError(f"{tf.name}: {previous} and {rng} do not meet")
                rng = WindowRange(previous.start, rng.end)
            joined[tf.name] = (tf, rng)
    return Chunk(WindowRange(days[0].read.start, days[-1].read.end), tuple(joined.values()))
