"""The `ohlcv` command line contract: commands, options, outputs and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ohlcv, stored_trades, utc
from oracle import compare, expected_candles
from ohlcv import timeframes
from ohlcv.catalog import load_candles, open_catalog
from ohlcv.settings import from_environment
from workflows.cli.main import main


@pytest.fixture
def env(monkeypatch, tmp_path) -> Path:
    warehouse = tmp_path / "wh"
    monkeypatch.setenv("OHLCV_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("OHLCV_CATALOG_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.setenv("OHLCV_NAMESPACE", "crypto_test")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--timeframe", "2m"], "error: unknown timeframe '2m': choose one of 1m, 5m, 30m, 1h, 1d, or all"),
        (["backfill", "--timeframe", "all", "--start", "2024-05-02", "--end", "2024-05-01"], "is before --start"),
        (["run", "--timeframe", "1m", "--as-of", "yesterday"], "--as-of 'yesterday' is not an ISO-8601 time"),
        (["candles", "--symbol", "BTC-USDT", "--timeframe", "1h"], "table crypto_test.gold_ohlcv_1h does not exist yet: run `ohlcv init` first"),
        (["run", "--timeframe", "1h"], "does not exist yet: run `ohlcv init` first"),
        (["run", "--frobnicate"], "No such option: --frobnicate"),
        (["backfill", "--timeframe", "1m"], "start"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_1(capsys, env, args, message):
    code, out, err = ohlcv(capsys, *args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(capsys, env):
    from ohlcv.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "run", "--timeframe", "2m"])


def test_the_installed_command_exits_1_without_a_traceback(tmp_path):
    environment = {**os.environ, "OHLCV_WAREHOUSE": str(tmp_path / "wh")}
    result = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "ingest", str(tmp_path / "missing.csv")],
        capture_output=True, text=True, env=environment, timeout=120,
    )
    assert result.returncode == 1
    assert "missing.csv: no such file" in result.stderr and "Traceback" not in result.stderr


def test_malformed_file_is_refused_by_the_cli(capsys, env):
    assert ohlcv(capsys, "init")[0] == 0
    (env / "bad.csv").write_text("exchange,symbol,price\nbinance,BTC-USDT,1\n")
    code, _, err = ohlcv(capsys, "ingest", str(env / "bad.csv"))
    assert code == 1 and "missing required columns trade_id, quantity, timestamp" in err


@pytest.mark.slow
def test_init_generate_ingest_backfill_query_and_plot(capsys, env, spark, workflows):
    code, out, _ = ohlcv(capsys, "init")
    assert code == 0 and "crypto_test.gold_ohlcv_1d" in out and "created" in out
    assert "exists" in ohlcv(capsys, "init")[1]
    settings = from_environment()
    assert Path(settings.warehouse).is_dir() and (env / "elsewhere.db").is_file()

    code, out, _ = ohlcv(capsys, "generate", "--out", "day.csv", "--symbols", "2", "--exchanges", "2",
                         "--start", "2024-03-10", "--end", "2024-03-10T06:00", "--trades-per-day", "8000", "--seed", "3")
    assert code == 0 and "wrote 2,000 trades" in out
    (env / "bad.csv").write_text("exchange,symbol,trade_id,price,quantity,timestamp\nbinance,BTC-USDT,x,-1,1,2024-03-10T01:00:00Z\n")
    code, out, _ = ohlcv(capsys, "ingest", "day.csv", "bad.csv")
    assert code == 0 and "total: 2,000 ingested, 1 quarantined" in out and "price is not positive and finite" in out

    code, out, _ = ohlcv(capsys, "backfill", "--timeframe", "all", "--start", "2024-03-10", "--end", "2024-03-11")
    assert code == 0 and "backfill" in out
    catalog = open_catalog(settings)
    trades = stored_trades(catalog, "crypto_test")
    for tf in timeframes.resolve("all"):
        rows = load_candles(catalog, "crypto_test", tf).scan().to_arrow().to_pylist()
        assert not compare(rows, expected_candles(trades, tf.width)), tf.name

    code, out, _ = ohlcv(capsys, "candles", "--symbol", "BTC-USDT", "--exchange", "binance", "--timeframe", "1h",
                         "--start", "2024-03-10T01:00", "--end", "2024-03-10T03:00", "--format", "json")
    records = json.loads(out)
    assert code == 0 and [r["window_start"] for r in records] == ["2024-03-10T01:00:00.000000Z", "2024-03-10T02:00:00.000000Z"]
    expected = expected_candles(trades, timeframes.get("1h").width)[("binance", "BTC-USDT", utc(2024, 3, 10, 1))]
    assert records[0]["trade_count"] == expected["trade_count"] and records[0]["close_price"] == expected["close_price"]

    code, out, _ = ohlcv(capsys, "candles", "--symbol", "BTC-USDT", "--timeframe", "1h", "--format", "csv")
    lines = out.strip().splitlines()
    assert lines[0].startswith("symbol,exchange,window_start,window_end,window_date,open_price")
    assert len(lines) == 1 + 2 * 6  # two exchanges, six hours

    code, out, err = ohlcv(capsys, "candles", "--symbol", "BTC-USDT", "--exchange", "coinbase", "--timeframe", "5m",
                           "--limit", "3", "--plot", "btc.png")
    assert code == 0 and out.count("2024-03-10 05:") == 3 and "chart written" in err
    png = (env / "btc.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    code, _, err = ohlcv(capsys, "candles", "--symbol", "BTC-USDT", "--timeframe", "5m", "--plot", "both.png")
    assert code == 1 and "--plot draws one series" in err

    code, out, _ = ohlcv(capsys, "run", "--timeframe", "1m,5m", "--as-of", "2024-03-10T05:07:00Z")
    assert code == 0 and "no change" in out  # the backfill already wrote those windows


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(capsys, env, spark):
    code, out, _ = ohlcv(capsys, "demo", "--trades-per-day", "20000", "--out-dir", "demo")
    assert code == 0
    assert "20,000 trades ingested, 0 quarantined" in out
    for table in ("gold_ohlcv_1m", "gold_ohlcv_5m", "gold_ohlcv_30m", "gold_ohlcv_1h", "gold_ohlcv_1d"):
        assert table in out
    assert (env / "demo" / "chart.png").stat().st_size > 10_000


def test_without_java_a_spark_command_says_what_to_install(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    environment.update(PATH=str(tmp_path), OHLCV_WAREHOUSE=str(tmp_path / "wh"))
    command = [sys.executable, "-m", "workflows.cli"]
    subprocess.run([*command, "init"], check=True, capture_output=True, env=environment, timeout=120)
    result = subprocess.run([*command, "run", "--timeframe", "1m"], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 1
    assert "Java was not found" in result.stderr and "openjdk-17-jre-headless" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_every_command_on_a_postgresql_catalog_without_showing_its_password(capsys, env, spark, workflows, postgres_catalog_uri, monkeypatch):
    # The test server trusts loopback, so any password works; the point is that none is shown.
    uri = postgres_catalog_uri.replace("postgresql+psycopg://ohlcv@", "postgresql+psycopg://ohlcv:pa55-w0rd-xyz@")
    monkeypatch.setenv("OHLCV_CATALOG_URI", uri)
    outputs = []

    def run(*args):
        code, out, err = ohlcv(capsys, *args)
        outputs.append(out + err)
        assert code == 0, out + err
        return out

    assert "ohlcv:***@" in run("init")
    run("generate", "--out", "day.parquet", "--start", "2024-03-10T00:00", "--end", "2024-03-10T03:00", "--trades-per-day", "12000")
    run("ingest", "day.parquet")
    run("backfill", "--timeframe", "all", "--start", "2024-03-10", "--end", "2024-03-11")
    run("run", "--timeframe", "5m", "--as-of", "2024-03-10T02:20Z")
    assert "BTC-USDT" in run("candles", "--symbol", "BTC-USDT", "--timeframe", "1h", "--format", "csv")
    run("retention", "--dry-run", "--as-of", "2024-03-11")
    run("maintain", "--as-of", "2024-03-12")
    catalog = open_catalog(from_environment())
    trades = stored_trades(catalog, "crypto_test")
    for tf in timeframes.resolve("all"):
        rows = load_candles(catalog, "crypto_test", tf).scan().to_arrow().to_pylist()
        assert not compare(rows, expected_candles(trades, tf.width)), tf.name
    assert all("pa55-w0rd-xyz" not in text for text in outputs)
    code, _, err = ohlcv(capsys, "candles", "--symbol", "BTC;--", "--timeframe", "1h")
    assert code == 1 and "is not a valid name" in err
