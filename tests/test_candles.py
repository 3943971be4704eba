"""Candles of all five timeframes, computed by RayDP Spark and committed to Iceberg, equal the
oracle's field by field."""

from __future__ import annotations

from datetime import timedelta

import pytest

import pyarrow as pa

from support import (
    BOTH_CATALOGS, assert_matches_oracle, backfill, crafted_trades, ingest_rows, run_chunks, stored, stored_trades, trade, trades_table, utc,
)
from ohlcv import schema as s, timeframes
from ohlcv.catalog import load_trades
from ohlcv.generate import GenerateSpec, generate
from ohlcv.windows import tick_chunks

pytestmark = pytest.mark.slow

@BOTH_CATALOGS
def test_crafted_trades_match_the_oracle_in_all_five_tables(settings, catalog, spark, tmp_path):
    ingest_rows(settings, catalog, crafted_trades(), tmp_path, "crafted", utc(2024, 2, 2))
    backfill(settings, utc(2024, 1, 31), utc(2024, 2, 2))
    trades = stored_trades(catalog)
    assert_matches_oracle(catalog, trades)
    one_minute = {(r["exchange"], r["symbol"], r["window_start"]): r for r in stored(catalog, timeframes.get("1m"))}
    # The rules the crafted rows exist for, spelled out once more:
    btc = one_minute[("binance", "BTC-USDT", utc(2024, 1, 31, 23, 50))]
    assert (btc["open_price"], btc["close_price"], btc["trade_count"]) == (100.0, 99.5, 3)
    assert one_minute[("kraken", "BTC-USDT", utc(2024, 1, 31, 23, 50))]["open_price"] == 51.0
    assert one_minute[("kraken", "ETH-USDT", utc(2024, 1, 31, 23, 50))]["open_price"] == 11.0
    assert one_minute[("okx", "ETH-USDT", utc(2024, 1, 31, 23, 50))]["open_price"] == 21.0
    assert one_minute[("coinbase", "ETH-USDT", utc(2024, 2, 1, 5, 0))]["trade_count"] == 1
    assert not [k for k in one_minute if utc(2024, 2, 1, 0, 1) <= k[2] < utc(2024, 2, 1, 2, 17)]
    daily = {(r["exchange"], r["symbol"], r["window_start"]) for r in stored(catalog, timeframes.get("1d"))}
    assert ("binance", "BTC-USDT", utc(2024, 1, 31)) in daily and ("binance", "BTC-USDT", utc(2024, 2, 1)) in daily


@pytest.mark.parametrize("read_mode", ["native", "arrow"])
def test_generated_trades_across_midnight_and_month_end_match_the_oracle(settings, catalog, spark, tmp_path, read_mode):
    start, end = utc(2024, 2, 28, 21), utc(2024, 3, 1, 3)  # Feb 29 of a leap year, two midnights
    rows = generate(GenerateSpec(start, end, symbols=2, exchanges=3, trades_per_day=12_000, seed=11)).to_pylist()
    ingest_rows(settings, catalog, rows, tmp_path, "generated", utc(2024, 3, 2))
    trades = stored_trades(catalog)
    delivered = {(r["exchange"], r["symbol"], r["trade_id"], r["price"], r["quantity"], r["timestamp"]) for r in rows}
    landed = {(r["exchange"], r["symbol"], r["trade_id"], r["price"], r["quantity"], r["timestamp"]) for r in trades}
    assert landed == delivered

    outcomes = backfill(settings.with_overrides(read_mode=read_mode), utc(2024, 2, 28), utc(2024, 3, 2))
    assert {o.aggregated.read_mode for o in outcomes} == {read_mode}
    assert_matches_oracle(catalog, trades)


@BOTH_CATALOGS
def test_file_ingested_twice_counts_each_trade_once(settings, catalog, spark, tmp_path):
    rows = crafted_trades()
    ingest_rows(settings, catalog, rows, tmp_path, "first", utc(2024, 2, 2))
    again = ingest_rows(settings, catalog, rows, tmp_path, "again", utc(2024, 2, 3))
    assert (again.ingested, again.duplicates) == (0, len(rows)), "every row of the second delivery is a later version"
    outcomes = backfill(settings, utc(2024, 1, 31), utc(2024, 2, 2))
    assert not any(o.aggregated.deduplicated for o in outcomes), "ingest vouched for every day: no deduplication on read"
    delivered = [{**r, "ingested_at": utc(2024, 2, 2)} for r in rows] + [{**r, "ingested_at": utc(2024, 2, 3)} for r in rows]
    assert_matches_oracle(catalog, delivered)


def test_trades_another_writer_appended_are_deduplicated_on_read_on_their_days_only(settings, catalog, spark, tmp_path):
    """A writer other than `ohlcv ingest` records no guarantee: the days its files span are
    deduplicated when read, the other days are not, and every candle equals the oracle."""
    rows = crafted_trades()
    ingest_rows(settings, catalog, rows, tmp_path, "ours", utc(2024, 2, 2))
    theirs = [{**r, "price": r["price"] + 1.0} for r in rows if r["timestamp"] >= utc(2024, 2, 1)]
    table = trades_table(theirs).drop(["side"]).append_column("side", pa.nulls(len(theirs), pa.string()))
    table = table.append_column("ingested_at", pa.array([utc(2024, 2, 3)] * len(theirs), pa.timestamp("us", tz="UTC")))
    load_trades(catalog, settings.namespace).append(table.select(s.TRADES_SCHEMA.column_names).cast(s.arrow_schema(s.TRADES_SCHEMA)))
    outcomes = backfill(settings, utc(2024, 1, 31), utc(2024, 2, 2))
    assert {o.chunk.read.start.day: o.aggregated.deduplicated for o in outcomes} == {31: False, 1: True}
    delivered = [{**r, "ingested_at": utc(2024, 2, 2)} for r in rows] + [{**r, "ingested_at": utc(2024, 2, 3)} for r in theirs]
    assert_matches_oracle(catalog, delivered)


def test_a_tick_recomputes_exactly_its_lookback(settings, catalog, spark, tmp_path):
    base = utc(2024, 5, 1, 12)
    rows = [trade("binance", "BTC-USDT", str(i), 100.0 + i, 1.0, base + timedelta(minutes=i)) for i in range(-30, 30)]
    ingest_rows(settings, catalog, rows, tmp_path, "ticks", base)
    as_of = base + timedelta(minutes=3, seconds=12)  # 1m lookback 10 min: [11:53, 12:03)
    run_chunks(settings, tick_chunks([timeframes.get("1m")], as_of), lambda: as_of)
    starts = sorted(r["window_start"] for r in stored(catalog, timeframes.get("1m")))
    assert starts == [utc(2024, 5, 1, 11, 53) + timedelta(minutes=i) for i in range(10)]
    assert_matches_oracle(catalog, stored_trades(catalog), [timeframes.get("1m")], utc(2024, 5, 1, 11, 53), utc(2024, 5, 1, 12, 3))


def test_backfill_leaves_windows_that_are_still_open(settings, catalog, spark, tmp_path):
    now = utc(2024, 5, 1, 12, 7, 30)
    rows = [trade("okx", "SOL-USDT", str(i), 150.0, 1.0, utc(2024, 5, 1, 12) + timedelta(minutes=i)) for i in range(8)]
    ingest_rows(settings, catalog, rows, tmp_path, "open", now)
    backfill(settings, utc(2024, 5, 1), utc(2024, 5, 2), [timeframes.get("1m"), timeframes.get("5m")], now=now)
    assert max(r["window_start"] for r in stored(catalog, timeframes.get("1m"))) == utc(2024, 5, 1, 12, 6)
    assert [r["window_start"] for r in stored(catalog, timeframes.get("5m"))] == [utc(2024, 5, 1, 12)]
