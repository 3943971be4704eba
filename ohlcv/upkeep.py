"""Table upkeep: compact small files, expire old snapshots, delete files nothing references.

- Compaction: a candle commit rewrites each partition it touches as one file, but a partition
  can still hold several: another writer's appends, or a commit whose rows could not be written
  in partition order (pyiceberg's own writer). Once a partition is closed (no scheduled tick
  writes there again: it ends before the timeframe's lookback), its rows are rewritten as one
  file (store.rewrite_candles, written as candle commits write): the same rows, `created_at`/
  `updated_at` included, in one atomic commit. Trades and quarantine: every ingest adds a file
  to each day it touches; each day before today with several is rewritten as one file in time
  order, in a replace commit (the same rows: ticks and the dedup guarantees see no change).
- Expiry: snapshots older than the setting go (the current one always stays).
- Unreferenced files: pyiceberg's expiry drops snapshots but leaves their files behind. A file
  found by listing the table's location (a folder, or a prefix on S3) is deleted only when no
  remaining snapshot references it (manifest lists, manifests, data and delete files), it is
  not a metadata file still in the metadata log, and it is older than a grace period, so the
  files of a commit in flight are never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from pyarrow import fs as pafs
from pyiceberg.table import Table

from ohlcv import object_store, schema as s
from ohlcv.retention import partitions, retention_all
from ohlcv.store import committing, rewrite_candles, rewrite_in_time_order
from ohlcv.timeframes import Timeframe
from ohlcv.watermark import oldest_watermark_timestamp_ms, recorded_watermark, watermark_properties
from ohlcv.windows import WindowRange, as_utc, next_partition_start, tick_range

__all__ = [
    "ORPHAN_GRACE",
    "CompactResult",
    "compact",
    "compact_days",
    "compact_all",
    "expire_snapshots",
    "expire_all",
    "referenced_files",
    "OrphanResult",
    "TABLE_UPKEEP_STEPS",
    "run_upkeep_step",
    "remove_unreferenced",
    "remove_unreferenced_all",
]

log = logging.getLogger(__name__)

# A file younger than this may belong to a commit still in flight: never deleted.
ORPHAN_GRACE = timedelta(hours=1)
# Rows rewritten per commit at most: contiguous partitions are compacted together up to this.
_ROWS_PER_COMMIT = 2_000_000


@dataclass(frozen=True)
class CompactResult:
    table: str
    partitions: int
    files_before: int
    files_after: int
    commits: int


def compact(table: Table, tf: Timeframe, now: datetime, min_files: int = 2) -> CompactResult:
    """Rewrite each closed partition that has `min_files` or more files as one file."""
    closed_before = tick_range(tf, now).start
    candidates = [
        p for p in partitions(table) if p.files >= min_files and next_partition_start(p.start, tf) <= closed_before
    ]
    commits = 0
    batch: list = []
    for index, part in enumerate(candidates):
        batch.append(part)
        following = candidates[index + 1] if index + 1 < len(candidates) else None
        contiguous = following is not None and following.start == next_partition_start(part.start, tf)
        if not contiguous or sum(p.rows for p in batch) >= _ROWS_PER_COMMIT:
            _rewrite(table, WindowRange(batch[0].start, next_partition_start(batch[-1].start, tf)))
            commits += 1
            batch = []
    files_after = sum(p.files for p in partitions(table) if any(p.start == c.start for c in candidates))
    return CompactResult(table.name()[-1], len(candidates), sum(p.files for p in candidates), files_after, commits)


def _rewrite(table: Table, rng: WindowRange) -> None:
    with committing(table, f"compaction of {rng}"):
        # The same rows: the table has absorbed the same trades, so its watermark carries over.
        properties = {"ohlcv.compaction": str(rng), **watermark_properties(recorded_watermark(table))}
        rows = rewrite_candles(table, rng, properties)
    log.info("compacted %s %s: %d rows", table.name()[-1], rng, rows)


# A day is read whole and sorted to be compacted (about 100 bytes a trade in Arrow, twice that
# while sorting): larger days are left as they are, with a log line. Ingest writes each day of a
# bulk file as one file anyway.
DAY_ROWS_PER_COMPACTION = 25_000_000
# The tables only ingest appends to, each partitioned by day of its time column: the order each
# day is compacted in. Every ingest adds a file to each day of trades it touches, and one to
# today's quarantine when it has bad rows; without compaction a feed ingested every few
# minutes, and every batch of late trades, left its files in the table for good, and each read
# of those days opened them all.
APPENDED_TABLES = {s.TRADES_TABLE: "timestamp", s.QUARANTINE_TABLE: "ingested_at"}


def compact_days(table: Table, column: str, now: datetime, min_files: int = 2) -> CompactResult:
    """Rewrite each day before today's that has `min_files` or more files as one file, in
    `column` order (store.rewrite_in_time_order: one replace commit a day)."""
    today = as_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    candidates = [p for p in partitions(table) if p.files >= min_files and p.start + timedelta(days=1) <= today]
    done = []
    for part in candidates:
        if part.rows > DAY_ROWS_PER_COMPACTION:
            log.info("%s of %s: %d rows in %d files, over %d: left as they are", table.name()[-1], f"{part.start:%Y-%m-%d}",
                     part.rows, part.files, DAY_ROWS_PER_COMPACTION)
            continue
        day = WindowRange(part.start, part.start + timedelta(days=1))
        with committing(table, f"compaction of {day}"):
            rows = rewrite_in_time_order(table, column, day, {"ohlcv.compaction": str(day)})
        log.info("compacted %s %s: %d rows", table.name()[-1], day, rows)
        done.append(part)
    files_after = sum(p.files for p in partitions(table) if any(p.start == d.start for d in done))
    return CompactResult(table.name()[-1], len(done), sum(p.files for p in done), files_after, len(done))


def expire_snapshots(table: Table, older_than: datetime) -> int:
    """Expire snapshots committed before `older_than`; the current snapshot always stays."""
    before = len(table.metadata.snapshots)
    table.maintenance.expire_snapshots().older_than(older_than).commit()
    table.refresh()
    return before - len(table.metadata.snapshots)


def _normal(path: str) -> str:
    """A file's identity across "file:///x", "/x", "s3://b/k" and "b/k" spellings."""
    parts = urlsplit(path)
    return (parts.netloc + parts.path) if parts.scheme and len(parts.scheme) > 1 else path


def referenced_files(table: Table) -> set[str]:
    """Every file some remaining snapshot or the metadata log still needs."""
    metadata, io = table.metadata, table.io
    keep = {_normal(table.metadata_location)}
    keep |= {_normal(entry.metadata_file) for entry in metadata.metadata_log}
    keep |= {_normal(s.statistics_path) for s in metadata.statistics}
    keep |= {_normal(s.statistics_path) for s in metadata.partition_statistics}
    for snapshot in metadata.snapshots:
        keep.add(_normal(snapshot.manifest_list))
        for manifest in snapshot.manifests(io):
            keep.add(_normal(manifest.manifest_path))
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                keep.add(_normal(entry.data_file.file_path))
    return keep


@dataclass(frozen=True)
class OrphanResult:
    table: str
    listed: int
    deleted: int
    bytes: int


def remove_unreferenced(table: Table, grace: timedelta = ORPHAN_GRACE, dry_run: bool = False) -> OrphanResult:
    """Delete files under the table's location that nothing references and that are older than
    `grace` by the wall clock: the grace protects commits in flight now, whatever time a command
    says it acts as of."""
    now = datetime.now(timezone.utc)
    table.refresh()
    keep = referenced_files(table)
    # The table's own FileIO settings: on S3 the same endpoint, region and keys as its writes.
    filesystem, root = object_store.filesystem(table.location(), table.io.properties)
    listing = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    cutoff = now - grace
    deleted = size = 0
    files = [info for info in listing if info.type == pafs.FileType.File]
    for info in files:
        if _normal(info.path) in keep or _normal("/" + info.path.lstrip("/")) in keep:
            continue
        modified = info.mtime if info.mtime is None or info.mtime.tzinfo else info.mtime.replace(tzinfo=timezone.utc)
        if modified is not None and modified > cutoff:
            continue
        if not dry_run:
            filesystem.delete_file(info.path)
        deleted += 1
        size += info.size or 0
    log.info("%s: %d unreferenced files (%d bytes) %s", table.name()[-1], deleted, size, "found" if dry_run else "deleted")
    return OrphanResult(table.name()[-1], len(files), deleted, size)


def compact_all(catalog, namespace: str, now: datetime) -> list[CompactResult]:
    from ohlcv.catalog import load_candles, load_table
    from ohlcv.timeframes import TIMEFRAMES

    return [*(compact_days(load_table(catalog, namespace, name), column, now) for name, column in APPENDED_TABLES.items()),
            *(compact(load_candles(catalog, namespace, tf), tf, now) for tf in TIMEFRAMES.values())]


def expire_all(catalog, namespace: str, older_than: datetime) -> dict[str, int]:
    """Snapshots expired per table, over every table of the platform.

    On the trades table, every snapshot from the oldest one a candle table records as its
    watermark on stays, whatever its age: the next tick of that table reads what came after it.
    """
    from ohlcv.catalog import load_candles, load_table, table_specs
    from ohlcv.timeframes import TIMEFRAMES

    expired = {}
    for spec in table_specs():
        table = load_table(catalog, namespace, spec.name)
        limit = older_than
        if spec.name == s.TRADES_TABLE:
            needed = oldest_watermark_timestamp_ms(table, [load_candles(catalog, namespace, tf) for tf in TIMEFRAMES.values()])
            if needed is not None:
                limit = min(limit, datetime.fromtimestamp(needed / 1000, timezone.utc))
        expired[spec.name] = expire_snapshots(table, limit)
    return expired


def remove_unreferenced_all(catalog, namespace: str, grace: timedelta = ORPHAN_GRACE) -> list[OrphanResult]:
    from ohlcv.catalog import load_table, table_specs

    return [remove_unreferenced(load_table(catalog, namespace, spec.name), grace) for spec in table_specs()]


# The table upkeep, in order: drop expired partitions first (less to compact), then compact, then
# expire snapshots (the compaction's replaced files become unreferenced), then delete those files.
TABLE_UPKEEP_STEPS = ("retention", "compact", "expire", "orphans")


def run_upkeep_step(step: str, catalog, namespace: str, at: datetime, snapshot_days: float) -> dict[str, str]:
    """One step of the table upkeep as of `at`, with one line of outcome per table.

    The only implementation: `ohlcv maintain` and the daily upkeep workflow both call it.
    """
    if step == "retention":
        return {r.table: f"{len(r.partitions)} partitions, {r.rows} rows before {r.cutoff:%Y-%m-%d}"
                for r in retention_all(catalog, namespace, at)}
    if step == "compact":
        return {r.table: f"{r.partitions} partitions, {r.files_before} -> {r.files_after} files" for r in compact_all(catalog, namespace, at)}
    if step == "expire":
        expired = expire_all(catalog, namespace, at - timedelta(days=snapshot_days))
        return {table: f"{count} snapshots" for table, count in expired.items()}
    if step == "orphans":
        return {r.table: f"{r.deleted} files, {r.bytes} bytes" for r in remove_unreferenced_all(catalog, namespace)}
    raise ValueError(f"no upkeep step {step!r}: one of {', '.join(TABLE_UPKEEP_STEPS)}")
