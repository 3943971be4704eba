"""Load trade files, validate every row, land the valid ones and quarantine the rest with a reason.

A file is checked as a whole first (readable, known format, required columns present): a
malformed file is refused before anything is written. Row problems never refuse a file: the
row goes to `quarantine_trades` with its raw text and every reason that applies, and the valid
rows still land. A trade delivered again (same exchange, symbol and trade_id) lands once: the
version ingested first wins, and every later one goes to quarantine as "duplicate" with its raw
row (ohlcv/dedup.py), so candles need not deduplicate the days ingest vouches for.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog

from ohlcv import dedup, schema as s, timeframes
from ohlcv.catalog import load_table
from ohlcv.data_files import append_in_order
from ohlcv.errors import InputError, TableNotFound
from ohlcv.store import committing, merge_small_files
from ohlcv.windows import WindowRange, floor

__all__ = ["EpochUnit", "FileReport", "check_file", "read_file", "validate", "ingest_files", "in_time_order", "REASONS", "DUPLICATE", "NAME_PATTERN", "check_name"]

log = logging.getLogger(__name__)

EpochUnit = Literal["s", "ms", "us", "ns"]
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}

# A trade outside these bounds is almost always an epoch read in the wrong unit (--epoch-unit).
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)

# Exchange and symbol names may one day reach file paths (partition values) and do reach
# queries: only these characters, at most 64 of them, starting with a letter or digit.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,63}$"
NAME_RULE = "letters, digits and . _ - / : (at most 64)"

REASONS = (
    "missing exchange",
    "missing symbol",
    "missing trade_id",
    f"exchange is not a valid name ({NAME_RULE})",
    f"symbol is not a valid name ({NAME_RULE})",
    "missing price",
    "missing quantity",
    "missing timestamp",
    "price is not a number",
    "quantity is not a number",
    "price is not positive and finite",
    "quantity is not positive and finite",
    "timestamp is not parseable",
    "timestamp out of range 2000..2100 (check --epoch-unit)",
)
# A valid row that an earlier version of the same trade outranks: stored, or earlier in the file.
DUPLICATE = "duplicate"


@dataclass
class FileReport:
    path: str
    rows: int = 0
    ingested: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # valid rows quarantined because another version of the trade wins (in `quarantined` too)


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown file format {path.suffix or '(no extension)'!r}: use .parquet or .csv")
    return fmt


def _columns_of(path: Path, fmt: str) -> list[str]:
    try:
        if fmt == "parquet":
            return list(pq.read_schema(path).names)
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot be read as {fmt}: {exc}") from None
    if not header:
        raise InputError(f"{path}: empty CSV file (no header row)")
    return [name.strip() for name in header]


def check_file(path: str | Path) -> str:
    """Refuse a file that cannot be ingested at all; returns its format."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    fmt = _format_of(path)
    columns = _columns_of(path, fmt)
    missing = [c for c in s.TRADE_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{path}: missing required columns {', '.join(missing)} (found: {', '.join(columns) or 'none'})")
    return fmt


def read_file(path: str | Path) -> pa.Table:
    """Read a checked file. CSV cells are read as text so that a bad cell can be quarantined verbatim."""
    path = Path(path)
    fmt = check_file(path)
    wanted = [c for c in (*s.TRADE_COLUMNS, "side")]
    try:
        if fmt == "parquet":
            present = pq.read_schema(path).names
            return pq.read_table(path, columns=[c for c in wanted if c in present])
        header = _columns_of(path, fmt)
        options = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            include_columns=[c for c in wanted if c in header],
            strings_can_be_null=False,
        )
        return pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=None), convert_options=options)
    except pa.ArrowException as exc:
        raise InputError(f"{path}: cannot be read as {fmt}: {exc}") from None


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column as trimmed text; null stays null."""
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return pc.utf8_trim_whitespace(column)


def _names(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """An exchange or symbol column as trimmed text, and which rows hold a valid name.

    A file holds a handful of distinct names: they are trimmed and matched once each, in the
    column's dictionary, not once per row (a third of the validation time of a 2.4M-row file)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    names = _text(encoded.dictionary)
    valid = pc.fill_null(pc.match_substring_regex(names, NAME_PATTERN), False)
    valid_rows = pc.fill_null(pc.take(valid, encoded.indices), False).to_numpy(zero_copy_only=False)
    if pa.types.is_string(column.type) and pc.all(pc.equal(names, encoded.dictionary)).as_py():
        return column, valid_rows  # nothing to trim: no copy of the column
    return pc.take(names, encoded.indices), valid_rows


def _blank(text: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)


def _number(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, missing, unparseable) for a price or quantity column of any type."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        missing = np.isnan(values) & column.is_null().to_numpy(zero_copy_only=False)
        return values, missing, np.zeros(len(values), dtype=bool)
    text = _text(column)
    missing = _blank(text)
    values = pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(dtype="float64")
    return values, missing, np.isnan(values) & ~missing & ~_nan_literal(text)


def _nan_literal(text: pa.ChunkedArray) -> np.ndarray:
    # "nan" parses as a number; it is refused later as not finite, not as unparseable.
    lowered = pc.utf8_lower(pc.fill_null(text, ""))
    return pc.is_in(lowered, pa.array(["nan", "+nan", "-nan"])).to_numpy(zero_copy_only=False)


def _epoch_numbers_to_us(values: np.ndarray, unit: EpochUnit) -> np.ndarray:
    """Float epoch numbers to microseconds (float64; NaN stays NaN), floored to whole microseconds."""
    if unit == "ns":
        return np.floor(values / 1_000)
    return np.floor(values * _US_PER_UNIT[unit])


def _epoch_ints_to_us(values: np.ndarray, unit: EpochUnit) -> np.ndarray:
    """Integer epochs to microseconds. Nanoseconds are divided as integers: a float64 would round them."""
    values = values.astype("int64", copy=False)
    if unit == "ns":
        return (values // 1_000).astype("float64")
    # Exact while the result stays below 2**53 us (year 2255); anything larger is out of range anyway.
    micros = values.astype("float64")
    if _US_PER_UNIT[unit] != 1:
        micros *= _US_PER_UNIT[unit]  # in place: a 24M-row file's column is 192 MB per copy
    return micros


def _timestamps(column: pa.ChunkedArray, unit: EpochUnit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epoch microseconds as float64 with NaN, missing, unparseable) for a timestamp column of any type.

    Microseconds fit float64 exactly for any date this platform accepts, and NaN marks a row
    that has no usable time.
    """
    kind = column.type
    n = len(column)
    missing = column.is_null().to_numpy(zero_copy_only=False)
    unparseable = np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(kind):
        # Aware timestamps are stored as UTC already; naive ones mean UTC.
        raw = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        micros = _epoch_ints_to_us(raw, kind.unit)
    elif pa.types.is_date(kind):
        days = pc.fill_null(pc.cast(column, pa.date32()).cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
        micros = days.astype("float64") * 86_400_000_000
    elif pa.types.is_integer(kind):
        raw = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False)
        micros = _epoch_ints_to_us(raw, unit)
    elif pa.types.is_floating(kind):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        missing = np.isnan(values)
        micros = _epoch_numbers_to_us(values, unit)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _text_timestamps(_text(column), unit)
    else:
        raise InputError(f"the timestamp column has type {kind}: expected timestamps, ISO-8601 text or epoch numbers")
    micros[missing] = np.nan
    return micros, missing, unparseable


def _text_timestamps(text: pa.ChunkedArray, unit: EpochUnit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text cells hold either an epoch number (digits) or an ISO-8601 time; naive ISO means UTC."""
    missing = _blank(text)
    series = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object).fillna("")
    whole = series.str.fullmatch(r"[+-]?\d{1,19}").to_numpy(dtype=bool)
    decimal = series.str.fullmatch(r"[+-]?\d+\.\d*").to_numpy(dtype=bool)
    micros = np.full(len(series), np.nan)
    if whole.any():
        numbers = pd.to_numeric(series[whole], errors="coerce")
        if numbers.dtype == "int64":
            micros[whole] = _epoch_ints_to_us(numbers.to_numpy(), unit)
        else:  # beyond int64: far out of range, a float is precise enough to say so
            micros[whole] = _epoch_numbers_to_us(numbers.astype("float64").to_numpy(), unit)
    if decimal.any():
        micros[decimal] = _epoch_numbers_to_us(series[decimal].astype("float64").to_numpy(), unit)
    iso = ~whole & ~decimal & ~missing
    # Parse zoned and naive texts apart: given both in one call, pandas applied one row's
    # offset to the naive rows (seen with pandas 2.3).
    zoned = series.str.contains(r"\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:[zZ]|[+-]\d\d(?::?\d\d)?)$", regex=True).to_numpy(dtype=bool)
    for subset, localise in ((iso & zoned, False), (iso & ~zoned, True)):
        if subset.any():
            micros[subset] = _iso_to_us(series[subset], localise)
    unparseable = np.isnan(micros) & ~missing
    return micros, missing, unparseable


def _iso_to_us(texts: pd.Series, naive: bool) -> np.ndarray:
    parsed = pd.to_datetime(texts, utc=not naive, format="ISO8601", errors="coerce")
    if naive:
        parsed = parsed.dt.tz_localize("UTC")
    as_us = parsed.to_numpy(dtype="datetime64[us]").astype("int64").astype("float64")
    as_us[parsed.isna().to_numpy()] = np.nan
    return as_us


def validate(table: pa.Table, epoch_unit: EpochUnit, ingested_at: datetime, source: str = "") -> tuple[pa.Table, pa.Table, Counter[str], np.ndarray]:
    """Split a file's rows into (valid trades, quarantined rows, count per reason, which rows of
    the file are valid, as a mask)."""
    n = table.num_rows
    problems: dict[str, np.ndarray] = {}
    texts, valid_names = {}, {}
    for name in ("exchange", "symbol"):
        texts[name], valid_names[name] = _names(table.column(name))
    texts["trade_id"] = _text(table.column("trade_id"))
    for name, text in texts.items():
        problems[f"missing {name}"] = _blank(text)
    for name in ("exchange", "symbol"):
        problems[f"{name} is not a valid name ({NAME_RULE})"] = ~valid_names[name] & ~problems[f"missing {name}"]

    numbers = {}
    for name in ("price", "quantity"):
        values, missing, unparseable = _number(table.column(name))
        numbers[name] = values
        problems[f"missing {name}"] = missing
        problems[f"{name} is not a number"] = unparseable
        bad = ~missing & ~unparseable & ~(np.isfinite(values) & (values > 0))
        problems[f"{name} is not positive and finite"] = bad

    micros, missing_ts, unparseable_ts = _timestamps(table.column("timestamp"), epoch_unit)
    problems["missing timestamp"] = missing_ts
    problems["timestamp is not parseable"] = unparseable_ts
    lo, hi = (int(t.timestamp()) * 1_000_000 for t in (EARLIEST, LATEST))
    with np.errstate(invalid="ignore"):
        problems["timestamp out of range 2000..2100 (check --epoch-unit)"] = (
            ~missing_ts & ~unparseable_ts & ((micros < lo) | (micros >= hi))
        )

    bad_rows = np.zeros(n, dtype=bool)
    counts: Counter[str] = Counter()
    for reason in REASONS:
        flags = problems[reason]
        bad_rows |= flags
        if flags.any():
            counts[reason] = int(flags.sum())

    good = ~bad_rows
    side = _text(table.column("side")) if "side" in table.column_names else pa.chunked_array([pa.nulls(n, pa.string())])
    side = pc.if_else(pc.equal(pc.fill_null(side, ""), ""), pa.scalar(None, pa.string()), side)
    stamp = pa.scalar(ingested_at, pa.timestamp("us", tz="UTC"))
    # Most files have no bad row: their columns are then taken whole, not copied by a filter.
    kept = _Kept(good)
    valid = pa.table(
        {
            "exchange": kept.of(texts["exchange"]),
            "symbol": kept.of(texts["symbol"]),
            "trade_id": kept.of(texts["trade_id"]),
            "price": pa.array(kept.of(numbers["price"]), pa.float64()),
            "quantity": pa.array(kept.of(numbers["quantity"]), pa.float64()),
            "side": kept.of(side),
            "timestamp": pa.array(kept.of(micros).astype("int64"), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "ingested_at": pa.repeat(stamp, kept.count),
        }
    ).cast(s.arrow_build_schema(s.TRADES_SCHEMA))

    reasons = ["; ".join(r for r in REASONS if problems[r][i]) for i in np.flatnonzero(bad_rows)]
    return valid, _quarantine_rows(table, bad_rows, reasons, source, stamp), counts, good


class _Kept:
    """The rows a boolean mask keeps, of numpy arrays and Arrow columns alike; all of a column
    itself when the mask keeps every row."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.count = int(mask.sum())
        self.every_row = self.count == len(mask)
        self._arrow_mask = None if self.every_row else pa.array(mask)

    def of(self, values):
        if self.every_row:
            return values
        if isinstance(values, np.ndarray):
            return values[self.mask]
        return values.filter(self._arrow_mask)


def _quarantine_rows(table: pa.Table, rows: np.ndarray, reasons: list[str] | pa.Array, source: str, stamp: pa.Scalar) -> pa.Table:
    """The rows of the file that the mask `rows` picks, as it wrote them (text), each with its
    reason (`reasons` in file order)."""
    # A filter by mask, not a take: Arrow's take of a chunked column joins all its chunks into
    # one array first (1.6 s for the five columns of a 24M-row file, for no row at all).
    count = int(rows.sum())
    mask = pa.array(rows)
    raw = {}
    for name in s.QUARANTINE_RAW_COLUMNS:
        if name in table.column_names:
            raw[name] = pc.cast(table.column(name).filter(mask), pa.string())
        else:
            raw[name] = pa.nulls(count, pa.string())
    columns = {
        **raw,
        "reason": pa.array(reasons, pa.string()),
        "source": pa.repeat(pa.scalar(source, pa.string()), count),
        "ingested_at": pa.repeat(stamp, count),
    }
    return pa.table(columns).cast(s.arrow_schema(s.QUARANTINE_SCHEMA))


def check_name(value: str, option: str) -> str:
    """A --symbol or --exchange from the command line, held to the same rule as ingested names."""
    if not re.fullmatch(NAME_PATTERN, value):
        raise InputError(f"{option} {value!r} is not a valid name: use {NAME_RULE}")
    return value


def in_time_order(trades: pa.Table) -> pa.Table:
    """The trades sorted by timestamp (stable: equal times keep the file's order), so that each
    row group of the files written covers a short span of time (see catalog.py). A file already
    in time order, as exchange exports usually are, is not sorted again."""
    stamps = trades.column("timestamp")
    if trades.num_rows < 2 or pc.all(pc.greater_equal(stamps[1:], stamps[:-1])).as_py():
        return trades
    return trades.take(pc.sort_indices(stamps))


def ingest_files(
    catalog: Catalog,
    namespace: str,
    paths: list[str | Path],
    epoch_unit: EpochUnit,
    now: datetime,
    on_file=None,
) -> list[FileReport]:
    """Ingest files one commit per table per file; every file is checked before the first write."""
    if epoch_unit not in _US_PER_UNIT:
        raise InputError(f"--epoch-unit must be one of s, ms, us, ns, got {epoch_unit!r}")
    for path in paths:
        check_file(path)
    trades = load_table(catalog, namespace, s.TRADES_TABLE)
    quarantine = load_table(catalog, namespace, s.QUARANTINE_TABLE)
    try:
        index = load_table(catalog, namespace, s.TRADE_ID_RANGES_TABLE)
    except TableNotFound:  # a warehouse from before deduplication on write: `ohlcv init` adds it
        log.warning("no %s table (run `ohlcv init`): trades land unchecked and are deduplicated when read", s.TRADE_ID_RANGES_TABLE)
        index = None
    reports = []
    for path in paths:
        table = read_file(path)
        valid, bad, counts, valid_rows = validate(table, epoch_unit, now, source=str(path))
        trades.refresh()
        checked = trades.current_snapshot()
        repeats, properties, landing_ranges = _first_versions(trades, index, checked, valid)
        duplicates = int(repeats.sum())
        if duplicates:
            counts[DUPLICATE] = duplicates
            stamp = pa.scalar(now, pa.timestamp("us", tz="UTC"))
            reasons = pa.repeat(pa.scalar(DUPLICATE, pa.string()), duplicates)
            repeated_rows = np.zeros_like(valid_rows)
            repeated_rows[valid_rows] = repeats  # the file's rows behind the repeated valid ones
            bad = pa.concat_tables([bad, _quarantine_rows(table, repeated_rows, reasons, str(path), stamp)])
            valid = valid.filter(pa.array(~repeats))
        valid = in_time_order(valid)
        # Valid rows first: if the process dies between the commits, no trade is lost and the
        # quarantine rows reappear on the next ingest of the same file. The index before the
        # trades: an index entry without its trades only costs a needless check later.
        if valid.num_rows:
            if index is not None:
                dedup.record_id_ranges(index, landing_ranges)
            append_in_order(trades, valid, {"ohlcv.source": str(path), **properties})
            _merge_small_files(trades, valid, str(path))
        if bad.num_rows:
            append_in_order(quarantine, bad, {"ohlcv.source": str(path)})
        report = FileReport(str(path), table.num_rows, valid.num_rows, bad.num_rows, counts, duplicates)
        log.info("ingested %s: %d rows, %d landed, %d quarantined (%d duplicates)",
                 path, report.rows, report.ingested, report.quarantined, report.duplicates)
        reports.append(report)
        if on_file is not None:
            on_file(report)
    return reports


def _merge_small_files(trades, landed: pa.Table, source: str) -> None:
    """After an append: the small files of each day it landed in merged into one (see
    store.merge_small_files), in a commit of its own. The trades have landed already, so a
    merge that fails costs nothing but the files it would have saved (the daily upkeep compacts
    them): it is logged, and the ingest goes on."""
    bounds, day = pc.min_max(landed.column("timestamp")), timeframes.get("1d")
    days = WindowRange(floor(bounds["min"].as_py(), day), floor(bounds["max"].as_py(), day) + day.width)
    try:
        with committing(trades, "merge of small files"):
            rows = merge_small_files(trades, "timestamp", [days], {"ohlcv.compaction": f"small files after {source}"})
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("small trade files of %s not merged after %s (the upkeep compacts them): %s", days, source, exc)
        return
    if rows:
        log.info("merged the small trade files of the days %s landed in: %d rows", source, rows)


def _first_versions(trades, index, checked, valid: pa.Table) -> tuple[np.ndarray, dict[str, str], pa.Table | None]:
    """Which valid rows another version of their trade outranks (an earlier row of the file, or a
    stored trade), the guarantee the append records (see ohlcv/dedup.py), and the index rows of
    the trades that land (None without an index)."""
    repeats = dedup.repeats_in_file(valid)
    if index is None:
        return repeats, {}, None
    # After `checked` was read, never before: ingest indexes trades before it appends them, so
    # the index read now covers every trade of `checked`.
    index.refresh()
    firsts = np.flatnonzero(~repeats)
    candidates = valid.take(firsts) if repeats.any() else valid  # a copy of a whole file costs
    new_ranges = dedup.id_ranges(candidates)
    where = dedup.series_to_check(dedup.load_id_ranges(index), new_ranges)
    stored = dedup.stored_versions(trades, checked, where)
    outranked, shared = dedup.outranked_by_stored(candidates, stored)
    if outranked.any():  # fewer rows land than were checked: their ranges again, exactly
        repeats[firsts[outranked]] = True
        new_ranges = dedup.id_ranges(valid.filter(pa.array(~repeats)))
    at_risk = dedup.duplicate_days(trades, checked.snapshot_id) if checked is not None else dedup.DuplicateDays(frozenset())
    return repeats, dedup.guarantee(checked, at_risk | dedup.DuplicateDays(frozenset(shared))), new_ranges
