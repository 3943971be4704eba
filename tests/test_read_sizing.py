"""The read plan's estimate of trades in a range (from manifests only), and the shuffle width
it sets: a day's trades spread over many tasks, a tick's over one per core."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.parquet as pq

from support import utc
from ohlcv import aggregate
from ohlcv.catalog import load_trades
from ohlcv.generate import GenerateSpec, generate
from ohlcv.ingest import ingest_files
from ohlcv.store import plan_trade_files, rows_in_range
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


def test_a_day_gets_eight_tasks_per_core_and_a_tick_one():
    assert aggregate.shuffle_partitions(2_400_000, slots=2) == 16
    assert aggregate.shuffle_partitions(24_000_000, slots=2) == 16
    assert aggregate.shuffle_partitions(17_000, slots=2) == 2  # ten minutes of a 2.4M day
    assert aggregate.shuffle_partitions(0, slots=2) == 2
    assert aggregate.shuffle_partitions(650_000, slots=2) == 7
    assert aggregate.shuffle_partitions(650_000, slots=8) == 8
