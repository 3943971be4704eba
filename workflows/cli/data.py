"""Data commands: `ohlcv init`, `generate`, `ingest` and `candles` (pyiceberg alone, no Spark)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ohlcv import timeframes
from ohlcv.errors import InputError
from ohlcv.windows import EPOCH, WindowRange
from workflows.cli.common import console, errors, parse_time, command_settings, show, utc_now

__all__ = ["init", "generate", "ingest", "candles", "query_candles", "print_candles"]


# ---------------------------------------------------------------------------------------- init


def init() -> None:
    """Create the namespace, the trades, quarantine and five candle tables (idempotent)."""
    from ohlcv.catalog import ensure_tables, open_catalog

    settings = command_settings(writes=True)
    results = ensure_tables(open_catalog(settings), settings.namespace)
    console.print(f"catalog   {settings.masked_catalog_uri}")
    console.print(f"warehouse {settings.warehouse_uri}")
    for name, created in results:
        console.print(f"  {settings.namespace}.{name:<22} {'created' if created else 'exists'}")


# ------------------------------------------------------------------------------------ generate


def generate(
    out: Path = typer.Option(..., "--out", help="File to write: .parquet or .csv."),
    symbols: int = typer.Option(3, "--symbols", help="How many symbols (BTC-USDT, ETH-USDT, ...)."),
    exchanges: int = typer.Option(2, "--exchanges", help="How many exchanges trade each symbol."),
    start: Optional[str] = typer.Option(None, "--start", help="First instant, ISO-8601 UTC [default: yesterday 00:00]."),
    end: Optional[str] = typer.Option(None, "--end", help="End instant, exclusive [default: start + 1 day]."),
    trades_per_day: int = typer.Option(100_000, "--trades-per-day", help="Trades per day over all series."),
    seed: int = typer.Option(7, "--seed", help="Same seed, same trades."),
    largest_share: Optional[float] = typer.Option(
        None, "--largest-share", help="Share of all trades in the busiest series, e.g. 0.4 [default: about 0.15]."),
) -> None:
    """Write realistic synthetic trades (random-walk prices, bursts, several exchanges)."""
    from ohlcv.generate import GenerateSpec, generate as make_trades, write_trades

    today = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
    first = parse_time(start, "--start") if start else today - timedelta(days=1)
    last = parse_time(end, "--end") if end else first + timedelta(days=1)
    spec = GenerateSpec(first, last, symbols, exchanges, trades_per_day, seed, largest_share)
    trades = make_trades(spec)
    path = write_trades(trades, out)
    console.print(
        f"wrote {trades.num_rows:,} trades of {symbols} symbol(s) on {exchanges} exchange(s), "
        f"{WindowRange(first, last)}, to {path}"
    )


# -------------------------------------------------------------------------------------- ingest


def ingest(
    paths: list[Path] = typer.Argument(..., help="Parquet or CSV files of trades."),
    epoch_unit: str = typer.Option("us", "--epoch-unit", help="Unit of integer timestamps: s, ms, us or ns."),
) -> None:
    """Land valid trades in gold_crypto_trades; bad rows go to quarantine_trades with a reason."""
    from ohlcv.catalog import open_catalog
    from ohlcv.ingest import ingest_files

    settings = command_settings(writes=True)
    catalog = open_catalog(settings)

    def report_file(report) -> None:
        console.print(
            f"{report.path}: {report.rows:,} rows, [green]{report.ingested:,} ingested[/], "
            f"{'[yellow]' if report.quarantined else ''}{report.quarantined:,} quarantined"
            f"{'[/]' if report.quarantined else ''}"
            + (f" ({report.duplicates:,} of them duplicates: an earlier version of the trade wins)" if report.duplicates else "")
        )

    reports = ingest_files(catalog, settings.namespace, [str(p) for p in paths], epoch_unit, utc_now(), on_file=report_file)
    reasons: Counter[str] = Counter()
    for report in reports:
        reasons.update(report.reasons)
    total_in = sum(r.ingested for r in reports)
    total_bad = sum(r.quarantined for r in reports)
    console.print(f"total: {total_in:,} ingested, {total_bad:,} quarantined")
    for reason, count in reasons.most_common():
        console.print(f"  quarantined {count:,}: {reason}")


# ------------------------------------------------------------------------------------- candles


def candles(
    symbol: str = typer.Option(..., "--symbol", help="Symbol, e.g. BTC-USDT."),
    timeframe: str = typer.Option(..., "--timeframe", "-t", help="1m, 5m, 30m, 1h or 1d."),
    exchange: Optional[str] = typer.Option(None, "--exchange", help="Only this exchange [default: all]."),
    start: Optional[str] = typer.Option(None, "--start", help="First window start, ISO-8601 UTC."),
    end: Optional[str] = typer.Option(None, "--end", help="Windows that start before this, ISO-8601 UTC."),
    output: str = typer.Option("table", "--format", help="table, csv or json."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw a candlestick chart to this .png file."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the newest N candles."),
) -> None:
    """Query candles of one symbol (no Spark needed: reads the table through pyiceberg)."""
    if output not in ("table", "csv", "json"):
        raise InputError(f"--format {output!r}: choose table, csv or json")
    settings = command_settings()
    query = {"timeframe": timeframe, "symbol": symbol, "exchange": exchange, "start": start, "end": end, "limit": limit}
    result = _candles_from_keeper(settings, query)
    if result is None:
        result = query_candles(settings, **query)
    print_candles(result, output)
    if plot is not None:
        from ohlcv.chart import plot_candles

        exchanges = sorted(set(result.column("exchange").to_pylist()))
        if len(exchanges) > 1:
            raise InputError(f"--plot draws one series: add --exchange (found {', '.join(exchanges)})")
        title = f"{symbol} {exchanges[0] if exchanges else exchange or ''} {timeframe} candles"
        errors.print(f"chart written to {plot_candles(result, plot, title)}")


def query_candles(settings, timeframe: str, symbol: str, exchange: str | None, start: str | None, end: str | None,
                  limit: int | None):
    """The candles `ohlcv candles` shows, as an Arrow table; the options as typed (the keeper of
    `ohlcv up` answers the same query for a command: workflows/cli/keeper_server.py)."""
    from ohlcv.catalog import load_candles, open_catalog
    from ohlcv.ingest import check_name
    from ohlcv.store import read_candles

    tf = timeframes.get(timeframe)
    check_name(symbol, "--symbol")
    if exchange is not None:
        check_name(exchange, "--exchange")
    first = parse_time(start, "--start") if start else EPOCH
    last = parse_time(end, "--end") if end else datetime(9999, 1, 1, tzinfo=timezone.utc)
    result = read_candles(load_candles(open_catalog(settings), settings.namespace, tf), WindowRange(first, last), symbol, exchange)
    if limit is not None:
        result = result.slice(max(0, result.num_rows - limit))
    return result


def _candles_from_keeper(settings, query: dict):
    """The query answered by the warm keeper of `ohlcv up`, or None when there is none for these settings."""
    from workflows.cli import keeper_client

    keeper = keeper_client.find(settings)
    if keeper is None:
        return None
    try:
        _, payload = keeper.request("/candles", query)
    except keeper_client.NotServed:
        return None
    import pyarrow as pa

    keeper_client.say_used(keeper)
    return pa.ipc.open_stream(payload).read_all()


def print_candles(result, output: str) -> None:
    frame = result.to_pandas()
    if output == "csv":
        sys.stdout.write(frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ"))
        return
    if output == "json":
        records = json.loads(frame.to_json(orient="records", date_format="iso", date_unit="us"))
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return
    if result.num_rows == 0:
        errors.print("no candles match")
        return
    table = Table("exchange", "window_start", "open", "high", "low", "close", "volume", "trades", "vwap")
    for row in frame.itertuples(index=False):
        table.add_row(
            row.exchange, row.window_start.strftime("%Y-%m-%d %H:%M"), f"{row.open_price:,.6g}",
            f"{row.high_price:,.6g}", f"{row.low_price:,.6g}", f"{row.close_price:,.6g}",
            f"{row.volume:,.4f}", f"{row.trade_count:,}", f"{row.vwap:,.6g}",
        )
    show(table)

