"""The benchmark's reference engine (DuckDB SQL written apart from the Spark code) computes the
same candles as the project, field by field: a second independent engine, and the proof that
the benchmark compares like with like."""

from __future__ import annotations

import math

import pytest

from benchmarks.reference import duckdb_candles
from support import stored_trades, utc
from ohlcv.catalog import load_candles, load_trades
from ohlcv.generate import GenerateSpec, generate
from ohlcv.store import micros, plan_trade_files
from ohlcv.windows import WindowRange
from support import ALL, backfill, crafted_trades, ingest_rows

pytestmark = pytest.mark.slow


def by_key(rows: list[dict]) -> dict:
    return {(r["exchange"], r["symbol"], r["window_start"]): r for r in rows}


@pytest.mark.parametrize("engine", ["spark", "arrow"])
@pytest.mark.parametrize("source", ["crafted", "generated"])
def test_duckdb_and_the_project_agree_on_every_candle(settings, catalog, spark, tmp_path, source, engine):
    settings = settings.with_overrides(driver_max_trades=0 if engine == "spark" else 500_000)
    if source == "crafted":
        rows, start, end = crafted_trades(), utc(2024, 1, 31), utc(2024, 2, 2)
        ingest_rows(settings, catalog, rows, tmp_path, "a", utc(2024, 2, 2))
        ingest_rows(settings, catalog, rows[:5], tmp_path, "again", utc(2024, 2, 3))  # duplicates, later
    else:
        start, end = utc(2024, 7, 1), utc(2024, 7, 3)
        rows = generate(GenerateSpec(start, end, symbols=3, exchanges=2, trades_per_day=9_000, seed=4)).to_pylist()
        ingest_rows(settings, catalog, rows, tmp_path, "a", utc(2024, 7, 3))
    assert {run.aggregated.engine for run in backfill(settings, start, end)} == {engine}

    trades = load_trades(catalog, "market_data")
    files = [t.file.file_path.removeprefix("file://") for t in plan_trade_files(trades, WindowRange(start, end))]
    # The generated trades hold one version each: DuckDB reads them as they are, as the project does.
    reference = duckdb_candles(files, micros(start), micros(end), {tf.name: tf.width_us for tf in ALL}, threads=2,
                               deduplicate=source == "crafted")
    assert len(stored_trades(catalog)) == len({(r["exchange"], r["symbol"], r["trade_id"]) for r in rows}), "each trade stored once"
    for tf in ALL:
        mine = by_key(load_candles(catalog, "market_data", tf).scan().to_arrow().to_pylist())
        theirs = by_key(reference[tf.name].to_pylist())
        assert mine.keys() == theirs.keys(), tf.name
        for key, row in theirs.items():
            for name, value in row.items():
                if name in ("volume", "vwap"):
                    assert math.isclose(mine[key][name], value, rel_tol=1e-9), (tf.name, key, name)
                else:
                    assert mine[key][name] == value, (tf.name, key, name, mine[key][name], value)
