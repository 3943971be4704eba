"""The driver's Arrow engine (ohlcv/arrow_candles.py) against the plain-Python oracle, field by
field: random trades with repeated versions, ids of every kind and shared instants."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
from hypothesis import given, settings as hypothesis_settings, strategies as st

from ohlcv import arrow_candles, timeframes
from ohlcv.aggregate import compute_candles_in_arrow
from ohlcv.arrow_candles import first_versions
from ohlcv.catalog import load_trades
from ohlcv.store import ARROW_TRADES
from ohlcv.windows import WindowRange
from tests.oracle import compare, expected_candles, unique_trades
from tests.support import append_as_another_writer, crafted_trades, ingest_rows, utc

BASE = utc(2024, 3, 1, 23, 50)
IDS = ["0", "00", "7", "007", "10", "9", "137438953471", str(2**70), "a", "a-1", "b", "x10", "x9", "", "٣", "12 "]
SERIES = [("binance", "BTC-USDT"), ("binance", "ETH-USDT"), ("kraken", "BTC-USDT")]

trade_rows = st.lists(
    st.fixed_dictionaries({
        "series": st.sampled_from(SERIES),
        "trade_id": st.one_of(st.sampled_from(IDS), st.integers(0, 10**20).map(str)),
        # A few instants around two day boundaries: ties at one instant, windows of every width.
        "offset_us": st.one_of(st.sampled_from([0, 1, 59_999_999, 60_000_000, 600_000_000, 3_600_000_000]),
                               st.integers(-86_400_000_000, 2 * 86_400_000_000)),
        "price": st.sampled_from([1.0, 2.5, 100.0, 100.25, 3.0e4]),
        "quantity": st.sampled_from([0.001, 0.5, 1.0, 7.0]),
        "ingested_hours": st.integers(0, 3),
    }),
    max_size=60,
)


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ARROW_TRADES)


def _as_trades(drawn: list[dict]) -> list[dict]:
    return [{
        "exchange": row["series"][0], "symbol": row["series"][1], "trade_id": row["trade_id"], "price": row["price"],
        "quantity": row["quantity"], "timestamp": BASE + timedelta(microseconds=row["offset_us"]),
        "ingested_at": BASE + timedelta(days=3, hours=row["ingested_hours"]),
    } for row in drawn]


@hypothesis_settings(max_examples=150, deadline=None)
@given(trade_rows)
def test_arrow_candles_of_every_timeframe_equal_the_oracle(drawn):
    trades = _as_trades(drawn)
    tfs = [timeframes.get(name) for name in ("1m", "5m", "1h", "1d")]
    computed = compute_candles_in_arrow(first_versions(_table(trades)), tfs)
    assert computed.order == "exact"
    for tf in tfs:
        rows = computed.candles[tf.name].to_pylist()
        assert compare(rows, expected_candles(trades, tf.width)) == [], tf.name


@hypothesis_settings(max_examples=100, deadline=None)
@given(trade_rows)
def test_first_versions_keep_the_first_ingested_version_of_each_trade(drawn):
    trades = _as_trades(drawn)
    kept = first_versions(_table(trades))
    want = [{name: t[name] for name in kept.column_names} for t in unique_trades(trades)]
    key = lambda t: (t["exchange"], t["symbol"], t["trade_id"])  # noqa: E731
    assert sorted(kept.to_pylist(), key=key) == sorted(want, key=key)


@hypothesis_settings(max_examples=60, deadline=None)
@given(trade_rows, st.integers(0, 47), st.integers(1, 48))
def test_counts_per_series_are_the_trades_whose_own_timestamp_lies_in_each_group(drawn, first_slot, slots):
    """Two groups of ranges: the count of each is per series, by each trade's own timestamp."""
    trades = unique_trades(_as_trades(drawn))
    half_hour = timedelta(minutes=30)
    start = BASE - timedelta(days=1) + first_slot * half_hour
    # Every trade lies in `read`; the last group covers it, so it counts every trade untested.
    read = [WindowRange(BASE - timedelta(days=1), BASE + timedelta(days=2, minutes=1))]
    groups = ([WindowRange(start, start + slots * half_hour)],
              [WindowRange(BASE, BASE + timedelta(minutes=5)), WindowRange(BASE + timedelta(hours=1), BASE + timedelta(days=1))],
              [WindowRange(BASE - timedelta(days=2), BASE + timedelta(days=3))])
    computed = compute_candles_in_arrow(first_versions(_table(trades)), [timeframes.get("1m"), timeframes.get("1h")],
                                        counted=groups, read=read)
    for ranges, counts in zip(groups, computed.counts):
        want: dict[tuple, int] = {}
        for t in trades:
            if any(rng.start <= t["timestamp"] < rng.end for rng in ranges):
                want[(t["exchange"], t["symbol"])] = want.get((t["exchange"], t["symbol"]), 0) + 1
        assert {(r["exchange"], r["symbol"]): r["trades"] for r in counts.to_pylist()} == want


def test_the_driver_leaves_many_trades_that_need_deduplicating_to_spark(settings, catalog, tmp_path, monkeypatch):
    """A day ingest vouched for is read here up to the driver's bound; a day another writer
    appended to (two versions of a trade may be stored) only up to DEDUPLICATED_MAX_ROWS, then
    it is Spark's (None). What is read here holds each trade once, the first version."""
    rows = crafted_trades()
    ingest_rows(settings, catalog, rows, tmp_path, "ours", utc(2024, 2, 2))
    theirs = [{**r, "price": r["price"] + 1.0} for r in rows if r["timestamp"] >= utc(2024, 2, 1)]
    append_as_another_writer(settings, catalog, theirs, utc(2024, 2, 3))
    trades = load_trades(catalog, settings.namespace)
    vouched, appended = WindowRange(utc(2024, 1, 31), utc(2024, 2, 1)), WindowRange(utc(2024, 2, 1), utc(2024, 2, 2))
    delivered = [{**r, "ingested_at": utc(2024, 2, 2)} for r in rows] + [{**r, "ingested_at": utc(2024, 2, 3)} for r in theirs]

    def expected(day: WindowRange) -> list[tuple]:
        return sorted((t["exchange"], t["symbol"], t["trade_id"], t["price"]) for t in unique_trades(delivered)
                      if day.start <= t["timestamp"] < day.end)

    def got(read: pa.Table) -> list[tuple]:
        return sorted(zip(*(read.column(name).to_pylist() for name in ("exchange", "symbol", "trade_id", "price"))))

    monkeypatch.setattr(arrow_candles, "DEDUPLICATED_MAX_ROWS", 2)
    assert arrow_candles.unique_trades(trades, [appended], 1_000) is None
    read, plan = arrow_candles.unique_trades(trades, [vouched], 1_000)
    assert not plan.deduplicated and got(read) == expected(vouched)
    assert arrow_candles.unique_trades(trades, [vouched], 2) is None, "the driver's own bound still holds"
    monkeypatch.setattr(arrow_candles, "DEDUPLICATED_MAX_ROWS", 1_000)
    read, plan = arrow_candles.unique_trades(trades, [appended], 1_000)
    assert plan.deduplicated and got(read) == expected(appended)
