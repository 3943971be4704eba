"""Publish a chunk's candles: each target range of each timeframe replaced in one commit."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from ohlcv.catalog import load_candles, open_catalog
from ohlcv.settings import Settings
from ohlcv.store import CommitResult, commit_candles, micros
from ohlcv.windows import Chunk, WindowRange

__all__ = ["candles_in", "commit_chunk"]


def candles_in(candles: pa.Table, rng: WindowRange) -> pa.Table:
    """The candles whose window starts inside `rng`."""
    starts = candles.column("window_start").cast(pa.int64())
    inside = pc.and_(pc.greater_equal(starts, micros(rng.start)), pc.less(starts, micros(rng.end)))
    return candles.filter(inside)


def commit_chunk(settings: Settings, chunk: Chunk, candles: dict[str, pa.Table], now: datetime) -> list[CommitResult]:
    """Replace each target range with its candles (`candles` by timeframe name, over the chunk's
    read range): one Iceberg commit per table touched, none where nothing changed. `now`
    stamps created_at/updated_at."""
    catalog = open_catalog(settings)
    results = []
    for tf, rng in chunk.targets:
        table = load_candles(catalog, settings.namespace, tf)
        results.append(commit_candles(table, candles_in(candles[tf.name], rng), rng, now))
    return results
