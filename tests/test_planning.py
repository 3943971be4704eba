"""Pure planning: timeframes, window ranges and backfill chunks (no I/O, no clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from support import utc
from ohlcv import timeframes
from ohlcv.errors import InputError
from ohlcv.windows import WindowRange, backfill_range, ceil, floor, plan_backfill, split_by_day, tick_range

ONE_MINUTE, FIVE, THIRTY, HOUR, DAY = (timeframes.get(n) for n in ("1m", "5m", "30m", "1h", "1d"))


def test_the_timeframe_table_holds_the_original_platforms_figures():
    rows = {tf.name: (tf.cron, tf.lookback, tf.retention.days, tf.partition, tf.table) for tf in timeframes.TIMEFRAMES.values()}
    assert rows == {
        "1m": ("*/5 * * * *", timedelta(minutes=10), 90, "day", "gold_ohlcv_1m"),
        "5m": ("5,20,35,50 * * * *", timedelta(minutes=20), 180, "day", "gold_ohlcv_5m"),
        "30m": ("10,40 * * * *", timedelta(hours=1), 365, "day", "gold_ohlcv_30m"),
        "1h": ("15 * * * *", timedelta(hours=2), 1095, "day", "gold_ohlcv_1h"),
        "1d": ("5 0 * * *", timedelta(days=2), 1825, "month", "gold_ohlcv_1d"),
    }


def test_resolving_timeframe_names():
    assert [tf.name for tf in timeframes.resolve("all")] == ["1m", "5m", "30m", "1h", "1d"]
    assert [tf.name for tf in timeframes.resolve("1h,1m")] == ["1m", "1h"]
    with pytest.raises(InputError, match="unknown timeframe '2m': choose one of 1m, 5m, 30m, 1h, 1d, or all"):
        timeframes.resolve("2m")


def test_rollup_parents_divide_evenly():
    assert timeframes.rollup_parent(HOUR, [ONE_MINUTE, FIVE, THIRTY]) == THIRTY
    assert timeframes.rollup_parent(DAY, [ONE_MINUTE, HOUR]) == HOUR
    assert timeframes.rollup_parent(ONE_MINUTE, [FIVE]) is None


def test_floor_and_ceil_in_utc():
    t = datetime(2024, 5, 1, 12, 7, 30, tzinfo=timezone(timedelta(hours=2)))  # 10:07:30 UTC
    assert floor(t, FIVE) == utc(2024, 5, 1, 10, 5)
    assert ceil(t, FIVE) == utc(2024, 5, 1, 10, 10)
    assert ceil(utc(2024, 5, 1, 10, 5), FIVE) == utc(2024, 5, 1, 10, 5)
    assert floor(datetime(2024, 5, 1, 10, 7), HOUR) == utc(2024, 5, 1, 10)  # naive means UTC
    assert floor(utc(2024, 5, 1, 23, 59, 59, 999999), DAY) == utc(2024, 5, 1)


@pytest.mark.parametrize(
    ("tf", "as_of", "expected"),
    [
        (ONE_MINUTE, utc(2024, 5, 1, 10, 5), (utc(2024, 5, 1, 9, 55), utc(2024, 5, 1, 10, 5))),
        (FIVE, utc(2024, 5, 1, 10, 20, 40), (utc(2024, 5, 1, 10), utc(2024, 5, 1, 10, 20))),
        (THIRTY, utc(2024, 5, 1, 10, 40), (utc(2024, 5, 1, 9, 30), utc(2024, 5, 1, 10, 30))),
        (HOUR, utc(2024, 5, 1, 0, 15), (utc(2024, 4, 30, 22), utc(2024, 5, 1))),
        (DAY, utc(2024, 5, 1, 0, 5), (utc(2024, 4, 29), utc(2024, 5, 1))),
    ],
)
def test_a_tick_covers_the_closed_windows_of_its_lookback(tf, as_of, expected):
    assert tick_range(tf, as_of) == WindowRange(*expected)


def test_backfill_range_takes_windows_whose_start_is_inside_and_closed():
    assert backfill_range(HOUR, utc(2024, 5, 1, 10, 7), utc(2024, 5, 1, 13)) == WindowRange(utc(2024, 5, 1, 11), utc(2024, 5, 1, 13))
    clipped = backfill_range(FIVE, utc(2024, 5, 1), utc(2024, 5, 2), closed_before=utc(2024, 5, 1, 12, 7))
    assert clipped == WindowRange(utc(2024, 5, 1), utc(2024, 5, 1, 12, 5))
    with pytest.raises(InputError, match="before --start"):
        backfill_range(HOUR, utc(2024, 5, 2), utc(2024, 5, 1))


def test_split_by_day_cuts_at_utc_midnights():
    days = split_by_day(WindowRange(utc(2024, 1, 30, 6), utc(2024, 2, 1, 3)))
    assert days == [
        WindowRange(utc(2024, 1, 30, 6), utc(2024, 1, 31)),
        WindowRange(utc(2024, 1, 31), utc(2024, 2, 1)),
        WindowRange(utc(2024, 2, 1), utc(2024, 2, 1, 3)),
    ]
    assert split_by_day(WindowRange(utc(2024, 2, 1), utc(2024, 2, 1))) == []


def test_backfill_chunks_read_each_day_once_for_every_timeframe():
    chunks = plan_backfill(timeframes.resolve("all"), utc(2024, 1, 31, 10, 7), utc(2024, 2, 2))
    assert [c.read for c in chunks] == [
        WindowRange(utc(2024, 1, 31, 10, 7), utc(2024, 2, 1)),
        WindowRange(utc(2024, 2, 1), utc(2024, 2, 2)),
    ]
    first = dict((tf.name, rng) for tf, rng in chunks[0].targets)
    assert first["1m"].start == utc(2024, 1, 31, 10, 7) and first["1h"].start == utc(2024, 1, 31, 11)
    assert "1d" not in first  # the Jan 31 window starts before 10:07: not in the backfill
    assert dict((tf.name, rng) for tf, rng in chunks[1].targets)["1d"] == WindowRange(utc(2024, 2, 1), utc(2024, 2, 2))
    for chunk in chunks:  # every target lies inside the read range and is aligned to its timeframe
        for tf, rng in chunk.targets:
            assert chunk.read.start <= rng.start and rng.end <= chunk.read.end
            assert floor(rng.start, tf) == rng.start and floor(rng.end, tf) == rng.end


@given(
    first_day=st.integers(0, 40), start_minute=st.integers(0, 1439), days=st.integers(1, 12),
    counts=st.lists(st.integers(0, 900), min_size=14, max_size=14), budget=st.integers(1, 2500),
)
def test_backfill_days_share_a_chunk_while_their_trades_fit_the_budget(first_day, start_minute, days, counts, budget):
    start = utc(2024, 1, 20) + timedelta(days=first_day, minutes=start_minute)
    end = start + timedelta(days=days)
    tfs = timeframes.resolve("all")
    per_day = {(utc(2024, 1, 20) + timedelta(days=first_day + i)).date(): n for i, n in enumerate(counts)}
    chunks = plan_backfill(tfs, start, end, trades_per_day=per_day, chunk_trades=budget)
    by_day = plan_backfill(tfs, start, end)
    # Same windows as one chunk per day: each timeframe's targets tile its backfill range.
    for tf in tfs:
        targets = [rng for chunk in chunks for target, rng in chunk.targets if target.name == tf.name]
        expected = backfill_range(tf, start, end)
        if expected.empty:
            assert not targets
            continue
        assert targets[0].start == expected.start and targets[-1].end == expected.end
        assert all(a.end == b.start for a, b in zip(targets, targets[1:]))
    for chunk in chunks:
        for tf, rng in chunk.targets:
            assert chunk.read.start <= rng.start and rng.end <= chunk.read.end and floor(rng.start, tf) == rng.start
    # Whole days, in order; a chunk of several days fits the budget, and the next day would not.
    assert [c.read.start for c in by_day if c.read.start in {k.read.start for k in chunks}] == [c.read.start for c in chunks]
    trades = [sum(per_day.get(d.read.start.date(), 0) for d in by_day if chunk.read.start <= d.read.start < chunk.read.end)
              for chunk in chunks]
    sizes = [sum(1 for d in by_day if chunk.read.start <= d.read.start < chunk.read.end) for chunk in chunks]
    for index, (total, size) in enumerate(zip(trades, sizes)):
        assert size == 1 or total <= budget
        if index + 1 < len(chunks):
            assert total + per_day.get(chunks[index + 1].read.start.date(), 0) > budget
