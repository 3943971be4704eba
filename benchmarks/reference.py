"""Reference engines for the benchmark: the same candles from the same Parquet files, computed by
DuckDB (single process) and by plain PySpark `local[N]` (no Ray).

Both follow DESIGN section 3 on their own terms; tests/test_engines_agree.py checks that their
candles equal the project's, so the timings compare like with like.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["duckdb_candles", "plain_spark_candles", "CANDLE_COLUMNS"]

CANDLE_COLUMNS = [
    "symbol", "exchange", "window_start", "window_end", "window_date", "open_price", "high_price",
    "low_price", "close_price", "volume", "trade_count", "vwap",
]

# Written for DuckDB's strengths, so the reference is a strong one: one struct-valued min per
# trade for the dedupe (not three min_by calls), and no regular expressions in the order key
# (they tripled the time of the 24M day).
_DUCKDB_FINEST = """
WITH raw AS (
    SELECT exchange, symbol, trade_id, price, quantity, epoch_us("timestamp") AS us, epoch_us(ingested_at) AS ingested
    FROM read_parquet($files)
    WHERE epoch_us("timestamp") >= $start AND epoch_us("timestamp") < $end
), unique_trades AS (  -- one row per trade: the version ingested first
    SELECT exchange, symbol, trade_id, min({'i': ingested, 'u': us, 'p': price, 'q': quantity}) AS first_version
    FROM raw GROUP BY exchange, symbol, trade_id
), keyed AS (
    SELECT exchange, symbol, trade_id, first_version.u AS us, first_version.p AS price, first_version.q AS quantity,
           (trade_id <> '' AND translate(trade_id, '0123456789', '') = '') AS digits
    FROM unique_trades
), ordered AS (  -- timestamp, then all-digit ids numerically (and first), then other ids as text
    SELECT *, (us, NOT digits, CASE WHEN digits THEN length(ltrim(trade_id, '0')) ELSE 0 END,
               CASE WHEN digits THEN ltrim(trade_id, '0') ELSE '' END, trade_id) AS trade_order
    FROM keyed
)
SELECT exchange, symbol, us - (us % $width) AS start_us,
       min_by(price, trade_order) AS open_price, max(price) AS high_price, min(price) AS low_price,
       max_by(price, trade_order) AS close_price, sum(quantity) AS volume, count(*) AS trade_count,
       sum(price * quantity) AS notional
FROM ordered GROUP BY ALL
"""

_DUCKDB_ROLLUP = """
SELECT exchange, symbol, start_us - (start_us % $width) AS start_us,
       min_by(open_price, start_us) AS open_price, max(high_price) AS high_price, min(low_price) AS low_price,
       max_by(close_price, start_us) AS close_price, sum(volume) AS volume, sum(trade_count) AS trade_count,
       sum(notional) AS notional
FROM finest GROUP BY ALL
"""

_DUCKDB_FINISH = """
SELECT symbol, exchange, make_timestamp(start_us)::TIMESTAMPTZ AS window_start,
       make_timestamp(start_us + $width)::TIMESTAMPTZ AS window_end,
       make_timestamp(start_us)::DATE AS window_date,
       open_price, high_price, low_price, close_price, volume, trade_count::BIGINT AS trade_count,
       notional / volume AS vwap
FROM {source}
"""


def duckdb_candles(files: list[str], start_us: int, end_us: int, widths_us: dict[str, int], threads: int) -> dict[str, pa.Table]:
    """Candles of each timeframe (name -> width in us): the finest from the trades, the rest rolled up."""
    import duckdb

    # No "TimeZone" setting: it needs the ICU extension (a download); without ICU, DuckDB
    # treats TIMESTAMPTZ as UTC, which is what these files hold.
    connection = duckdb.connect(config={"threads": threads})
    try:
        ordered = sorted(widths_us.items(), key=lambda item: item[1])
        finest_name, finest_width = ordered[0]
        connection.execute(
            f"CREATE TEMP TABLE finest AS {_DUCKDB_FINEST}",
            {"files": files, "start": start_us, "end": end_us, "width": finest_width},
        )
        results = {finest_name: connection.sql(_DUCKDB_FINISH.format(source="finest"), params={"width": finest_width}).to_arrow_table()}
        for name, width in ordered[1:]:
            query = _DUCKDB_FINISH.format(source=f"({_DUCKDB_ROLLUP})")
            results[name] = connection.sql(query, params={"width": width}).to_arrow_table()
        return results
    finally:
        connection.close()


def plain_spark_candles(spark, files: list[str], start_us: int, end_us: int, tfs) -> dict[str, pa.Table]:
    """The project's own Spark transform on a plain local SparkSession reading the files directly."""
    from pyspark.sql import functions as F

    from ohlcv import aggregate
    from ohlcv.store import SPARK_TRADE_SCHEMA

    trades = spark.read.schema(SPARK_TRADE_SCHEMA).parquet(*files)
    ts = F.unix_micros("timestamp")
    trades = trades.where((ts >= F.lit(start_us)) & (ts < F.lit(end_us)))
    # Exactly what the Spark service does for an aggregation without reconciliation counts.
    cores = spark.sparkContext.defaultParallelism
    frames = aggregate.candles_for(aggregate.dedupe_trades(trades, partitions=max(8, 8 * cores)), tfs, deduped=True)
    try:
        return {name: aggregate.collect_candles(frame) for name, frame in frames.items()}
    finally:
        aggregate.release(frames)
