"""`ohlcv validate` on published candles: clean data passes; a tampered 1h candle fails the
roll-up check; trades that arrive after the last recompute are found, with the fix."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow.compute as pc
import pytest

from support import trade
from ohlcv import timeframes
from ohlcv.catalog import load_candles
from ohlcv.generate import GenerateSpec, generate
from ohlcv.store import range_filter
from ohlcv.windows import WindowRange
from support import backfill, ingest_rows
from support import ohlcv

pytestmark = pytest.mark.slow

# Validation looks back from the real clock, so the data is yesterday's.
TODAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
YESTERDAY = TODAY - timedelta(days=1)


@pytest.fixture
def published(settings, catalog, spark, tmp_path, monkeypatch):
    rows = generate(GenerateSpec(YESTERDAY, TODAY, symbols=2, exchanges=2, trades_per_day=8_000, seed=9)).to_pylist()
    ingest_rows(settings, catalog, rows, tmp_path, "day", TODAY)
    backfill(settings, YESTERDAY, TODAY, now=datetime.now(timezone.utc))
    monkeypatch.setenv("OHLCV_WAREHOUSE", settings.warehouse)
    return settings


def test_clean_data_passes(published, capsys):
    code, out, err = ohlcv(capsys, "validate", "--timeframe", "all", "--lookback-days", "2")
    assert code == 0, out + err
    assert "all checks passed" in out and "gold_ohlcv_1h" in out and "1h candles = roll-up of the 1m candles" in out


def test_a_tampered_hourly_candle_is_caught(published, catalog, capsys):
    table = load_candles(catalog, "market_data", timeframes.get("1h"))
    hour = WindowRange(YESTERDAY + timedelta(hours=13), YESTERDAY + timedelta(hours=14))
    rows = table.scan(row_filter=range_filter("window_start", hour)).to_arrow()
    victim = pc.equal(rows.column("exchange"), rows.column("exchange")[0])
    first = pc.and_(victim, pc.equal(rows.column("symbol"), rows.column("symbol")[0]))
    # Still a valid candle on its own (close stays within [low, high]): only the roll-up can tell.
    low = rows.column("low_price")
    tampered = rows.set_column(rows.schema.get_field_index("close_price"), "close_price",
                               pc.if_else(first, low, rows.column("close_price"))).cast(rows.schema)
    table.overwrite(tampered, overwrite_filter=range_filter("window_start", hour))

    code, out, err = ohlcv(capsys, "validate", "--timeframe", "1h", "--lookback-days", "2")
    assert code == 1
    assert "validation failed" in err
    line = next(l for l in out.splitlines() if "1h candles = roll-up of the 1m candles" in l)
    assert "│ 1 " in line.replace("[red]", "")
    assert f"window_start={hour.start.isoformat()}" in out and "close_price" in out


def test_late_trades_beyond_the_lookback_are_reported_with_the_backfill_that_fixes_them(published, catalog, tmp_path, capsys):
    noon = YESTERDAY + timedelta(hours=12, minutes=7, seconds=5)
    late = [trade("binance", "BTC-USDT", "9999999999999", 50_000.0, 0.5, noon)]
    ingest_rows(published, catalog, late, tmp_path, "late", datetime.now(timezone.utc))

    code, out, err = ohlcv(capsys, "validate", "--timeframe", "1m,1h,1d", "--lookback-days", "2")
    assert code == 1
    assert "windows with trades that arrived after their last recompute" in out
    # The 1d window is still inside the 1d lookback (2 days): the next tick absorbs it.
    assert "window(s) inside the 1d lookback missed trades: the next tick absorbs them" in out
    hints = [l.split("fix late windows with: ")[1].strip() for l in err.splitlines() if "fix late windows with" in l]
    assert hints == [
        f"ohlcv backfill --timeframe 1m --start {noon:%Y-%m-%dT%H:%M}Z --end {noon + timedelta(minutes=1):%Y-%m-%dT%H:%M}Z",
        f"ohlcv backfill --timeframe 1h --start {noon:%Y-%m-%dT%H}:00Z --end {noon + timedelta(hours=1):%Y-%m-%dT%H}:00Z",
    ]

    for hint in hints:  # the suggested commands fix it
        code, _, _ = ohlcv(capsys, *hint.split()[1:])
        assert code == 0
    code, out, err = ohlcv(capsys, "validate", "--timeframe", "1m,1h", "--lookback-days", "2")
    assert code == 0, out + err
