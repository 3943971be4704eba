"""Iceberg schemas and partition specs of the trades, quarantine and candle tables.

Field ids are fixed here once: they are what Iceberg matches columns by, so they must never
be renumbered. The Arrow schemas used for writing are derived from these, so every column's
type and nullability has one definition.
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, MonthTransform
from pyiceberg.types import (
    DateType,
    DoubleType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from ohlcv.timeframes import Timeframe

__all__ = [
    "TRADES_TABLE",
    "QUARANTINE_TABLE",
    "TRADE_ID_RANGES_TABLE",
    "TRADES_SCHEMA",
    "QUARANTINE_SCHEMA",
    "TRADE_ID_RANGES_SCHEMA",
    "CANDLE_SCHEMA",
    "TRADE_COLUMNS",
    "QUARANTINE_RAW_COLUMNS",
    "CANDLE_KEY",
    "CANDLE_VALUES",
    "trades_spec",
    "quarantine_spec",
    "candle_spec",
    "arrow_schema",
    "arrow_build_schema",
    "cast_to",
]

TRADES_TABLE = "gold_crypto_trades"
QUARANTINE_TABLE = "quarantine_trades"

TRADES_SCHEMA = Schema(
    NestedField(1, "exchange", StringType(), required=True),
    NestedField(2, "symbol", StringType(), required=True),
    NestedField(3, "trade_id", StringType(), required=True),
    NestedField(4, "price", DoubleType(), required=True),
    NestedField(5, "quantity", DoubleType(), required=True),
    NestedField(6, "side", StringType(), required=False),
    NestedField(7, "timestamp", TimestamptzType(), required=True),
    NestedField(8, "ingested_at", TimestamptzType(), required=True),
)
TRADE_COLUMNS = ("exchange", "symbol", "trade_id", "price", "quantity", "timestamp")

# A quarantined row keeps what the file said, as text, so nothing is lost to a failed parse.
QUARANTINE_RAW_COLUMNS = ("exchange", "symbol", "trade_id", "price", "quantity", "side", "timestamp")
QUARANTINE_SCHEMA = Schema(
    *(NestedField(i, name, StringType(), required=False) for i, name in enumerate(QUARANTINE_RAW_COLUMNS, start=1)),
    NestedField(8, "reason", StringType(), required=True),
    NestedField(9, "source", StringType(), required=False),
    NestedField(10, "ingested_at", TimestamptzType(), required=True),
)

# Which trade ids each (exchange, symbol) stored on each day (see ohlcv/dedup.py): what lets
# ingest find the stored trades a new file repeats without reading the trades table. An id of
# at most 18 digits counts as a number (so "999" < "1000"), any other id as text.
TRADE_ID_RANGES_TABLE = "trade_id_ranges"
TRADE_ID_RANGES_SCHEMA = Schema(
    NestedField(1, "exchange", StringType(), required=True),
    NestedField(2, "symbol", StringType(), required=True),
    NestedField(3, "day", DateType(), required=True),
    NestedField(4, "first_number", LongType(), required=False),
    NestedField(5, "last_number", LongType(), required=False),
    NestedField(6, "first_text", StringType(), required=False),
    NestedField(7, "last_text", StringType(), required=False),
    NestedField(8, "trades", LongType(), required=True),
)

CANDLE_KEY = ("exchange", "symbol", "window_start")
CANDLE_VALUES = (
    "window_end",
    "window_date",
    "open_price",
    "high_price",
    "low_price",
    "close_price",
    "volume",
    "trade_count",
    "vwap",
)
CANDLE_SCHEMA = Schema(
    NestedField(1, "symbol", StringType(), required=True),
    NestedField(2, "exchange", StringType(), required=True),
    NestedField(3, "window_start", TimestamptzType(), required=True),
    NestedField(4, "window_end", TimestamptzType(), required=True),
    NestedField(5, "window_date", DateType(), required=True),
    NestedField(6, "open_price", DoubleType(), required=True),
    NestedField(7, "high_price", DoubleType(), required=True),
    NestedField(8, "low_price", DoubleType(), required=True),
    NestedField(9, "close_price", DoubleType(), required=True),
    NestedField(10, "volume", DoubleType(), required=True),
    NestedField(11, "trade_count", LongType(), required=True),
    NestedField(12, "vwap", DoubleType(), required=True),
    NestedField(13, "created_at", TimestamptzType(), required=True),
    NestedField(14, "updated_at", TimestamptzType(), required=True),
    identifier_field_ids=[2, 1, 3],
)


def trades_spec() -> PartitionSpec:
    return PartitionSpec(PartitionField(source_id=7, field_id=1000, transform=DayTransform(), name="timestamp_day"))


def quarantine_spec() -> PartitionSpec:
    return PartitionSpec(PartitionField(source_id=10, field_id=1000, transform=DayTransform(), name="ingested_at_day"))


def candle_spec(tf: Timeframe) -> PartitionSpec:
    transform, suffix = (MonthTransform(), "month") if tf.partition == "month" else (DayTransform(), "day")
    return PartitionSpec(PartitionField(source_id=3, field_id=1000, transform=transform, name=f"window_start_{suffix}"))


def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema to write `schema` with: same names, types and nullability."""
    return schema_to_pyarrow(schema, include_field_ids=False)


def arrow_build_schema(schema: Schema) -> pa.Schema:
    """`arrow_schema` with 32-bit string offsets, for rows built from a file before they are
    written: pyiceberg writes either to the same Parquet strings, and casting a 2.4M-row file's
    text columns to large_string was 0.16 s of its ingest (a fresh process's first allocations)."""
    return pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in arrow_schema(schema)])


def cast_to(table: pa.Table, target: pa.Schema) -> pa.Table:
    """`table` in `target`'s types and nullability. Arrow casts types only between schemas of the
    same nullability, so the types go first, through `target` with every field nullable."""
    return table.cast(pa.schema([f.with_nullable(True) for f in target])).cast(target)
