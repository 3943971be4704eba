"""Settings merge (pure), the created_at/updated_at merge of a commit (pure), and the generator."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pytest

from support import utc
from ohlcv.aggregate import candle_arrow_schema
from ohlcv.errors import ConfigError, InputError
from ohlcv.generate import GenerateSpec, generate
from ohlcv.settings import Settings, from_environment, load_settings, mask_password
from ohlcv.schema import CANDLE_SCHEMA, arrow_schema
from ohlcv.store import merge_candles


def test_defaults_then_file_then_environment(tmp_path):
    assert load_settings({}) == Settings()
    merged = load_settings({"OHLCV_NAMESPACE": "from_env"}, {"namespace": "from_file", "warehouse": "/data/wh"})
    assert (merged.namespace, merged.warehouse) == ("from_env", "/data/wh")
    assert merged.resolved_catalog_uri == "sqlite:////data/wh/catalog.db"
    config = tmp_path / "ohlcv.toml"
    config.write_text('[ohlcv]\nspark_executors = 3\nread_mode = "arrow"\n')
    from_file = from_environment({"OHLCV_CONFIG": str(config), "RAY_ADDRESS": "ray://head:10001"})
    assert (from_file.spark_executors, from_file.read_mode, from_file.ray_address) == (3, "arrow", "ray://head:10001")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OHLCV_NAMESPACE": "market-data; drop"}, "OHLCV_NAMESPACE"),
        ({"OHLCV_SPARK_EXECUTORS": "two"}, "whole number"),
        ({"OHLCV_READ_MODE": "fast"}, "auto, arrow or native"),
        ({"OHLCV_SPARK_EXECUTOR_MEMORY": "lots"}, "512m or 2g"),
        ({"OHLCV_WAREHOUSE": "s3://bucket/wh"}, "set OHLCV_CATALOG_URI"),
    ],
)
def test_bad_settings_are_named(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_passwords_are_masked():
    assert mask_password("postgresql+psycopg://ohlcv:s3cret@db:5432/iceberg") == "postgresql+psycopg://ohlcv:***@db:5432/iceberg"
    assert mask_password("sqlite:////tmp/c.db") == "sqlite:////tmp/c.db"


def candle(exchange, start, open_=1.0, volume=2.0, vwap=1.5, count=3):
    return {
        "symbol": "BTC-USDT", "exchange": exchange, "window_start": start, "window_end": start + timedelta(minutes=1),
        "window_date": date(start.year, start.month, start.day), "open_price": open_, "high_price": 2.0,
        "low_price": 0.5, "close_price": 1.0, "volume": volume, "trade_count": count, "vwap": vwap,
    }


def test_merge_keeps_unchanged_rows_and_stamps_changed_ones():
    t0, t1, t2 = utc(2024, 5, 1, 10), utc(2024, 5, 1, 10, 1), utc(2024, 5, 1, 10, 2)
    first, second = utc(2030, 1, 1), utc(2030, 1, 2)
    fresh = pa.Table.from_pylist([candle("a", t0), candle("a", t1), candle("b", t0)], schema=candle_arrow_schema())
    stored, counts = merge_candles(arrow_schema(CANDLE_SCHEMA).empty_table(), fresh, first)
    assert counts == {"inserted": 3, "updated": 0, "unchanged": 0, "deleted": 0}

    again = pa.Table.from_pylist(
        [
            candle("a", t0, volume=2.0 * (1 + 1e-15)),  # summation-order noise: unchanged
            candle("a", t1, open_=1.25),  # a real change
            candle("a", t2),  # new
        ],  # ("b", t0) is gone
        schema=candle_arrow_schema(),
    )
    merged, counts = merge_candles(stored, again, second)
    assert counts == {"inserted": 1, "updated": 1, "unchanged": 1, "deleted": 1}
    rows = {(r["exchange"], r["window_start"]): r for r in merged.to_pylist()}
    assert rows[("a", t0)] == stored.to_pylist()[0]  # verbatim, volume's old bits included
    assert (rows[("a", t1)]["created_at"], rows[("a", t1)]["updated_at"], rows[("a", t1)]["open_price"]) == (first, second, 1.25)
    assert rows[("a", t2)]["created_at"] == rows[("a", t2)]["updated_at"] == second


def test_a_range_that_held_nothing_gets_the_same_rows_as_the_general_merge():
    """merge_candles skips pandas when nothing was stored: the rows must be those the general
    path gives (which runs when the range held a candle the fresh batch drops)."""
    t0, t1 = utc(2024, 5, 1, 10), utc(2024, 5, 1, 10, 1)
    now = utc(2030, 1, 1, 12, 30, 15, 123456)
    fresh = pa.Table.from_pylist([candle("a", t0), candle("a", t1, open_=1.25), candle("b", t0, count=7)], schema=candle_arrow_schema())
    empty, empty_counts = merge_candles(arrow_schema(CANDLE_SCHEMA).empty_table(), fresh, now)
    dropped = merge_candles(arrow_schema(CANDLE_SCHEMA).empty_table(),
                            pa.Table.from_pylist([candle("c", t0)], schema=candle_arrow_schema()), utc(2029, 1, 1))[0]
    general, general_counts = merge_candles(dropped, fresh, now)
    assert empty.schema == general.schema == arrow_schema(CANDLE_SCHEMA)
    assert empty.to_pylist() == general.to_pylist()
    assert all(r["created_at"] == r["updated_at"] == now for r in empty.to_pylist())
    assert empty_counts == {**general_counts, "deleted": 0} == {"inserted": 3, "updated": 0, "unchanged": 0, "deleted": 0}


def test_generated_trades_are_deterministic_and_plausible():
    spec = GenerateSpec(utc(2024, 5, 1), utc(2024, 5, 2), symbols=3, exchanges=2, trades_per_day=20_000, seed=5)
    a, b = generate(spec), generate(spec)
    assert a.equals(b)
    assert abs(a.num_rows - 20_000) <= 1
    rows = a.to_pandas()
    assert set(rows["exchange"]) == {"binance", "coinbase"} and set(rows["symbol"]) == {"BTC-USDT", "ETH-USDT", "SOL-USDT"}
    assert rows["timestamp"].min() >= utc(2024, 5, 1) and rows["timestamp"].max() < utc(2024, 5, 2)
    assert (rows["price"] > 0).all() and (rows["quantity"] > 0).all()
    assert not rows.duplicated(["exchange", "symbol", "trade_id"]).any()
    # Sweeps of the book: several fills share a timestamp, as on real exchanges.
    assert rows.duplicated(["exchange", "symbol", "timestamp"]).sum() > 1000
    btc = rows[rows.symbol == "BTC-USDT"]["price"]
    assert 0.8 < btc.min() / 64_000 and btc.max() / 64_000 < 1.25
    with pytest.raises(InputError, match="--end must be after --start"):
        generate(GenerateSpec(utc(2024, 5, 2), utc(2024, 5, 1)))
