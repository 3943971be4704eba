"""The project's own Parquet writing and footer reading, against pyiceberg's and pyarrow's.

- `parquet_writer.write_data_files`: a table that lists its dictionary columns gets them, and
  only them, dictionary-encoded; everything else about the files (rows, partitions, the
  statistics in their manifest entries) is what pyiceberg's own append records.
- `parquet_footers.row_groups_meeting`: exactly the row groups whose timestamp statistics, as
  pyarrow reports them, meet a range; its cache stays within its bounds.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from ohlcv import parquet_footers
from ohlcv import schema as s
from ohlcv.catalog import TRADES_TABLE_PROPERTIES, open_catalog
from ohlcv.data_files import replace_files, write_in_order
from ohlcv.parquet_footers import row_groups_meeting
from ohlcv.parquet_writer import DICTIONARY_COLUMNS
from support import trades_at

START = datetime(2024, 3, 30, 22, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def trades(offsets_seconds: list[int]) -> pa.Table:
    return trades_at(START, offsets_seconds)


def _entries(table) -> list[tuple]:
    """What a data file's manifest entry says of it, its path and size left out, sorted."""
    found = []
    for task in table.scan().plan_files():
        f = task.file
        found.append((tuple(f.partition), f.record_count, sorted(f.value_counts.items()), sorted(f.null_value_counts.items()),
                      sorted(f.lower_bounds.items()), sorted(f.upper_bounds.items())))
    return sorted(found)


@hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.integers(0, 50 * 3600), min_size=1, max_size=80))
def test_listed_dictionary_columns_are_the_only_dictionary_encoded_ones_and_the_entries_are_pyiceberg_s(settings, offsets):
    catalog = open_catalog(settings)
    rows = trades(sorted(offsets))
    names = [f"{settings.namespace}.{who}_{uuid.uuid4().hex[:8]}" for who in ("ours", "theirs")]
    ours = catalog.create_table(names[0], s.TRADES_SCHEMA, partition_spec=s.trades_spec(), properties=TRADES_TABLE_PROPERTIES)
    theirs = catalog.create_table(names[1], s.TRADES_SCHEMA, partition_spec=s.trades_spec())
    try:
        replace_files(ours, [], write_in_order(ours, rows), {})
        theirs.append(rows)
        ours.refresh()
        assert _entries(ours) == _entries(theirs)
        assert sorted(ours.scan().to_arrow().to_pylist(), key=str) == sorted(theirs.scan().to_arrow().to_pylist(), key=str)
        listed = set(TRADES_TABLE_PROPERTIES[DICTIONARY_COLUMNS].split(","))
        for task in ours.scan().plan_files():
            footer = pq.ParquetFile(task.file.file_path.removeprefix("file://")).metadata
            for group in range(footer.num_row_groups):
                for index in range(footer.num_columns):
                    chunk = footer.row_group(group).column(index)
                    assert chunk.has_dictionary_page == (chunk.path_in_schema in listed), chunk.path_in_schema
        # pyiceberg's own writer, for a table that lists none, encodes the trade ids by dictionary
        their_file = next(iter(theirs.scan().plan_files())).file.file_path.removeprefix("file://")
        their_footer = pq.ParquetFile(their_file).metadata
        trade_id = [i for i in range(their_footer.num_columns) if their_footer.row_group(0).column(i).path_in_schema == "trade_id"][0]
        assert their_footer.row_group(0).column(trade_id).has_dictionary_page
    finally:
        for name in names:
            catalog.drop_table(name)


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _brute_force(path: str, ranges: list[tuple[int, int]]) -> list[int]:
    footer = pq.ParquetFile(path).metadata
    column = footer.schema.to_arrow_schema().get_field_index("timestamp")
    meeting = []
    for group in range(footer.num_row_groups):
        stats = footer.row_group(group).column(column).statistics
        low, high = _micros(stats.min.replace(tzinfo=timezone.utc)), _micros(stats.max.replace(tzinfo=timezone.utc))
        if any(lo <= high and low < hi for lo, hi in ranges):
            meeting.append(group)
    return meeting


def _merged(ranges: list[tuple[int, int]]):
    import numpy as np

    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return np.array([lo for lo, _ in merged], "int64"), np.array([hi for _, hi in merged], "int64")


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Few distinct seconds, so that range ends fall on row groups' bounds (an end is exclusive).
@given(offsets=st.lists(st.integers(0, 200), min_size=1, max_size=120), in_order=st.booleans(), group_rows=st.integers(1, 40),
       spans=st.lists(st.tuples(st.integers(-10, 210), st.integers(1, 40)), max_size=8))
def test_row_groups_meeting_are_those_whose_statistics_meet_a_range(tmp_path, offsets, in_order, group_rows, spans):
    path = str(tmp_path / f"{uuid.uuid4().hex}.parquet")
    pq.write_table(trades(sorted(offsets) if in_order else offsets), path, row_group_size=group_rows)
    ranges = [(_micros(START) + lo * 1_000_000, _micros(START) + (lo + length) * 1_000_000) for lo, length in spans]
    starts, ends = _merged(ranges)
    expected = _brute_force(path, ranges)
    assert row_groups_meeting(path, "timestamp", starts, ends).indices == expected
    again = row_groups_meeting(path, "timestamp", starts, ends)  # from the cache this time
    assert again.indices == expected
    if again.footer is not None:
        assert again.footer.num_row_groups == pq.ParquetFile(path).metadata.num_row_groups


def test_the_footer_cache_keeps_within_its_file_count_and_byte_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_footers, "CACHED_FILES", 5)
    monkeypatch.setattr(parquet_footers, "_files", type(parquet_footers._files)())
    monkeypatch.setattr(parquet_footers, "_footer_bytes", 0)
    paths = []
    for index in range(12):
        path = str(tmp_path / f"{index}.parquet")
        pq.write_table(trades(list(range(0, 600, 7))), path, row_group_size=10)
        paths.append(path)
    one_footer = pq.ParquetFile(paths[0]).metadata.serialized_size
    monkeypatch.setattr(parquet_footers, "CACHED_FOOTER_BYTES", 2 * one_footer)
    starts, ends = _merged([(_micros(START), _micros(START) + 60_000_000)])
    for path in paths:
        assert row_groups_meeting(path, "timestamp", starts, ends).indices == _brute_force(path, [(int(starts[0]), int(ends[0]))])
        assert len(parquet_footers._files) <= 5
        kept = [bounds for bounds in parquet_footers._files.values() if bounds.footer is not None]
        assert parquet_footers._footer_bytes == sum(bounds.footer_bytes for bounds in kept) <= 2 * one_footer
    assert [path for path, _, _ in parquet_footers._files] == paths[-5:]  # the least recently used went first
    # A file whose footer was dropped is still answered, from its kept bounds.
    assert row_groups_meeting(paths[-5], "timestamp", starts, ends).footer is None
    assert row_groups_meeting(paths[-5], "timestamp", starts, ends).indices == _brute_force(paths[-5], [(int(starts[0]), int(ends[0]))])


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.integers(0, 300), min_size=1, max_size=150), in_order=st.booleans(), data=st.data())
def test_a_pruned_read_keeps_exactly_the_trades_in_the_ranges_whether_or_not_files_are_in_time_order(settings, offsets, in_order, data):
    """Files in time order take each range's run by a binary search (as slices while the runs
    are few); others, and many runs, test every row: each way against a plain filter. Ranges
    start and end on trades, or a second beside one (an end is exclusive); up to 100 of them,
    past the 64 runs taken as slices."""
    from ohlcv.store import plan_trade_files, read_pruned, timestamps_in
    from ohlcv.windows import WindowRange

    near_a_trade = st.builds(lambda at, shift: at + shift, st.sampled_from(offsets), st.integers(-1, 1))
    spans = data.draw(st.lists(st.tuples(near_a_trade, st.integers(1, 6)), min_size=1, max_size=100))

    catalog = open_catalog(settings)
    table = catalog.create_table(f"{settings.namespace}.trades_{uuid.uuid4().hex[:8]}", s.TRADES_SCHEMA, partition_spec=s.trades_spec(),
                                 properties={**TRADES_TABLE_PROPERTIES, "write.parquet.row-group-limit": "16"})
    try:
        rows = trades(sorted(offsets) if in_order else offsets)
        table.append(rows)  # pyiceberg's append: rows stay in the order given
        ranges = sorted({WindowRange(START + timedelta(seconds=lo), START + timedelta(seconds=lo + length)) for lo, length in spans})
        kept = read_pruned(plan_trade_files(table, ranges), ranges)
        stamps = [START + timedelta(seconds=offset) for offset in offsets]
        expected = sorted(str(i) for i, at in enumerate(sorted(stamps) if in_order else stamps)
                          if any(r.start <= at < r.end for r in ranges))
        assert sorted(kept.column("trade_id").to_pylist()) == expected
        # A tick plan's read of the timestamps alone (ohlcv/late.py) keeps the same trades.
        stamps_kept = timestamps_in(table, plan_trade_files(table, ranges), ranges)
        assert sorted(stamps_kept.to_pylist()) == sorted(at for at in stamps if any(r.start <= at < r.end for r in ranges))
    finally:
        catalog.drop_table(table.name())
