"""Compaction of the trades table: every day before today with several files becomes one file in
time order, holding exactly the rows it held, in a replace commit that a tick's late plan and
the dedup guarantees take as no change; ingest merges the small files of the days it lands in
the same way. Real ingests, real Iceberg tables."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import utc

from ohlcv import schema as s
from ohlcv import store, upkeep
from ohlcv.catalog import load_table, load_trades
from ohlcv.dedup import duplicate_days
from ohlcv.ingest import ingest_files
from ohlcv.retention import partitions
from ohlcv.upkeep import run_upkeep_step
from ohlcv.watermark import trades_since
from pyiceberg.table.snapshots import Operation

DAY = datetime(2024, 4, 1, tzinfo=timezone.utc)


def batch(number: int, ids: range, price: float) -> pa.Table:
    """Trades over three days at random instants (so that batches interleave in time), on two
    exchanges, with ids that say which batch sent them."""
    draw = random.Random(number)
    stamps = [DAY + timedelta(seconds=draw.randrange(3 * 86_400)) for _ in ids]
    return pa.table({
        "exchange": [("okx", "kraken")[i % 2] for i in ids],
        "symbol": ["BTC-USDT"] * len(ids),
        "trade_id": [str(i) for i in ids],
        "price": [price + i for i in ids],
        "quantity": [0.5] * len(ids),
        "side": [("buy", "sell", None)[i % 3] for i in ids],
        "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
    })


def ingest(catalog, settings, tmp_path, name: str, rows: pa.Table, at: datetime):
    path = tmp_path / f"{name}.parquet"
    pq.write_table(rows, path)
    [report] = ingest_files(catalog, settings.namespace, [path], "us", at)
    return report


def stored(trades) -> list[dict]:
    return sorted(trades.scan().to_arrow().to_pylist(), key=lambda row: (row["exchange"], row["trade_id"]))


@pytest.fixture
def unmerged(monkeypatch):
    """Ingest leaves every file it writes as it is (no merge of small files), as a table another
    writer appends to would be: what the upkeep's compaction is for."""
    monkeypatch.setattr(store, "SMALL_FILE_ROWS", 0)


def files_by_day(trades) -> dict:
    return {p.start: p.files for p in partitions(trades)}


def test_closed_days_become_one_file_in_time_order_with_the_same_rows_and_no_change_for_ticks(catalog, settings, tmp_path, unmerged):
    for number in range(4):
        ingest(catalog, settings, tmp_path, f"batch-{number}", batch(number, range(number * 40, number * 40 + 40), 100.0), utc(2024, 4, 3, number))
    # A later version of ten stored trades (other prices): they lose, to quarantine.
    resent = ingest(catalog, settings, tmp_path, "resent", batch(0, range(0, 10), 900.0), utc(2024, 4, 3, 5))
    assert resent.duplicates == 10
    trades = load_trades(catalog, settings.namespace)
    before, before_id = stored(trades), trades.current_snapshot().snapshot_id
    risky_before = duplicate_days(trades)
    assert files_by_day(trades) == {DAY: 4, DAY + timedelta(days=1): 4, DAY + timedelta(days=2): 4}

    # "Today" is the third day: the two days before it are compacted, today's is not.
    outcome = run_upkeep_step("compact", catalog, settings.namespace, DAY + timedelta(days=2, hours=12), 7.0)
    assert outcome[s.TRADES_TABLE] == "2 partitions, 8 -> 2 files"

    trades.refresh()
    assert stored(trades) == before  # every column of every row, ingested_at and side included
    assert files_by_day(trades) == {DAY: 1, DAY + timedelta(days=1): 1, DAY + timedelta(days=2): 4}
    for task in trades.scan().plan_files():
        stamps = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["timestamp"]).column(0).to_pylist()
        assert stamps == sorted(stamps)
    current = trades.current_snapshot()
    assert current.summary.operation == Operation.REPLACE and current.summary["ohlcv.compaction"]
    # A tick's plan sees no new trades and nothing removed; the dedup guarantee still holds.
    since = trades_since(trades, before_id, current.snapshot_id)
    assert (since.state, since.appends) == ("appended", ())
    assert duplicate_days(trades) == risky_before

    # Ingest still finds the stored versions in the compacted files.
    again = ingest(catalog, settings, tmp_path, "resent-again", batch(1, range(40, 45), 700.0), utc(2024, 4, 3, 6))
    assert again.duplicates == 5
    trades.refresh()
    assert stored(trades) == before
    quarantine = load_table(catalog, settings.namespace, s.QUARANTINE_TABLE).scan().to_arrow()
    assert quarantine.column("reason").to_pylist().count("duplicate") == 15


def test_a_day_too_large_to_read_whole_is_left_as_it_is(catalog, settings, tmp_path, monkeypatch, unmerged):
    for number in range(2):
        ingest(catalog, settings, tmp_path, f"batch-{number}", batch(number, range(number * 40, number * 40 + 40), 100.0), utc(2024, 4, 5, number))
    trades = load_trades(catalog, settings.namespace)
    monkeypatch.setattr(upkeep, "DAY_ROWS_PER_COMPACTION", 5)
    result = upkeep.compact_days(trades, "timestamp", DAY + timedelta(days=4))
    assert (result.partitions, result.commits) == (0, 0)
    trades.refresh()
    assert set(files_by_day(trades).values()) == {2}


def test_closed_days_of_quarantine_become_one_file_with_the_same_rows(catalog, settings, tmp_path):
    """Every ingest with bad rows adds a file to the day's quarantine partition: closed days are
    compacted to one file each, every row kept as stored (raw text, reasons, source)."""
    bad = batch(7, range(500, 506), 100.0)
    bad = bad.set_column(bad.schema.get_field_index("price"), "price", pa.array([-1.0] * bad.num_rows))
    for day in range(3):
        for hour in (1, 2):
            ingest(catalog, settings, tmp_path, f"bad-{day}-{hour}", bad, utc(2024, 4, 1 + day, hour))
    quarantine = load_table(catalog, settings.namespace, s.QUARANTINE_TABLE)

    def rows() -> list[dict]:
        return sorted(quarantine.scan().to_arrow().to_pylist(), key=lambda row: (row["ingested_at"], row["source"], row["trade_id"]))

    before = rows()
    assert len(before) == 6 * bad.num_rows and {row["reason"] for row in before} == {"price is not positive and finite"}
    assert files_by_day(quarantine) == {DAY: 2, DAY + timedelta(days=1): 2, DAY + timedelta(days=2): 2}

    outcome = run_upkeep_step("compact", catalog, settings.namespace, DAY + timedelta(days=2, hours=12), 7.0)
    assert outcome[s.QUARANTINE_TABLE] == "2 partitions, 4 -> 2 files"

    quarantine.refresh()
    assert rows() == before
    assert files_by_day(quarantine) == {DAY: 1, DAY + timedelta(days=1): 1, DAY + timedelta(days=2): 2}
    for task in quarantine.scan().plan_files():
        stamps = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["ingested_at"]).column(0).to_pylist()
        assert stamps == sorted(stamps)
    assert quarantine.current_snapshot().summary.operation == Operation.REPLACE


def test_ingest_merges_the_small_files_of_the_days_it_lands_in_and_keeps_bulk_files(catalog, settings, tmp_path, monkeypatch):
    """Batches of late trades over three days: after each ingest every day holds its bulk file
    and one small file, the rows are every batch's (the re-sent versions lose), and ticks see
    the appends only."""
    monkeypatch.setattr(store, "SMALL_FILE_ROWS", 60)  # a late batch adds about 13 trades a day, the bulk file about 100
    bulk = batch(9, range(1000, 1300), 50.0)
    ingest(catalog, settings, tmp_path, "bulk", bulk, utc(2024, 4, 3))
    trades = load_trades(catalog, settings.namespace)
    before_late = trades.current_snapshot().snapshot_id
    bulk_files = {task.file.file_path for task in trades.scan().plan_files()}
    assert files_by_day(trades) == {DAY: 1, DAY + timedelta(days=1): 1, DAY + timedelta(days=2): 1}

    sent = [bulk]
    for number in range(3):
        rows = batch(number, range(number * 40, number * 40 + 40), 100.0)
        ingest(catalog, settings, tmp_path, f"late-{number}", rows, utc(2024, 4, 3, number + 1))
        sent.append(rows)
        trades.refresh()
        # The bulk file and at most one small file a day: one after the first batch, merged after the others.
        assert files_by_day(trades) == {DAY: 2, DAY + timedelta(days=1): 2, DAY + timedelta(days=2): 2}
        assert bulk_files <= {task.file.file_path for task in trades.scan().plan_files()}
    resent = ingest(catalog, settings, tmp_path, "resent", batch(0, range(0, 10), 900.0), utc(2024, 4, 3, 5))
    assert resent.duplicates == 10  # found in the merged files

    expected = sorted(pa.concat_tables(sent).to_pylist(), key=lambda row: (row["exchange"], row["trade_id"]))
    got = stored(trades)
    assert [{k: row[k] for k in expected[0]} for row in got] == expected  # every sent column, every trade once
    for task in trades.scan().plan_files():
        stamps = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["timestamp"]).column(0).to_pylist()
        assert stamps == sorted(stamps)
    operations = [trades.snapshot_by_id(snapshot.snapshot_id).summary.operation for snapshot in trades.snapshots()]
    assert operations.count(Operation.REPLACE) == 2  # the second and third batches merged
    since = trades_since(trades, before_late, trades.current_snapshot().snapshot_id)
    assert since.state == "appended" and len(since.appends) == 3 and since.appended_rows == 120
