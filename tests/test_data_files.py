"""`ohlcv.data_files.append_in_order` against pyiceberg's own append of the same rows: the same
rows read back, the same partitions, one snapshot with the given properties; rows out of
partition order go through pyiceberg's append and land just the same. Rows sorted by
`in_partition_order` (as candle commits sort theirs) are written as pyiceberg writes them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from ohlcv import schema as s
from ohlcv.catalog import load_table, open_catalog
from ohlcv.data_files import append_in_order, in_partition_order, partition_runs, replace_files, write_in_order

START = datetime(2024, 3, 30, 22, tzinfo=timezone.utc)  # runs across three UTC days


def trades(offsets_seconds: list[int]) -> pa.Table:
    stamps = [START + timedelta(seconds=offset) for offset in offsets_seconds]
    return pa.table({
        "exchange": ["okx"] * len(stamps),
        "symbol": ["BTC-USDT"] * len(stamps),
        "trade_id": [str(i) for i in range(len(stamps))],
        "price": [1.0 + i for i in range(len(stamps))],
        "quantity": [0.5] * len(stamps),
        "side": ["buy" if i % 2 else None for i in range(len(stamps))],
        "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        "ingested_at": pa.array([START] * len(stamps), pa.timestamp("us", tz="UTC")),
    }).cast(s.arrow_build_schema(s.TRADES_SCHEMA))


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
    ordered = in_partition_order(load_table(catalog, settings.namespace, s.TRADES_TABLE), rows)
    assert partition_runs(load_table(catalog, settings.namespace, s.TRADES_TABLE), ordered) is not None
    # Within a day the rows keep their order (the sort is stable).
    day_of = [(START + timedelta(seconds=o)).date() for o in offsets]
    for day in set(day_of):
        assert [r for r, d in zip(ordered.column("trade_id").to_pylist(), sorted(day_of)) if d == day] == \
            [str(i) for i, d in enumerate(day_of) if d == day]
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
