"""What every command shares: the two consoles, tables, the clock and time parsing, settings,
and the checks a command makes before it starts Ray or Spark.

Command modules import from here and from nothing else in `workflows.cli`, so the package has
no import cycle; `workflows.cli.main` imports the command modules and registers them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ohlcv import timeframes
from ohlcv.errors import InputError, OhlcvError
from ohlcv.settings import Settings, from_environment
from ohlcv.windows import as_utc

if TYPE_CHECKING:  # the store, object storage and Ray are imported by the commands that use them:
    from ohlcv.store import CommitResult  # a warm `ohlcv run` or `candles` needs none of them

__all__ = [
    "console",
    "errors",
    "show",
    "utc_now",
    "parse_time",
    "when",
    "command_settings",
    "require_writable",
    "storage_problem",
    "require_spark_prerequisites",
    "require_tables",
    "print_commits",
]

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def show(table: Table) -> None:
    """Print a table; off a terminal (a pipe, a log) Rich would squeeze it to 80 columns and cut values."""
    target = console if console.is_terminal else Console(highlight=False, width=200)
    target.print(table)


def utc_now() -> datetime:
    """The wall clock: read only here, at the edge; everything below takes times as arguments."""
    return datetime.now(timezone.utc)


def parse_time(text: str, option: str) -> datetime:
    """An ISO-8601 time from the command line; without an offset it means UTC."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(raw))
    except ValueError:
        raise InputError(f"{option} {text!r} is not an ISO-8601 time (for example 2024-05-01 or 2024-05-01T12:00Z)") from None


def when(seconds: float | None) -> str:
    """A Unix time as people read it, in UTC; empty when unknown."""
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def command_settings(writes: bool = False) -> Settings:
    """This command's settings, from the environment (and OHLCV_CONFIG): resolved once, here.

    `writes`: the command changes tables, so an object-store warehouse must take writes.
    """
    from workflows.runtime import use_arrow_threads

    settings = from_environment()
    if writes:
        require_writable(settings)
    # A command run by `ray job submit` inherits OMP_NUM_THREADS=1 from Ray's job supervisor.
    use_arrow_threads(settings.arrow_threads)
    return settings


def require_writable(settings: Settings) -> None:
    """For commands that write: on object storage, check that this process may write under the
    warehouse prefix, so a read-only key fails in one line before any table changes."""
    from ohlcv.object_store import check_bucket

    check_bucket(settings.warehouse_uri, settings.s3_endpoint, settings.s3_region, "OHLCV_WAREHOUSE", write=True)


def storage_problem(exc: OSError) -> str | None:
    """One line for a storage failure of this command's warehouse or workflow storage, or None."""
    from ohlcv.object_store import bucket_of, describe_storage_error, is_s3

    try:
        settings = from_environment()
    except OhlcvError:
        return None
    for uri, what in ((settings.warehouse_uri, "OHLCV_WAREHOUSE"), (settings.resolved_workflow_storage, "OHLCV_WORKFLOW_STORAGE")):
        if is_s3(uri) and bucket_of(uri) in str(exc):
            return describe_storage_error(exc, bucket_of(uri), settings.s3_endpoint, what)
    return None


def require_spark_prerequisites(settings: Settings) -> None:
    """Fail fast, before a local Ray starts, when this machine cannot run Spark; then start Spark.

    On a cluster (RAY_ADDRESS set) the nodes run Spark, and the service checks their Java.
    """
    from workflows.spark.java import require_java
    from workflows.spark.service import start_service

    if not settings.ray_address:
        require_java()
    start_service(settings)  # Spark starts while the workflow gets going


def require_tables(settings: Settings, tfs: list[timeframes.Timeframe]) -> None:
    """Fail fast, before Spark starts, when `ohlcv init` has not run."""
    from ohlcv.catalog import load_candles, load_trades, open_catalog

    catalog = open_catalog(settings)
    load_trades(catalog, settings.namespace)
    for tf in tfs:
        load_candles(catalog, settings.namespace, tf)


def print_commits(commits: list[CommitResult]) -> None:
    """Per table: chunks, commits and candle counts of a run's commit results."""
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
