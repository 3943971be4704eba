"""The read plan's estimate of trades in a range (from manifests only), the shuffle width it
sets (a day's trades spread over many tasks, a tick's over one per core), whether the ranges
hold the planned files whole (then Spark's read needs no condition), and the "pruned" read of
scattered ranges (exact, and naming a corrupt file)."""

from __future__ import annotations

import random
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from support import utc
from ohlcv import aggregate
from ohlcv.catalog import load_trades
from ohlcv.generate import GenerateSpec, generate
from ohlcv.ingest import ingest_files
from ohlcv.errors import DataFileError
from ohlcv.store import held_whole, micros, plan_trade_files, ranges_cover, read_pruned, rows_in_range, trades_per_day
from ohlcv.windows import WindowRange

DAY = utc(2024, 3, 4)


def ingest_day(settings, catalog, tmp_path, trades_per_day: int):
    trades = generate(GenerateSpec(DAY, DAY + timedelta(days=1), symbols=2, exchanges=2, trades_per_day=trades_per_day, seed=3))
    path = tmp_path / "day.parquet"
    pq.write_table(trades, path)
    ingest_files(catalog, settings.namespace, [str(path)], "us", utc(2024, 3, 5))
    return trades


def estimate(catalog, settings, rng: WindowRange) -> int:
    table = load_trades(catalog, settings.namespace)
    return rows_in_range(table, plan_trade_files(table, rng), rng)


def actual(trades, rng: WindowRange) -> int:
    return sum(1 for ts in trades.column("timestamp").to_pylist() if rng.start <= ts < rng.end)


def test_the_estimate_is_exact_for_a_whole_day_and_close_for_part_of_it(settings, catalog, tmp_path):
    trades = ingest_day(settings, catalog, tmp_path, 50_000)
    whole = WindowRange(DAY, DAY + timedelta(days=1))
    assert estimate(catalog, settings, whole) == actual(trades, whole) == trades.num_rows
    for hours in (1, 6):
        part = WindowRange(DAY + timedelta(hours=9), DAY + timedelta(hours=9 + hours))
        assert abs(estimate(catalog, settings, part) - actual(trades, part)) <= 0.5 * actual(trades, part)
    outside = WindowRange(DAY + timedelta(days=3), DAY + timedelta(days=4))
    assert estimate(catalog, settings, outside) == 0


def test_trades_per_day_counts_each_day_of_a_range_from_the_manifests(settings, catalog, tmp_path):
    trades = generate(GenerateSpec(DAY - timedelta(hours=6), DAY + timedelta(days=2), symbols=2, exchanges=1, trades_per_day=4_000, seed=5))
    path = tmp_path / "days.parquet"
    pq.write_table(trades, path)
    ingest_files(catalog, settings.namespace, [str(path)], "us", utc(2024, 3, 7))
    table = load_trades(catalog, settings.namespace)
    days = [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]
    exact = {day.date(): actual(trades, WindowRange(day, day + timedelta(days=1))) for day in days}
    assert trades_per_day(table, WindowRange(days[0], days[-1] + timedelta(days=1))) == exact  # a file per day partition
    half = trades_per_day(table, WindowRange(DAY + timedelta(hours=12), DAY + timedelta(days=3)))
    assert half.keys() == {DAY.date(), (DAY + timedelta(days=1)).date()}
    assert abs(half[DAY.date()] - actual(trades, WindowRange(DAY + timedelta(hours=12), DAY + timedelta(days=1)))) < 0.3 * exact[DAY.date()]


def test_a_day_gets_eight_tasks_per_core_and_a_tick_one():
    assert aggregate.shuffle_partitions(2_400_000, slots=2) == 16
    assert aggregate.shuffle_partitions(24_000_000, slots=2) == 16
    assert aggregate.shuffle_partitions(17_000, slots=2) == 2  # ten minutes of a 2.4M day
    assert aggregate.shuffle_partitions(0, slots=2) == 2
    assert aggregate.shuffle_partitions(650_000, slots=2) == 7
    assert aggregate.shuffle_partitions(650_000, slots=8) == 8


def test_a_pruned_read_keeps_exactly_the_trades_of_many_scattered_ranges(settings, catalog, tmp_path):
    """The "pruned" read (ohlcv.store.read_pruned) against a plain filter of the same trades:
    ranges that touch, overlap, sit on row-group edges, fall between trades or outside the day.
    Files are planned by the ranges' hull and then each file's bounds (plan_trade_files)."""
    ingest_day(settings, catalog, tmp_path, 200_000)  # a day: several row groups of the trades table
    table = load_trades(catalog, settings.namespace)
    stored = table.scan().to_arrow()
    stamps = stored.column("timestamp").cast(pa.int64()).to_numpy()
    generator = random.Random(11)
    for _ in range(25):
        ranges = []
        for _ in range(generator.randrange(5, 60)):
            start = DAY + timedelta(minutes=generator.randrange(-120, 24 * 60 + 120))
            ranges.append(WindowRange(start, start + timedelta(minutes=generator.choice([1, 1, 5, 30, 90]))))
        tasks = plan_trade_files(table, ranges)
        kept = read_pruned(tasks, sorted(ranges))
        inside = sum(((stamps >= micros(r.start)) & (stamps < micros(r.end)) for r in ranges), start=stamps < 0) > 0
        expected = stored.filter(pa.array(inside))
        assert kept.num_rows == expected.num_rows
        assert sorted(kept.column("trade_id").to_pylist()) == sorted(expected.column("trade_id").to_pylist())
        if kept.num_rows:
            assert pc.min(kept.column("timestamp")).as_py() >= min(r.start for r in ranges)
    # Far outside the data: no file planned, nothing read.
    assert plan_trade_files(table, [WindowRange(DAY + timedelta(days=9, minutes=m), DAY + timedelta(days=9, minutes=m + 1)) for m in range(6)]) == []


def test_a_pruned_read_of_a_truncated_trades_file_fails_naming_the_file(settings, catalog, tmp_path):
    """As the other read paths do (test_failure_kinds): a corrupt file is a DataFileError, terminal, with its path."""
    ingest_day(settings, catalog, tmp_path, 20_000)
    table = load_trades(catalog, settings.namespace)
    ranges = [WindowRange(DAY + timedelta(hours=h), DAY + timedelta(hours=h, minutes=1)) for h in range(6)]
    [task] = plan_trade_files(table, ranges)
    path = task.file.file_path.removeprefix("file://")
    with open(path, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) // 2)
    with pytest.raises(DataFileError, match=path):
        read_pruned([task], ranges)


def test_files_are_held_whole_exactly_when_the_ranges_cover_their_spans(settings, catalog, tmp_path):
    """`held_whole` (from the manifests' bounds) against the files' own trades: ranges on the
    files' first and last trade to the microsecond, pieces that cover a file only together,
    a gap of one trade, and random ranges. It answers whether the ranges cover each planned
    file's span, first to last trade, so it never says so of a file that holds a trade outside."""
    for index, (start, hours) in enumerate(((DAY, 9), (DAY + timedelta(hours=9), 15), (DAY + timedelta(days=1), 24))):
        trades = generate(GenerateSpec(start, start + timedelta(hours=hours), symbols=2, exchanges=1, trades_per_day=6_000, seed=index))
        pq.write_table(trades, tmp_path / f"part{index}.parquet")
        ingest_files(catalog, settings.namespace, [str(tmp_path / f"part{index}.parquet")], "us", utc(2024, 3, 7))
    table = load_trades(catalog, settings.namespace)
    stamps = {}  # each file's trade times, read from the file itself
    for task in table.scan().plan_files():
        column = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["timestamp"]).column("timestamp")
        stamps[task.file.file_path] = column.cast(pa.int64()).to_numpy()
    first, last = min(v.min() for v in stamps.values()), max(v.max() for v in stamps.values())
    inner = int(sorted(stamps[min(stamps, key=lambda path: stamps[path].min())])[100])  # a trade inside the first file
    at = lambda us: DAY + timedelta(microseconds=int(us) - micros(DAY))  # noqa: E731

    def covered(lo: int, hi: int, ranges) -> bool:
        """Every microsecond of [lo, hi] in some range: walk from lo along ranges that hold the cursor."""
        cursor = lo
        while cursor <= hi:
            holding = [micros(r.end) for r in ranges if micros(r.start) <= cursor < micros(r.end)]
            if not holding:
                return False
            cursor = max(holding)
        return True

    def trades_inside(values, ranges) -> bool:
        return bool((sum(((values >= micros(r.start)) & (values < micros(r.end)) for r in ranges), start=values < 0) > 0).all())

    cases = [
        [WindowRange(at(first), at(last + 1))],  # to the microsecond: held
        [WindowRange(at(first), at(last))],  # the last trade left out
        [WindowRange(at(first + 1), at(last + 1))],  # the first trade left out
        [WindowRange(at(first), DAY + timedelta(hours=5)), WindowRange(DAY + timedelta(hours=5), at(last + 1))],  # together
        [WindowRange(at(first), at(inner)), WindowRange(at(inner + 1), at(last + 1))],  # one trade left out
        [WindowRange(DAY, DAY + timedelta(days=2))],
        [WindowRange(DAY + timedelta(days=1), DAY + timedelta(days=2))],  # only the second day's file is planned
    ]
    generator = random.Random(5)
    for _ in range(40):
        ranges = []
        for _ in range(generator.randrange(1, 4)):
            start = DAY + timedelta(hours=generator.randrange(-12, 40, 3))
            ranges.append(WindowRange(start, start + timedelta(hours=generator.choice([1, 6, 12, 24, 48]))))
        cases.append(ranges)
    outcomes = []
    for ranges in cases:
        planned = [stamps[task.file.file_path] for task in plan_trade_files(table, ranges)]
        held = held_whole(table, plan_trade_files(table, ranges), ranges)
        assert held == all(covered(int(v.min()), int(v.max()), ranges) for v in planned), ranges
        assert not held or all(trades_inside(v, ranges) for v in planned), ranges
        outcomes.append(held)
    assert outcomes[:7] == [True, False, False, True, False, True, True]
    assert True in outcomes[7:] and False in outcomes[7:]  # the random cases saw both answers


_MINUTE_RANGES = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8)), max_size=6)


def _minutes(pairs) -> list[WindowRange]:
    return [WindowRange(DAY + timedelta(minutes=start), DAY + timedelta(minutes=start + length)) for start, length in pairs]


@hypothesis_settings(max_examples=200, deadline=None)
@given(outer=_MINUTE_RANGES, inner=_MINUTE_RANGES, shift=st.sampled_from([0, 1, -1]))
def test_ranges_cover_exactly_when_every_instant_of_the_inner_ranges_is_in_the_outer(outer, inner, shift):
    """What lets a reconciliation group that covers the read count without a condition
    (aggregate._counted_in): overlapping and adjacent outer ranges join, empty inner ranges
    are covered, and an end one microsecond past the outer ranges is not."""
    outer_ranges = _minutes(outer)
    inner_ranges = [WindowRange(r.start, max(r.start, r.end + timedelta(microseconds=shift))) for r in _minutes(inner)]

    def inside(us: int) -> bool:
        return any(micros(r.start) <= us < micros(r.end) for r in outer_ranges)

    # Coverage can only change at an outer range's edge: checking an inner range's own first
    # and last microsecond and every outer edge inside it checks every instant of it.
    edges = {us for r in outer_ranges for us in (micros(r.start), micros(r.end), micros(r.end) - 1)}
    want = all(
        all(inside(us) for us in {micros(r.start), micros(r.end) - 1} | {e for e in edges if micros(r.start) <= e < micros(r.end)})
        for r in inner_ranges if r.end > r.start
    )
    assert ranges_cover(outer_ranges, inner_ranges) == want


def test_files_planned_from_cached_manifests_are_the_files_pyiceberg_plans(settings, catalog, tmp_path):
    """plan_trade_files picks files from manifest entries read once (ohlcv/manifests.py): for
    random ranges, as of the current snapshot and of older ones (before a day was deleted), the
    same files as pyiceberg's own planning of the same ranges."""
    from pyiceberg.expressions import Or

    from ohlcv.store import balanced_or, range_filter

    for day in range(3):  # three ingests: three manifests, one file per day each
        trades = generate(GenerateSpec(DAY + timedelta(days=day), DAY + timedelta(days=day + 2), symbols=2, exchanges=1,
                                       trades_per_day=2_000, seed=day))
        path = tmp_path / f"days-{day}.parquet"
        pq.write_table(trades, path)
        ingest_files(catalog, settings.namespace, [str(path)], "us", utc(2024, 3, 9))
    table = load_trades(catalog, settings.namespace)
    before_delete = table.current_snapshot().snapshot_id
    table.delete(range_filter("timestamp", WindowRange(DAY + timedelta(days=1), DAY + timedelta(days=2))))
    table = load_trades(catalog, settings.namespace)
    generator = random.Random(5)
    for snapshot_id in (None, before_delete, table.history()[1].snapshot_id):
        for _ in range(20):
            ranges = []
            for _ in range(generator.randrange(1, 8)):
                start = DAY + timedelta(minutes=generator.randrange(-600, 5 * 24 * 60))
                ranges.append(WindowRange(start, start + timedelta(minutes=generator.choice([1, 10, 600, 3000]))))
            ours = {task.file.file_path for task in plan_trade_files(table, ranges, snapshot_id)}
            condition = balanced_or([range_filter("timestamp", rng) for rng in ranges], Or)
            theirs = {task.file.file_path for task in table.scan(row_filter=condition, snapshot_id=snapshot_id).plan_files()}
            assert ours == theirs, (snapshot_id, ranges)
