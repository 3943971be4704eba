"""Helpers the tests share (fixtures live in conftest.py): times and trade rows, the direct
path (aggregate and commit without a workflow), the oracle comparison, and the CLI runner."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oracle import compare, expected_candles
from ohlcv import schema as s
from ohlcv import timeframes
from ohlcv.aggregate import candle_arrow_schema
from ohlcv.catalog import ensure_tables, load_candles, load_table, load_trades, open_catalog
from ohlcv.ingest import ingest_files
from ohlcv.publish import commit_chunk
from ohlcv.settings import Settings
from ohlcv.store import CommitResult
from ohlcv.windows import Chunk, plan_backfill


def trades_at(start: datetime, offsets_seconds: list[int]) -> pa.Table:
    """Trades of one series at `start` plus each offset, in the trades table's own schema: ids
    "0", "1", ... in the order given, every other side null."""
    stamps = [start + timedelta(seconds=offset) for offset in offsets_seconds]
    return pa.table({
        "exchange": ["okx"] * len(stamps),
        "symbol": ["BTC-USDT"] * len(stamps),
        "trade_id": [str(i) for i in range(len(stamps))],
        "price": [1.0 + i for i in range(len(stamps))],
        "quantity": [0.5] * len(stamps),
        "side": ["buy" if i % 2 else None for i in range(len(stamps))],
        "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        "ingested_at": pa.array([start] * len(stamps), pa.timestamp("us", tz="UTC")),
    }).cast(s.arrow_build_schema(s.TRADES_SCHEMA))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def trade(exchange: str, symbol: str, trade_id: str, price: float, quantity: float, ts: datetime, side: str | None = None) -> dict:
    return {"exchange": exchange, "symbol": symbol, "trade_id": trade_id, "price": price, "quantity": quantity, "side": side, "timestamp": ts}


def trades_table(rows: list[dict]) -> pa.Table:
    """Rows as the Arrow table a Parquet trades file would hold."""
    return pa.table(
        {
            "exchange": [r["exchange"] for r in rows],
            "symbol": [r["symbol"] for r in rows],
            "trade_id": [r["trade_id"] for r in rows],
            "price": pa.array([r["price"] for r in rows], pa.float64()),
            "quantity": pa.array([r["quantity"] for r in rows], pa.float64()),
            "side": [r.get("side") for r in rows],
            "timestamp": pa.array([r["timestamp"] for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def stored_trades(catalog, namespace: str = "market_data") -> list[dict]:
    return load_table(catalog, namespace, s.TRADES_TABLE).scan().to_arrow().to_pylist()



# Use on a test or module to run it on both catalogs.
BOTH_CATALOGS = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)




@dataclass
class DirectRun:
    """One chunk run the direct way: what Spark returned, and the commits."""

    chunk: Chunk
    aggregated: object  # workflows.spark.client.Aggregated
    commits: list[CommitResult]


def run_chunks(settings: Settings, chunks: list[Chunk], clock) -> list[DirectRun]:
    """Aggregate and commit chunks in order, without a workflow (no audit, no journal): the
    reference the workflow tests compare with. `clock()` stamps created_at/updated_at."""
    from workflows.spark.client import aggregate_chunk

    runs = []
    for chunk in chunks:
        aggregated = aggregate_chunk(settings, chunk)
        runs.append(DirectRun(chunk, aggregated, commit_chunk(settings, chunk, aggregated.candles, clock(), aggregated.trades_snapshot)))
    return runs


ALL = timeframes.resolve("all")
NOW = utc(2030, 1, 1)  # the "wall clock" of these tests: long after every trade


def ingest_rows(settings, catalog, rows, tmp_path, name, ingested_at):
    path = tmp_path / f"{name}.parquet"
    pq.write_table(trades_table(rows), path)
    [report] = ingest_files(catalog, settings.namespace, [str(path)], "us", ingested_at)
    return report


def append_as_another_writer(settings, catalog, rows, ingested_at):
    """`rows` appended to the trades table by a writer other than `ohlcv ingest` (pyiceberg's own
    append): no check against stored trades, and no guarantee recorded for their days."""
    table = trades_table(rows).drop(["side"]).append_column("side", pa.nulls(len(rows), pa.string()))
    table = table.append_column("ingested_at", pa.array([ingested_at] * len(rows), pa.timestamp("us", tz="UTC")))
    load_trades(catalog, settings.namespace).append(table.select(s.TRADES_SCHEMA.column_names).cast(s.arrow_schema(s.TRADES_SCHEMA)))


def backfill(settings, start: datetime, end: datetime, tfs=ALL, now=NOW):
    return run_chunks(settings, plan_backfill(tfs, start, end, closed_before=now), lambda: now)


def stored(catalog, tf) -> list[dict]:
    return load_candles(catalog, "market_data", tf).scan().to_arrow().to_pylist()


def assert_matches_oracle(catalog, trades, tfs=ALL, start=None, end=None):
    for tf in tfs:
        problems = compare(stored(catalog, tf), expected_candles(trades, tf.width, start, end))
        assert not problems, f"{tf.name}: " + "; ".join(problems[:10])


def crafted_trades() -> list[dict]:
    """Each line exercises one rule; the comments say which."""
    t = utc(2024, 1, 31, 23, 50, 10)
    return [
        # Equal timestamps: "999" sorts before "1000" as numbers (as text it would not).
        trade("binance", "BTC-USDT", "1000", 101.0, 1.0, t),
        trade("binance", "BTC-USDT", "999", 100.0, 2.0, t),
        trade("binance", "BTC-USDT", "1001", 99.5, 0.5, t + timedelta(seconds=20)),
        # Same symbol on another exchange: a separate series.
        trade("coinbase", "BTC-USDT", "5", 102.0, 0.25, t),
        # Ids that are not all digits compare as text: "a-10" < "a-2".
        trade("kraken", "BTC-USDT", "a-2", 50.0, 1.0, t),
        trade("kraken", "BTC-USDT", "a-10", 51.0, 1.0, t),
        # Digits before other ids at equal time; leading zeros compare numerically: 007 < 10.
        trade("kraken", "ETH-USDT", "x9", 10.0, 1.0, t),
        trade("kraken", "ETH-USDT", "77", 11.0, 1.0, t),
        trade("okx", "ETH-USDT", "10", 20.0, 1.0, t),
        trade("okx", "ETH-USDT", "007", 21.0, 1.5, t),
        # Exactly on a window boundary: belongs to the window that starts there.
        trade("binance", "BTC-USDT", "1100", 98.0, 1.0, utc(2024, 1, 31, 23, 55)),
        trade("binance", "BTC-USDT", "1099", 97.0, 1.0, utc(2024, 1, 31, 23, 54, 59, 999999)),
        # Around midnight and the month end (the 1d table's month partitions).
        trade("binance", "BTC-USDT", "1200", 96.0, 3.0, utc(2024, 1, 31, 23, 59, 59, 999999)),
        trade("binance", "BTC-USDT", "1201", 95.0, 1.0, utc(2024, 2, 1)),
        trade("binance", "BTC-USDT", "1202", 95.5, 2.0, utc(2024, 2, 1, 0, 0, 0, 1)),
        # A gap: nothing between 00:01 and 02:17 -> no candles there.
        trade("binance", "BTC-USDT", "1300", 94.0, 1.0, utc(2024, 2, 1, 2, 17, 3)),
        # A single-trade window, and a duplicate delivered in the same file (counts once).
        trade("coinbase", "ETH-USDT", "42", 3000.0, 0.1, utc(2024, 2, 1, 5, 0, 1)),
        trade("coinbase", "ETH-USDT", "42", 3000.0, 0.1, utc(2024, 2, 1, 5, 0, 1)),
    ]



DAY = utc(2024, 4, 2)
AS_OF = {  # a tick of each timeframe at one of its cron times, inside the generated day
    "1m": utc(2024, 4, 2, 13, 5), "5m": utc(2024, 4, 2, 13, 5), "30m": utc(2024, 4, 2, 13, 10),
    "1h": utc(2024, 4, 2, 13, 15), "1d": utc(2024, 4, 3, 0, 5),
}


def warehouse_with(settings: Settings, trades: list[dict], tmp_path, name: str) -> tuple[Settings, object]:
    """Another warehouse holding the same stored trades: for the direct path or a clean run."""
    other = settings.with_overrides(warehouse=str(tmp_path / name), failpoint_dir=None)
    other_catalog = open_catalog(other)
    ensure_tables(other_catalog, other.namespace)
    path = tmp_path / f"{name}.parquet"
    pq.write_table(trades_table(trades), path)
    ingest_files(other_catalog, other.namespace, [path], "us", utc(2024, 4, 3, 1))
    return other, other_catalog


def table_rows(catalog, tf, namespace="market_data") -> list[dict]:
    rows = load_candles(catalog, namespace, tf).scan().to_arrow().to_pylist()
    return sorted(rows, key=lambda r: (r["exchange"], r["symbol"], r["window_start"]))


def values(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("created_at", "updated_at")} for r in rows]




def ohlcv(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (sharing the test session's Ray and Spark)."""
    from workflows.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# The keys every process of the tests' S3 endpoint uses: moto takes any, but wants some. Ray
# workers inherit the environment Ray starts with, as a real node's processes inherit theirs.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "ohlcv-test-key", "AWS_SECRET_ACCESS_KEY": "ohlcv-test-secret-never-printed"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_s3_server(timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free loopback port, answering: (process, endpoint URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"moto's server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=0.5):
                return server, url
        except urllib.error.HTTPError:
            return server, url  # an HTTP answer: the server is up
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto's server did not answer within {timeout:g} s") from None
            time.sleep(0.1)


def make_bucket(endpoint: str, name: str | None = None, keys: dict[str, str] = S3_KEYS) -> str:
    """Create a bucket on the test endpoint; its name."""
    import boto3

    name = name or f"ohlcv-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"], aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=name)
    return name


def daily_candles(tf, first: datetime, days: int) -> pa.Table:
    """One candle a day, at noon for 1m, at midnight for 1d."""
    rows = []
    for day in range(days):
        start = first + timedelta(days=day) + (timedelta(hours=12) if tf.name == "1m" else timedelta(0))
        rows.append(dict(symbol="ETH-USDT", exchange="okx", window_start=start, window_end=start + tf.width,
                         window_date=start.date(), open_price=10.0, high_price=11.0, low_price=9.0, close_price=10.5,
                         volume=1.0 + day, trade_count=1 + day, vwap=10.0))
    return pa.Table.from_pylist(rows, schema=candle_arrow_schema())


def key_rows(table) -> set:
    return {tuple(sorted(r.items())) for r in table.scan().to_arrow().to_pylist()}


def run_tick_direct(settings: Settings, tf, as_of: datetime, now: datetime):
    """A tick without a workflow: plan from the snapshot logs, aggregate, commit (no audit).
    Returns (plan, commit results)."""
    from datetime import timedelta as days

    from ohlcv.catalog import load_trades
    from ohlcv.late import plan_tick
    from workflows.spark.client import aggregate_chunk

    catalog = open_catalog(settings)
    plan = plan_tick(load_trades(catalog, settings.namespace), load_candles(catalog, settings.namespace, tf), tf, as_of,
                     days(days=settings.recompute_limit_days))
    aggregated = aggregate_chunk(settings, plan.chunk)
    run_tick_direct.read_mode = aggregated.read_mode  # how the trades were read, for tests of the read paths
    run_tick_direct.engine = aggregated.engine
    return plan, commit_chunk(settings, plan.chunk, aggregated.candles, now, aggregated.trades_snapshot)
