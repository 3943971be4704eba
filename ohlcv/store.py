"""The Iceberg seam: read a trade range into Spark, commit a candle range atomically, query candles.

Reading: pyiceberg plans the files of the range (partition pruning on day(timestamp) and
min/max pruning on the file statistics), then Spark reads exactly those files, one of three ways:
- "arrow": each Spark task reads its files through pyiceberg's own FileIO and Arrow reader
  (`mapInArrow`), so any warehouse pyiceberg can read (local, S3, GCS, ADLS) works without a
  Hadoop connector, and delete files and schema evolution are honoured;
- "native": Spark's vectorised Parquet reader on the local paths, used when every file is
  local, has no delete files and the table never changed schema. Same rows, faster;
- "pruned": a small read (a tick's), or many scattered ranges with few trades in them (a
  tick's late windows), on the same local files: read with Arrow in the driver, each row
  group skipped unless its timestamp statistics meet a range, and handed to Spark as one file
  of exactly the range's trades.

Committing: the candles of a range replace exactly that range in ONE Iceberg commit
(`overwrite` with a range filter). Candles whose values did not change keep their stored
row, so re-running a range leaves the table's content as it was, and `updated_at` moves only
for candles whose values changed.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysFalse, AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan, Or
from pyiceberg.table import FileScanTask, Table

from ohlcv import schema as s
from ohlcv.data_files import partition_values, replace_files, write_rows
from ohlcv.errors import CommitConflict, DataFileError
from ohlcv.manifests import data_files_meeting
from ohlcv.parquet_footers import row_groups_meeting
from ohlcv.watermark import Watermark, recorded_watermark, watermark_properties
from ohlcv.windows import EPOCH, WindowRange

__all__ = [
    "micros",
    "range_filter",
    "TRADE_READ_COLUMNS",
    "ARROW_TRADES",
    "SPARK_TRADE_SCHEMA",
    "plan_trade_files",
    "held_whole",
    "rows_in_range",
    "trades_per_day",
    "ReadPlan",
    "read_trades",
    "pinned_snapshot",
    "read_in_driver",
    "READ_HERE_MAX_ROWS",
    "read_pruned",
    "timestamps_in",
    "in_ranges",
    "ranges_cover",
    "scratch_folder",
    "CommitResult",
    "merge_candles",
    "ANY_WATERMARK",
    "balanced_or",
    "ranges_filter",
    "spark_ranges_condition",
    "spark_slots_condition",
    "one_task",
    "slot_starts",
    "commit_candles",
    "committing",
    "read_candles",
    "merge_small_files",
    "rewrite_in_time_order",
    "rewrite_candles",
]

log = logging.getLogger(__name__)

TRADE_READ_COLUMNS = ("exchange", "symbol", "trade_id", "price", "quantity", "timestamp", "ingested_at")
# What Spark reads, typed from the table's one schema: nullable, and text as Arrow `string`,
# because Spark's Arrow bridge does not take pyiceberg's `large_string`.
ARROW_TRADES = pa.schema(
    [
        pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
        for f in s.arrow_schema(s.TRADES_SCHEMA.select(*TRADE_READ_COLUMNS))
    ]
)
_SPARK_TYPES = {pa.string(): "string", pa.float64(): "double", pa.timestamp("us", tz="UTC"): "timestamp"}
SPARK_TRADE_SCHEMA = ", ".join(f"{f.name} {_SPARK_TYPES[f.type]}" for f in ARROW_TRADES)
# Fields compared exactly, and sums whose last bits depend on Spark's summation order.
EXACT_FIELDS = ("window_end", "window_date", "open_price", "high_price", "low_price", "close_price", "trade_count")
SUMMED_FIELDS = ("volume", "vwap")
SUM_RELATIVE_TOLERANCE = 1e-12


def micros(ts: datetime) -> int:
    """Microseconds since the Unix epoch: how Iceberg stores a timestamptz."""
    return (ts - EPOCH) // timedelta(microseconds=1)


def range_filter(column: str, rng: WindowRange) -> BooleanExpression:
    return And(GreaterThanOrEqual(column, micros(rng.start)), LessThan(column, micros(rng.end)))


def _as_ranges(ranges: WindowRange | list[WindowRange] | tuple[WindowRange, ...]) -> list[WindowRange]:
    return [ranges] if isinstance(ranges, WindowRange) else sorted(ranges)


def plan_trade_files(table: Table, ranges: WindowRange | list[WindowRange], snapshot_id: int | None = None) -> list[FileScanTask]:
    """The trade files that can hold trades of `ranges` (partitions and column statistics
    pruned), as of `snapshot_id` (default: the current snapshot)."""
    return _plan_files(table, "timestamp", ranges, snapshot_id)


def _plan_files(table: Table, column: str, ranges: WindowRange | list[WindowRange], snapshot_id: int | None = None) -> list[FileScanTask]:
    """The data files that can hold rows with `column` in `ranges`.

    The manifests' partition summaries are matched with the ranges' hull (ohlcv/manifests.py,
    or pyiceberg's own planning where the table has delete files); each file's bounds of
    `column` are then compared with every range here. Handing pyiceberg a hundred ranges (a
    tick's late windows) as one OR made it evaluate that tree for every manifest entry: over a
    second for a few dozen files; as one IN of their window starts, 0.22 s of a late tick's
    commit over 30 files (measured)."""
    ranges = _as_ranges(ranges)
    if not ranges:
        return []
    hull = range_filter(column, WindowRange(ranges[0].start, max(r.end for r in ranges)))
    files = data_files_meeting(table, hull, snapshot_id)
    if files is None:
        tasks = list(table.scan(row_filter=hull, snapshot_id=snapshot_id).plan_files())
    else:
        tasks = [FileScanTask(data_file) for data_file in files]
    bounds = [(micros(rng.start), micros(rng.end)) for rng in ranges]
    return [task for task in tasks if _may_hold(table, task, bounds, column)]


def _timestamp_bounds(table: Table, task: FileScanTask, column: str = "timestamp") -> tuple[int, int] | None:
    """A file's lowest and highest value of a time column (microseconds), from its manifest entry."""
    from pyiceberg.conversions import from_bytes

    field = table.schema().find_field(column)
    lower, upper = (task.file.lower_bounds or {}).get(field.field_id), (task.file.upper_bounds or {}).get(field.field_id)
    if lower is None or upper is None:
        return None
    return from_bytes(field.field_type, lower), from_bytes(field.field_type, upper)


def _may_hold(table: Table, task: FileScanTask, bounds: list[tuple[int, int]], column: str) -> bool:
    span = _timestamp_bounds(table, task, column)
    return span is None or any(lo <= span[1] and span[0] < hi for lo, hi in bounds)


def held_whole(table: Table, tasks: list[FileScanTask], ranges: list[WindowRange]) -> bool:
    """Whether every trade of every file lies in `ranges`, by the manifests alone: each file's
    timestamp bounds inside one stretch of the merged ranges, and no trade without a timestamp."""
    field = table.schema().find_field("timestamp")
    starts, ends = _merged_bounds(ranges)
    for task in tasks:
        span = _timestamp_bounds(table, task)
        if span is None or not field.required and (task.file.null_value_counts or {}).get(field.field_id) != 0:
            return False
        stretch = int(np.searchsorted(starts, span[0], side="right")) - 1
        if stretch < 0 or span[1] >= ends[stretch]:
            return False
    return True


@dataclass(frozen=True)
class ReadPlan:
    files: int
    bytes: int
    mode: str  # "native", "arrow", "pruned" (read in the driver, see read_trades) or "empty"
    rows: int = 0  # estimated trades in the ranges: see `rows_in_range`
    snapshot: int | None = None  # the trades snapshot read (None: the table had none)
    deduplicated: bool = True  # False: the snapshot vouches that these trades hold one version each


def rows_in_range(table: Table, tasks: list[FileScanTask], ranges: WindowRange | list[WindowRange]) -> int:
    """Estimated trades with `timestamp` in `ranges`, from the manifests alone (nothing is read).

    Each file counts its rows times the share of its timestamp span (the column bounds its
    manifest entry keeps) that the ranges cover. A file without bounds counts whole.
    """
    listed = _as_ranges(ranges)
    los = np.array([micros(rng.start) for rng in listed], dtype="int64")
    his = np.array([micros(rng.end) for rng in listed], dtype="int64")
    total = 0.0
    for task in tasks:
        span = _timestamp_bounds(table, task)
        if span is None:
            total += task.file.record_count
            continue
        first, last = span
        width = last - first + 1
        # Arrays, not a loop over the ranges: a late tick's 100 ranges over 250 files took 0.2 s.
        covered = int(np.clip(np.minimum(his, last + 1) - np.maximum(los, first), 0, None).sum())
        total += task.file.record_count * min(covered, width) / width
    return round(total)


def trades_per_day(table: Table, rng: WindowRange) -> dict[date, int]:
    """Estimated trades of each UTC day in `rng`, from one planning of its files (nothing is
    read): each file's rows spread over its timestamp span, as in `rows_in_range`."""
    lo, hi = micros(rng.start), micros(rng.end)
    spread: dict[date, float] = {}
    for task in plan_trade_files(table, rng):
        first, last = _timestamp_bounds(table, task) or (lo, hi - 1)
        width = last - first + 1
        cursor = max(first, lo)
        while cursor <= min(last, hi - 1):
            day_end = (cursor // _US_PER_DAY + 1) * _US_PER_DAY
            covered = min(day_end, last + 1, hi) - cursor
            day = (EPOCH + timedelta(microseconds=cursor)).date()
            spread[day] = spread.get(day, 0.0) + task.file.record_count * covered / width
            cursor = day_end
    return {day: round(count) for day, count in spread.items()}


_US_PER_DAY = 86_400_000_000


def _is_local(path: str) -> bool:
    return urlsplit(path).scheme in ("", "file")


def _local_path(task: FileScanTask) -> str:
    path = task.file.file_path
    return urlsplit(path).path if path.startswith("file:") else path


def _native_possible(table: Table, tasks: list[FileScanTask]) -> bool:
    return (
        len(table.metadata.schemas) == 1
        and all(_is_local(t.file.file_path) and not t.delete_files for t in tasks)
    )


# A read of at most this many trades (a tick's) is small:
# - Where its files are local, it is read here and handed to Spark as one file of exactly its
#   trades (`_hand_over`), with no condition on their timestamps left for Spark to evaluate. A
#   condition holds the ranges as literals, which Spark compiles into the read's generated code:
#   each tick's new ranges made Spark compile that code again and run it cold (a 1m tick of a
#   24M-trade day, 140k trades: 0.77 s in Spark with the condition, 0.55 s handed over, pyarrow's
#   read and write included; 0.67 s -> 0.48 s for a 2.4M-trade day; measured through RayDP).
# - It goes through the caller's `small_spark` session, whose files are not split finer than
#   whole files: the splits that spread a day's read over every core (workflows/spark/sizing.py)
#   each opened the file only to find that its statistics ruled out all of its row groups (a 1m
#   tick's Spark request: a median of 1.29 s -> 0.88 s over 30 through the service, measured).
# pyarrow reads and writes 140k trades in 0.1 s here: at this bound, about what compiling saves.
SMALL_READ_ROWS = 500_000


def pinned_snapshot(table: Table, snapshot_id: int | None) -> int | None:
    """The snapshot a read reads: the one given, or the one current now (None: an empty table)."""
    if snapshot_id is None and table.current_snapshot() is not None:
        return table.current_snapshot().snapshot_id
    return snapshot_id


def _planned_read(
    table: Table, ranges: WindowRange | list[WindowRange], snapshot_id: int | None,
) -> tuple[list[WindowRange], int | None, list[FileScanTask], int]:
    """What every trade read starts from: the ranges in order, the snapshot it reads
    (`pinned_snapshot`), the files that can hold their trades, and the manifests' estimate of
    those trades (nothing is read)."""
    ranges = _as_ranges(ranges)
    snapshot_id = pinned_snapshot(table, snapshot_id)
    tasks = plan_trade_files(table, ranges, snapshot_id)
    return ranges, snapshot_id, tasks, rows_in_range(table, tasks, ranges) if tasks else 0


def read_trades(
    spark, table: Table, ranges: WindowRange | list[WindowRange], mode: str = "auto", parallelism: int = 2,
    snapshot_id: int | None = None, slot_us: int | None = None, scratch: str | None = None, small_spark=None,
):
    """The trades with `timestamp` in `ranges` as a Spark DataFrame, and how they were read:
    as of `snapshot_id`, or of the snapshot current now (which the plan names).

    `slot_us`: a width every range is made of (the timeframe's), for reading many ranges.
    `scratch`: a local folder every Spark executor sees, where a "pruned" read leaves the rows
    it kept for Spark; the caller removes it once the DataFrame is no longer used. Without
    one, reads are "native" or "arrow". `small_spark`: the session for reads of at most
    SMALL_READ_ROWS trades.
    """
    ranges, snapshot_id, tasks, rows = _planned_read(table, ranges, snapshot_id)
    if not tasks:
        return spark.createDataFrame([], SPARK_TRADE_SCHEMA), ReadPlan(0, 0, "empty", snapshot=snapshot_id)
    size = sum(t.file.file_size_in_bytes for t in tasks)
    small = rows <= SMALL_READ_ROWS
    if small_spark is not None and small:
        spark = small_spark
    local = _native_possible(table, tasks)
    # Read here, each file's row groups pruned by every range (files are in time order, see
    # catalog.py): a small read (see SMALL_READ_ROWS), or up to READ_HERE_MAX_ROWS trades in
    # many ranges (a tick's scattered late windows), of which Spark could push only the hull
    # into Parquet, reading every row group between them.
    scattered = len(ranges) > _MAX_COMPARED_RANGES
    handed = None
    if mode == "auto" and local and scratch is not None and (small or scattered and rows <= READ_HERE_MAX_ROWS):
        handed = _hand_over(tasks, ranges, Path(scratch))
    if handed is not None:  # exactly the trades of `ranges`: no condition left to compile
        frame, how = spark.read.schema(SPARK_TRADE_SCHEMA).parquet(handed), "pruned"
    else:
        if mode in ("auto", "native") and local:
            frame, how = spark.read.schema(SPARK_TRADE_SCHEMA).parquet(*[t.file.file_path for t in tasks]), "native"
        else:
            if mode == "native":
                log.warning("read mode native is not possible for %s (remote files, deletes or schema changes): reading through Arrow",
                            ", ".join(map(str, ranges)))
            frame, how = _read_through_arrow(spark, table, tasks, ranges, parallelism), "arrow"
        # Files the ranges hold whole (a day's or a chunk's read) need no condition: pushed into
        # Parquet it cost the aggregation of a whole 2.4M-trade day 12% though it removed
        # nothing (1.05 -> 1.18 s in plain Spark, measured). Elsewhere compare the column itself
        # with literals (timestamp_micros of a literal folds to one): a function applied to the
        # column would hide the filter from Parquet's row-group statistics, and every tick would
        # read the whole day to keep ten minutes of it.
        if not held_whole(table, tasks, ranges):
            frame = frame.where(spark_ranges_condition("timestamp", ranges, slot_us))
    # Reads through Arrow (object storage) keep their tasks, which wait on the network in parallel.
    if small and how != "arrow":
        frame = one_task(frame)
    return frame, ReadPlan(len(tasks), size, how, rows, snapshot_id)


def read_in_driver(
    table: Table, ranges: WindowRange | list[WindowRange], max_rows: int, snapshot_id: int | None = None,
) -> tuple[pa.Table, ReadPlan] | None:
    """The trades with `timestamp` in `ranges` as Arrow (ARROW_TRADES), read in this process, and
    how; None when the manifests estimate more than `max_rows` of them (Spark's to read).

    Local files whose row groups can be pruned here are read as a "pruned" read is
    (`read_pruned`); others (object storage, delete files, an evolved schema) through
    pyiceberg's scan, as "arrow". As of `snapshot_id`, or of the snapshot current now."""
    from pyiceberg.io.pyarrow import ArrowScan

    ranges, snapshot_id, tasks, rows = _planned_read(table, ranges, snapshot_id)
    if not tasks:
        return ARROW_TRADES.empty_table(), ReadPlan(0, 0, "empty", snapshot=snapshot_id)
    if rows > max_rows:
        return None
    size = sum(t.file.file_size_in_bytes for t in tasks)
    if _native_possible(table, tasks):
        return read_pruned(tasks, ranges), ReadPlan(len(tasks), size, "pruned", rows, snapshot_id)
    projected = table.metadata.schema().select(*TRADE_READ_COLUMNS)
    scan = ArrowScan(table.metadata, table.io, projected, ranges_filter("timestamp", ranges))
    pieces = [pa.Table.from_batches([batch]).select(list(TRADE_READ_COLUMNS)).cast(ARROW_TRADES)
              for task in tasks for batch in _batches_naming_the_file(scan, task)]
    read = pa.concat_tables(pieces) if pieces else ARROW_TRADES.empty_table()
    return read, ReadPlan(len(tasks), size, "arrow", rows, snapshot_id)


def one_task(frame):
    """A small read of local files as one partition: the aggregation that follows then runs in
    the task that reads, with no shuffle stage (a 1m tick's Spark request, measured through
    RayDP: 0.51 -> 0.42 s for a 2.4M-trade day, 0.68 -> 0.54 s for a 24M one)."""
    return frame.coalesce(1)


@contextmanager
def scratch_folder(table: Table):
    """Where a "pruned" read may leave rows for Spark: a fresh folder name under the table's
    location, removed on exit if a read made it; None for a table that is not local. It is
    where the table's files are, so every executor that reads those sees it too; one left
    behind by a process that died is an unreferenced file, which upkeep removes after its
    grace period. Nothing is made unless a read needs it."""
    import shutil

    if not _is_local(table.location()):
        yield None
        return
    folder = Path(urlsplit(table.location()).path) / "scratch" / uuid.uuid4().hex
    try:
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _hand_over(tasks: list[FileScanTask], ranges: list[WindowRange], scratch: Path) -> str | None:
    """The pruned trades of `ranges`, written to one Parquet file in `scratch` for Spark to read
    natively (a DataFrame made from Arrow in memory took seven times as long); None where the
    folder cannot be made (a read-only warehouse), and the read goes on another way."""
    try:
        scratch.mkdir(parents=True)
    except OSError as exc:
        log.debug("no scratch folder %s (%s): not a pruned read", scratch, exc)
        return None
    kept = scratch / "trades.parquet"
    # Dictionaries only where they pay: trade ids are nearly all distinct, and building (then
    # dropping) their dictionary was half the write (128k trades of a 24M day's tick: 41 -> 22 ms).
    pq.write_table(read_pruned(tasks, ranges), kept, compression="none", use_dictionary=["exchange", "symbol"])
    return str(kept)


# A scattered read estimated at up to this many trades is read in the Spark driver's process
# (see read_trades): a few hundred MB of memory at most, and no Spark tasks to start.
READ_HERE_MAX_ROWS = 2_000_000


def read_pruned(tasks: list[FileScanTask], ranges: list[WindowRange]) -> pa.Table:
    """The trades of `ranges` in local files, as Arrow (ARROW_TRADES): only the row groups whose
    timestamp statistics meet a range are read, then each row is kept if it lies in one.

    pyarrow's own filtered scan does the same, but evaluates the whole OR of the ranges against
    every row group's statistics: over a second for a few hundred row groups and 100 ranges.
    Here the ranges are merged and each test is a binary search.

    A late window keeps a few hundred of the 16k trades its row group holds: the names are read
    as dictionaries and made text only for the rows kept (a quarter off the read, measured)."""
    starts, ends = _merged_bounds(ranges)
    pieces = [piece.cast(ARROW_TRADES)
              for piece in _pruned_pieces(tasks, starts, ends, list(TRADE_READ_COLUMNS), ["exchange", "symbol"])]
    return pa.concat_tables(pieces) if pieces else ARROW_TRADES.empty_table()


def _pruned_pieces(tasks: list[FileScanTask], starts: np.ndarray, ends: np.ndarray, columns: list[str],
                   dictionaries: list[str]) -> list[pa.Table]:
    """The rows of local files whose timestamp lies in the merged bounds, `columns` only (those
    in `dictionaries` read as dictionaries), in the order of `tasks`: each file's row groups
    picked by their cached bounds (ohlcv/parquet_footers.py), then each bound's rows
    (`_rows_inside`). The files are read side by side: a late tick reads a few row groups from
    each of about 60 files, each read too small for pyarrow's own threads; 100 late minutes over
    30 days took 0.17 s this way against 0.22 s one file after another (medians of 22 rounds,
    alternating, measured). A file that cannot be read fails naming it."""
    from pyiceberg.utils.concurrent import ExecutorFactory

    def read(task: FileScanTask) -> list[pa.Table]:
        path = _local_path(task)
        try:
            groups = row_groups_meeting(path, "timestamp", starts, ends, task.file.file_size_in_bytes)
            if not groups.indices:
                return []
            parquet = pq.ParquetFile(path, read_dictionary=dictionaries or None, metadata=groups.footer)
            return _rows_inside(parquet.read_row_groups(groups.indices, columns=columns), starts, ends)
        except (pa.ArrowInvalid, OSError) as exc:  # the file's bytes, or a file gone: terminal, named
            raise DataFileError(f"{task.file.file_path}: {type(exc).__name__}: {exc}") from exc

    return [piece for pieces in ExecutorFactory.get_or_create().map(read, tasks) for piece in pieces]


def timestamps_in(table: Table, tasks: list[FileScanTask], ranges: WindowRange | list[WindowRange]) -> pa.ChunkedArray:
    """The `timestamp` of each trade of the files `tasks` that lies in `ranges` (what a tick's
    plan looks for late windows with). Local files are read as `read_pruned` reads them, the
    timestamp column alone; others through pyiceberg's scan. pyiceberg's scan of the files a
    late ingest appended (30 of them, a few trades each) took 0.12 s of a late tick's 0.2 s
    plan, measured."""
    from pyiceberg.io.pyarrow import ArrowScan

    stamp_type = ARROW_TRADES.field("timestamp").type
    ranges = _as_ranges(ranges)
    if not tasks or not ranges:
        return pa.chunked_array([], stamp_type)
    if not _native_possible(table, tasks):
        scan = ArrowScan(table.metadata, table.io, table.metadata.schema().select("timestamp"), ranges_filter("timestamp", ranges))
        return pa.chunked_array([batch.column("timestamp").cast(stamp_type) for task in tasks
                                 for batch in _batches_naming_the_file(scan, task)], stamp_type)
    starts, ends = _merged_bounds(ranges)
    columns = [piece.column("timestamp").cast(stamp_type) for piece in _pruned_pieces(tasks, starts, ends, ["timestamp"], [])]
    return pa.chunked_array([chunk for column in columns for chunk in column.chunks], stamp_type)


# Kept rows that form at most this many runs are taken as slices of what was read, no copy: a
# file in time order keeps one run a range (a late window's few hundred trades of a 16k row
# group). Filtering copied every column of each row group (0.29 s of a late tick's 1.0 s read).
_MAX_KEPT_RUNS = 64


def _rows_inside(read: pa.Table, starts: np.ndarray, ends: np.ndarray) -> list[pa.Table]:
    """The rows of `read` whose timestamp lies in the merged bounds: slices of its runs when they
    are few, else a filter. Rows in time order (what ingest writes) find each bound's run by a
    binary search; others test every row."""
    stamps = read.column("timestamp").cast(pa.int64()).to_numpy()
    if len(stamps) > 1 and bool(np.all(stamps[1:] >= stamps[:-1])):
        firsts, lasts = np.searchsorted(stamps, starts, side="left"), np.searchsorted(stamps, ends, side="left")
        runs = [(int(lo), int(hi)) for lo, hi in zip(firsts, lasts) if hi > lo]
        if len(runs) <= _MAX_KEPT_RUNS:
            return [read.slice(lo, hi - lo) for lo, hi in runs]
    inside = _inside(stamps, starts, ends)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
    if len(edges) > 2 * _MAX_KEPT_RUNS:
        return [read.filter(pa.array(inside))]
    return [read.slice(int(lo), int(hi - lo)) for lo, hi in zip(edges[0::2], edges[1::2])]


def in_ranges(values_us: np.ndarray, ranges: list[WindowRange]) -> np.ndarray:
    """Which of `values_us` (microseconds since the epoch) lie in any of `ranges`: one binary
    search a value in the merged ranges, however many ranges there are."""
    return _inside(values_us, *_merged_bounds(ranges))


def _inside(values_us: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`in_ranges` with the ranges already merged (`_merged_bounds`)."""
    if not len(starts):
        return np.zeros(len(values_us), dtype=bool)
    slot = np.searchsorted(starts, values_us, side="right") - 1
    return (slot >= 0) & (values_us < ends[np.maximum(slot, 0)])


def ranges_cover(outer: list[WindowRange], inner: list[WindowRange]) -> bool:
    """Whether every instant of `inner` lies in `outer` (adjacent outer ranges join)."""
    starts, ends = _merged_bounds(outer)
    for rng in inner:
        lo, hi = micros(rng.start), micros(rng.end)
        slot = int(np.searchsorted(starts, lo, side="right")) - 1
        if hi > lo and (slot < 0 or hi > ends[slot]):
            return False
    return True


def _merged_bounds(ranges: list[WindowRange]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint [start, end) microsecond bounds covering exactly the ranges."""
    merged: list[list[int]] = []
    for lo, hi in sorted((micros(r.start), micros(r.end)) for r in ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return np.array([lo for lo, _ in merged], dtype="int64"), np.array([hi for _, hi in merged], dtype="int64")


# Past this many ranges, a read tests each row's slot against a set instead of comparing it
# with every range: a hundred ranges as comparisons made generated code too large for Spark to
# compile (it fell back to interpreting every row, minutes for a month of trades).
_MAX_COMPARED_RANGES = 4


def spark_ranges_condition(column: str, ranges: list[WindowRange], slot_us: int | None = None):
    """A Spark condition: `column` in any of `ranges`.

    Few ranges: literal comparisons on the column itself, which Parquet's row-group statistics
    can prune with. Many ranges of `slot_us` slots: the column's slot in the set of the ranges'
    slots (one hash lookup a row), inside the ranges' hull for the pruning.
    """
    from pyspark.sql import functions as F

    def inside(rng: WindowRange):
        lo, hi = F.timestamp_micros(F.lit(micros(rng.start))), F.timestamp_micros(F.lit(micros(rng.end)))
        return (F.col(column) >= lo) & (F.col(column) < hi)

    if len(ranges) <= _MAX_COMPARED_RANGES or not slot_us:
        return balanced_or([inside(rng) for rng in ranges], lambda a, b: a | b)
    slot = F.floor(F.unix_micros(F.col(column)) / F.lit(slot_us)) * F.lit(slot_us)
    hull = WindowRange(min(r.start for r in ranges), max(r.end for r in ranges))
    return inside(hull) & slot.cast("long").isin(slot_starts(ranges, slot_us))


# A set of at most this many slots (a week of minutes) is small enough to ship with each task.
_MAX_SLOT_SET = 10_080


def spark_slots_condition(column: str, ranges: list[WindowRange], slot_us: int | None):
    """A Spark condition: `column` in any of `ranges`, for a value computed over rows already
    read (Parquet cannot prune with it): the column's slot in the set of the ranges' slots.

    Spark compiles literals into its generated code, but passes a set of them by reference, so
    a request over other ranges of as many slots or more (every tick) reuses the code compiled
    for the last one instead of compiling it again and running it cold (see SMALL_READ_ROWS).
    Ranges of more slots than _MAX_SLOT_SET, or not made of `slot_us` slots, are compared.
    """
    from pyspark.sql import functions as F

    bounds = [(micros(rng.start), micros(rng.end)) for rng in ranges]
    aligned = bool(slot_us) and all(lo % slot_us == 0 and hi % slot_us == 0 for lo, hi in bounds)
    if not aligned or not 0 < sum(hi - lo for lo, hi in bounds) // slot_us <= _MAX_SLOT_SET:
        return spark_ranges_condition(column, ranges)
    slot = F.floor(F.unix_micros(F.col(column)) / F.lit(slot_us)) * F.lit(slot_us)
    return slot.cast("long").isin(slot_starts(ranges, slot_us))


def slot_starts(ranges: list[WindowRange], slot_us: int) -> list[int]:
    """The start (microseconds) of every `slot_us` wide slot the ranges are made of."""
    return [start for rng in ranges for start in range(micros(rng.start), micros(rng.end), slot_us)]


def _batches_naming_the_file(scan, task: FileScanTask):
    """The file's record batches; a file whose bytes cannot be read fails naming the file."""
    try:
        yield from scan.to_record_batches([task])
    except (pa.ArrowInvalid, FileNotFoundError) as exc:  # the file's bytes, not the storage
        raise DataFileError(f"{task.file.file_path}: {type(exc).__name__}: {exc}") from exc


def _read_through_arrow(spark, table: Table, tasks: list[FileScanTask], ranges: list[WindowRange], parallelism: int):
    """Spark tasks that read their files with pyiceberg's FileIO and hand Arrow batches to the JVM."""
    from pyiceberg.io.pyarrow import ArrowScan

    metadata, io = table.metadata, table.io
    projected = metadata.schema().select(*TRADE_READ_COLUMNS)
    row_filter = ranges_filter("timestamp", ranges)
    def read_files(batches):
        scan = ArrowScan(metadata, io, projected, row_filter)
        for batch in batches:
            for index in batch.column("id").to_pylist():
                for record_batch in _batches_naming_the_file(scan, tasks[index]):
                    # pyiceberg reads text as large_string; Spark's Arrow bridge expects string.
                    yield from pa.Table.from_batches([record_batch]).select(list(TRADE_READ_COLUMNS)).cast(ARROW_TRADES).to_batches()

    partitions = max(1, min(len(tasks), parallelism * 4))
    return spark.range(0, len(tasks), numPartitions=partitions).mapInArrow(read_files, SPARK_TRADE_SCHEMA)


@dataclass(frozen=True)
class CommitResult:
    table: str
    range: WindowRange  # the hull of the ranges replaced
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    snapshot_id: int | None  # None: nothing changed, so nothing was committed
    ranges: int = 1  # how many disjoint ranges were replaced (a tick with late windows: more than 1)
    watermark: int | None = None  # the trades snapshot the table records after this commit

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deleted


def _comparable(values: pd.Series) -> np.ndarray:
    """A column as a NumPy array to compare: zoned times as UTC datetime64, not one Python
    object per row (that took 2 s of a 660k-candle commit, measured)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.to_numpy(dtype="datetime64[us]")
    return values.to_numpy()


def _values_differ(old: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    differ = np.zeros(len(old), dtype=bool)
    for name in EXACT_FIELDS:
        differ |= (_comparable(old[name]) != _comparable(new[name]))
    for name in SUMMED_FIELDS:
        a, b = old[name].to_numpy(dtype="float64"), new[name].to_numpy(dtype="float64")
        differ |= ~np.isclose(a, b, rtol=SUM_RELATIVE_TOLERANCE, atol=0.0)
    return differ


def merge_candles(existing: pa.Table, fresh: pa.Table, now: datetime) -> tuple[pa.Table, dict[str, int]]:
    """The rows that replace a range: fresh candles, stamped against what the range held before.

    A candle whose values are unchanged keeps its stored row verbatim (both timestamps too); a
    changed one keeps created_at and gets updated_at = now; a new one gets both = now. Stored
    candles that the fresh batch no longer has are dropped (the range is replaced).
    """
    key = list(s.CANDLE_KEY)
    target = s.arrow_schema(s.CANDLE_SCHEMA)
    if existing.num_rows == 0:
        return _all_new(fresh, now, target), {"inserted": fresh.num_rows, "updated": 0, "unchanged": 0, "deleted": 0}
    old = existing.to_pandas(date_as_object=True)
    new = fresh.to_pandas(date_as_object=True)
    joined = new.merge(old, on=key, how="left", suffixes=("", "_old"), indicator=True)
    matched = (joined["_merge"] == "both").to_numpy()
    old_side = joined[[f"{c}_old" for c in (*EXACT_FIELDS, *SUMMED_FIELDS)]].set_axis(
        list(EXACT_FIELDS + SUMMED_FIELDS), axis=1
    )
    differ = np.ones(len(joined), dtype=bool)
    if matched.any():
        differ[matched] = _values_differ(old_side[matched], joined.loc[matched, list(EXACT_FIELDS + SUMMED_FIELDS)])
    keep_old = matched & ~differ
    stamp = pd.Timestamp(now)

    result = joined[key + list(EXACT_FIELDS + SUMMED_FIELDS)].copy()
    for name in EXACT_FIELDS + SUMMED_FIELDS:
        result.loc[keep_old, name] = joined.loc[keep_old, f"{name}_old"]
    result["created_at"] = joined["created_at"].where(matched, stamp) if "created_at" in joined else stamp
    result["updated_at"] = joined["updated_at"].where(keep_old, stamp) if "updated_at" in joined else stamp

    counts = {
        "inserted": int((~matched).sum()),
        "updated": int((matched & differ).sum()),
        "unchanged": int(keep_old.sum()),
        "deleted": len(old) - int(matched.sum()),
    }
    table = pa.Table.from_pandas(result[target.names], preserve_index=False)
    return s.cast_to(table, target), counts


def _all_new(fresh: pa.Table, now: datetime, target: pa.Schema) -> pa.Table:
    """`fresh` stamped created_at = updated_at = `now`: a range that held no candle (a backfill
    into empty tables), with no detour through pandas (0.8 s of a 15-day chunk's 2.3 s commit,
    measured)."""
    stamps = pa.array(np.full(fresh.num_rows, micros(now), dtype="int64")).cast(target.field("created_at").type)
    stamped = fresh.select([name for name in target.names if name not in ("created_at", "updated_at")])
    stamped = stamped.append_column("created_at", stamps).append_column("updated_at", stamps)
    return s.cast_to(stamped.select(target.names), target)


@contextmanager
def committing(table: Table, what: str):
    """Turn a lost commit race into CommitConflict (transient: the retry re-reads and wins).

    pyiceberg 0.12 retries a commit on a newer base by itself; when the other writer changed
    rows this commit replaces, it raises ValidationException, and when the base moved in a way it
    cannot rebase, CommitFailedException. Both mean: another writer committed first.
    """
    try:
        with warnings.catch_warnings():
            # Filling a range that held no rows yet is normal here, not worth a warning.
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            yield
    except (CommitFailedException, ValidationException) as exc:
        raise CommitConflict(f"{table.name()[-1]} {what}: another writer committed first ({exc})") from exc


# `commit_candles(..., expect_watermark=ANY_WATERMARK)`: commit whatever the table records.
ANY_WATERMARK = object()


def balanced_or(conditions: list, either):
    """`either(a, b)` folded over `conditions` as a balanced tree: a left-deep chain of a hundred
    ORs (a tick with a hundred late windows) sends Spark's Parquet filter conversion and
    optimizer into time exponential in its depth; a balanced one is log2(n) deep."""
    if len(conditions) == 1:
        return conditions[0]
    middle = len(conditions) // 2
    return either(balanced_or(conditions[:middle], either), balanced_or(conditions[middle:], either))


def ranges_filter(column: str, ranges: list[WindowRange]) -> BooleanExpression:
    """Rows whose `column` lies in any of `ranges`."""
    if not ranges:
        return AlwaysFalse()
    return balanced_or([range_filter(column, rng) for rng in ranges], Or)


def _read_whole_files(tasks: list[FileScanTask], target: pa.Schema) -> pa.Table:
    """Every row of local data files (no delete files, the table's one schema: see
    `_native_possible`) as `target`, in the order of `tasks`, read side by side. pyiceberg's
    scan of a late tick's 30 day files of 1m candles took 0.26 to 0.48 s, these plain reads
    0.20 to 0.24 s (measured): it projects and filters each batch in Python."""
    from pyiceberg.utils.concurrent import ExecutorFactory

    def read(task: FileScanTask) -> pa.Table:
        try:
            return pq.read_table(_local_path(task), columns=target.names).cast(target)
        except (pa.ArrowInvalid, OSError) as exc:  # the file's bytes, or a file gone: terminal, named
            raise DataFileError(f"{task.file.file_path}: {type(exc).__name__}: {exc}") from exc

    return pa.concat_tables(list(ExecutorFactory.get_or_create().map(read, tasks)))


@dataclass
class _StoredFiles:
    """The data files of a candle table that may hold rows of some ranges, read whole: all their
    rows, in file order, and which of them lie in the ranges (what the commit replaces).

    A commit rewrites these files itself, as one file per partition holding the kept rows and the
    new ones, in one snapshot. pyiceberg's overwrite (a delete by filter, then an append) wrote
    the new candles as files of their own beside the rewritten ones: a day that late trades touch
    again and again gained two files per tick, and every later tick read them all (a late tick
    over 30 days: 6.0, 6.7, 7.8 s for its 1st, 2nd and 3rd commit). Its delete also deep-copies
    the table's metadata several times per file it reads (3.8 s of an 8.9 s commit, measured).
    """

    tasks: list[FileScanTask]
    rows: pa.Table
    inside: np.ndarray  # per row of `rows`: in the ranges

    @classmethod
    def read(cls, table: Table, ranges: list[WindowRange]) -> "_StoredFiles":
        from pyiceberg.io.pyarrow import ArrowScan

        target = s.arrow_schema(s.CANDLE_SCHEMA)
        tasks = _plan_files(table, "window_start", ranges)
        if not tasks:
            return cls([], target.empty_table(), np.zeros(0, dtype=bool))
        if _native_possible(table, tasks):
            rows = _read_whole_files(tasks, target)
        else:
            rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks).select(target.names).cast(target)
        return cls(tasks, rows, in_ranges(rows.column("window_start").cast(pa.int64()).to_numpy(), ranges))

    @property
    def in_ranges(self) -> pa.Table:
        return self.rows.filter(pa.array(self.inside))

    def replace(self, table: Table, merged: pa.Table, properties: dict[str, str]) -> None:
        """One snapshot: these files out, the kept rows and `merged` in (one file per partition)."""
        merged = merged.cast(self.rows.schema)
        rows = self._kept_then(table, merged)
        if rows is None:  # the partitions cannot be told from the files (see _kept_then)
            rows = pa.concat_tables([self.rows.filter(pa.array(~self.inside)), merged])
        replace_files(table, [task.file for task in self.tasks], write_rows(table, rows), properties)

    def _kept_then(self, table: Table, merged: pa.Table) -> pa.Table | None:
        """Each partition's kept rows, then its rows of `merged`, partitions in order, as slices
        of what was read: no copy of the kept rows. Filtering them out of all the rows, then
        sorting by partition, copied them twice (0.46 s of a late tick's 1.7 s commit over 30
        days of 1m candles, measured). None where the partitions cannot be told this way (see
        partition_values) or a file's rows are not its record count (delete files)."""
        counts = [task.file.record_count for task in self.tasks if task.file.record_count]
        if sum(counts) != self.rows.num_rows or any(task.delete_files for task in self.tasks):
            return None
        firsts = np.cumsum([0, *counts[:-1]])
        # A data file is one partition: its first row's value is every row's.
        # Slices, not `take`: taking from the rows' 30 chunks joined them into one copy first (0.15 s).
        firsts_rows = pa.concat_tables([self.rows.slice(int(first), 1) for first in firsts]) if counts else None
        stored = partition_values(table, firsts_rows) if counts else np.zeros(0, dtype="int64")
        fresh = partition_values(table, merged) if merged.num_rows else np.zeros(0, dtype="int64")
        if stored is None or fresh is None:
            return None
        pieces: dict[int, list[pa.Table]] = {}
        for value, first, count in zip(stored, firsts, counts):
            pieces.setdefault(int(value), []).extend(_kept_slices(self.rows, self.inside, int(first), int(count)))
        order = np.argsort(fresh, kind="stable")
        merged, fresh = merged.take(pa.array(order)), fresh[order]
        for value in np.unique(fresh):
            lo, hi = np.searchsorted(fresh, value, side="left"), np.searchsorted(fresh, value, side="right")
            pieces.setdefault(int(value), []).append(merged.slice(int(lo), int(hi - lo)))
        slices = [piece for value in sorted(pieces) for piece in pieces[value]]
        return pa.concat_tables(slices) if slices else merged


def rewrite_candles(table: Table, rng: WindowRange, properties: dict[str, str]) -> int:
    """Compaction: the candles of `rng` (whole partitions) rewritten unchanged, in order of
    window, exchange and symbol, as one file a partition, in one snapshot with `properties`.
    Written as every candle commit writes (ohlcv/parquet_writer.py); pyiceberg's `overwrite`
    gave compacted files a dictionary for every column and deep-copied the table metadata for
    each file it deleted. Returns the rows rewritten."""
    stored = _StoredFiles.read(table, [rng])
    if not stored.tasks:
        return 0
    rows = stored.in_ranges.sort_by([("window_start", "ascending"), ("exchange", "ascending"), ("symbol", "ascending")])
    stored.replace(table, rows, properties)
    return rows.num_rows


def rewrite_in_time_order(table: Table, column: str, rng: WindowRange, properties: dict[str, str]) -> int:
    """Compaction of a table partitioned by day of `column` that only ingest appends to (trades
    by `timestamp`, quarantine by `ingested_at`): the files of `rng` (whole days) rewritten as
    one file a day, every column as stored, in `column` order (trades: the order ingest writes
    them in), in one snapshot with `properties` (see `_rewrite_in_order`). Returns the rows
    rewritten."""
    tasks = _plan_files(table, column, [rng])
    return _rewrite_in_order(table, column, tasks, properties) if tasks else 0


# A data file of fewer rows than this is small: `merge_small_files` merges a day's small files.
# Small on purpose: the files a merge replaces stay on disk until snapshot expiry, so each
# merge's rewrite is garbage kept for OHLCV_SNAPSHOT_DAYS. A merged file grows by one ingest's
# rows at a time, and each row is rewritten about SMALL_FILE_ROWS / (2 x rows per ingest) times
# before its file stops being small: at 50,000, a feed ingested every minute (1,700 trades a
# time on a 2.4M-trade day) would have rewritten each trade about 15 times, 0.5 GB of garbage a
# day. At 4,096 a merge rewrites at most 8k rows a day touched, and files of a few hundred
# trades (late batches, stragglers), the ones that cost reads most per row, still become one.
SMALL_FILE_ROWS = 4_096


def merge_small_files(table: Table, column: str, days: list[WindowRange], properties: dict[str, str]) -> int:
    """The small files (under SMALL_FILE_ROWS rows) of each of `days` that has two or more of
    them, rewritten as one file a day in one snapshot (see `_rewrite_in_order`); returns the
    rows rewritten (0: nothing to merge, no commit).

    Ingest calls it for the days it appended to. A batch of late trades spread over a month adds
    a file of a few trades to each day, and a feed ingested every minute a file to today, each
    time; every read of such a day opened them all until the daily upkeep compacted it (a late
    tick read 120 files where 60 held its trades). Only small files are merged, so a day keeps
    its bulk files as written, and a merged file stops being rewritten once it is no longer small."""
    tasks = _plan_files(table, column, days)
    if any(task.delete_files for task in tasks):
        return 0
    small: dict[tuple, list[FileScanTask]] = {}
    for task in tasks:
        if task.file.record_count < SMALL_FILE_ROWS:
            small.setdefault((task.file.spec_id, task.file.partition), []).append(task)
    chosen = [task for files in small.values() if len(files) >= 2 for task in files]
    return _rewrite_in_order(table, column, chosen, properties) if chosen else 0


def _rewrite_in_order(table: Table, column: str, tasks: list[FileScanTask], properties: dict[str, str]) -> int:
    """The files of `tasks` rewritten as one file per partition (they hold whole days of
    `column`), every column as stored, in `column` order, in one snapshot with `properties`.
    It is committed as a replace (the same rows), which the snapshot log's readers take as no
    change: a tick's late plan finds no trades in it, and the dedup guarantee of the ingest
    before it still holds."""
    from pyiceberg.io.pyarrow import ArrowScan

    rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
    rows = rows.take(pc.sort_indices(rows, [(column, "ascending")]))  # stable: ties keep file order
    replace_files(table, [task.file for task in tasks], write_rows(table, rows), properties, same_rows=True)
    return rows.num_rows


def _kept_slices(rows: pa.Table, inside: np.ndarray, first: int, count: int) -> list[pa.Table]:
    """The runs of rows in [first, first + count) that lie outside the ranges, as slices."""
    kept = np.concatenate([[False], ~inside[first:first + count], [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(kept))
    return [rows.slice(first + int(lo), int(hi - lo)) for lo, hi in zip(edges[0::2], edges[1::2])]


def commit_candles(
    table: Table,
    fresh: pa.Table,
    ranges: WindowRange | list[WindowRange],
    now: datetime,
    *,
    watermark: Watermark | None = None,
    watermark_if_none: Watermark | None = None,
    expect_watermark: object = ANY_WATERMARK,
) -> CommitResult:
    """Replace the candles of `ranges` with `fresh` in one commit (none if nothing changed).

    The commit records a watermark (ohlcv/watermark.py): `watermark`, the trades snapshot the
    candles were computed from, when given; otherwise the table's own, carried forward, or
    `watermark_if_none` for a table that records none yet. When no candle changes, a commit
    happens only if the trades snapshot moves, and it adds and removes no file.

    With `expect_watermark` (a trades snapshot id, or None for a table that records none), the
    table must still record that one when the commit lands, or another writer absorbed trades
    first: CommitConflict (unless that writer absorbed the very snapshot `watermark` names). The
    commit step's retries reuse the run's plan, so such a run fails; the next tick plans afresh. Candle tables commit without pyiceberg's
    own rebasing retries (see catalog.py), so that check and the commit are one atomic step.
    """
    name = table.name()[-1]
    ranges = _as_ranges(ranges)
    starts = fresh.column("window_start").cast(pa.int64()).to_numpy() if fresh.num_rows else np.array([], "int64")
    if len(starts):
        if not in_ranges(starts, ranges).all():
            raise ValueError(f"candles outside {', '.join(map(str, ranges))} passed to the commit of {name}")
    table.refresh()
    current = recorded_watermark(table)
    current_id = current.snapshot_id if current is not None else None
    # Another writer that absorbed exactly the trades snapshot these candles come from skipped
    # nothing of ours: moving on from there is safe (a backfill and a tick reading one snapshot).
    same_snapshot = watermark is not None and current_id == watermark.snapshot_id
    if expect_watermark is not ANY_WATERMARK and current_id != expect_watermark and not same_snapshot:
        raise CommitConflict(
            f"{name}: its watermark moved from trades snapshot {expect_watermark} to {current_id} since this run planned: "
            "another writer absorbed those trades first"
        )
    recorded = watermark if watermark is not None else (current if current is not None else watermark_if_none)
    stored = _StoredFiles.read(table, ranges)
    merged, counts = merge_candles(stored.in_ranges, fresh, now)
    hull = WindowRange(ranges[0].start, max(r.end for r in ranges)) if ranges else WindowRange(EPOCH, EPOCH)
    changed = counts["inserted"] + counts["updated"] + counts["deleted"] > 0
    # Without a candle change, only a new trades snapshot is worth a commit: `closed_before`
    # alone moving would make every quiet tick commit (the next tick rescans from the old one).
    moves = recorded is not None and (current is None or recorded.snapshot_id != current.snapshot_id)
    if not changed and not moves:
        return CommitResult(name, hull, **counts, snapshot_id=None, ranges=len(ranges), watermark=current_id)
    # Kept in the table's metadata for every snapshot: the hull and a count, not every range.
    label = str(hull) if len(ranges) == 1 else f"{len(ranges)} ranges within {hull}"
    properties = {"ohlcv.range": label, **watermark_properties(recorded)}
    with committing(table, str(hull)):
        if changed:
            stored.replace(table, merged, properties)
        else:  # only the watermark moves: a commit that adds and removes no file
            table.overwrite(merged.slice(0, 0), overwrite_filter=AlwaysFalse(), snapshot_properties=properties)
    snapshot = table.current_snapshot()
    log.info("committed %s %s: %s, watermark %s", name, hull, counts, recorded)
    return CommitResult(name, hull, **counts, snapshot_id=snapshot.snapshot_id if snapshot else None, ranges=len(ranges),
                        watermark=recorded.snapshot_id if recorded is not None else None)


def read_candles(
    table: Table,
    rng: WindowRange | None = None,
    symbol: str | None = None,
    exchange: str | None = None,
) -> pa.Table:
    """Candles of a table, optionally for one symbol/exchange and a window range, in time order."""
    condition: BooleanExpression = AlwaysTrue()
    if rng is not None:
        condition = And(condition, range_filter("window_start", rng))
    if symbol is not None:
        condition = And(condition, EqualTo("symbol", symbol))
    if exchange is not None:
        condition = And(condition, EqualTo("exchange", exchange))
    result = table.scan(row_filter=condition).to_arrow()
    return result.sort_by([("window_start", "ascending"), ("exchange", "ascending"), ("symbol", "ascending")])
