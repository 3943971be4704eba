"""Re-running is harmless: identical content, no spurious commit, updated_at moves only for
candles whose values changed, and late trades are absorbed by the next run that covers them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from support import ALL, BOTH_CATALOGS, assert_matches_oracle, backfill, crafted_trades, ingest_rows, run_chunks, stored, stored_trades, trade, utc
from oracle import compare, expected_candles
from ohlcv import timeframes
from ohlcv.catalog import load_candles
from ohlcv.windows import tick_chunks

pytestmark = pytest.mark.slow


def snapshots(catalog) -> dict[str, int | None]:
    result = {}
    for tf in ALL:
        snap = load_candles(catalog, "market_data", tf).current_snapshot()
        result[tf.name] = snap.snapshot_id if snap else None
    return result


def content(catalog) -> dict[str, list[dict]]:
    key = lambda r: (r["exchange"], r["symbol"], r["window_start"])  # noqa: E731
    return {tf.name: sorted(stored(catalog, tf), key=key) for tf in ALL}


@BOTH_CATALOGS
def test_rerunning_a_backfill_changes_nothing(settings, catalog, spark, tmp_path):
    ingest_rows(settings, catalog, crafted_trades(), tmp_path, "crafted", utc(2024, 2, 2))
    backfill(settings, utc(2024, 1, 31), utc(2024, 2, 2), now=utc(2030, 1, 1))
    before, ids_before = content(catalog), snapshots(catalog)

    outcomes = backfill(settings, utc(2024, 1, 31), utc(2024, 2, 2), now=utc(2030, 6, 1))

    assert content(catalog) == before  # created_at and updated_at included
    assert snapshots(catalog) == ids_before  # nothing changed, so nothing was committed
    commits = [c for o in outcomes for c in o.commits]
    assert all(c.inserted == c.updated == c.deleted == 0 and c.unchanged > 0 for c in commits)


def test_rerunning_a_tick_changes_nothing(settings, catalog, spark, tmp_path):
    base = utc(2024, 5, 1, 12)
    rows = [trade("binance", "BTC-USDT", str(i), 100.0 + i % 7, 0.5 + i % 3, base + timedelta(seconds=37 * i)) for i in range(40)]
    ingest_rows(settings, catalog, rows, tmp_path, "ticks", base)
    as_of = base + timedelta(minutes=20)
    tfs = [timeframes.get("1m"), timeframes.get("5m")]
    run_chunks(settings, tick_chunks(tfs, as_of), lambda: as_of)
    before, ids_before = content(catalog), snapshots(catalog)
    run_chunks(settings, tick_chunks(tfs, as_of), lambda: as_of + timedelta(hours=1))
    assert content(catalog) == before
    assert snapshots(catalog) == ids_before


@BOTH_CATALOGS
def test_late_trades_are_absorbed_and_only_changed_candles_move(settings, catalog, spark, tmp_path):
    first_run, second_run = utc(2030, 1, 1), utc(2030, 1, 2)
    ingest_rows(settings, catalog, crafted_trades(), tmp_path, "crafted", utc(2024, 2, 2))
    backfill(settings, utc(2024, 1, 31), utc(2024, 2, 2), now=first_run)
    before = {tf.name: {(r["exchange"], r["symbol"], r["window_start"]): r for r in stored(catalog, tf)} for tf in ALL}

    late = [
        # Into an existing window of binance BTC-USDT (23:50): a new high and more volume.
        trade("binance", "BTC-USDT", "1050", 150.0, 1.0, utc(2024, 1, 31, 23, 50, 40)),
        # Into a window that had no trades at all: a new candle.
        trade("okx", "SOL-USDT", "1", 150.0, 2.0, utc(2024, 2, 1, 3, 33)),
    ]
    ingest_rows(settings, catalog, late, tmp_path, "late", utc(2024, 2, 5))
    outcomes = backfill(settings, utc(2024, 1, 31), utc(2024, 2, 2), now=second_run)
    assert_matches_oracle(catalog, stored_trades(catalog))

    changed_1m = {("binance", "BTC-USDT", utc(2024, 1, 31, 23, 50))}
    new_1m = {("okx", "SOL-USDT", utc(2024, 2, 1, 3, 33))}
    for tf in ALL:
        after = {(r["exchange"], r["symbol"], r["window_start"]): r for r in stored(catalog, tf)}
        floor = lambda key: (key[0], key[1], key[2] - (key[2] - utc(1970, 1, 1)) % tf.width)  # noqa: E731
        changed = {floor(k) for k in changed_1m}
        created = {floor(k) for k in new_1m}
        assert set(after) == set(before[tf.name]) | created, tf.name
        for key, row in after.items():
            if key in created:
                assert row["created_at"] == row["updated_at"] == second_run
            elif key in changed:
                assert (row["created_at"], row["updated_at"]) == (first_run, second_run), (tf.name, key)
            else:
                assert row == before[tf.name][key], (tf.name, key)
    assert sum(c.updated for o in outcomes for c in o.commits) == len(ALL)
    assert sum(c.inserted for o in outcomes for c in o.commits) == len(ALL)


def test_late_trade_within_the_lookback_is_absorbed_by_the_next_tick(settings, catalog, spark, tmp_path):
    base = utc(2024, 5, 1, 12)
    rows = [trade("kraken", "ETH-USDT", str(i), 3000.0 + i, 1.0, base + timedelta(minutes=i)) for i in range(10)]
    ingest_rows(settings, catalog, rows, tmp_path, "first", base)
    one_minute = timeframes.get("1m")
    run_chunks(settings, tick_chunks([one_minute], base + timedelta(minutes=10)), lambda: base)
    late = [trade("kraken", "ETH-USDT", "100", 2900.0, 4.0, base + timedelta(minutes=6, seconds=30))]
    ingest_rows(settings, catalog, late, tmp_path, "late", base + timedelta(minutes=11))
    run_chunks(settings, tick_chunks([one_minute], base + timedelta(minutes=15)), lambda: base)
    window = (base + timedelta(minutes=5), base + timedelta(minutes=15))
    got = [r for r in stored(catalog, one_minute) if window[0] <= r["window_start"] < window[1]]
    assert not compare(got, expected_candles(stored_trades(catalog), one_minute.width, *window))
    six = next(r for r in got if r["window_start"] == base + timedelta(minutes=6))
    assert (six["low_price"], six["trade_count"]) == (2900.0, 2)
