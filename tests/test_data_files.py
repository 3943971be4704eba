"""`ohlcv.data_files.append_in_order` against pyiceberg's own append of the same rows: the same
rows read back, the same partitions, one snapshot with the given properties; rows out of
partition order go through pyiceberg's append and land just the same. Rows in partition order
are written as pyiceberg writes them. A candle commit that replaces random ranges of a table
leaves exactly the rows a plain-Python oracle expects, one file per partition it touched."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from ohlcv import schema as s
from ohlcv import timeframes
from ohlcv.aggregate import candle_arrow_schema
from ohlcv.catalog import CANDLE_TABLE_PROPERTIES, load_table, open_catalog
from ohlcv.store import commit_candles, merge_candles
from ohlcv.windows import WindowRange
from support import trades_at, utc
from ohlcv.data_files import append_in_order, partition_runs, partition_values, replace_files, write_in_order

START = datetime(2024, 3, 30, 22, tzinfo=timezone.utc)  # runs across three UTC days


def trades(offsets_seconds: list[int]) -> pa.Table:
    return trades_at(START, offsets_seconds)


def files_of(table) -> list[tuple]:
    """(partition, rows) of each live data file, sorted."""
    return sorted((tuple(task.file.partition), task.file.record_count) for task in table.scan().plan_files())


def rows_of(table) -> list[tuple]:
    return sorted(tuple(row.values()) for row in table.scan().to_arrow().to_pylist())


two_days_of_seconds = st.lists(st.integers(0, 50 * 3600), min_size=1, max_size=60)


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=two_days_of_seconds, in_order=st.booleans())
def test_append_in_order_lands_what_pyiceberg_s_append_lands(settings, offsets, in_order):
    catalog = open_catalog(settings)
    rows = trades(sorted(offsets) if in_order else offsets)
    # Two fresh tables of the trades' schema and spec: ours, and the oracle, pyiceberg's own append.
    names = [f"{settings.namespace}.{who}_{uuid.uuid4().hex[:8]}" for who in ("ours", "theirs")]
    ours, theirs = (catalog.create_table(name, s.TRADES_SCHEMA, partition_spec=s.trades_spec()) for name in names)
    try:
        append_in_order(ours, rows, {"ohlcv.source": "test"})
        theirs.append(rows)
        ours.refresh()
        assert len(ours.snapshots()) == 1 and ours.current_snapshot().summary["ohlcv.source"] == "test"
        assert files_of(ours) == files_of(theirs)
        assert rows_of(ours) == rows_of(theirs)
        assert len(rows_of(ours)) == len(offsets)
    finally:
        for name in names:
            catalog.drop_table(name)


def test_partition_runs_are_the_days_in_order_and_none_for_rows_out_of_order(settings):
    table = load_table(open_catalog(settings), settings.namespace, s.TRADES_TABLE)
    day = 86_400
    runs = partition_runs(table, trades([0, 10, 2 * 3600, 2 * 3600 + day, 2 * 3600 + 2 * day]))
    first_day = (START.date() - datetime(1970, 1, 1).date()).days
    assert runs == [(first_day, 0, 2), (first_day + 1, 2, 1), (first_day + 2, 3, 1), (first_day + 3, 4, 1)]
    assert partition_runs(table, trades([3 * 3600, 0])) is None  # a day comes back after the next
    assert partition_runs(table, trades([0, 100, 50])) is not None  # out of order within a day is fine


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=two_days_of_seconds)
def test_rows_sorted_by_partition_are_written_as_pyiceberg_writes_them(settings, offsets):
    catalog = open_catalog(settings)
    rows = trades(offsets)
    trades_table = load_table(catalog, settings.namespace, s.TRADES_TABLE)
    ordered = rows.take(pa.array(np.argsort(partition_values(trades_table, rows), kind="stable")))
    assert partition_runs(trades_table, ordered) is not None
    names = [f"{settings.namespace}.{who}_{uuid.uuid4().hex[:8]}" for who in ("ours", "theirs")]
    ours, theirs = (catalog.create_table(name, s.TRADES_SCHEMA, partition_spec=s.trades_spec()) for name in names)
    try:
        replace_files(ours, [], write_in_order(ours, ordered), {})
        theirs.append(rows)
        ours.refresh()
        assert files_of(ours) == files_of(theirs)
        assert rows_of(ours) == rows_of(theirs)
    finally:
        for name in names:
            catalog.drop_table(name)


def candle_rows(keys: list[tuple[str, datetime]], price: float) -> pa.Table:
    return pa.Table.from_pylist([
        {"symbol": "BTC-USDT", "exchange": exchange, "window_start": start, "window_end": start + timedelta(minutes=1),
         "window_date": start.date(), "open_price": price, "high_price": price, "low_price": price, "close_price": price,
         "volume": 1.0, "trade_count": 1, "vwap": price}
        for exchange, start in keys
    ], schema=candle_arrow_schema())


minutes = st.integers(0, 50 * 60 - 1)  # of the three days from START, in minutes


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored=st.sets(st.tuples(st.sampled_from(["okx", "kraken"]), minutes), max_size=80),
       extra=st.sets(st.tuples(st.just("bybit"), minutes), max_size=10),
       spans=st.lists(st.tuples(minutes, st.integers(1, 400)), min_size=1, max_size=6),
       fresh=st.sets(st.tuples(st.sampled_from(["okx", "kraken", "bybit"]), minutes), max_size=80))
def test_a_candle_commit_replaces_exactly_its_ranges(settings, stored, extra, spans, fresh):
    """Stored candles (a partition may hold a second file, appended by another writer), then a
    commit of fresh candles over random ranges: outside the ranges every stored row stays, inside
    only the fresh ones are left, and each partition the commit rewrote is one file."""
    catalog = open_catalog(settings)
    table = catalog.create_table(f"{settings.namespace}.candles_{uuid.uuid4().hex[:8]}", s.CANDLE_SCHEMA,
                                 partition_spec=s.candle_spec(timeframes.get("1m")), properties=CANDLE_TABLE_PROPERTIES)
    at = lambda minute: START + timedelta(minutes=minute)  # noqa: E731
    try:
        whole = WindowRange(START, at(50 * 60))
        commit_candles(table, candle_rows([(e, at(m)) for e, m in sorted(stored)], 1.0), whole, utc(2030, 1, 1))
        if extra:  # another writer's file beside ours
            table.append(merge_candles(candle_rows([], 0.0), candle_rows([(e, at(m)) for e, m in sorted(extra)], 3.0), utc(2030, 1, 1))[0])
        ranges = [WindowRange(at(m), min(at(m + length), whole.end)) for m, length in spans]
        inside = lambda m: any(r.start <= at(m) < r.end for r in ranges)  # noqa: E731
        new = [(e, at(m)) for e, m in sorted(fresh) if inside(m)]
        commit_candles(table, candle_rows(new, 2.0), ranges, utc(2030, 1, 2))
        expected = {(e, at(m)): 1.0 for e, m in stored if not inside(m)}
        expected |= {(e, at(m)): 3.0 for e, m in extra if not inside(m)}
        expected |= {key: 2.0 for key in new}
        table.refresh()
        got = {(r["exchange"], r["window_start"]): r["open_price"] for r in table.scan().to_arrow().to_pylist()}
        assert got == expected
        # The rows in the ranges lie in one file a partition (the one the commit wrote).
        meeting = {}
        for task in table.scan().plan_files():
            starts = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["window_start"]).column(0).to_pylist()
            if any(r.start <= start < r.end for start in starts for r in ranges):
                meeting[task.file.partition[0]] = meeting.get(task.file.partition[0], 0) + 1
        assert all(count == 1 for count in meeting.values()), meeting
    finally:
        catalog.drop_table(table.name())


def test_commits_like_ticks_keep_only_manifests_that_list_live_files(settings):
    """A 1m tick rewrites the file of its last few minutes every minute. pyiceberg's overwrite
    carried each commit's manifest of deleted entries into every later snapshot, so the table's
    manifest list grew by one a tick and each commit read them all. After twelve such commits
    every manifest of the current snapshot lists a live file (but the last commit's own deleted
    entries), there are at most three, and each
    minute holds the candle of the last commit that covered it; an older snapshot still reads as
    it was."""
    catalog = open_catalog(settings)
    table = catalog.create_table(f"{settings.namespace}.candles_{uuid.uuid4().hex[:8]}", s.CANDLE_SCHEMA,
                                 partition_spec=s.candle_spec(timeframes.get("1m")), properties=CANDLE_TABLE_PROPERTIES)
    at = lambda minute: START + timedelta(minutes=minute)  # noqa: E731
    try:
        snapshots = []
        for tick in range(12):
            commit_candles(table, candle_rows([("okx", at(m)) for m in range(tick, tick + 3)], float(tick)),
                           WindowRange(at(tick), at(tick + 3)), utc(2030, 1, 1))
            table.refresh()
            snapshots.append(table.current_snapshot().snapshot_id)
        current = table.current_snapshot()
        manifests = current.manifests(table.io)
        # Its own deleted entries aside, the last commit carries no manifest without a live file.
        assert all(m.has_added_files() or m.has_existing_files() or m.added_snapshot_id == current.snapshot_id
                   for m in manifests)
        assert len(manifests) <= 3
        got = {r["window_start"]: r["open_price"] for r in table.scan().to_arrow().to_pylist()}
        assert got == {at(m): float(min(m, 11)) for m in range(14)}
        fifth = {r["window_start"]: r["open_price"] for r in table.scan(snapshot_id=snapshots[4]).to_arrow().to_pylist()}
        assert fifth == {at(m): float(min(m, 4)) for m in range(7)}
    finally:
        catalog.drop_table(table.name())
