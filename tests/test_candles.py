"""Candles of all five timeframes, computed by RayDP Spark and committed to Iceberg, equal the
oracle's field by field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from support import (
    BOTH_CATALOGS, append_as_another_writer, assert_matches_oracle, backfill, crafted_trades, ingest_rows, run_chunks, stored, stored_trades, trade, utc,
)
from ohlcv import timeframes
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


@pytest.mark.parametrize("read_mode", ["native", "arrow", "in driver"])
def test_generated_trades_across_midnight_and_month_end_match_the_oracle(settings, catalog, spark, tmp_path, read_mode):
    """Spark reading the files itself or through pyiceberg's FileIO, and the driver's Arrow
    engine (these days are small enough for it) compute the same candles as the oracle."""
    start, end = utc(2024, 2, 28, 21), utc(2024, 3, 1, 3)  # Feb 29 of a leap year, two midnights
    rows = generate(GenerateSpec(start, end, symbols=2, exchanges=3, trades_per_day=12_000, seed=11)).to_pylist()
    ingest_rows(settings, catalog, rows, tmp_path, "generated", utc(2024, 3, 2))
    trades = stored_trades(catalog)
    delivered = {(r["exchange"], r["symbol"], r["trade_id"], r["price"], r["quantity"], r["timestamp"]) for r in rows}
    landed = {(r["exchange"], r["symbol"], r["trade_id"], r["price"], r["quantity"], r["timestamp"]) for r in trades}
    assert landed == delivered

    if read_mode == "in driver":
        outcomes = backfill(settings, utc(2024, 2, 28), utc(2024, 3, 2))
        assert {(o.aggregated.engine, o.aggregated.read_mode) for o in outcomes} == {("arrow", "pruned")}
    else:
        outcomes = backfill(settings.with_overrides(read_mode=read_mode, driver_max_trades=0), utc(2024, 2, 28), utc(2024, 3, 2))
        assert {(o.aggregated.engine, o.aggregated.read_mode) for o in outcomes} == {("spark", read_mode)}
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
    append_as_another_writer(settings, catalog, theirs, utc(2024, 2, 3))
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


def _tied(exchange: str, ids: list[str], ts) -> list[dict]:
    """Trades of one series at one instant, with prices that say which id opened and closed."""
    return [trade(exchange, "BTC-USDT", trade_id, 100.0 + i, 1.0, ts) for i, trade_id in enumerate(ids)]


def test_trades_at_one_instant_are_ranked_by_id_in_the_packed_and_the_exact_order(settings, catalog, spark, tmp_path):
    """Open and close at equal timestamps go by id. Plain numbers, and one text id per window,
    take the packed order (one number per trade), as do two text ids at different instants; an
    id it cannot rank (leading zeros, too large, a second text id at the same instant) sends the
    whole request to the exact order, and both agree with the oracle."""
    packed_day, exact_day, large_day, texts_day, three_day = (utc(2024, 3, day, 10, 0, 30) for day in (1, 2, 3, 4, 6))
    rows = [
        *_tied("binance", ["1000", "999", "1001", "0", "137438953470"], packed_day),  # 2**37 - 2 still fits a 1m key
        *_tied("kraken", ["8", "3"], packed_day + timedelta(seconds=1)),
        *_tied("bybit", ["12", "a-7", "11"], packed_day),  # one text id: after every number at its instant
        # Two text ids at different instants: ranked by time ("z-2" opens though "a-1" sorts first).
        trade("coinbase", "BTC-USDT", "z-2", 110.0, 1.0, packed_day),
        trade("coinbase", "BTC-USDT", "a-1", 120.0, 1.0, packed_day + timedelta(seconds=2)),
        *_tied("okx", ["7", "007", "10", "x1"], exact_day),  # "007" ranks before "7" only by its text
        *_tied("okx", ["137438953471", "5"], large_day),  # 2**37 - 1: the text ids' key, too large for a number
        *_tied("okx", ["b2", "a1", "3"], texts_day),  # two text ids at one instant: ranked as text
        # Three text ids: two of them at one instant, which the flag does not tell apart from three instants.
        trade("okx", "BTC-USDT", "c9", 90.0, 1.0, three_day - timedelta(seconds=10)),
        *_tied("okx", ["b8", "a7"], three_day),
    ]
    ingest_rows(settings, catalog, rows, tmp_path, "tied", utc(2024, 3, 7))
    settings = settings.with_overrides(driver_max_trades=0)  # Spark's orders (the driver's engine has only the exact one)
    orders = {}
    for day in (packed_day, exact_day, large_day, texts_day, three_day):
        start = day.replace(hour=0, minute=0, second=0)
        [outcome] = backfill(settings, start, start + timedelta(days=1))
        orders[day.day] = outcome.aggregated.candle_order
    assert orders == {1: "packed", 2: "exact", 3: "exact", 4: "exact", 6: "exact"}
    assert_matches_oracle(catalog, stored_trades(catalog))
    one_minute = {(r["exchange"], r["window_start"]): r for r in stored(catalog, timeframes.get("1m"))}
    binance = one_minute[("binance", utc(2024, 3, 1, 10, 0))]
    assert (binance["open_price"], binance["close_price"]) == (103.0, 104.0)  # id 0 opens, 2**37 - 2 closes
    bybit = one_minute[("bybit", utc(2024, 3, 1, 10, 0))]
    assert (bybit["open_price"], bybit["close_price"]) == (102.0, 101.0)  # "11" opens, "a-7" closes
    coinbase = one_minute[("coinbase", utc(2024, 3, 1, 10, 0))]
    assert (coinbase["open_price"], coinbase["close_price"], coinbase["trade_count"]) == (110.0, 120.0, 2)
    okx = one_minute[("okx", utc(2024, 3, 2, 10, 0))]
    assert (okx["open_price"], okx["close_price"]) == (101.0, 103.0)  # "007" opens, "x1" closes
    # The driver's engine (ohlcv/arrow_candles.py) ranks the same trades the same way: it
    # recomputes every day and changes no candle.
    recomputed = backfill(settings.with_overrides(driver_max_trades=500_000), packed_day.replace(hour=0, minute=0, second=0),
                          three_day.replace(hour=0, minute=0, second=0) + timedelta(days=1))
    assert {o.aggregated.engine for o in recomputed} == {"arrow"}
    assert sum(c.updated + c.inserted + c.deleted for o in recomputed for c in o.commits) == 0
    assert_matches_oracle(catalog, stored_trades(catalog))


def _random_windows(generator, day, rankable: bool) -> list[dict]:
    """Three series' 1m windows of 1 to 5 trades at a few instants each, with ids of every kind.
    `rankable`: only what the packed order ranks (plain numbers; text ids at most two a window,
    at different instants)."""
    rows = []
    for series, symbol in enumerate(["BTC-USDT", "ETH-USDT", "SOL-USDT"]):
        for minute in generator.sample(range(1440), 120):
            start = day + timedelta(minutes=minute)
            instants = [start + timedelta(seconds=generator.choice([0, 0, 7, 59]), microseconds=generator.choice([0, 1]))
                        for _ in range(generator.randint(1, 5))]
            text_at = generator.sample(range(len(instants)), min(len(instants), generator.randint(0, 2)))
            if len(text_at) == 2 and instants[text_at[0]] == instants[text_at[1]]:
                text_at = text_at[:1]
            for index, instant in enumerate(instants):
                if not rankable:
                    trade_id = generator.choice(["7", "007", "10", "x1", "x10", "a", "0", "00", str(2**40), "137438953471"])
                elif index in text_at:
                    trade_id = generator.choice(["b-", "a-", "z"]) + str(index)
                else:
                    trade_id = str(generator.choice([0, 9, 10, 99, 100, 137438953460]) + index)
                rows.append(trade(f"ex{series}", symbol, trade_id, 100.0 + generator.random(), generator.choice([0.5, 1.0, 2.0]), instant))
    unique = {}
    for row in rows:  # one version a key: which version wins is another test's subject
        unique.setdefault((row["exchange"], row["symbol"], row["trade_id"]), row)
    return list(unique.values())


def test_random_ids_and_instants_take_the_packed_order_exactly_where_it_ranks_them(settings, catalog, spark, tmp_path):
    """Seeded random windows: a day of ids the packed order ranks is computed in it, a day of
    any ids in whichever order its windows need; both equal the oracle in every field."""
    import random

    generator = random.Random(11)
    rankable_day, any_day = utc(2024, 4, 1), utc(2024, 4, 2)
    rows = _random_windows(generator, rankable_day, True) + _random_windows(generator, any_day, False)
    ingest_rows(settings, catalog, rows, tmp_path, "random", utc(2024, 4, 3))
    settings = settings.with_overrides(driver_max_trades=0)  # Spark's orders
    [rankable] = backfill(settings, rankable_day, rankable_day + timedelta(days=1))
    [anything] = backfill(settings, any_day, any_day + timedelta(days=1))
    assert (rankable.aggregated.candle_order, anything.aggregated.candle_order) == ("packed", "exact")
    assert_matches_oracle(catalog, stored_trades(catalog))


def test_a_daily_request_alone_falls_back_when_ids_outgrow_its_key(settings, catalog, spark, tmp_path):
    """A 1d key leaves 26 bits for the id: larger ids take the exact order, still equal to the oracle."""
    ts = utc(2024, 3, 5, 12)
    ingest_rows(settings, catalog, _tied("binance", ["67108864", "67108863", "1"], ts), tmp_path, "daily", utc(2024, 3, 6))
    [outcome] = backfill(settings.with_overrides(driver_max_trades=0), utc(2024, 3, 5), utc(2024, 3, 6), tfs=[timeframes.get("1d")])
    assert (outcome.aggregated.engine, outcome.aggregated.candle_order) == ("spark", "exact")
    assert_matches_oracle(catalog, stored_trades(catalog), tfs=[timeframes.get("1d")])


def test_reconciliation_counts_equal_the_trades_in_each_group_of_ranges(settings, catalog, spark, tmp_path):
    """The counts the candles' aggregation carries (ohlcv/aggregate.compute_candles): per series,
    the trades read whose timestamp lies in a group's ranges, for a whole read, a few ranges
    inside it and many ranges (tested as a set of slots), ranges that are not whole slots
    (compared one by one), and a tick-sized read of two ranges, against a plain count."""
    from collections import Counter

    from workflows.runtime import call

    day = utc(2024, 3, 1)
    rows = generate(GenerateSpec(day, day + timedelta(days=1), symbols=2, exchanges=2, trades_per_day=20_000, seed=5)).to_pylist()
    ingest_rows(settings, catalog, rows, tmp_path, "day", utc(2024, 3, 2))
    groups = (
        ((day, day + timedelta(days=1)),),
        ((day + timedelta(hours=1), day + timedelta(hours=2)), (day + timedelta(hours=5), day + timedelta(hours=5, minutes=30))),
        tuple((day + timedelta(minutes=37 * i), day + timedelta(minutes=37 * i + 5)) for i in range(30)),
        ((day + timedelta(hours=3, seconds=30), day + timedelta(hours=4, seconds=30)),),  # not whole slots: compared
    )
    # Spark reads the day's files itself ("native"; a day this small would be handed over).
    native = settings.with_overrides(read_mode="native", driver_max_trades=0)
    result = call(spark.aggregate.remote(native, ["1m", "1h"], [(day, day + timedelta(days=1))], None, groups))
    trades = stored_trades(catalog)

    def assert_counts(result, groups, reads):
        for group in groups:
            want = Counter((t["exchange"], t["symbol"]) for t in trades
                           if any(lo <= t["timestamp"] < hi for lo, hi in group) and any(lo <= t["timestamp"] < hi for lo, hi in reads))
            got = {(r["exchange"], r["symbol"]): r["trades"] for r in result["source_counts"][group].to_pylist()}
            assert got == dict(want), group[:2]

    assert result["read_mode"] == "native"
    assert_counts(result, groups, [(day, day + timedelta(days=1))])
    # Part of the day, read natively: its file holds trades outside, so Spark keeps the condition
    # (a read the ranges hold whole has none: ohlcv.store.held_whole).
    part = [(day + timedelta(hours=1), day + timedelta(hours=2))]
    partial = call(spark.aggregate.remote(native, ["1m"], part, None, groups))
    assert partial["read_mode"] == "native"
    assert_counts(partial, groups, part)
    # A tick-sized read of two ranges, handed over to Spark as exactly their trades in one task:
    # counted only where read.
    reads = [(day + timedelta(hours=1), day + timedelta(hours=2)), (day + timedelta(hours=9), day + timedelta(hours=9, minutes=10))]
    small = call(spark.aggregate.remote(settings.with_overrides(driver_max_trades=0), ["1m"], reads, None, groups))
    assert (small["engine"], small["read_mode"]) == ("spark", "pruned")
    assert_counts(small, groups, reads)
    # The same read computed in the driver (ohlcv/arrow_candles.py), and a whole day there.
    in_driver = call(spark.aggregate.remote(settings, ["1m"], reads, None, groups))
    assert (in_driver["engine"], in_driver["read_mode"]) == ("arrow", "pruned")
    assert_counts(in_driver, groups, reads)
    whole_day = call(spark.aggregate.remote(settings, ["1m", "1h"], [(day, day + timedelta(days=1))], None, groups))
    assert whole_day["engine"] == "arrow"
    assert_counts(whole_day, groups, [(day, day + timedelta(days=1))])
    # The whole day's counts add up to every stored trade, as the 1m candles' trade counts do.
    assert sum(result["source_counts"][groups[0]].column("trades").to_pylist()) == len(trades)
    assert sum(result["candles"]["1m"].column("trade_count").to_pylist()) == len(trades)
