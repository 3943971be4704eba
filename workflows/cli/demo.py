"""`ohlcv demo`: the whole pipeline on the embedded default, from nothing to a chart."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import typer
from rich.table import Table

from ohlcv import timeframes
from ohlcv.windows import WindowRange
from workflows.cli.common import console, print_commits, require_spark_prerequisites, command_settings, show, utc_now
from workflows.cli.data import print_candles
from workflows.cli.runs import backfill_with_progress

__all__ = ["demo"]


def demo(
    out_dir: Path = typer.Option(Path("demo"), "--out-dir", help="Where the trades file and the chart go."),
    symbols: int = typer.Option(3, "--symbols"),
    exchanges: int = typer.Option(2, "--exchanges"),
    trades_per_day: int = typer.Option(200_000, "--trades-per-day"),
) -> None:
    """The whole pipeline on the embedded default: init, generate, ingest, backfill, query, chart."""
    from ohlcv.catalog import ensure_tables, load_candles, open_catalog
    from ohlcv.chart import plot_candles
    from ohlcv.generate import SYMBOLS, EXCHANGES, GenerateSpec, generate as make_trades, write_trades
    from ohlcv.ingest import ingest_files
    from ohlcv.store import read_candles

    settings = command_settings(writes=True)
    require_spark_prerequisites(settings)
    timings: dict[str, float] = {}

    def step(name: str):
        console.rule(f"[bold]{name}")
        timings[name] = time.monotonic()

    def done(name: str) -> None:
        timings[name] = time.monotonic() - timings[name]

    step("init")
    catalog = open_catalog(settings)
    ensure_tables(catalog, settings.namespace)
    console.print(f"catalog {settings.masked_catalog_uri}, warehouse {settings.warehouse_uri}")
    done("init")

    step("generate")
    day = utc_now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    trades = make_trades(GenerateSpec(day, day + timedelta(days=1), symbols, exchanges, trades_per_day, seed=7))
    path = write_trades(trades, out_dir / f"trades-{day:%Y%m%d}.parquet")
    console.print(f"{trades.num_rows:,} trades for {day:%Y-%m-%d} written to {path}")
    done("generate")

    step("ingest")
    [report] = ingest_files(catalog, settings.namespace, [str(path)], "us", utc_now())
    console.print(f"{report.ingested:,} trades ingested, {report.quarantined:,} quarantined")
    done("ingest")

    step("backfill")
    commits = backfill_with_progress(settings, timeframes.resolve("all"), day, day + timedelta(days=1))
    print_commits(commits)
    done("backfill")

    step("candles")
    symbol, exchange = SYMBOLS[0][0], EXCHANGES[0]
    rng = WindowRange(day, day + timedelta(days=1))
    summary = Table("table", "candles for the day")
    for tf in timeframes.TIMEFRAMES.values():
        summary.add_row(tf.table, f"{read_candles(load_candles(catalog, settings.namespace, tf), rng).num_rows:,}")
    show(summary)
    hourly = read_candles(load_candles(catalog, settings.namespace, timeframes.get("1h")), rng, symbol, exchange)
    console.print(f"first 1h candles of {symbol} on {exchange}:")
    print_candles(hourly.slice(0, 5), "table")
    five = read_candles(load_candles(catalog, settings.namespace, timeframes.get("5m")), rng, symbol, exchange)
    chart = plot_candles(five, out_dir / "chart.png", f"{symbol} on {exchange}, 5m candles, {day:%Y-%m-%d} (UTC)")
    console.print(f"chart: {chart}")
    done("candles")

    console.rule("[bold]done")
    console.print("  ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items()))
    console.print(f"try: ohlcv candles --symbol {symbol} --exchange {exchange} --timeframe 1h --start {day:%Y-%m-%d}")

