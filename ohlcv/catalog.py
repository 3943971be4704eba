"""Open the Iceberg catalog named by the settings, and create or load the platform's tables."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from ohlcv import schema as s
from ohlcv.errors import ConfigError, SchemaMismatch, TableNotFound
from ohlcv.object_store import check_bucket
from ohlcv.parquet_writer import DICTIONARY_COLUMNS
from ohlcv.settings import Settings
from ohlcv.timeframes import TIMEFRAMES, Timeframe

__all__ = ["open_catalog", "CANDLE_TABLE_PROPERTIES", "TRADES_TABLE_PROPERTIES", "TRADE_ID_RANGES_PROPERTIES", "TableSpec", "table_specs", "ensure_tables", "load_table", "load_candles", "load_trades"]

log = logging.getLogger(__name__)


def _sql_catalog(settings: Settings) -> Catalog:
    from pyiceberg.catalog.sql import SqlCatalog

    if settings.warehouse_is_local:
        settings.warehouse_path.mkdir(parents=True, exist_ok=True)
    try:
        return SqlCatalog(
            "ohlcv", uri=settings.resolved_catalog_uri, warehouse=settings.warehouse_uri, **settings.fileio_properties()
        )
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the catalog {settings.masked_catalog_uri} needs the driver {exc.name!r}: "
            "pip install 'ohlcv-on-ray[postgres]' for PostgreSQL"
        ) from None


def _rest_catalog(settings: Settings) -> Catalog:
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog("ohlcv", uri=settings.resolved_catalog_uri, warehouse=settings.warehouse_uri, **settings.fileio_properties())


# URI scheme (before any "+driver") -> catalog factory.
CATALOGS: dict[str, Callable[[Settings], Catalog]] = {
    "sqlite": _sql_catalog,
    "postgresql": _sql_catalog,
    "http": _rest_catalog,
    "https": _rest_catalog,
}


def open_catalog(settings: Settings) -> Catalog:
    """The catalog of the settings, its FileIO configured for the warehouse's storage.

    An object-store warehouse is checked first (once per process): a missing bucket, wrong
    keys or an unreachable endpoint fail here with one line, before anything is written.
    """
    check_bucket(settings.warehouse_uri, settings.s3_endpoint, settings.s3_region, "OHLCV_WAREHOUSE")
    scheme = urlsplit(settings.resolved_catalog_uri).scheme.split("+", 1)[0]
    factory = CATALOGS.get(scheme)
    if factory is None:
        raise ConfigError(
            f"OHLCV_CATALOG_URI {settings.masked_catalog_uri} has an unsupported scheme {scheme!r}: "
            f"use one of {', '.join(sorted(CATALOGS))}"
        )
    return factory(settings)


# A candle commit checks the table's watermark, then commits on exactly the snapshot it
# checked: pyiceberg must not rebase it onto another writer's commit by itself (its retries
# re-check data files only), or a watermark could move backwards. A conflict fails the commit
# instead (CommitConflict), and the step's retry starts over from the new snapshot.
#
# Dictionaries stop at 16 KB a column chunk: enough for the names, the dates and a day's window
# starts, while prices and volumes, nearly all distinct, are written plainly at once instead of
# filling pyarrow's default 2 MB dictionary only to drop it. That halved the write of 30 days of
# 1m candles (a late tick's commit: 0.98 -> 0.48 s for 30 files of 43k rows, files 8% smaller,
# reads no slower, measured).
#
# Dictionaries only for the names, the dates and a commit's timestamps (ohlcv/parquet_writer.py):
# 30 files of 43k 1m candles written in 0.44 s, against 0.73 s with the 16 KB limit alone.
#
# Snappy, not zstd as the other tables: every tick rewrites the days its ranges touch, so a
# candle table is encoded far more often than it is stored. The 30 day files of a late tick's
# commit take 0.40 s to write against 0.48 s with zstd (2 threads; 0.45 s against 0.63 s of
# encoding on one), for files 18% larger (47 MB against 40 MB for 30 days of 1m candles), and
# decode faster for every reader (measured). Spark, DuckDB and pyarrow all read it.
CANDLE_TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",
    "write.parquet.compression-codec": "snappy",
    "write.parquet.dict-size-bytes": "16384",
    DICTIONARY_COLUMNS: "symbol,exchange,window_date,created_at,updated_at",
}
# Ingest writes trades in time order (ingest.in_time_order), in row groups of this many rows:
# a read of a few minutes (a tick's lookback, a late window of any age) then skips every other
# row group by its timestamp statistics, where pyiceberg's default (about a million rows, half
# a day of a busy exchange) made it read whole days. 16k, not 32k: on a 2.4M-trade day the
# row groups holding 3 late minutes decode in 3.6 ms against 7.0 ms (0.1 s of a late tick over
# 30 days), while a whole day reads in 0.23 s against 0.21 s and the file is 1.3% larger; 8k
# gains nothing more on the late read (3.2 ms) and costs whole reads 30% (measured).
# Trade ids, prices and quantities are nearly all distinct: written plainly (see
# ohlcv/parquet_writer.py), a row group decodes in half the time.
TRADES_TABLE_PROPERTIES = {"write.parquet.row-group-limit": "16384", DICTIONARY_COLUMNS: "exchange,symbol,side,ingested_at"}
# The trade id index is rewritten whole by each ingest (ohlcv/dedup.py): a commit on a base
# that moved must fail and be redone from the new index, never be rebased over another
# ingest's rewrite (which would drop that ingest's entries).
TRADE_ID_RANGES_PROPERTIES = {"commit.retry.num-retries": "0"}


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: Schema
    partition: PartitionSpec
    properties: dict[str, str] = field(default_factory=dict)


def table_specs() -> list[TableSpec]:
    """Every table the platform owns, in creation order."""
    specs = [
        TableSpec(s.TRADES_TABLE, s.TRADES_SCHEMA, s.trades_spec(), TRADES_TABLE_PROPERTIES),
        TableSpec(s.QUARANTINE_TABLE, s.QUARANTINE_SCHEMA, s.quarantine_spec()),
        TableSpec(s.TRADE_ID_RANGES_TABLE, s.TRADE_ID_RANGES_SCHEMA, PartitionSpec(), TRADE_ID_RANGES_PROPERTIES),
    ]
    specs += [TableSpec(tf.table, s.CANDLE_SCHEMA, s.candle_spec(tf), CANDLE_TABLE_PROPERTIES) for tf in TIMEFRAMES.values()]
    return specs


def ensure_tables(catalog: Catalog, namespace: str) -> list[tuple[str, bool]]:
    """Create the namespace and every missing table; returns (table, created) pairs. Idempotent."""
    catalog.create_namespace_if_not_exists(namespace)
    results = []
    for spec in table_specs():
        identifier = (namespace, spec.name)
        existed = catalog.table_exists(identifier)
        if existed:
            table = catalog.load_table(identifier)
            _check_schema(table, spec.schema)
            missing = {k: v for k, v in spec.properties.items() if table.properties.get(k) != v}
            if missing:  # a table created by an older version of this code
                with table.transaction() as transaction:
                    transaction.set_properties(missing)
        else:
            catalog.create_table_if_not_exists(
                identifier,
                schema=spec.schema,
                partition_spec=spec.partition,
                properties={"format-version": "2", "write.parquet.compression-codec": "zstd", **spec.properties},
            )
            log.info("created table %s.%s", namespace, spec.name)
        results.append((spec.name, not existed))
    return results


def _check_schema(table: Table, expected: Schema) -> None:
    actual = {f.name: (str(f.field_type), f.required) for f in table.schema().fields}
    wanted = {f.name: (str(f.field_type), f.required) for f in expected.fields}
    missing = [n for n in wanted if n not in actual]  # in schema order, as people read a schema
    differing = [n for n in wanted if n in actual and wanted[n][0] != actual[n][0]]
    if missing or differing:
        detail = "; ".join(
            [f"missing columns {', '.join(missing)}"] * bool(missing)
            + [f"{n} is {actual[n][0]}, expected {wanted[n][0]}" for n in differing]
        )
        raise SchemaMismatch(f"table {'.'.join(table.name())} has an unexpected schema: {detail}")


def load_table(catalog: Catalog, namespace: str, name: str) -> Table:
    try:
        return catalog.load_table((namespace, name))
    except (NoSuchTableError, NoSuchNamespaceError):
        raise TableNotFound(f"table {namespace}.{name} does not exist yet: run `ohlcv init` first") from None


def load_trades(catalog: Catalog, namespace: str) -> Table:
    return load_table(catalog, namespace, s.TRADES_TABLE)


def load_candles(catalog: Catalog, namespace: str, tf: Timeframe) -> Table:
    return load_table(catalog, namespace, tf.table)
