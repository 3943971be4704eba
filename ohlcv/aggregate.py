"""Trades DataFrame -> candles: one Spark transform for the finest timeframe, Arrow roll-ups for the rest.

The candle rules (DESIGN section 3):
- windows are UTC, aligned to the Unix epoch, `[window_start, window_start + width)`;
- a trade is identified by (exchange, symbol, trade_id) and counts once; when a trade was
  delivered twice with different fields, the first ingested version wins;
- open/close are the prices of the first/last trade by timestamp; equal timestamps are ordered
  by trade_id: ids made only of digits sort numerically and before any other id, other ids
  sort as text (a total order that agrees with "numeric when both are digits");
- high/low are max/min price, volume is sum(quantity), vwap is sum(price*quantity)/volume.

Several timeframes are computed from one pass over the trades: Spark aggregates the finest from
the trades, and each coarser one is rolled up, in Arrow on the driver, from the coarsest computed
timeframe that divides it. That roll-up is exact for every field: candles of a finer width partition the trades of the
coarser window, and the hidden `notional` column carries sum(price*quantity) for the vwap.

The order of trades inside a window is first tried as one 64-bit number (`_packed_order`):
Spark aggregates min_by/max_by over a number in a hash table, but over the exact order's struct
only by sorting every trade first (SortAggregate), ten times slower on a day of trades
(measured). Windows the number cannot order (an id with leading zeros, a text id, an id too
large for the bits the window width leaves) are flagged, and `compute_candles` then aggregates
the trades again with the exact order.
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
    "compute_candles",
    "candle_arrow_schema",
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


def compute_candles(trades: DataFrame, tfs: list[Timeframe], *, deduped: bool = False) -> tuple[dict[str, pa.Table], str]:
    """Candles of every timeframe in `tfs` from one aggregation of the trades, as Arrow tables,
    and the order that ranked their trades: "packed" or, when a window needed it, "exact".

    Spark computes the finest timeframe from the trades. Each coarser one is rolled up from the
    coarsest computed timeframe that divides it, here in Arrow (`rollup`): a day of 1m candles
    is a few thousand rows per series, and Spark spent seconds on each roll-up's two stages of
    tasks over so few rows (5m, 30m, 1h and 1d took 10.8 s after 1.7 s for the 1m candles of
    2.4M trades on 2 cores, measured; Arrow takes milliseconds).
    """
    computed: dict[str, pa.Table] = {}
    done: list[Timeframe] = []
    order = "packed"
    for tf in sorted(tfs, key=lambda tf: tf.width):
        parent = rollup_parent(tf, done)
        if parent is not None:
            computed[tf.name] = rollup(computed[parent.name], tf)
        else:
            computed[tf.name], used = _from_trades(trades, tf, deduped)
            order = "exact" if used == "exact" else order
        done.append(tf)
    return {tf.name: computed[tf.name].drop_columns(["notional"]) for tf in tfs}, order


class _NeedsExactOrder(Exception):
    """A packed-order frame holds a window whose ids the packed order cannot rank."""


def _from_trades(trades: DataFrame, tf: Timeframe, deduped: bool) -> tuple[pa.Table, str]:
    """Candles of `tf` from the trades (with `notional`): in the packed order, or all again in
    the exact order when a window needs it (that request loses one aggregation, no more)."""
    try:
        return _collect(candles(trades, tf, deduped=deduped, packed=True)), "packed"
    except _NeedsExactOrder:
        return _collect(candles(trades, tf, deduped=deduped)), "exact"


def _with_notional_schema() -> pa.Schema:
    """The candle batch's schema plus `notional`, which roll-ups need for the vwap."""
    return candle_arrow_schema().append(pa.field("notional", pa.float64()))


def _collect(frame: DataFrame) -> pa.Table:
    """A candles DataFrame in the driver as Arrow, in the candle table's types plus `notional`."""
    flagged = UNORDERED in frame.columns
    # Spark 3.5 has no public toArrow() (it came in 4.0); _collect_as_arrow is what toPandas
    # uses under the hood and keeps timestamps as UTC microseconds, with no pandas detour.
    batches = frame.select(*OUTPUT_COLUMNS, "notional", *([UNORDERED] if flagged else []))._collect_as_arrow()
    target = _with_notional_schema()
    if not batches:
        return target.empty_table()
    table = pa.Table.from_batches(batches)
    if flagged:
        if pc.max(table.column(UNORDERED)).as_py():
            raise _NeedsExactOrder()
        table = table.drop_columns([UNORDERED])
    return table.cast(pa.schema([f.with_nullable(True) for f in target])).cast(target)


def rollup(finer: pa.Table, tf: Timeframe) -> pa.Table:
    """Candles of `tf` (with `notional`) from candles of a finer timeframe whose width divides
    `tf`'s: open from the first finer window, close from the last, the rest summed or extreme.
    Sorted first, so the sums add in one order whatever order Spark returned the rows in."""
    starts = pc.cast(finer.column("window_start"), pa.int64()).to_numpy()
    keyed = finer.append_column("coarse_start", pa.array(starts - starts % tf.width_us, pa.int64()))
    keyed = keyed.sort_by([("exchange", "ascending"), ("symbol", "ascending"), ("window_start", "ascending")])
    grouped = keyed.group_by(["exchange", "symbol", "coarse_start"], use_threads=False).aggregate([
        ("open_price", "first"), ("high_price", "max"), ("low_price", "min"), ("close_price", "last"),
        ("volume", "sum"), ("trade_count", "sum"), ("notional", "sum"),
    ])
    start = grouped.column("coarse_start").to_numpy()
    volume, notional = grouped.column("volume_sum"), grouped.column("notional_sum")
    return pa.table({
        "symbol": grouped.column("symbol"),
        "exchange": grouped.column("exchange"),
        "window_start": pa.array(start, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "window_end": pa.array(start + tf.width_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "window_date": pa.array((start // _US_PER_DAY).astype("int32"), pa.int32()).cast(pa.date32()),
        "open_price": grouped.column("open_price_first"),
        "high_price": grouped.column("high_price_max"),
        "low_price": grouped.column("low_price_min"),
        "close_price": grouped.column("close_price_last"),
        "volume": volume,
        "trade_count": grouped.column("trade_count_sum"),
        "vwap": pc.divide(notional, volume),
        "notional": notional,
    }).cast(_with_notional_schema())


def candle_arrow_schema() -> pa.Schema:
    """Arrow schema of a candle batch before the commit stamps created_at/updated_at."""
    full = s.arrow_schema(s.CANDLE_SCHEMA)
    return pa.schema([full.field(name) for name in OUTPUT_COLUMNS])


def release(frames: dict[str, DataFrame]) -> None:
    for frame in frames.values():
        frame.unpersist()


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
    """Any small DataFrame to Arrow in the given schema (see _collect)."""
    batches = frame.select(*schema.names)._collect_as_arrow()
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches).cast(schema)
