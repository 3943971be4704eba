"""Which row groups of a local Parquet data file can hold a time in some ranges, from footers
read once per process.

A late tick reads a few hundred trades from each of a hundred row groups, spread over as many
files. Opening each file parsed its footer again (0.85 ms for a day of 2.4M trades: 74 row
groups), then comparing the row groups' statistics one by one in Python took about as long:
together a third of the read (measured). A data file never changes once written (a new one has
a new path), so its row groups' bounds are kept here, by path and size, as two arrays, and its
footer with them while the footers kept stay under a byte budget. The long-lived processes that
read again and again (the Spark service's driver, the steps' workers) parse each footer once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow.parquet as pq

from ohlcv.windows import EPOCH

__all__ = ["CACHED_FILES", "CACHED_FOOTER_BYTES", "RowGroups", "row_groups_meeting"]

# Files whose row-group bounds are kept (16 bytes a row group: a 24M-trade day's 730 groups
# take 12 KB), the least recently used dropped first.
CACHED_FILES = 4096
# Footers kept beside them, in serialized bytes (a 2.4M-trade day's is 64 KB, a 24M one's
# about ten times that); a file whose footer is not kept is opened as usual, its bounds still
# known.
CACHED_FOOTER_BYTES = 64 << 20

@dataclass(frozen=True)
class _Bounds:
    lows: np.ndarray  # per row group, the column's lowest value; int64 microseconds
    highs: np.ndarray
    footer: pq.FileMetaData | None
    footer_bytes: int


@dataclass(frozen=True)
class RowGroups:
    """The row groups of one file to read, and its footer when it is kept (to open it with)."""

    indices: list[int]
    footer: pq.FileMetaData | None


_files: OrderedDict[tuple[str, str, int | None], _Bounds] = OrderedDict()
_footer_bytes = 0
_lock = threading.Lock()  # the Spark service serves several requests at once, each in a thread


def _micros(value) -> int:
    if isinstance(value, datetime):  # Iceberg's timestamptz is UTC; pyarrow may give it naive
        value = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return (value - EPOCH) // timedelta(microseconds=1)
    return int(value)


def _read_bounds(path: str, column: str) -> _Bounds:
    footer = pq.ParquetFile(path).metadata
    index = footer.schema.to_arrow_schema().get_field_index(column)
    lows, highs = [], []
    for group in range(footer.num_row_groups):
        statistics = footer.row_group(group).column(index).statistics
        if statistics is None or not statistics.has_min_max:  # cannot be pruned: always read
            lows.append(np.iinfo(np.int64).min)
            highs.append(np.iinfo(np.int64).max)
        else:
            lows.append(_micros(statistics.min))
            highs.append(_micros(statistics.max))
    return _Bounds(np.array(lows, "int64"), np.array(highs, "int64"), footer, footer.serialized_size)


def _bounds(path: str, column: str, size: int | None) -> _Bounds:
    global _footer_bytes
    key = (path, column, size)
    with _lock:
        if key in _files:
            _files.move_to_end(key)
            return _files[key]
    bounds = _read_bounds(path, column)
    with _lock:
        if key not in _files:
            _files[key] = bounds
            _footer_bytes += bounds.footer_bytes
            # Footers go first (oldest first), then whole entries past the file count.
            for old_key in list(_files):
                if _footer_bytes <= CACHED_FOOTER_BYTES or old_key == key:
                    break
                old = _files[old_key]
                if old.footer is not None:
                    _files[old_key] = _Bounds(old.lows, old.highs, None, 0)
                    _footer_bytes -= old.footer_bytes
            while len(_files) > CACHED_FILES:
                _, dropped = _files.popitem(last=False)
                _footer_bytes -= dropped.footer_bytes
    return bounds


def row_groups_meeting(path: str, column: str, starts: np.ndarray, ends: np.ndarray, size: int | None = None) -> RowGroups:
    """The row groups of the file at `path` whose `column` bounds meet one of the sorted,
    disjoint [start, end) microsecond bounds. `size`: the file's size in bytes as its manifest
    entry records it, part of what the cache knows a file by (a file put back at the same path
    is read again). Raises what pyarrow raises for a missing or broken file (the caller names
    the file)."""
    bounds = _bounds(path, column, size)
    if not len(starts):
        return RowGroups([], bounds.footer)
    last = np.searchsorted(starts, bounds.highs, side="right") - 1  # the last range starting at or before each high
    meets = (last >= 0) & (ends[np.maximum(last, 0)] > bounds.lows)
    return RowGroups(np.flatnonzero(meets).tolist(), bounds.footer)
