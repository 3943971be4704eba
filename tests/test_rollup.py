"""Roll-ups in Arrow (ohlcv/aggregate.rollup): coarser candles from finer ones equal the
oracle's candles of the same trades at the coarser width, field by field. No Spark needed."""

from __future__ import annotations

import math
from datetime import timedelta

import pyarrow as pa
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from oracle import EPOCH, compare, expected_candles
from ohlcv import timeframes
from ohlcv.aggregate import candle_arrow_schema, rollup

START = EPOCH + timedelta(days=19_800)  # 2024-03-18, a midnight
SPAN_US = 3 * 86_400_000_000  # trades over three days: every timeframe has several windows


def finer_candles(trades: list[dict], tf) -> pa.Table:
    """The oracle's candles of `tf`, as the Spark side hands them to `rollup` (with notional)."""
    rows = []
    for (exchange, symbol, start), fields in expected_candles(trades, tf.width).items():
        members = [t for t in trades if (t["exchange"], t["symbol"]) == (exchange, symbol)
                   and start <= t["timestamp"] < start + tf.width]
        rows.append({"symbol": symbol, "exchange": exchange, "window_start": start, **fields,
                     "notional": math.fsum(t["price"] * t["quantity"] for t in members)})
    schema = candle_arrow_schema().append(pa.field("notional", pa.float64()))
    return pa.Table.from_pylist(rows, schema=schema)


trade_rows = st.lists(
    st.fixed_dictionaries({
        "exchange": st.sampled_from(["binance", "kraken"]),
        "symbol": st.sampled_from(["BTC-USDT", "ETH-USDT"]),
        "offset_us": st.integers(0, SPAN_US - 1),
        "price": st.floats(0.01, 1e6, allow_nan=False, allow_infinity=False),
        "quantity": st.floats(1e-6, 1e3, allow_nan=False, allow_infinity=False),
    }),
    min_size=1, max_size=60,
)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=trade_rows, pair=st.sampled_from([("1m", "5m"), ("5m", "30m"), ("30m", "1h"), ("1h", "1d"), ("1m", "1d")]),
       shuffle=st.randoms(use_true_random=False))
def test_rolled_up_candles_equal_the_oracles_at_the_coarser_width(rows, pair, shuffle):
    # Distinct timestamps: open and close then do not depend on the id order (the Spark tests cover it).
    trades = [{"exchange": r["exchange"], "symbol": r["symbol"], "trade_id": str(i), "price": r["price"],
               "quantity": r["quantity"], "timestamp": START + timedelta(microseconds=r["offset_us"] + i),
               "ingested_at": START} for i, r in enumerate(rows)]
    finer, coarser = (timeframes.get(name) for name in pair)
    finer_rows = finer_candles(trades, finer)
    order = list(range(finer_rows.num_rows))
    shuffle.shuffle(order)  # Spark returns the finer candles in any order
    rolled = rollup(finer_rows.take(pa.array(order, pa.int64())), coarser)
    problems = compare(rolled.drop_columns(["notional"]).to_pylist(), expected_candles(trades, coarser.width))
    assert not problems, problems[:5]
    assert rolled.schema.field("window_start").type == pa.timestamp("us", tz="UTC")
    keys = [(r["exchange"], r["symbol"], r["window_start"]) for r in rolled.to_pylist()]
    assert keys == sorted(keys)  # in (series, window) order: the next roll-up needs no sort
