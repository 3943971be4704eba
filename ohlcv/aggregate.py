"""Trades DataFrame -> candles DataFrame: one pure Spark transform for every timeframe.

The candle rules (DESIGN section 3):
- windows are UTC, aligned to the Unix epoch, `[window_start, window_start + width)`;
- a trade is identified by (exchange, symbol, trade_id) and counts once; when a trade was
  delivered twice with different fields, the first ingested version wins;
- open/close are the prices of the first/last trade by timestamp; equal timestamps are ordered
  by trade_id: ids made only of digits sort numerically and before any other id, other ids
  sort as text (a total order that agrees with "numeric when both are digits");
- high/low are max/min price, volume is sum(quantity), vwap is sum(price*quantity)/volume.

Several timeframes are computed from one pass over the trades: the finest is aggregated from
the trades, each coarser one is rolled up from the finest computed timeframe that divides it.
That roll-up is exact for every field: candles of a finer width partition the trades of the
coarser window, and the hidden `notional` column carries sum(price*quantity) for the vwap.

The order of trades inside a window is first tried as one 64-bit number (`_packed_order`):
Spark aggregates min_by/max_by over a number in a hash table, but over the exact order's struct
only by sorting every trade first (SortAggregate), ten times slower on a day of trades
(measured). Windows the number cannot order (an id with leading zeros, a text id, an id too
large for the bits the window width leaves) are flagged, and `compute_candles` then computes
the whole request again with the exact order.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ohlcv import schema as s
from ohlcv.store import spark_ranges_condition
from ohlcv.timeframes import Timeframe, rollup_parent
from ohlcv.windows import WindowRange

__all__ = [
    "ROWS_PER_SHUFFLE_TASK", "shuffle_partitions",
    "OUTPUT_COLUMNS",
    "dedupe_trades",
    "as_unique",
    "rollup",
    "release",
    "candles",
    "candles_for",
    "collect_candles",
    "candle_arrow_schema",
    "compute_candles",
    "trades_per_series",
    "trades_per_window",
    "collect_arrow",
    "SERIES_COUNTS",
    "WINDOW_COUNTS",
]

SERIES_COUNTS = pa.schema([("exchange", pa.string()), ("symbol", pa.string()), ("trades", pa.int64())])
WINDOW_COUNTS = pa.schema(
    [("exchange", pa.string()), ("symbol", pa.string()), ("window_start", pa.timestamp("us", tz="UTC")), ("trades", pa.int64())]
)
OUTPUT_COLUMNS = [f.name for f in s.CANDLE_SCHEMA.fields if f.name not in ("created_at", "updated_at")]
_US_PER_DAY = 86_400_000_000


ROWS_PER_SHUFFLE_TASK = 100_000


def shuffle_partitions(expected_rows: int, slots: int) -> int:
    """Partitions of the one shuffle, from the trades expected: a day's worth gets 8 tasks per
    core (even, small tasks for skewed series), a tick's few thousand trades one per core.

    Each task, however empty, costs a launch and a sort: 16 tasks per stage made a warm 1m
    tick 30% slower than 2 did (measured), and a cold one 1.5 s slower.
    """
    wanted = -(-expected_rows // ROWS_PER_SHUFFLE_TASK)
    return max(slots, min(8 * slots, wanted))


def dedupe_trades(trades: DataFrame, partitions: int = 16) -> DataFrame:
    """One row per (exchange, symbol, trade_id): the version ingested first (ties: earliest, cheapest).

    Only reads that meet a day where two versions may be stored come here (ohlcv/dedup.py).
    The rows are shuffled by the whole trade key, so every version of a trade meets in one
    task and the tasks are even however skewed the series are: a shuffle by series would
    bind a day to the task holding its largest series (30 to 40% of a day's trades in real
    markets). The candles' aggregation that follows pre-aggregates each task's trades before
    its own, much smaller, shuffle by window. A window function, not an aggregate, picks the
    version: it sorts each partition once instead of sorting on both sides of a shuffle.
    """
    first_version = Window.partitionBy("trade_id", "exchange", "symbol").orderBy("ingested_at", "timestamp", "price", "quantity")
    return (
        trades.repartition(partitions, "trade_id", "exchange", "symbol")
        .withColumn("version", F.row_number().over(first_version))
        .where(F.col("version") == 1)
        .select("exchange", "symbol", "trade_id", "timestamp", "price", "quantity")
    )


def as_unique(trades: DataFrame) -> DataFrame:
    """Trades known to hold one version each (see ohlcv/dedup.py), shaped as `dedupe_trades`
    returns them: no shuffle here, so the candles' aggregation pre-aggregates each task's
    trades before its own shuffle, and no series is bound to one task."""
    return trades.select("exchange", "symbol", "trade_id", "timestamp", "price", "quantity")


def _trade_order() -> Column:
    """Sort key of a trade inside its window: timestamp, then trade_id (digits numerically first).

    No regular expressions: they cost more than the rest of the aggregation (measured).
    """
    digits = (F.length(F.translate("trade_id", "0123456789", "")) == 0) & (F.length("trade_id") > 0)
    significant = F.expr("trim(LEADING '0' FROM trade_id)")  # numeric compare = length, then text
    return F.struct(
        F.col("timestamp"),
        F.when(digits, F.lit(0)).otherwise(F.lit(1)),
        F.when(digits, F.length(significant)).otherwise(F.lit(0)),
        F.when(digits, significant).otherwise(F.lit("")),
        F.col("trade_id"),
    )


# A hidden column of packed-order candles: 1 where some trade of the window has an id the packed
# order cannot rank, so the window's open and close may be wrong and the exact order must decide.
UNORDERED = "unordered_ids"


def _packed_order(tf: Timeframe) -> tuple[Column, Column]:
    """(order key, whether the trade's id fits it): the trade's offset in its window in the high
    bits, its id in the low bits. The key orders trades as `_trade_order` does when every id of
    the window is a plain number (digits, no leading zero) below 2**id_bits; it is null otherwise.
    """
    id_bits = 63 - (tf.width_us - 1).bit_length()  # 37 bits (137 billion) for 1m, 26 for 1d
    number = F.col("trade_id").cast("long")  # null unless the text is a (signed, trimmed) number
    fits = F.coalesce(
        (number >= 0) & (number < F.lit(1 << id_bits)) & (number.cast("string") == F.col("trade_id")), F.lit(False)
    )
    offset = F.pmod(F.unix_micros("timestamp"), F.lit(tf.width_us))
    return F.when(fits, offset * F.lit(1 << id_bits) + number), fits


def _window_start(micros: Column, tf: Timeframe) -> Column:
    width = F.lit(tf.width_us)
    return F.timestamp_micros(micros - F.pmod(micros, width))


def _finish(partial: DataFrame, tf: Timeframe) -> DataFrame:
    """Derive window_end, window_date and vwap; keep `notional` for roll-ups."""
    start_us = F.unix_micros("window_start")
    return partial.select(
        "symbol",
        "exchange",
        "window_start",
        F.timestamp_micros(start_us + F.lit(tf.width_us)).alias("window_end"),
        F.date_from_unix_date(F.floor(start_us / F.lit(_US_PER_DAY)).cast("int")).alias("window_date"),
        "open_price",
        "high_price",
        "low_price",
        "close_price",
        "volume",
        "trade_count",
        (F.col("notional") / F.col("volume")).alias("vwap"),
        "notional",
        *([UNORDERED] if UNORDERED in partial.columns else []),
    )


def candles(trades: DataFrame, tf: Timeframe, *, deduped: bool = False, packed: bool = False) -> DataFrame:
    """Candles of `tf` from trades (columns of gold_crypto_trades), plus the hidden `notional`;
    `packed`: ordered by `_packed_order`, plus the hidden UNORDERED flag."""
    unique = trades if deduped else dedupe_trades(trades)
    flags = []
    if packed:
        order, fits = _packed_order(tf)
        flags = [F.max(F.when(fits, F.lit(0)).otherwise(F.lit(1))).alias(UNORDERED)]
    else:
        order = _trade_order()
    partial = (
        unique.withColumn("window_start", _window_start(F.unix_micros("timestamp"), tf))
        .withColumn("trade_order", order)  # computed once, used by open and close
        .groupBy("window_start", "exchange", "symbol")  # the long key first: a cheap sort prefix
        .agg(
            F.min_by("price", "trade_order").alias("open_price"),
            F.max("price").alias("high_price"),
            F.min("price").alias("low_price"),
            F.max_by("price", "trade_order").alias("close_price"),
            F.sum("quantity").alias("volume"),
            F.count(F.lit(1)).alias("trade_count"),
            F.sum(F.col("price") * F.col("quantity")).alias("notional"),
            *flags,
        )
    )
    return _finish(partial, tf)


def rollup(finer: DataFrame, tf: Timeframe) -> DataFrame:
    """Candles of `tf` from candles of a finer timeframe whose width divides `tf`'s."""
    partial = (
        finer.withColumn("coarse_start", _window_start(F.unix_micros("window_start"), tf))
        .groupBy("coarse_start", "exchange", "symbol")
        .agg(
            F.min_by("open_price", "window_start").alias("open_price"),
            F.max("high_price").alias("high_price"),
            F.min("low_price").alias("low_price"),
            F.max_by("close_price", "window_start").alias("close_price"),
            F.sum("volume").alias("volume"),
            F.sum("trade_count").alias("trade_count"),
            F.sum("notional").alias("notional"),
            *([F.max(UNORDERED).alias(UNORDERED)] if UNORDERED in finer.columns else []),
        )
        .withColumnRenamed("coarse_start", "window_start")
    )
    return _finish(partial, tf)


def candles_for(trades: DataFrame, tfs: list[Timeframe], *, deduped: bool = False, packed: bool = False) -> dict[str, DataFrame]:
    """Candles of every timeframe in `tfs` from one aggregation of the trades.

    The finest timeframe is computed from the trades; each coarser one is rolled up from the
    coarsest already computed timeframe that divides it, and each frame another rolls up from is
    cached. Callers unpersist them when done (see `release`).
    """
    ordered = sorted(tfs, key=lambda tf: tf.width)
    parents = {parent.name for i, tf in enumerate(ordered) if (parent := rollup_parent(tf, ordered[:i])) is not None}
    computed: dict[str, DataFrame] = {}
    done: list[Timeframe] = []
    for tf in ordered:
        parent = rollup_parent(tf, done)
        if parent is None:
            frame = candles(trades, tf, deduped=deduped, packed=packed)
        else:
            frame = rollup(computed[parent.name], tf)
        if tf.name in parents:
            frame = frame.persist()  # a coarser timeframe rolls up from it: compute it once
        computed[tf.name] = frame
        done.append(tf)
    return computed


def release(frames: dict[str, DataFrame]) -> None:
    for frame in frames.values():
        frame.unpersist()


class _NeedsExactOrder(Exception):
    """A packed-order frame holds a window whose ids the packed order cannot rank."""


def compute_candles(trades: DataFrame, tfs: list[Timeframe], *, deduped: bool = False) -> tuple[dict[str, pa.Table], str]:
    """Candles of every timeframe in `tfs`, collected as Arrow, and the order that ranked their
    trades: "packed" where it ranks every window, else (any window flagged) "exact", all again.

    The flag comes back with the finest frame, which is collected first, so a request that needs
    the exact order loses one aggregation, no more; a request whose trades are read twice is
    served from the cache the caller holds, if any.
    """
    for packed in (True, False):
        frames = candles_for(trades, tfs, deduped=deduped, packed=packed)
        try:
            return {name: collect_candles(frame) for name, frame in frames.items()}, "packed" if packed else "exact"
        except _NeedsExactOrder:
            continue
        finally:
            release(frames)
    raise AssertionError("the exact order never flags a window")


def candle_arrow_schema() -> pa.Schema:
    """Arrow schema of a candle batch before the commit stamps created_at/updated_at."""
    full = s.arrow_schema(s.CANDLE_SCHEMA)
    return pa.schema([full.field(name) for name in OUTPUT_COLUMNS])


def collect_candles(frame: DataFrame) -> pa.Table:
    """Bring a candles DataFrame to the driver as Arrow in the candle table's types (no notional)."""
    # Spark 3.5 has no public toArrow() (it came in 4.0); _collect_as_arrow is what toPandas
    # uses under the hood and keeps timestamps as UTC microseconds, with no pandas detour.
    flagged = UNORDERED in frame.columns
    batches = frame.select(*OUTPUT_COLUMNS, *([UNORDERED] if flagged else []))._collect_as_arrow()
    target = candle_arrow_schema()
    if not batches:
        return target.empty_table()
    table = pa.Table.from_batches(batches)
    if flagged:
        if pc.max(table.column(UNORDERED)).as_py():
            raise _NeedsExactOrder()
        table = table.drop_columns([UNORDERED])
    return table.cast(pa.schema([f.with_nullable(True) for f in target])).cast(target)


def trades_per_series(unique: DataFrame, ranges: list[WindowRange], slot_us: int) -> DataFrame:
    """Distinct trades per (exchange, symbol) with timestamp in any of `ranges`, each made of
    slots `slot_us` wide: the reconciliation side, one Spark job however many ranges (the
    condition is the read's own, see store.spark_ranges_condition).

    Counted from the deduplicated trades directly, not through windows, so a trade lost or
    counted twice by the windowing shows up as a difference.
    """
    inside = spark_ranges_condition("timestamp", ranges, slot_us)
    return unique.where(inside).groupBy("exchange", "symbol").agg(F.count(F.lit(1)).alias("trades"))


def trades_per_window(unique: DataFrame, tfs: list[Timeframe]) -> dict[str, DataFrame]:
    """Distinct trades per (exchange, symbol, window) of each timeframe: what each candle's
    trade_count must be (used to find windows that missed late trades)."""
    finest = min(tfs, key=lambda tf: tf.width)
    counts = (
        unique.withColumn("window_start", _window_start(F.unix_micros("timestamp"), finest))
        .groupBy("exchange", "symbol", "window_start")
        .agg(F.count(F.lit(1)).alias("trades"))
        .persist()
    )
    result = {finest.name: counts}
    for tf in tfs:
        if tf is not finest:
            result[tf.name] = (
                counts.withColumn("window_start", _window_start(F.unix_micros("window_start"), tf))
                .groupBy("exchange", "symbol", "window_start")
                .agg(F.sum("trades").alias("trades"))
            )
    return result


def collect_arrow(frame: DataFrame, schema: pa.Schema) -> pa.Table:
    """Any small DataFrame to Arrow in the given schema (see collect_candles)."""
    batches = frame.select(*schema.names)._collect_as_arrow()
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches).cast(schema)
