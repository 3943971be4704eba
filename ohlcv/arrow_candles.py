"""Candles of a few trades in Arrow and NumPy, in the Spark service's driver, with no Spark job.

Spark spends about half a second on any request however few its trades: the DataFrame's
plan built call by call from Python, a task's launch, the collect (0.5 to 0.8 s of a warm 1m
tick's 16,667 trades on 2 cores, measured; twice that on a slower machine). Here the same
candles take milliseconds. The Spark service computes requests of at most
`Settings.driver_max_trades` trades this way (a tick's lookback and its late windows, a small
day or chunk); larger days and backfill chunks go to Spark, whose executors hold the cores.

The rules are ohlcv/aggregate.py's (DESIGN section 3), always in the exact order: sorting a
few hundred thousand trades by the full key costs nothing worth a shortcut here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ohlcv import schema as s
from ohlcv.store import ReadPlan, in_ranges, pinned_snapshot, ranges_cover, read_in_driver
from ohlcv.timeframes import Timeframe
from ohlcv.windows import WindowRange

__all__ = ["UNIQUE_COLUMNS", "COUNTED", "unique_trades", "first_versions", "series_codes", "series_time_order", "finest_candles", "candles_with_notional_schema"]

# The columns of trades that hold one version each: what the candles are computed from.
UNIQUE_COLUMNS = ["exchange", "symbol", "trade_id", "timestamp", "price", "quantity"]
_TRADE_KEY = ["exchange", "symbol", "trade_id"]
# Which version of a trade is kept: the one ingested first (ties: earliest, cheapest), as
# aggregate.dedupe_trades picks it.
_VERSION_ORDER = ["ingested_at", "timestamp", "price", "quantity"]
_US_PER_DAY = 86_400_000_000
# Hidden columns of candles that count trades for the reconciliation (ohlcv/aggregate.py,
# compute_candles), whichever engine computed them: COUNTED0, COUNTED1, ...
COUNTED = "counted_"


# Deduplicating here sorts every trade by its full key, on the driver's cores alone: about 4 s
# more for a day of 2.4M trades (measured), where Spark's executors share the work. A request
# whose trades need it stays here only up to this many of them, whatever the driver's bound.
DEDUPLICATED_MAX_ROWS = 500_000


def unique_trades(table, ranges: list[WindowRange], max_rows: int, snapshot_id: int | None = None) -> tuple[pa.Table, ReadPlan] | None:
    """The trades table's trades in `ranges`, one version each (UNIQUE_COLUMNS), read in this
    process, and how (store.read_in_driver); None when the manifests estimate more than
    `max_rows`, or more than DEDUPLICATED_MAX_ROWS of trades that need deduplicating. They are
    deduplicated only where the snapshot read may hold two versions of a trade (ohlcv/dedup.py),
    as a Spark read is."""
    import dataclasses

    from ohlcv.dedup import duplicate_days

    snapshot_id = pinned_snapshot(table, snapshot_id)  # the deduplication decision and the read agree
    deduplicate = duplicate_days(table, snapshot_id).meets(ranges)
    read = read_in_driver(table, ranges, min(max_rows, DEDUPLICATED_MAX_ROWS) if deduplicate else max_rows, snapshot_id)
    if read is None:
        return None
    trades, plan = read
    if deduplicate:
        return first_versions(trades), plan
    return trades.select(UNIQUE_COLUMNS), dataclasses.replace(plan, deduplicated=False)


def first_versions(trades: pa.Table) -> pa.Table:
    """One row per (exchange, symbol, trade_id) of `trades` (with `ingested_at`): the first version."""
    if trades.num_rows == 0:
        return trades.select(UNIQUE_COLUMNS)
    ordered = trades.take(pc.sort_indices(trades, [(name, "ascending") for name in _TRADE_KEY + _VERSION_ORDER]))
    first = np.ones(ordered.num_rows, dtype=bool)  # a row whose key differs from the row before
    first[1:] = False
    for name in _TRADE_KEY:
        column = ordered.column(name).combine_chunks()
        first[1:] |= pc.not_equal(column.slice(1), column.slice(0, len(column) - 1)).to_numpy(zero_copy_only=False)
    return ordered.filter(pa.array(first)).select(UNIQUE_COLUMNS)


def series_codes(table: pa.Table) -> np.ndarray:
    """An integer per row that orders rows as (exchange, symbol) do: hashed once per row, the few
    distinct series sorted as text (sorting 500k strings took most of a roll-up's time)."""
    exchange, symbol = table.column("exchange"), table.column("symbol")
    series = pc.binary_join_element_wise(exchange, symbol.cast(exchange.type), pa.scalar("\x00", exchange.type))
    encoded = pc.dictionary_encode(series).combine_chunks()
    rank = np.empty(len(encoded.dictionary), np.int64)
    rank[np.argsort(encoded.dictionary.to_numpy(zero_copy_only=False), kind="stable")] = np.arange(len(rank))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)]


def series_time_order(codes: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """argsort by (code, stamp): of one int64 key when both fit in it (twice as fast as lexsort).
    Rows equal in both come in no particular order."""
    offsets = stamps - stamps.min()
    if int(codes.max()).bit_length() + int(offsets.max()).bit_length() <= 62:
        return np.argsort((codes << int(offsets.max()).bit_length()) | offsets)
    return np.lexsort((stamps, codes))


def _exact_order(trades: pa.Table, codes: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """Row positions in (series, timestamp, id) order, the id ranked as aggregate._trade_order
    ranks it: ids of ASCII digits numerically (by significant length, then as text) before any
    other id, other ids as text, and the id's own text last ("007" before "7").

    Numbers order the rows by series and time; only the runs of trades that share a series and
    an instant are then ranked by id, with Arrow's sort over the text keys (sorting every row
    by them took 1.8 s of a 2.4M-trade request)."""
    order = series_time_order(codes, stamps)
    ordered_codes, ordered_stamps = codes[order], stamps[order]
    same = (ordered_codes[1:] == ordered_codes[:-1]) & (ordered_stamps[1:] == ordered_stamps[:-1])
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    if not tied.any():
        return order
    # Each run of tied rows stays where it is; its rows are ranked among themselves.
    positions = np.flatnonzero(tied)
    rows = order[positions]
    ids = trades.column("trade_id").take(pa.array(rows)).combine_chunks()
    digits = pc.fill_null(pc.ascii_is_decimal(ids), False)  # non-empty, only 0-9
    significant = pc.utf8_ltrim(ids, characters="0")
    keys = pa.table({
        "series": codes[rows],
        "timestamp": stamps[rows],
        "text": pc.if_else(digits, 0, 1),
        "length": pc.if_else(digits, pc.utf8_length(significant), 0),
        "significant": pc.if_else(digits, significant, ""),
        "trade_id": ids,
    })
    order[positions] = rows[pc.sort_indices(keys, [(name, "ascending") for name in keys.column_names]).to_numpy()]
    return order


def candles_with_notional_schema(counted: int = 0) -> pa.Schema:
    """The candle batch's schema plus `notional` (roll-ups need it for the vwap) and `counted`
    hidden count columns (ohlcv/aggregate.py: COUNTED)."""
    from ohlcv.aggregate import candle_arrow_schema  # here: aggregate imports this module

    target = candle_arrow_schema().append(pa.field("notional", pa.float64()))
    for index in range(counted):
        target = target.append(pa.field(f"{COUNTED}{index}", pa.int64()))
    return target


def finest_candles(
    unique: pa.Table, tf: Timeframe, counted: tuple[list[WindowRange], ...] = (), read: list[WindowRange] | None = None,
) -> pa.Table:
    """Candles of `tf` from trades holding one version each (UNIQUE_COLUMNS), with `notional` and,
    per group of `counted` ranges, the window's trades whose own timestamp lies in the group:
    what aggregate.candles computes in Spark, in (series, window) order. `read`: ranges every
    trade lies in; a group that covers them counts every trade without a test."""
    target = candles_with_notional_schema(len(counted))
    if unique.num_rows == 0:
        return target.empty_table()
    codes = series_codes(unique)
    stamps = pc.cast(unique.column("timestamp"), pa.int64()).to_numpy()
    order = _exact_order(unique, codes, stamps)
    codes, stamps = codes[order], stamps[order]
    windows = stamps - stamps % tf.width_us  # floored, as Spark's pmod: before 1970 too
    first = np.ones(len(order), dtype=bool)
    first[1:] = (codes[1:] != codes[:-1]) | (windows[1:] != windows[:-1])
    heads = np.flatnonzero(first)
    tails = np.append(heads[1:], len(order)) - 1
    price = unique.column("price").to_numpy()[order]
    quantity = unique.column("quantity").to_numpy()[order]
    volume = np.add.reduceat(quantity, heads)
    notional = np.add.reduceat(price * quantity, heads)
    start = windows[heads]
    timestamps = pa.timestamp("us", tz="UTC")
    names = pa.array(order[heads])
    columns = {
        "symbol": unique.column("symbol").take(names),
        "exchange": unique.column("exchange").take(names),
        "window_start": pa.array(start, pa.int64()).cast(timestamps),
        "window_end": pa.array(start + tf.width_us, pa.int64()).cast(timestamps),
        "window_date": pa.array((start // _US_PER_DAY).astype("int32"), pa.int32()).cast(pa.date32()),
        "open_price": price[heads],
        "high_price": np.maximum.reduceat(price, heads),
        "low_price": np.minimum.reduceat(price, heads),
        "close_price": price[tails],
        "volume": volume,
        "trade_count": np.diff(np.append(heads, len(order))),
        "vwap": notional / volume,  # ingest keeps positive quantities only: never 0 / 0
        "notional": notional,
    }
    for index, ranges in enumerate(counted):
        if read is not None and ranges_cover(ranges, read):
            columns[f"{COUNTED}{index}"] = columns["trade_count"]
        else:
            columns[f"{COUNTED}{index}"] = np.add.reduceat(in_ranges(stamps, ranges).astype(np.int64), heads)
    return s.cast_to(pa.table(columns), target)
