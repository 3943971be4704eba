"""Reference engines for the benchmark: the same candles from the same Parquet files, computed by
DuckDB (single process) and by plain PySpark `local[N]` (no Ray).

Both follow DESIGN section 3 on their own terms; tests/test_engines_agree.py checks that their
candles equal the project's, so the timings compare like with like.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["duckdb_candles", "duckdb_load", "duckdb_pipeline", "plain_spark_candles", "CANDLE_COLUMNS"]

CANDLE_COLUMNS = [
    "symbol", "exchange", "window_start", "window_end", "window_date", "open_price", "high_price",
    "low_price", "close_price", "volume", "trade_count", "vwap",
]

# Written for DuckDB's strengths, so the reference is a strong one: one struct-valued min per
# trade for the dedupe (not three min_by calls), and no regular expressions in the order key
# (they tripled the time of the 24M day).
_DUCKDB_DEDUPED = """
WITH raw AS (
    SELECT exchange, symbol, trade_id, price, quantity, epoch_us("timestamp") AS us, epoch_us(ingested_at) AS ingested
    FROM {source}
    WHERE epoch_us("timestamp") >= $start AND epoch_us("timestamp") < $end
), unique_trades AS (  -- one row per trade: the version ingested first
    SELECT exchange, symbol, trade_id, min({{'i': ingested, 'u': us, 'p': price, 'q': quantity}}) AS first_version
    FROM raw GROUP BY exchange, symbol, trade_id
), keyed AS (
    SELECT exchange, symbol, trade_id, first_version.u AS us, first_version.p AS price, first_version.q AS quantity
    FROM unique_trades
)"""
# Trades that hold one version each already (the project skips its dedupe for those too).
_DUCKDB_UNIQUE = """
WITH keyed AS (
    SELECT exchange, symbol, trade_id, price, quantity, epoch_us("timestamp") AS us
    FROM {source}
    WHERE epoch_us("timestamp") >= $start AND epoch_us("timestamp") < $end
)"""
_DUCKDB_FINEST = """, ordered AS (  -- timestamp, then all-digit ids numerically (and first), then other ids as text
    SELECT *, (us, NOT digits, CASE WHEN digits THEN length(ltrim(trade_id, '0')) ELSE 0 END,
               CASE WHEN digits THEN ltrim(trade_id, '0') ELSE '' END, trade_id) AS trade_order
    FROM (SELECT *, (trade_id <> '' AND translate(trade_id, '0123456789', '') = '') AS digits FROM keyed)
)
SELECT exchange, symbol, us - (us % $width) AS start_us,
       min_by(price, trade_order) AS open_price, max(price) AS high_price, min(price) AS low_price,
       max_by(price, trade_order) AS close_price, sum(quantity) AS volume, count(*) AS trade_count,
       sum(price * quantity) AS notional
FROM ordered GROUP BY ALL
"""


def _finest(source: str, deduplicate: bool) -> str:
    return (_DUCKDB_DEDUPED if deduplicate else _DUCKDB_UNIQUE).format(source=source) + _DUCKDB_FINEST


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


def duckdb_candles(files: list[str], start_us: int, end_us: int, widths_us: dict[str, int], threads: int,
                   deduplicate: bool = True) -> dict[str, pa.Table]:
    """Candles of each timeframe (name -> width in us): the finest from the trades, the rest rolled
    up; `deduplicate` as the project did for the same trades."""
    import duckdb

    # No "TimeZone" setting: it needs the ICU extension (a download); without ICU, DuckDB
    # treats TIMESTAMPTZ as UTC, which is what these files hold.
    connection = duckdb.connect(config={"threads": threads})
    try:
        ordered = sorted(widths_us.items(), key=lambda item: item[1])
        finest_name, finest_width = ordered[0]
        connection.execute(
            f"CREATE TEMP TABLE finest AS {_finest('read_parquet($files)', deduplicate)}",
            {"files": files, "start": start_us, "end": end_us, "width": finest_width},
        )
        results = {finest_name: connection.sql(_DUCKDB_FINISH.format(source="finest"), params={"width": finest_width}).to_arrow_table()}
        for name, width in ordered[1:]:
            query = _DUCKDB_FINISH.format(source=f"({_DUCKDB_ROLLUP})")
            results[name] = connection.sql(query, params={"width": width}).to_arrow_table()
        return results
    finally:
        connection.close()


def plain_spark_candles(spark, files: list[str], start_us: int, end_us: int, tfs, deduplicate: bool = True) -> dict[str, pa.Table]:
    """The project's own Spark transform on a plain local SparkSession reading the files directly;
    `deduplicate` as the project did for the same trades (it skips what ingest vouched for)."""
    from pyspark.sql import functions as F

    from ohlcv import aggregate
    from ohlcv.store import SPARK_TRADE_SCHEMA

    trades = spark.read.schema(SPARK_TRADE_SCHEMA).parquet(*files)
    ts = F.unix_micros("timestamp")
    trades = trades.where((ts >= F.lit(start_us)) & (ts < F.lit(end_us)))
    # Exactly what the Spark service does for an aggregation without reconciliation counts.
    cores = spark.sparkContext.defaultParallelism
    unique = aggregate.dedupe_trades(trades, partitions=max(8, 8 * cores)) if deduplicate else aggregate.as_unique(trades)
    return aggregate.compute_candles(unique, tfs, deduped=True)[0]


# The ingest rules of ohlcv/ingest.py in DuckDB, for typed (Parquet) input: a row is valid when
# every check holds; a row that fails any goes to quarantine with its reasons.
_DUCKDB_CHECKS = {
    "missing exchange": "coalesce(trim(exchange), '') = ''",
    "missing symbol": "coalesce(trim(symbol), '') = ''",
    "missing trade_id": "coalesce(trim(trade_id), '') = ''",
    "exchange is not a valid name": "NOT regexp_full_match(coalesce(trim(exchange), ''), '[A-Za-z0-9][A-Za-z0-9._/:-]{0,63}')",
    "symbol is not a valid name": "NOT regexp_full_match(coalesce(trim(symbol), ''), '[A-Za-z0-9][A-Za-z0-9._/:-]{0,63}')",
    "missing price": "price IS NULL",
    "missing quantity": "quantity IS NULL",
    "price is not positive and finite": "NOT (isfinite(price) AND price > 0)",
    "quantity is not positive and finite": "NOT (isfinite(quantity) AND quantity > 0)",
    "missing timestamp": '"timestamp" IS NULL',
    "timestamp out of range": "NOT (epoch_us(\"timestamp\") >= 946684800000000 AND epoch_us(\"timestamp\") < 4102444800000000)",
}


def _checked(source: str) -> str:
    flags = ", ".join(f"coalesce({condition}, true) AS \"{reason}\"" for reason, condition in _DUCKDB_CHECKS.items())
    reasons = ", ".join(f"CASE WHEN \"{reason}\" THEN '{reason}' END" for reason in _DUCKDB_CHECKS)
    bad = " OR ".join(f'"{reason}"' for reason in _DUCKDB_CHECKS)
    return f"""
        SELECT *, {bad} AS bad, concat_ws('; ', {reasons}) AS reason FROM (SELECT *, {flags} FROM {source})
    """


def duckdb_load(files: list[str], out: str, threads: int) -> int:
    """Read, validate and write trade files as DuckDB would load them: valid rows in time order
    to Parquet (zstd, 16k-row row groups, as the trades table), bad rows with their reasons to a
    quarantine Parquet file. Returns the valid rows written."""
    import duckdb

    connection = duckdb.connect(config={"threads": threads})
    try:
        connection.execute(f"CREATE TEMP TABLE checked AS {_checked('read_parquet($files)')}", {"files": files})
        connection.execute(
            f"COPY (SELECT trim(exchange) AS exchange, trim(symbol) AS symbol, trim(trade_id) AS trade_id, price, quantity, side, "
            f"\"timestamp\", now() AS ingested_at FROM checked WHERE NOT bad ORDER BY \"timestamp\") "
            f"TO '{out}/trades.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 16384)")
        connection.execute(
            f"COPY (SELECT exchange::VARCHAR AS exchange, symbol::VARCHAR AS symbol, trade_id::VARCHAR AS trade_id, "
            f"price::VARCHAR AS price, quantity::VARCHAR AS quantity, side, \"timestamp\"::VARCHAR AS \"timestamp\", reason "
            f"FROM checked WHERE bad) TO '{out}/quarantine.parquet' (FORMAT parquet, COMPRESSION zstd)")
        return connection.execute("SELECT count(*) FROM checked WHERE NOT bad").fetchone()[0]
    finally:
        connection.close()


def duckdb_pipeline(files: list[str], database: str, widths_us: dict[str, int], threads: int) -> dict[str, int]:
    """The day's pipeline in DuckDB, on its own storage: load the files into a trades table with
    the ingest checks and the first version of each trade kept (a later version of a stored trade
    is not inserted), then the five candle tables of the loaded days. Returns the rows of each."""
    import duckdb

    connection = duckdb.connect(database, config={"threads": threads})
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS trades (exchange VARCHAR, symbol VARCHAR, trade_id VARCHAR, price DOUBLE, quantity DOUBLE, "
            "side VARCHAR, \"timestamp\" TIMESTAMPTZ, ingested_at TIMESTAMPTZ)")
        connection.execute(f"CREATE TEMP TABLE checked AS {_checked('read_parquet($files)')}", {"files": files})
        # The first version of each new trade, unless a version is stored already (it was first).
        connection.execute("""
            INSERT INTO trades
            SELECT exchange, symbol, trade_id, price, quantity, side, "timestamp", now()
            FROM (SELECT trim(exchange) AS exchange, trim(symbol) AS symbol, trim(trade_id) AS trade_id, price, quantity, side,
                         "timestamp", row_number() OVER (PARTITION BY trim(exchange), trim(symbol), trim(trade_id)
                                                         ORDER BY "timestamp", price, quantity) AS version
                  FROM checked WHERE NOT bad) AS new
            WHERE version = 1 AND NOT EXISTS (
                SELECT 1 FROM trades AS old WHERE old.exchange = new.exchange AND old.symbol = new.symbol AND old.trade_id = new.trade_id)
            ORDER BY "timestamp"
        """)
        bounds = connection.execute(
            "SELECT min(epoch_us(\"timestamp\")), max(epoch_us(\"timestamp\")) + 1 FROM checked WHERE NOT bad").fetchone()
        ordered = sorted(widths_us.items(), key=lambda item: item[1])
        finest_name, finest_width = ordered[0]
        connection.execute(f"CREATE OR REPLACE TABLE candles_{finest_name} AS {_finest('trades', deduplicate=False)}",
                           {"start": bounds[0], "end": bounds[1], "width": finest_width})
        rows = {finest_name: connection.execute(f"SELECT count(*) FROM candles_{finest_name}").fetchone()[0]}
        for name, width in ordered[1:]:
            connection.execute(f"CREATE OR REPLACE TABLE candles_{name} AS " + _DUCKDB_ROLLUP.replace("FROM finest", f"FROM candles_{finest_name}"),
                               {"width": width})
            rows[name] = connection.execute(f"SELECT count(*) FROM candles_{name}").fetchone()[0]
        return rows
    finally:
        connection.close()
