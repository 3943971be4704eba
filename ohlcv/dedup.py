"""Deduplication once, on write: ingest keeps one version of each trade, and records where the
trades table may still hold two.

The rule does not change (DESIGN section 3): a trade is (exchange, symbol, trade_id), and the
version ranked first by (ingested_at, timestamp, price, quantity) wins. What changes is where
it is applied:

- **Ingest** drops every new row that a stored trade or an earlier row of the same file
  outranks, to quarantine with the reason "duplicate". It finds the stored versions through
  `trade_id_ranges`, an index of the id range each series stored on each day: only the days
  whose range meets the new ids are read, so a new day of trades reads nothing.
- **Each ingest commit records what it guaranteed** in its snapshot summary: the snapshot it
  checked the new rows against (`ohlcv.dedup.checked-parent`) and the days where two versions
  may still be stored (`ohlcv.dedup.duplicate-days`). A new row that outranks a stored version
  (possible only when both carry the same ingested_at) lands beside it, and both days count.
- **Reads** (`duplicate_days`) trust the newest snapshot whose guarantee holds (its parent is
  the snapshot it checked) and add the days of every file committed after it by anything
  else: another writer, or an ingest that pyiceberg rebased onto a concurrent commit. Only a
  read that meets one of those days is deduplicated.

A version that differs in its timestamp by days is found too (the index is by id, not time).
Not covered: a trade that another writer appended and an ingest repeats later on a different
day. The other writer's day is deduplicated on read, the new day is not, as before this index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, In, Or
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Snapshot

from ohlcv import schema as s
from ohlcv.store import balanced_or, range_filter
from ohlcv.windows import EPOCH, WindowRange

__all__ = [
    "CHECKED_PARENT",
    "DUPLICATE_DAYS",
    "KEY",
    "RANK",
    "DuplicateDays",
    "duplicate_days",
    "guarantee",
    "id_ranges",
    "merge_id_ranges",
    "load_id_ranges",
    "largest_number_by_day",
    "days_of",
    "record_id_ranges",
    "series_to_check",
    "stored_versions",
    "repeats_in_file",
    "outranked_by_stored",
]

log = logging.getLogger(__name__)

CHECKED_PARENT = "ohlcv.dedup.checked-parent"
DUPLICATE_DAYS = "ohlcv.dedup.duplicate-days"
KEY = ["exchange", "symbol", "trade_id"]
RANK = ["ingested_at", "timestamp", "price", "quantity"]  # the first version wins
_NO_PARENT = "none"
_MAX_NUMBER_DIGITS = 18  # fits int64


# ------------------------------------------------------------------------------ days at risk


@dataclass(frozen=True)
class DuplicateDays:
    """The UTC days of the trades table where two versions of a trade may be stored."""

    days: frozenset[date]
    everything: bool = False  # a file without timestamp statistics: any day

    def meets(self, ranges: Iterable[WindowRange]) -> bool:
        """Whether a read of `ranges` can see two versions of a trade (and must deduplicate)."""
        if self.everything:
            return True
        if not self.days:
            return False
        return not self.days.isdisjoint(days_of(ranges))

    def text(self) -> str:
        """The days as comma-separated runs, `2024-05-01/2024-05-03,2024-06-10`; `*` for any day."""
        if self.everything:
            return "*"
        runs: list[list[date]] = []
        for day in sorted(self.days):
            if runs and day - runs[-1][1] == timedelta(days=1):
                runs[-1][1] = day
            else:
                runs.append([day, day])
        return ",".join(str(a) if a == b else f"{a}/{b}" for a, b in runs)

    @classmethod
    def parse(cls, text: str) -> "DuplicateDays":
        if text.strip() == "*":
            return cls(frozenset(), everything=True)
        days: set[date] = set()
        for run in filter(None, (part.strip() for part in text.split(","))):
            first, _, last = run.partition("/")
            a, b = date.fromisoformat(first), date.fromisoformat(last or first)
            days.update(a + timedelta(days=i) for i in range((b - a).days + 1))
        return cls(frozenset(days))

    def __or__(self, other: "DuplicateDays") -> "DuplicateDays":
        return DuplicateDays(self.days | other.days, self.everything or other.everything)


def _day(ts: datetime) -> date:
    return ts.astimezone(EPOCH.tzinfo).date()


def _day_of_micros(value: int) -> date:
    return date(1970, 1, 1) + timedelta(days=value // 86_400_000_000)


def _certified(snapshot: Snapshot) -> bool:
    """Whether an ingest committed this snapshot on exactly the snapshot it checked."""
    checked = snapshot.summary.get(CHECKED_PARENT) if snapshot.summary is not None else None
    if checked is None:
        return False
    parent = snapshot.parent_snapshot_id
    return checked == (_NO_PARENT if parent is None else str(parent))


def _adds_rows(snapshot: Snapshot) -> bool:
    # A delete removes rows; a replace rewrites the same rows (compaction): neither adds a version.
    return snapshot.summary is None or snapshot.summary.operation not in (Operation.DELETE, Operation.REPLACE)


def _days_added_by(table: Table, snapshot: Snapshot) -> DuplicateDays:
    """The days spanned by the data files `snapshot` added (manifests only, nothing is read)."""
    files = [entry.data_file
             for manifest in snapshot.manifests(table.io) if manifest.added_snapshot_id == snapshot.snapshot_id
             for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
             if entry.status == ManifestEntryStatus.ADDED]
    return _days_of(table, files)


def _days_with_data(table: Table, snapshot: Snapshot) -> DuplicateDays:
    """Every day the table holds trades on at `snapshot`: what nothing vouches for."""
    return _days_of(table, [task.file for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files()])


def _days_of(table: Table, data_files) -> DuplicateDays:
    """The days the files' timestamp statistics span (a file without them: any day)."""
    from pyiceberg.conversions import from_bytes

    field = table.schema().find_field("timestamp")
    days: set[date] = set()
    for data_file in data_files:
        lower = (data_file.lower_bounds or {}).get(field.field_id)
        upper = (data_file.upper_bounds or {}).get(field.field_id)
        if lower is None or upper is None:
            return DuplicateDays(frozenset(), everything=True)
        first, last = (_day_of_micros(from_bytes(field.field_type, bound)) for bound in (lower, upper))
        days.update(first + timedelta(days=i) for i in range((last - first).days + 1))
    return DuplicateDays(frozenset(days))


def duplicate_days(table: Table, snapshot_id: int | None = None) -> DuplicateDays:
    """Where the trades table may hold two versions of a trade, as of `snapshot_id` (default:
    the current snapshot): the days the newest certified snapshot records, plus the days of the
    files every later snapshot added. With no certified snapshot in the kept history, every
    day that holds trades."""
    start = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else table.current_snapshot()
    if start is None:
        return DuplicateDays(frozenset())
    days = DuplicateDays(frozenset())
    snapshot: Snapshot | None = start
    while snapshot is not None:
        if _certified(snapshot):
            return days | DuplicateDays.parse(snapshot.summary.get(DUPLICATE_DAYS) or "")
        if _adds_rows(snapshot):
            days = days | _days_added_by(table, snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
        if parent is not None and snapshot is None:  # the history before it expired
            return _days_with_data(table, start)
    return days


def guarantee(checked: Snapshot | None, duplicates: DuplicateDays) -> dict[str, str]:
    """The snapshot properties of an ingest commit that checked its rows against `checked`."""
    return {CHECKED_PARENT: _NO_PARENT if checked is None else str(checked.snapshot_id), DUPLICATE_DAYS: duplicates.text()}


# ------------------------------------------------------------------------- the trade id index


def _id_columns(trade_id: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(the id as a number where it is one of at most 18 digits, else null; the id as text where it is not)."""
    numeric = pc.and_(pc.ascii_is_decimal(trade_id), pc.less_equal(pc.utf8_length(trade_id), _MAX_NUMBER_DIGITS))
    numeric = pc.fill_null(numeric, False)
    number = pc.cast(pc.if_else(numeric, trade_id, pa.scalar(None, pa.string())), pa.int64())
    text = pc.if_else(numeric, pa.scalar(None, pa.string()), trade_id)
    return number, text


_INDEX_ARROW = s.arrow_schema(s.TRADE_ID_RANGES_SCHEMA)


def id_ranges(trades: pa.Table) -> pa.Table:
    """The index rows of a batch of trades: per (exchange, symbol, day), its id ranges."""
    number, text = _id_columns(trades.column("trade_id"))
    keyed = pa.table({
        "exchange": trades.column("exchange"), "symbol": trades.column("symbol"),
        "day": pc.cast(trades.column("timestamp"), pa.date32()), "number": number, "text": text,
    })
    grouped = keyed.group_by(["exchange", "symbol", "day"]).aggregate(
        [("number", "min"), ("number", "max"), ("text", "min"), ("text", "max"), ("day", "count")])
    return _as_index(grouped, "number_min", "number_max", "text_min", "text_max", "day_count")


def _as_index(grouped: pa.Table, first_number: str, last_number: str, first_text: str, last_text: str, trades: str) -> pa.Table:
    return pa.table({
        "exchange": grouped.column("exchange"), "symbol": grouped.column("symbol"), "day": grouped.column("day"),
        "first_number": grouped.column(first_number), "last_number": grouped.column(last_number),
        "first_text": grouped.column(first_text), "last_text": grouped.column(last_text),
        "trades": grouped.column(trades),
    }).cast(_INDEX_ARROW)


def merge_id_ranges(rows: pa.Table) -> pa.Table:
    """One index row per (exchange, symbol, day): the union of the rows' ranges."""
    if rows.num_rows == 0:
        return _INDEX_ARROW.empty_table()
    grouped = rows.group_by(["exchange", "symbol", "day"]).aggregate(
        [("first_number", "min"), ("last_number", "max"), ("first_text", "min"), ("last_text", "max"), ("trades", "sum")])
    return _as_index(grouped, "first_number_min", "last_number_max", "first_text_min", "last_text_max", "trades_sum")


def load_id_ranges(index: Table) -> pa.Table:
    return merge_id_ranges(index.scan().to_arrow().cast(_INDEX_ARROW))


def largest_number_by_day(index: Table) -> dict[date, int]:
    """The largest numeric trade id of each day, over every series, from the trade id index."""
    ranges = load_id_ranges(index)
    by_day = ranges.group_by("day").aggregate([("last_number", "max")])
    return {day: number for day, number in zip(by_day.column("day").to_pylist(), by_day.column("last_number_max").to_pylist())
            if number is not None}


def days_of(ranges: Iterable[WindowRange]) -> set[date]:
    """The UTC days that `ranges` meet (an empty range meets none)."""
    return {_day(rng.start) + timedelta(days=offset)
            for rng in ranges if not rng.empty
            for offset in range((_day(rng.end - timedelta(microseconds=1)) - _day(rng.start)).days + 1)}


def record_id_ranges(index: Table, batch_ranges: pa.Table, attempts: int = 5) -> None:
    """Add a batch's id ranges to the index: one commit that rewrites it whole (it is a row per
    series and day), redone from the new index when another ingest committed first."""
    for attempt in range(attempts):
        index.refresh()
        merged = merge_id_ranges(pa.concat_tables([index.scan().to_arrow().cast(_INDEX_ARROW), batch_ranges]))
        try:
            if index.current_snapshot() is None:
                index.append(merged)
            else:
                index.overwrite(merged, overwrite_filter=AlwaysTrue())
            return
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
            log.info("the trade id index moved while ingesting: merging again")


def series_to_check(index: pa.Table, batch_ranges: pa.Table) -> dict[tuple[str, str], set[date]]:
    """Per series of the batch, the stored days whose id ranges meet the batch's ids of that series."""
    if index.num_rows == 0 or batch_ranges.num_rows == 0:
        return {}
    batch = merge_id_ranges(batch_ranges.set_column(2, "day", pa.array([date.min] * batch_ranges.num_rows, pa.date32())))
    joined = index.to_pandas().merge(batch.drop(["day", "trades"]).to_pandas(), on=["exchange", "symbol"], suffixes=("", "_new"))
    if joined.empty:
        return {}

    def meet(first: str, last: str) -> np.ndarray:
        a, b, c, d = (joined[name] for name in (first, last, f"{first}_new", f"{last}_new"))
        return (a.notna() & c.notna() & (a <= d) & (c <= b)).fillna(False).to_numpy(dtype=bool)

    hits = joined[meet("first_number", "last_number") | meet("first_text", "last_text")]
    found: dict[tuple[str, str], set[date]] = {}
    for exchange, symbol, day in zip(hits["exchange"], hits["symbol"], hits["day"]):
        found.setdefault((exchange, symbol), set()).add(day)
    return found


def stored_versions(trades: Table, snapshot: Snapshot | None, where: dict[tuple[str, str], set[date]]) -> pa.Table:
    """The stored trades of the given series on the given days (key and rank columns)."""
    if snapshot is None or not where:
        return pa.table({name: [] for name in (*KEY, *RANK[1:], "ingested_at")})
    days = sorted({day for found in where.values() for day in found})
    on_days = balanced_or([range_filter("timestamp", WindowRange(_day_start(d), _day_start(d) + timedelta(days=1))) for d in days], Or)
    series: BooleanExpression = And(In("exchange", sorted({e for e, _ in where})), In("symbol", sorted({sy for _, sy in where})))
    return trades.scan(row_filter=And(on_days, series), snapshot_id=snapshot.snapshot_id,
                       selected_fields=(*KEY, "ingested_at", "timestamp", "price", "quantity")).to_arrow()


# ------------------------------------------------------------------------- which rows repeat


def _rank_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """The rank columns as numbers: times in microseconds, prices and quantities as they are."""
    return {name: pc.cast(table.column(name), pa.int64() if name in ("ingested_at", "timestamp") else pa.float64())
            .to_numpy(zero_copy_only=False) for name in RANK}


def _first_of_each_key(ranked: pa.Table) -> np.ndarray:
    """Positions in `ranked` (rows of repeated keys) of the first version of each key."""
    frame = pd.DataFrame({"_key": _key_integers(ranked), **_rank_columns(ranked), "_row": np.arange(ranked.num_rows)})
    frame = frame.sort_values(["_key", *RANK, "_row"], kind="stable")
    return frame.loc[~frame.duplicated("_key", keep="first"), "_row"].to_numpy()


def _key_integers(table: pa.Table) -> np.ndarray:
    """One integer per row, equal exactly where the rows' keys are equal.

    Exchange ids are nearly always plain numbers: then the integer is the id and the series'
    code, and hashing or sorting it is ten times faster than three strings. Any other id (text,
    leading zeros, over 18 digits) makes it a code of the joined strings."""
    trade_id = table.column("trade_id")
    plain = pc.and_(pc.ascii_is_decimal(trade_id), pc.less_equal(pc.utf8_length(trade_id), _MAX_NUMBER_DIGITS))
    padded = pc.and_(pc.starts_with(trade_id, "0"), pc.greater(pc.utf8_length(trade_id), 1))  # "007" is not "7"
    if table.num_rows and pc.all(pc.and_(plain, pc.invert(padded))).as_py():
        exchange, symbol = (pc.dictionary_encode(table.column(name)).combine_chunks() for name in ("exchange", "symbol"))
        count = len(exchange.dictionary) * len(symbol.dictionary)
        ids = pc.cast(trade_id, pa.int64()).to_numpy()
        if int(ids.max()) < (2**62) // count:
            return ids * count + exchange.indices.to_numpy().astype("int64") * len(symbol.dictionary) + symbol.indices.to_numpy()
    joined = pc.binary_join_element_wise(*(pc.cast(table.column(name), pa.string()) for name in KEY), "\x00")
    return pc.dictionary_encode(joined).combine_chunks().indices.to_numpy().astype("int64")


def _repeated_keys(table: pa.Table) -> np.ndarray:
    """Which rows share their key with another row of the table."""
    keys = _key_integers(table)
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():  # the usual file: every key once (a sort costs half a hash)
        return np.zeros(len(keys), dtype=bool)
    return pd.Series(keys).duplicated(keep=False).to_numpy()


def repeats_in_file(valid: pa.Table) -> np.ndarray:
    """Rows of one batch that another row of it outranks (same key, ranked after it)."""
    losers = np.zeros(valid.num_rows, dtype=bool)
    if valid.num_rows < 2:
        return losers
    involved = np.flatnonzero(_repeated_keys(valid))
    if not len(involved):
        return losers
    losers[involved] = True
    losers[involved[_first_of_each_key(valid.take(involved))]] = False
    return losers


def outranked_by_stored(batch: pa.Table, stored: pa.Table) -> tuple[np.ndarray, set[date]]:
    """Rows of a batch (one version per key) that a stored version outranks or equals, and the
    days a kept row shares with a stored version it outranks (both versions then stay stored)."""
    dropped = np.zeros(batch.num_rows, dtype=bool)
    if batch.num_rows == 0 or stored.num_rows == 0:
        return dropped, set()
    stored = stored.select([*KEY, *RANK])
    repeated = np.flatnonzero(_repeated_keys(stored))
    if len(repeated):  # a day where two versions are stored: compare with the first of them
        keep = np.ones(stored.num_rows, dtype=bool)
        keep[repeated] = False
        keep[repeated[_first_of_each_key(stored.take(repeated))]] = True
        stored = stored.filter(pa.array(keep))
    keys = pa.concat_tables([table.select(KEY).cast(pa.schema([(name, pa.string()) for name in KEY])) for table in (batch, stored)])
    codes = _key_integers(keys)  # one code space for both sides; each side holds a key once
    _, mine_at, theirs_at = np.intersect1d(codes[:batch.num_rows], codes[batch.num_rows:], assume_unique=True, return_indices=True)
    if not len(mine_at):
        return dropped, set()
    mine, theirs = _rank_columns(batch.take(mine_at)), _rank_columns(stored.take(theirs_at))
    new_first = np.zeros(len(mine_at), dtype=bool)
    decided = np.zeros(len(mine_at), dtype=bool)
    for name in RANK:
        new_first |= ~decided & (mine[name] < theirs[name])
        decided |= mine[name] != theirs[name]
    dropped[mine_at[~new_first]] = True
    days = {_day_of_micros(int(v)) for v in np.concatenate([mine["timestamp"][new_first], theirs["timestamp"][new_first]])}
    return dropped, days


def _day_start(day: date) -> datetime:
    """Midnight UTC that starts `day`."""
    return EPOCH + timedelta(days=(day - date(1970, 1, 1)).days)

