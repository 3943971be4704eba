"""Retention and upkeep on real Iceberg tables: exactly the expired partitions go; compaction,
snapshot expiry and unreferenced-file removal keep every live file and every remaining snapshot."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from support import daily_candles, key_rows, run_chunks, utc

from ohlcv import timeframes
from ohlcv.aggregate import candle_arrow_schema
from ohlcv.catalog import load_candles
from ohlcv.retention import apply_retention, cutoff, partitions
from ohlcv.store import commit_candles
from ohlcv.upkeep import (
    compact,
    expire_snapshots,
    referenced_files,
    remove_unreferenced,
)
from ohlcv.watermark import Watermark
from ohlcv.windows import WindowRange, tick_chunks
from workflows.orchestration import journal, runs

ONE_MINUTE, ONE_DAY = timeframes.get("1m"), timeframes.get("1d")


@pytest.mark.parametrize(
    ("tf", "first", "days", "as_of", "kept_from", "expired_partitions"),
    [
        # 90 days of 1m: as_of - 90 d = 2024-04-01 12:00, so 2024-04-01's partition stays.
        (ONE_MINUTE, utc(2024, 3, 22), 101, utc(2024, 6, 30, 12), utc(2024, 4, 1), 10),
        # 5 years of 1d: as_of - 1825 d = 2019-07-02, so the month 2019-07 stays.
        (ONE_DAY, utc(2018, 6, 1), 2222, utc(2024, 6, 30, 12), utc(2019, 7, 1), 13),
    ],
)
def test_retention_drops_exactly_the_expired_partitions(catalog, tf, first, days, as_of, kept_from, expired_partitions):
    table = load_candles(catalog, "market_data", tf)
    batch = daily_candles(tf, first, days)
    commit_candles(table, batch, WindowRange(first, first + timedelta(days=days)), utc(2024, 7, 1))
    assert cutoff(tf, as_of) == kept_from
    before = key_rows(table)
    snapshot = table.current_snapshot().snapshot_id

    dry = apply_retention(table, tf, as_of, dry_run=True)
    table.refresh()
    assert table.current_snapshot().snapshot_id == snapshot and key_rows(table) == before  # changed nothing
    assert len(dry.partitions) == expired_partitions and all(p.start < kept_from for p in dry.partitions)
    assert dry.rows == sum(1 for r in batch.to_pylist() if r["window_start"] < kept_from)

    done = apply_retention(table, tf, as_of)
    table.refresh()
    assert done.snapshot_id == table.current_snapshot().snapshot_id != snapshot
    assert [p.start for p in done.partitions] == [p.start for p in dry.partitions]
    assert min(p.start for p in partitions(table)) == kept_from
    kept = {row for row in before if dict(row)["window_start"] >= kept_from}
    assert key_rows(table) == kept  # the partitions inside retention are untouched, timestamps and all

    again = apply_retention(table, tf, as_of)
    assert again.partitions == [] and again.snapshot_id is None  # nothing left to delete: no commit


def files_on_disk(table) -> set[str]:
    root = Path(table.location().removeprefix("file://"))
    return {str(p) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def fragment(table, day: datetime, files: int) -> None:
    """`files` one-candle files in the day's partition, at its first minutes: what commits that
    appended their candles beside the rewritten files left (ticks now rewrite a partition's
    overlapping files into one, see store._StoredFiles), for compaction to merge."""
    for minute in range(files):
        start = day + timedelta(minutes=minute)
        row = dict(symbol="FRAG-USDT", exchange="okx", window_start=start, window_end=start + timedelta(minutes=1),
                   window_date=start.date(), open_price=1.0, high_price=1.0, low_price=1.0, close_price=1.0, volume=1.0,
                   trade_count=1, vwap=1.0)
        commit_candles(table, pa.Table.from_pylist([row], schema=candle_arrow_schema()), WindowRange(start, start + timedelta(minutes=1)),
                       utc(2030, 1, 1))


def test_upkeep_after_many_ticks_keeps_every_live_file_and_snapshot(fast, catalog, spark, day_of_trades):
    table = load_candles(catalog, "market_data", ONE_MINUTE)
    fragment(table, utc(2024, 4, 2), 10)
    for minute in range(5, 65, 5):  # twelve scheduled 1m ticks: 13:05 ... 14:00
        as_of = utc(2024, 4, 2, 13) + timedelta(minutes=minute)
        run_chunks(fast, tick_chunks([ONE_MINUTE], as_of), lambda: utc(2030, 1, 1))
    table.refresh()
    day = [p for p in partitions(table) if p.start == utc(2024, 4, 2)]
    assert day and day[0].files == 11  # the ten fragments, and one file the ticks rewrote in turn
    content = key_rows(table)
    history = {s.snapshot_id: key_rows_at(table, s.snapshot_id) for s in table.metadata.snapshots}
    assert len(history) >= 12

    result = compact(table, ONE_MINUTE, now=utc(2024, 4, 4))
    table.refresh()
    assert (result.partitions, result.files_after, result.commits) == (1, 1, 1) and result.files_before == day[0].files
    assert key_rows(table) == content  # the same rows, created_at/updated_at included
    # Written as candle commits write: a dictionary only for the columns the table lists.
    import pyarrow.parquet as pq

    from ohlcv.parquet_writer import DICTIONARY_COLUMNS
    from ohlcv.windows import EPOCH

    listed = set(table.properties[DICTIONARY_COLUMNS].split(","))
    [compacted] = [task.file.file_path for task in table.scan().plan_files() if task.file.partition[0] == (day[0].start - EPOCH).days]
    footer = pq.ParquetFile(compacted.removeprefix("file://")).metadata
    assert {footer.row_group(0).column(i).path_in_schema for i in range(footer.num_columns)
            if footer.row_group(0).column(i).has_dictionary_page} == listed

    # Keep the newest five snapshots: expire everything older than the fifth newest.
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    keep_from = datetime.fromtimestamp(snapshots[-5].timestamp_ms / 1000, timezone.utc)
    expired = expire_snapshots(table, keep_from)
    assert expired == len(snapshots) - 5

    fresh = remove_unreferenced(table)  # default grace, by the wall clock: everything is too young
    assert fresh.deleted == 0
    on_disk_before = files_on_disk(table)
    time.sleep(1.1)
    removed = remove_unreferenced(table, grace=timedelta(seconds=1))
    assert removed.deleted > 0 and removed.deleted == len(on_disk_before) - len(files_on_disk(table))

    table.refresh()
    live = {path.removeprefix("file://") for path in referenced_files(table)}
    on_disk = files_on_disk(table)
    assert live <= on_disk  # no live file was deleted
    assert on_disk == live  # and nothing unreferenced is left
    for snapshot in table.metadata.snapshots:  # time travel to every remaining snapshot still reads
        if snapshot.snapshot_id in history:
            assert key_rows_at(table, snapshot.snapshot_id) == history[snapshot.snapshot_id]
    assert key_rows(table) == content


def key_rows_at(table, snapshot_id: int) -> set:
    return {tuple(sorted(r.items())) for r in table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()}


@pytest.mark.slow
def test_the_daily_upkeep_is_a_workflow_with_its_own_steps(fast, catalog, spark, workflows, day_of_trades):
    fragment(load_candles(catalog, "market_data", ONE_MINUTE), utc(2024, 4, 2), 3)
    for minute in (5, 10, 15):
        run_chunks(fast, tick_chunks([ONE_MINUTE], utc(2024, 4, 2, 13, minute)), lambda: utc(2030, 1, 1))
    workflow_id, ref = runs.start_upkeep(fast, utc(2024, 4, 4, 1, 45))
    runs.wait(workflow_id, ref)
    assert workflow_id == "ohlcv-upkeep-20240404T0145Z"
    assert workflows.get_status(workflow_id).name == "SUCCESSFUL"
    steps = journal.read_workflow(workflow_id)
    assert {name: entry["status"] for name, entry in steps.items()} == dict.fromkeys(
        ["retention", "compact", "expire", "orphans", "runs"], "SUCCESSFUL")
    assert "-> 1 files" in steps["compact"]["summary"]["gold_ohlcv_1m"]
    assert [p.files for p in partitions(load_candles(catalog, "market_data", ONE_MINUTE))] == [1]


def test_a_table_with_a_snapshot_but_no_data_file_lists_no_partitions_and_compacts_nothing(catalog):
    """A table's first commit can record only a watermark (its windows had no trades yet): its
    snapshot has no manifest, pyiceberg's partition listing then has no `partition` column, and
    the upkeep must see an empty table (the cluster test's upkeep once failed on exactly this)."""
    table = load_candles(catalog, "market_data", ONE_MINUTE)
    empty = daily_candles(ONE_MINUTE, utc(2024, 3, 1), 1).slice(0, 0)
    quiet = WindowRange(utc(2024, 3, 1), utc(2024, 3, 2))
    committed = commit_candles(table, empty, quiet, utc(2024, 7, 1), watermark=Watermark(42, quiet.end))
    assert committed.snapshot_id is not None and committed.watermark == 42
    assert partitions(table) == []
    result = compact(table, ONE_MINUTE, utc(2025, 1, 1))
    assert (result.partitions, result.files_before, result.files_after, result.commits) == (0, 0, 0, 0)
    assert apply_retention(table, ONE_MINUTE, utc(2025, 1, 1)).partitions == []
