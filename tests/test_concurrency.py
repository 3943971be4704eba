"""Concurrent writers on one candle table: a commit that loses the race fails cleanly with a
transient CommitConflict and succeeds when retried; no candle is lost or duplicated."""

from __future__ import annotations

import threading
from datetime import timedelta

import pyarrow as pa
import pytest

from support import BOTH_CATALOGS, stored_trades, utc
from oracle import compare, expected_candles
from ohlcv import timeframes
from ohlcv.aggregate import candle_arrow_schema
from ohlcv.catalog import load_candles
from ohlcv.errors import CommitConflict
from ohlcv.store import commit_candles
from ohlcv.windows import WindowRange
from support import AS_OF, table_rows
from workflows.orchestration import dags, ids, journal, runs

ONE_MINUTE = timeframes.get("1m")


def minute_candles(start, count: int, price: float) -> pa.Table:
    rows = [
        dict(symbol="SOL-USDT", exchange="okx", window_start=start + timedelta(minutes=i), window_end=start + timedelta(minutes=i + 1),
             window_date=start.date(), open_price=price, high_price=price + 1, low_price=price - 1, close_price=price,
             volume=1.0, trade_count=1, vwap=price)
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=candle_arrow_schema())


@BOTH_CATALOGS
def test_two_writers_at_once_lose_nothing_and_duplicate_nothing(settings, catalog):
    conflicts = []
    rounds = 6

    def writer(offset_minutes: int, price: float, barrier: threading.Barrier, start) -> None:
        table = load_candles(catalog, settings.namespace, ONE_MINUTE)
        rng = WindowRange(start + timedelta(minutes=offset_minutes), start + timedelta(minutes=offset_minutes + 30))
        batch = minute_candles(rng.start, 30, price)
        barrier.wait()
        for _ in range(20):  # what the workflow's retries do, without the delay
            try:
                commit_candles(table, batch, rng, utc(2030, 1, 1))
                return
            except CommitConflict as conflict:
                conflicts.append(str(conflict))
        raise AssertionError("never committed")

    for round_number in range(rounds):
        start = utc(2024, 8, 1) + timedelta(hours=round_number)
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=writer, args=(0, 100.0, barrier, start)),
                   threading.Thread(target=writer, args=(30, 200.0, barrier, start))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    rows = load_candles(catalog, settings.namespace, ONE_MINUTE).scan().to_arrow().to_pylist()
    keys = [r["window_start"] for r in rows]
    assert len(keys) == len(set(keys)) == rounds * 60  # every candle of both writers, once
    for row in rows:
        assert row["open_price"] == (100.0 if row["window_start"].minute < 30 else 200.0)
    assert all("another writer committed first" in text for text in conflicts)


@BOTH_CATALOGS
def test_a_commit_that_loses_the_race_fails_cleanly_and_succeeds_when_retried(settings, catalog, monkeypatch):
    """Writer B commits in the middle of writer A's commit, after A has read the table and
    before A writes: A must not overwrite B's commit blindly, but fail with CommitConflict."""
    from ohlcv import store

    start = utc(2024, 8, 2)
    range_a, range_b = WindowRange(start, start + timedelta(minutes=30)), WindowRange(start + timedelta(minutes=15), start + timedelta(minutes=45))
    table_a = load_candles(catalog, settings.namespace, ONE_MINUTE)
    table_b = load_candles(catalog, settings.namespace, ONE_MINUTE)
    real_replace_files = store.replace_files  # where A's commit writes its snapshot (store._StoredFiles)
    interleaved = []

    def replace_files_after_b_commits(table, *args, **kwargs):
        if table is table_a and not interleaved:
            interleaved.append(commit_candles(table_b, minute_candles(range_b.start, 30, 100.0), range_b, utc(2030, 1, 2)))
        return real_replace_files(table, *args, **kwargs)

    monkeypatch.setattr(store, "replace_files", replace_files_after_b_commits)
    with pytest.raises(CommitConflict, match="another writer committed first"):
        commit_candles(table_a, minute_candles(range_a.start, 30, 100.0), range_a, utc(2030, 1, 1))
    assert interleaved and interleaved[0].snapshot_id is not None  # B's commit went through

    retried = commit_candles(table_a, minute_candles(range_a.start, 30, 100.0), range_a, utc(2030, 1, 1))  # the retry
    rows = load_candles(catalog, settings.namespace, ONE_MINUTE).scan().to_arrow().to_pylist()
    starts = sorted(r["window_start"] for r in rows)
    assert starts == [start + timedelta(minutes=i) for i in range(45)]  # [0, 45): nothing lost, nothing twice
    assert retried.inserted == 15 and retried.unchanged == 15  # the retry saw B's candles


@pytest.mark.slow
def test_a_backfill_and_a_tick_writing_the_same_table_both_succeed(fast, catalog, workflows, day_of_trades):
    tfs = [ONE_MINUTE, timeframes.get("5m")]
    backfill_id = ids.backfill_workflow_id(tfs, utc(2024, 4, 2), utc(2024, 4, 3), utc(2030, 1, 1))
    from ohlcv.windows import plan_backfill

    backfill_ref = workflows.run_async(dags.backfill_dag(fast, plan_backfill(tfs, utc(2024, 4, 2), utc(2024, 4, 3), utc(2030, 1, 1))),
                                       workflow_id=backfill_id)
    tick_id, tick_ref = runs.start_tick(fast, ONE_MINUTE, AS_OF["1m"])
    runs.wait(backfill_id, backfill_ref)
    runs.wait(tick_id, tick_ref)

    trades = stored_trades(catalog)
    for tf in tfs:
        assert not compare(table_rows(catalog, tf), expected_candles(trades, tf.width, utc(2024, 4, 2), utc(2024, 4, 3))), tf.name
    outcomes = [a["outcome"] for step in (journal.read_workflow(backfill_id) | journal.read_workflow(tick_id)).values()
                for a in step["attempts"]]
    assert set(outcomes) <= {"ok", "transient"}  # a lost race is a clean, retried try
