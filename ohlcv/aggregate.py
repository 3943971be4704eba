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
(measured). Windows the number cannot order (an id with leading zeros, two text ids at one
instant, an id too large for the bits the window width leaves) are flagged, and
`compute_candles` then aggregates the trades again with the exact order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ohlcv import schema as s
from ohlcv.arrow_candles import COUNTED, candles_with_notional_schema, finest_candles, series_codes, series_time_order
from ohlcv.store import ranges_cover, spark_slots_condition
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
    "compute_candles_in_arrow",
    "Computed",
    "largest_packed_id",
    "candle_arrow_schema",
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


# A hidden column of packed-order candles: above 0 where the packed order cannot rank the window's
# trades, so its open and close may be wrong and the exact order must decide.
UNORDERED = "unordered_ids"


def _id_bits(tf: Timeframe) -> int:
    """The low bits of a packed order key left for the id: 37 (137 billion) for 1m, 26 for 1d."""
    return 63 - (tf.width_us - 1).bit_length()


def _packed_order(tf: Timeframe) -> tuple[Column, Column]:
    """(order key, the UNORDERED aggregate): the trade's offset in its window in the high bits,
    its id in the low bits, ordering trades as `_trade_order` does where it can.

    - An id of plain digits (no leading zero) below 2**id_bits - 1 is its number.
    - An id with any other character than a digit ("a-7", "late-3") takes the top value
      2**id_bits - 1: at its instant it comes after every number, as in the exact order. Two
      such ids tie only at one instant, where the exact order ranks them as text: the flag
      counts windows whose two text ids share their timestamp, and windows of three or more
      (telling those apart would take a distinct count, which costs every window a sort).
      Late trades with text ids fall two in a window often enough: flagging those made a late
      tick aggregate twice (0.85 to 1.16 s more for 100 late windows, measured in a probe).
    - Any other id (digits with a leading zero, too large a number, empty) cannot be ranked
      among numbers by one key: its window is flagged.
    """
    id_bits = _id_bits(tf)
    text_key = (1 << id_bits) - 1
    number = F.col("trade_id").cast("long")  # null unless the text is a (signed, trimmed) number
    fits = F.coalesce(
        (number >= 0) & (number < F.lit(text_key)) & (number.cast("string") == F.col("trade_id")), F.lit(False)
    )
    text = F.length(F.translate("trade_id", "0123456789", "")) > 0
    offset = F.pmod(F.unix_micros("timestamp"), F.lit(tf.width_us)) * F.lit(1 << id_bits)
    key = F.when(fits, offset + number).when(text, offset + F.lit(text_key))
    unranked = F.max(F.when(fits | text, F.lit(0)).otherwise(F.lit(1)))
    texts = F.sum(F.when(text, F.lit(1)).otherwise(F.lit(0)))
    text_instant = F.when(text, F.col("timestamp"))
    may_tie = (texts >= 3) | ((texts == 2) & (F.min(text_instant) == F.max(text_instant)))
    return key, (unranked + F.when(may_tie, F.lit(1)).otherwise(F.lit(0))).alias(UNORDERED)


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
        *_hidden(partial),
    )


def _hidden(frame: DataFrame) -> list[str]:
    """The columns a candles frame carries besides the candle and `notional`: the UNORDERED flag
    and the COUNTED columns."""
    return [name for name in frame.columns if name == UNORDERED or name.startswith(COUNTED)]


def _counted_in(ranges: list[WindowRange], read: list[WindowRange] | None, slot_us: int | None) -> Column:
    """A window's trades whose own timestamp lies in `ranges`. A group that covers every range
    the trades were read from (a backfill chunk's, a 1m tick's) holds every trade read, so the
    count needs no test: testing each trade's slot against a day's set of 1,440 cost a 2.4M-trade
    day's aggregation 1.2 to 1.6 s of its 2.1 to 2.4 s (measured through the service)."""
    if read is not None and ranges_cover(ranges, read):
        return F.count(F.lit(1))
    return F.sum(F.when(spark_slots_condition("timestamp", ranges, slot_us), F.lit(1)).otherwise(F.lit(0)))


def candles(
    trades: DataFrame, tf: Timeframe, *, deduped: bool = False, packed: bool = False,
    counted: tuple[list[WindowRange], ...] = (), slot_us: int | None = None, read: list[WindowRange] | None = None,
) -> DataFrame:
    """Candles of `tf` from trades (columns of gold_crypto_trades), plus the hidden `notional`;
    `packed`: ordered by `_packed_order`, plus the hidden UNORDERED flag; `counted`: groups of
    ranges, each adding a hidden column COUNTED<i>, the window's trades whose own timestamp lies
    in group i (made of `slot_us` slots: see store.spark_slots_condition); `read`: the ranges
    the trades were read from, when every trade lies in them (see `_counted_in`)."""
    unique = trades if deduped else dedupe_trades(trades)
    flags = [_counted_in(ranges, read, slot_us).alias(f"{COUNTED}{index}") for index, ranges in enumerate(counted)]
    if packed:
        order, unordered = _packed_order(tf)
        flags.append(unordered)
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


class Computed(NamedTuple):
    candles: dict[str, pa.Table]  # timeframe name -> candles
    order: str  # "packed" or "exact": how trades were ranked inside their windows
    counts: list[pa.Table]  # per group of `counted` ranges: distinct trades per series (SERIES_COUNTS)


def compute_candles(
    trades: DataFrame, tfs: list[Timeframe], *, deduped: bool = False,
    counted: tuple[list[WindowRange], ...] = (), slot_us: int | None = None, packed: bool = True,
    read: list[WindowRange] | None = None,
) -> Computed:
    """Candles of every timeframe in `tfs` from one aggregation of the trades, as Arrow tables,
    the order that ranked their trades ("packed" or, when a window needed it, "exact"), and for
    each group of `counted` ranges the trades per (exchange, symbol) in it, for reconciliation.

    Spark computes the finest timeframe from the trades. Each coarser one is rolled up from the
    coarsest computed timeframe that divides it, here in Arrow (`rollup`): a day of 1m candles
    is a few thousand rows per series, and Spark spent seconds on each roll-up's two stages of
    tasks over so few rows (5m, 30m, 1h and 1d took 10.8 s after 1.7 s for the 1m candles of
    2.4M trades on 2 cores, measured; Arrow takes milliseconds).

    The counts ride on the same aggregation, not a second scan of the trades (that second job
    took 1.2 s of a 5.5 s chunk of 4.6M trades, measured). They stay independent of the
    windowing: each trade counts by its own timestamp against the ranges, whatever window it
    was put in, so a trade windowed outside its range still shows up as a difference.

    `packed` False: the caller knows some id is too large for the packed order (the trade id
    index, ohlcv/dedup.py), so the trades are aggregated once, in the exact order. `read`: the
    ranges the trades were read from, every trade lying in them (see `_counted_in`).
    """
    return _rolled_up(tfs, counted, lambda tf, groups: _from_trades(trades, tf, deduped, groups, slot_us, packed, read))


def compute_candles_in_arrow(
    unique: pa.Table, tfs: list[Timeframe], *, counted: tuple[list[WindowRange], ...] = (), read: list[WindowRange] | None = None,
) -> Computed:
    """`compute_candles` of trades already in the driver, holding one version each, computed in
    Arrow with no Spark job (ohlcv/arrow_candles.py): always in the exact order. `read`: ranges
    every trade lies in (see arrow_candles.finest_candles)."""
    return _rolled_up(tfs, counted, lambda tf, groups: (finest_candles(unique, tf, groups, read), "exact"))


def _rolled_up(tfs: list[Timeframe], counted: tuple[list[WindowRange], ...], from_trades) -> Computed:
    """Each timeframe of `tfs` rolled up from the coarsest computed one that divides it, or else
    `from_trades(tf, counted groups)` -> (candles with notional and COUNTED columns, order used)."""
    computed: dict[str, pa.Table] = {}
    done: list[Timeframe] = []
    order, counts = "packed", []
    for tf in sorted(tfs, key=lambda tf: tf.width):
        parent = rollup_parent(tf, done)
        if parent is not None:
            computed[tf.name] = rollup(computed[parent.name], tf)
        else:
            table, used = from_trades(tf, () if counts else counted)
            if not counts:
                counts = [_series_counts(table, f"{COUNTED}{index}") for index in range(len(counted))]
            computed[tf.name] = table.drop_columns([name for name in table.column_names if name.startswith(COUNTED)])
            order = "exact" if used == "exact" else order
        done.append(tf)
    return Computed({tf.name: computed[tf.name].drop_columns(["notional"]) for tf in tfs}, order, counts)


def _series_counts(table: pa.Table, column: str) -> pa.Table:
    """Trades per (exchange, symbol) from a candles table's COUNTED column; series without any left out."""
    totals = table.group_by(["exchange", "symbol"], use_threads=False).aggregate([(column, "sum")])
    totals = totals.select(["exchange", "symbol", f"{column}_sum"]).rename_columns(["exchange", "symbol", "trades"])
    return totals.filter(pc.greater(totals.column("trades"), 0)).cast(SERIES_COUNTS)


class _NeedsExactOrder(Exception):
    """A packed-order frame holds a window whose ids the packed order cannot rank."""


def _from_trades(trades: DataFrame, tf: Timeframe, deduped: bool, counted, slot_us, packed: bool, read) -> tuple[pa.Table, str]:
    """Candles of `tf` from the trades (with `notional` and COUNTED columns): in the packed order,
    or all again in the exact order when a window needs it (that request loses one aggregation,
    no more), or at once in the exact order when `packed` is False."""
    if packed:
        try:
            return _collect(candles(trades, tf, deduped=deduped, packed=True, counted=counted, slot_us=slot_us, read=read)), "packed"
        except _NeedsExactOrder:
            pass
    return _collect(candles(trades, tf, deduped=deduped, counted=counted, slot_us=slot_us, read=read)), "exact"


def largest_packed_id(tfs: list[Timeframe]) -> int:
    """The largest numeric id the packed order of the finest of `tfs` can rank (see _packed_order)."""
    return (1 << _id_bits(min(tfs, key=lambda tf: tf.width))) - 2  # below the text ids' key


def _collect(frame: DataFrame) -> pa.Table:
    """A candles DataFrame in the driver as Arrow, in the candle table's types plus `notional`."""
    hidden = _hidden(frame)
    counted = [name for name in hidden if name != UNORDERED]
    # Spark 3.5 has no public toArrow() (it came in 4.0); _collect_as_arrow is what toPandas
    # uses under the hood and keeps timestamps as UTC microseconds, with no pandas detour.
    batches = frame.select(*OUTPUT_COLUMNS, "notional", *hidden)._collect_as_arrow()
    target = candles_with_notional_schema(len(counted))  # COUNTED0, COUNTED1, ... as `candles` names them
    if not batches:
        return target.empty_table()
    table = pa.Table.from_batches(batches)
    if UNORDERED in hidden:
        if pc.max(table.column(UNORDERED)).as_py():
            raise _NeedsExactOrder()
        table = table.drop_columns([UNORDERED])
    return s.cast_to(table, target)


def _series_order(table: pa.Table) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(the row order that sorts by series then window_start, or None when the rows are in it
    already, as each roll-up returns them; series codes and window starts in us, in that order)."""
    codes = series_codes(table)
    starts = pc.cast(table.column("window_start"), pa.int64()).to_numpy()
    if len(codes) > 1:
        later = (codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (starts[1:] > starts[:-1]))
        if not later.all():
            order = series_time_order(codes, starts)
            return order, codes[order], starts[order]
    return None, codes, starts


def rollup(finer: pa.Table, tf: Timeframe) -> pa.Table:
    """Candles of `tf` (with `notional`) from candles of a finer timeframe whose width divides
    `tf`'s: open from the first finer window, close from the last, the rest summed or extreme.
    The finer rows are taken in (series, window) order, so every sum adds in one order whatever
    order Spark returned them in; the result is in that order too."""
    if finer.num_rows == 0:
        return candles_with_notional_schema().empty_table()
    order, codes, starts = _series_order(finer)
    coarse = starts - starts % tf.width_us
    first = np.ones(len(codes), dtype=bool)
    first[1:] = (codes[1:] != codes[:-1]) | (coarse[1:] != coarse[:-1])
    heads = np.flatnonzero(first)
    tails = np.append(heads[1:], len(codes)) - 1

    def column(name: str) -> np.ndarray:
        values = finer.column(name).to_numpy()
        return values if order is None else values[order]

    def names(name: str) -> pa.ChunkedArray:  # text: only the heads' rows are taken
        return finer.column(name).take(pa.array(heads if order is None else order[heads]))

    volume, notional = np.add.reduceat(column("volume"), heads), np.add.reduceat(column("notional"), heads)
    start = coarse[heads]
    timestamps = pa.timestamp("us", tz="UTC")
    return pa.table({
        "symbol": names("symbol"),
        "exchange": names("exchange"),
        "window_start": pa.array(start, pa.int64()).cast(timestamps),
        "window_end": pa.array(start + tf.width_us, pa.int64()).cast(timestamps),
        "window_date": pa.array((start // _US_PER_DAY).astype("int32"), pa.int32()).cast(pa.date32()),
        "open_price": column("open_price")[heads],
        "high_price": np.maximum.reduceat(column("high_price"), heads),
        "low_price": np.minimum.reduceat(column("low_price"), heads),
        "close_price": column("close_price")[tails],
        "volume": volume,
        "trade_count": np.add.reduceat(column("trade_count"), heads),
        "vwap": notional / volume,
        "notional": notional,
    }).cast(candles_with_notional_schema())


def candle_arrow_schema() -> pa.Schema:
    """Arrow schema of a candle batch before the commit stamps created_at/updated_at."""
    full = s.arrow_schema(s.CANDLE_SCHEMA)
    return pa.schema([full.field(name) for name in OUTPUT_COLUMNS])


def release(frames: dict[str, DataFrame]) -> None:
    for frame in frames.values():
        frame.unpersist()


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
