"""The `ohlcv` command line: a thin layer over the `ohlcv` domain and the Ray `workflows`.

Errors: a domain error prints one red line and exits 1; `--debug` shows the traceback instead.
Messages for people go to the console; diagnostics go through `logging`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import click
import typer
import typer.exceptions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ohlcv import timeframes
from ohlcv.errors import InputError, OhlcvError
from ohlcv.settings import Settings, from_environment
from ohlcv.windows import EPOCH, WindowRange, plan_backfill
from workflows.clock import parse_time, utc_now
from workflows.console import console, errors, show

__all__ = ["app", "main"]

log = logging.getLogger("ohlcv")

app = typer.Typer(
    name="ohlcv",
    help="OHLCV candles from crypto trades in Iceberg, computed by Spark on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register_operations() -> None:
    from workflows import cli_ops

    app.add_typer(cli_ops.workflows_app, name="workflows")
    app.command()(cli_ops.schedule)
    app.command()(cli_ops.status)
    from workflows import cli_quality

    app.command()(cli_quality.validate)
    app.command()(cli_quality.retention)
    app.command()(cli_quality.maintain)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and diagnostic logs.")) -> None:
    """OHLCV candles from crypto trades in Iceberg, computed by Spark on Ray."""


def _settings() -> Settings:
    return from_environment()


def require_spark_prerequisites(settings: Settings) -> None:
    """Fail fast, before a local Ray starts, when this machine cannot run Spark; then start Spark.

    On a cluster (RAY_ADDRESS set) the nodes run Spark, and the service checks their Java.
    """
    from workflows.spark_service import require_java, start_service

    if not settings.ray_address:
        require_java()
    start_service(settings)  # Spark starts while the workflow gets going


def _require_tables(settings: Settings, tfs: list[timeframes.Timeframe]) -> None:
    """Fail fast, before Spark starts, when `ohlcv init` has not run."""
    from ohlcv.catalog import load_candles, load_trades, open_catalog

    catalog = open_catalog(settings)
    load_trades(catalog, settings.namespace)
    for tf in tfs:
        load_candles(catalog, settings.namespace, tf)


# ---------------------------------------------------------------------------------------- init


@app.command()
def init() -> None:
    """Create the namespace, the trades, quarantine and five candle tables (idempotent)."""
    from ohlcv.catalog import ensure_tables, open_catalog

    settings = _settings()
    results = ensure_tables(open_catalog(settings), settings.namespace)
    console.print(f"catalog   {settings.masked_catalog_uri}")
    console.print(f"warehouse {settings.warehouse_uri}")
    for name, created in results:
        console.print(f"  {settings.namespace}.{name:<22} {'created' if created else 'exists'}")


# ------------------------------------------------------------------------------------ generate


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="File to write: .parquet or .csv."),
    symbols: int = typer.Option(3, "--symbols", help="How many symbols (BTC-USDT, ETH-USDT, ...)."),
    exchanges: int = typer.Option(2, "--exchanges", help="How many exchanges trade each symbol."),
    start: Optional[str] = typer.Option(None, "--start", help="First instant, ISO-8601 UTC [default: yesterday 00:00]."),
    end: Optional[str] = typer.Option(None, "--end", help="End instant, exclusive [default: start + 1 day]."),
    trades_per_day: int = typer.Option(100_000, "--trades-per-day", help="Trades per day over all series."),
    seed: int = typer.Option(7, "--seed", help="Same seed, same trades."),
) -> None:
    """Write realistic synthetic trades (random-walk prices, bursts, several exchanges)."""
    from ohlcv.generate import GenerateSpec, generate as make_trades, write_trades

    today = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
    first = parse_time(start, "--start") if start else today - timedelta(days=1)
    last = parse_time(end, "--end") if end else first + timedelta(days=1)
    spec = GenerateSpec(first, last, symbols, exchanges, trades_per_day, seed)
    trades = make_trades(spec)
    path = write_trades(trades, out)
    console.print(
        f"wrote {trades.num_rows:,} trades of {symbols} symbol(s) on {exchanges} exchange(s), "
        f"{WindowRange(first, last)}, to {path}"
    )


# -------------------------------------------------------------------------------------- ingest


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Parquet or CSV files of trades."),
    epoch_unit: str = typer.Option("us", "--epoch-unit", help="Unit of integer timestamps: s, ms, us or ns."),
) -> None:
    """Land valid trades in gold_crypto_trades; bad rows go to quarantine_trades with a reason."""
    from ohlcv.catalog import open_catalog
    from ohlcv.ingest import ingest_files

    settings = _settings()
    catalog = open_catalog(settings)

    def show(report) -> None:
        console.print(
            f"{report.path}: {report.rows:,} rows, [green]{report.ingested:,} ingested[/], "
            f"{'[yellow]' if report.quarantined else ''}{report.quarantined:,} quarantined"
            f"{'[/]' if report.quarantined else ''}"
            + (f", {report.duplicates_in_file:,} repeated trade ids (counted once)" if report.duplicates_in_file else "")
        )

    reports = ingest_files(catalog, settings.namespace, [str(p) for p in paths], epoch_unit, utc_now(), on_file=show)
    reasons: Counter[str] = Counter()
    for report in reports:
        reasons.update(report.reasons)
    total_in = sum(r.ingested for r in reports)
    total_bad = sum(r.quarantined for r in reports)
    console.print(f"total: {total_in:,} ingested, {total_bad:,} quarantined")
    for reason, count in reasons.most_common():
        console.print(f"  quarantined {count:,}: {reason}")


# ----------------------------------------------------------------------------------- run/backfill


def _results_table(results: dict) -> Table:
    table = Table("workflow", "table", "range", "candles", "inserted", "updated", "unchanged", "snapshot")
    for workflow_id, commits in results.items():
        for commit in commits:
            table.add_row(
                workflow_id, commit.table, str(commit.range), f"{commit.inserted + commit.updated + commit.unchanged:,}",
                f"{commit.inserted:,}", f"{commit.updated:,}", f"{commit.unchanged:,}",
                str(commit.snapshot_id) if commit.snapshot_id else "no change",
            )
    return table


@app.command()
def run(
    timeframe: str = typer.Option(..., "--timeframe", "-t", help="1m, 5m, 30m, 1h, 1d, a comma list, or all."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="The tick's time, ISO-8601 UTC [default: now]."),
    rerun: bool = typer.Option(False, "--rerun", help="Recompute a tick that already ran (e.g. after late trades)."),
) -> None:
    """One scheduled tick per timeframe, each a Ray workflow `ohlcv-<tf>-<as-of>`.

    Running a tick that already succeeded returns its stored result; a failed one is resumed.
    """
    from workflows import runs

    tfs = timeframes.resolve(timeframe)
    tick = parse_time(as_of, "--as-of") if as_of else utc_now()
    settings = _settings()
    _require_tables(settings, tfs)
    require_spark_prerequisites(settings)
    results, failures = {}, []
    for tf in tfs:  # one after another: a tick's lookback is small, and Spark is shared
        workflow_id, ref = runs.start_tick(settings, tf, tick, rerun=rerun)
        outcome = runs.wait_all([(workflow_id, ref)])[workflow_id]
        if isinstance(outcome, OhlcvError):
            failures.append(outcome)
        else:
            results[workflow_id] = outcome
    if results:
        show(_results_table(results))
    if failures:
        for failure in failures[:-1]:
            errors.print(f"[red]error:[/] {failure}", soft_wrap=True)
        raise failures[-1]


@app.command()
def backfill(
    timeframe: str = typer.Option(..., "--timeframe", "-t", help="1m, 5m, 30m, 1h, 1d, a comma list, or all."),
    start: str = typer.Option(..., "--start", help="First window start to recompute, ISO-8601 UTC."),
    end: str = typer.Option(..., "--end", help="Recompute windows that start before this, ISO-8601 UTC."),
) -> None:
    """Recompute every window whose start is in [start, end), one partition-sized chunk at a time."""
    tfs = timeframes.resolve(timeframe)
    first, last = parse_time(start, "--start"), parse_time(end, "--end")
    if last < first:
        raise InputError(f"--end {end} is before --start {start}")
    settings = _settings()
    _require_tables(settings, tfs)
    require_spark_prerequisites(settings)
    commits = _backfill(settings, tfs, first, last)
    _print_backfill_summary(commits)


def _backfill(settings: Settings, tfs, first: datetime, last: datetime):
    from workflows import runs

    now = utc_now()
    if not plan_backfill(tfs, first, last, closed_before=now):
        console.print("nothing to do: no closed window starts in that range")
        return []
    with Progress(
        TextColumn("[bold]backfill[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("starting Spark", total=None)

        def advance(state) -> None:
            if progress.tasks[0].total is None:
                progress.console.print(f"workflow {state.workflow_id}")
            progress.update(task, total=state.chunks, completed=state.committed, description="chunks committed")

        workflow_id, commits = runs.run_backfill(settings, tfs, first, last, now, on_progress=advance)
    if last > now:
        console.print("windows that are still open were left for the scheduled runs")
    return commits


def print_commits(commits) -> None:
    """Per table: chunks, commits and candle counts of a run's commit results."""
    _print_backfill_summary(commits)


def _print_backfill_summary(commits) -> None:
    per_table: dict[str, Counter] = {}
    for commit in commits:
        c = per_table.setdefault(commit.table, Counter())
        c.update(chunks=1, inserted=commit.inserted, updated=commit.updated, unchanged=commit.unchanged,
                 deleted=commit.deleted, commits=1 if commit.snapshot_id else 0)
    table = Table("table", "chunks", "commits", "inserted", "updated", "unchanged", "deleted")
    for name in (tf.table for tf in timeframes.TIMEFRAMES.values() if tf.table in per_table):
        c = per_table[name]
        table.add_row(name, *(f"{c[k]:,}" for k in ("chunks", "commits", "inserted", "updated", "unchanged", "deleted")))
    if per_table:
        show(table)


# ------------------------------------------------------------------------------------- candles


@app.command()
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
    from ohlcv.catalog import load_candles, open_catalog
    from ohlcv.ingest import check_name
    from ohlcv.store import read_candles

    tf = timeframes.get(timeframe)
    check_name(symbol, "--symbol")
    if exchange is not None:
        check_name(exchange, "--exchange")
    if output not in ("table", "csv", "json"):
        raise InputError(f"--format {output!r}: choose table, csv or json")
    first = parse_time(start, "--start") if start else EPOCH
    last = parse_time(end, "--end") if end else datetime(9999, 1, 1, tzinfo=timezone.utc)
    rng = WindowRange(first, last)
    settings = _settings()
    result = read_candles(load_candles(open_catalog(settings), settings.namespace, tf), rng, symbol, exchange)
    if limit is not None:
        result = result.slice(max(0, result.num_rows - limit))
    _print_candles(result, output)
    if plot is not None:
        from ohlcv.chart import plot_candles

        exchanges = sorted(set(result.column("exchange").to_pylist()))
        if len(exchanges) > 1:
            raise InputError(f"--plot draws one series: add --exchange (found {', '.join(exchanges)})")
        title = f"{symbol} {exchanges[0] if exchanges else exchange or ''} {tf.name} candles"
        errors.print(f"chart written to {plot_candles(result, plot, title)}")


def _print_candles(result, output: str) -> None:
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


# ---------------------------------------------------------------------------------------- demo


@app.command()
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

    settings = _settings()
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
    commits = _backfill(settings, timeframes.resolve("all"), day, day + timedelta(days=1))
    _print_backfill_summary(commits)
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
    _print_candles(hourly.slice(0, 5), "table")
    five = read_candles(load_candles(catalog, settings.namespace, timeframes.get("5m")), rng, symbol, exchange)
    chart = plot_candles(five, out_dir / "chart.png", f"{symbol} on {exchange}, 5m candles, {day:%Y-%m-%d} (UTC)")
    console.print(f"chart: {chart}")
    done("candles")

    console.rule("[bold]done")
    console.print("  ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items()))
    console.print(f"try: ohlcv candles --symbol {symbol} --exchange {exchange} --timeframe 1h --start {day:%Y-%m-%d}")


_register_operations()


# ---------------------------------------------------------------------------------------- main


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pyiceberg and ray are chatty at INFO; keep their warnings.
    for noisy in ("pyiceberg", "ray", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Typer 0.29 vendors its own click; older releases raise click's own exceptions.
_USAGE_ERRORS = (click.ClickException, typer.exceptions.TyperException)
_ABORTS = (click.Abort, typer.Abort, KeyboardInterrupt)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ohlcv` command; exit code 0 on success, 1 on any error."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _configure_logging(debug)
    try:
        code = app(args=args, prog_name="ohlcv", standalone_mode=False)
    except OhlcvError as exc:
        if debug:
            raise
        errors.print(f"[red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except _USAGE_ERRORS as exc:
        context = getattr(exc, "ctx", None)
        command = context.info_name if context is not None and context.info_name != "ohlcv" else None
        hint = f" (see: ohlcv {command} --help)" if command else " (see: ohlcv --help)"
        errors.print(f"[red]error:[/] {exc.format_message()}{hint}", soft_wrap=True)
        sys.exit(1)
    except _ABORTS:
        errors.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # one line for people; the traceback is one flag away
        if debug:
            raise
        errors.print(f"[red]error:[/] unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
