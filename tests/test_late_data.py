"""Late trades of any age: watermarks in candle commits, ticks that recompute exactly the old
windows new trades touched, the fallbacks when the snapshot log cannot be trusted, and two
writers that never move a watermark backwards. The oracle is plain Python over the trades of
the snapshot each tick consumed."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from oracle import compare, expected_candles
from ohlcv import timeframes
from ohlcv.catalog import load_candles, load_trades, open_catalog
from ohlcv.errors import CommitConflict
from ohlcv.late import plan_tick
from ohlcv.publish import commit_chunk
from ohlcv.upkeep import expire_all, expire_snapshots
from ohlcv.watermark import recorded_watermark, trades_since, window_ranges
from ohlcv.windows import WindowRange, floor, plan_backfill, tick_range
from support import ALL, ingest_rows, ohlcv, run_chunks, run_tick_direct, stored_trades, trade, utc

ONE_MINUTE, ONE_DAY = timeframes.get("1m"), timeframes.get("1d")
WEEK = timedelta(days=7)


def snapshot_ids(catalog, namespace="market_data") -> dict[str, int | None]:
    ids = {}
    for tf in ALL:
        snapshot = load_candles(catalog, namespace, tf).current_snapshot()
        ids[tf.name] = snapshot.snapshot_id if snapshot else None
    return ids


def assert_closed_windows_match(catalog, tf, as_of: datetime, trades: list[dict]) -> None:
    """Every closed window of `tf` at `as_of` equals the oracle over `trades`."""
    end = floor(as_of, tf)
    rows = [r for r in load_candles(catalog, "market_data", tf).scan().to_arrow().to_pylist() if r["window_start"] < end]
    problems = compare(rows, expected_candles(trades, tf.width, None, end))
    assert not problems, f"{tf.name} at {as_of}: " + "; ".join(problems[:5])


# ------------------------------------------------------------------------- the log (no Spark)


def test_window_ranges_merge_neighbours_and_stay_inside_the_bounds():
    stamps = pa.array([utc(2024, 3, 1, 10, 0, 5), utc(2024, 3, 1, 10, 1, 59), utc(2024, 3, 1, 10, 0, 0), utc(2024, 3, 1, 10, 7),
                       utc(2024, 3, 1, 9, 59, 59), utc(2024, 3, 1, 11)], pa.timestamp("us", tz="UTC"))
    ranges = window_ranges(stamps, ONE_MINUTE, utc(2024, 3, 1, 10), utc(2024, 3, 1, 11))
    assert ranges == [WindowRange(utc(2024, 3, 1, 10, 0), utc(2024, 3, 1, 10, 2)), WindowRange(utc(2024, 3, 1, 10, 7), utc(2024, 3, 1, 10, 8))]
    assert window_ranges(stamps, ONE_DAY, utc(2024, 2, 1), utc(2024, 3, 2)) == [WindowRange(utc(2024, 3, 1), utc(2024, 3, 2))]


def test_the_trades_log_says_what_arrived_since_a_watermark(settings, catalog, tmp_path):
    trades = load_trades(catalog, settings.namespace)
    assert trades_since(trades, None, None).state == "current"
    ingest_rows(settings, catalog, [trade("okx", "BTC-USDT", "1", 10.0, 1.0, utc(2024, 3, 1, 12))], tmp_path, "a", utc(2024, 3, 2))
    trades.refresh()
    first = trades.current_snapshot().snapshot_id
    assert trades_since(trades, None, first).state == "none"
    assert trades_since(trades, first, first).state == "current"
    rows = [trade("okx", "BTC-USDT", str(i), 10.0, 1.0, utc(2024, 2, 1, 12, i)) for i in range(2, 5)]
    ingest_rows(settings, catalog, rows, tmp_path, "b", utc(2024, 3, 3))
    trades.refresh()
    since = trades_since(trades, first, trades.current_snapshot().snapshot_id)
    assert (since.state, since.appended_rows, len(since.appends)) == ("appended", 3, 1)
    # A snapshot that is not in the history any more.
    assert trades_since(trades, 12345, trades.current_snapshot().snapshot_id).state == "unreachable"
    # A delete since the watermark: the log cannot say which windows lost trades.
    marked = trades.current_snapshot().snapshot_id
    from pyiceberg.expressions import EqualTo

    trades.delete(EqualTo("trade_id", "3"))
    trades.refresh()
    rewritten = trades_since(trades, marked, trades.current_snapshot().snapshot_id)
    assert rewritten.state == "rewritten" and "removed trades" in rewritten.detail


def test_a_tick_plans_exactly_the_old_windows_new_trades_touched(settings, catalog, tmp_path):
    as_of = utc(2024, 3, 10, 12, 5)
    ingest_rows(settings, catalog, [trade("okx", "BTC-USDT", "1", 10.0, 1.0, utc(2024, 3, 10, 12))], tmp_path, "a", utc(2024, 3, 10))
    trades, candles = load_trades(catalog, settings.namespace), load_candles(catalog, settings.namespace, ONE_MINUTE)
    first = plan_tick(trades, candles, ONE_MINUTE, as_of, WEEK)
    assert first.since.state == "none" and first.chunk.ranges_of(ONE_MINUTE) == [tick_range(ONE_MINUTE, as_of)]
    assert "records trades snapshot" in first.notes[0]
    # Record the watermark the way a commit does, then append trades of several ages.
    commit_chunk(settings, first.chunk, {"1m": pa.Table.from_pylist([], candles.schema().as_arrow())}, as_of, None)
    candles.refresh()
    assert recorded_watermark(candles).snapshot_id == first.chunk.trades_snapshot
    late = [
        trade("okx", "BTC-USDT", "2", 11.0, 1.0, utc(2024, 3, 10, 11, 30, 5)),  # 35 min late: outside the 10 min lookback
        trade("okx", "BTC-USDT", "3", 12.0, 1.0, utc(2024, 3, 10, 11, 30, 50)),  # the same window
        trade("okx", "BTC-USDT", "4", 12.0, 1.0, utc(2024, 3, 10, 11, 31)),  # the next window: merged into one range
        trade("okx", "BTC-USDT", "5", 13.0, 1.0, utc(2024, 1, 12, 23, 59, 59)),  # 58 days late, across a month
        trade("okx", "BTC-USDT", "6", 13.0, 1.0, utc(2024, 3, 10, 12, 1)),  # inside the lookback: recomputed anyway
        trade("okx", "BTC-USDT", "7", 13.0, 1.0, utc(2023, 11, 1)),  # beyond the 90-day retention of 1m
    ]
    ingest_rows(settings, catalog, late, tmp_path, "late", utc(2024, 3, 10, 12, 4))
    trades.refresh()
    candles.refresh()
    plan = plan_tick(trades, candles, ONE_MINUTE, as_of, WEEK)
    assert plan.since.state == "appended" and plan.late_windows == 3
    assert plan.chunk.ranges_of(ONE_MINUTE) == [
        WindowRange(utc(2024, 1, 12, 23, 59), utc(2024, 1, 13)),
        WindowRange(utc(2024, 3, 10, 11, 30), utc(2024, 3, 10, 11, 32)),
        tick_range(ONE_MINUTE, as_of),
    ]
    assert plan.chunk.reads == tuple(plan.chunk.ranges_of(ONE_MINUTE)) and plan.chunk.advances_watermark
    assert plan.chunk.watermark_from == first.chunk.trades_snapshot
    daily = plan_tick(trades, load_candles(catalog, settings.namespace, ONE_DAY), ONE_DAY, as_of, WEEK)
    assert daily.since.state == "none"  # the 1d table records no watermark yet: its lookback only


def test_when_the_log_cannot_be_trusted_the_tick_says_so_and_recomputes_by_range(settings, catalog, tmp_path):
    as_of = utc(2024, 3, 10, 12, 5)
    ingest_rows(settings, catalog, [trade("okx", "BTC-USDT", "1", 10.0, 1.0, utc(2024, 3, 10, 12))], tmp_path, "a", utc(2024, 3, 10))
    trades, candles = load_trades(catalog, settings.namespace), load_candles(catalog, settings.namespace, ONE_MINUTE)
    first = plan_tick(trades, candles, ONE_MINUTE, as_of, WEEK)
    commit_chunk(settings, first.chunk, {"1m": pa.Table.from_pylist([], candles.schema().as_arrow())}, as_of, None)
    ingest_rows(settings, catalog, [trade("okx", "BTC-USDT", "2", 10.0, 1.0, utc(2024, 3, 1))], tmp_path, "b", utc(2024, 3, 10, 12))
    trades.refresh()
    candles.refresh()
    # The watermark's snapshot expires: everything older than the newest snapshot goes.
    expire_snapshots(trades, utc(2100, 1, 1))
    plan = plan_tick(trades, candles, ONE_MINUTE, as_of, timedelta(days=2))
    assert plan.since.state == "unreachable"
    lookback = tick_range(ONE_MINUTE, as_of)
    assert plan.chunk.ranges_of(ONE_MINUTE) == [WindowRange(lookback.start - timedelta(days=2), lookback.start), lookback]
    assert "no longer in the table's history" in plan.notes[0] and "were not checked" in plan.notes[0]
    assert plan.chunk.watermark_from == first.chunk.trades_snapshot  # the commit still checks the table's own


def test_expiry_on_trades_keeps_every_snapshot_from_the_oldest_watermark_on(settings, catalog, tmp_path):
    as_of = utc(2024, 3, 10, 12, 5)
    for index in range(3):
        ingest_rows(settings, catalog, [trade("okx", "BTC-USDT", str(index), 10.0, 1.0, utc(2024, 3, 10, 11, index))],
                    tmp_path, f"f{index}", utc(2024, 3, 10))
        if index == 0:
            trades, candles = load_trades(catalog, settings.namespace), load_candles(catalog, settings.namespace, ONE_MINUTE)
            plan = plan_tick(trades, candles, ONE_MINUTE, as_of, WEEK)
            commit_chunk(settings, plan.chunk, {"1m": pa.Table.from_pylist([], candles.schema().as_arrow())}, as_of, None)
    trades.refresh()
    # Three appends, and after the second and third the merge of the day's small files (a replace).
    operations = [snapshot.summary.operation.value for snapshot in trades.metadata.snapshots]
    assert operations == ["append", "append", "replace", "append", "replace"]
    expired = expire_all(catalog, settings.namespace, utc(2100, 1, 1))
    trades.refresh()
    assert expired["gold_crypto_trades"] == 0 and len(trades.metadata.snapshots) == 5  # the watermark is the oldest
    candles.refresh()
    since = trades_since(trades, recorded_watermark(candles).snapshot_id, trades.current_snapshot().snapshot_id)
    assert since.state == "appended" and since.appended_rows == 2


# ---------------------------------------------------------------------------- with Spark (slow)


def late_scenario(settings, catalog, tmp_path):
    """Three days backfilled, then trades 2 to 40 days late (across a month end), a duplicate
    of a stored trade with other values (the first version wins), and equal timestamps."""
    from ohlcv.generate import GenerateSpec, generate

    base = generate(GenerateSpec(utc(2024, 3, 1), utc(2024, 3, 4), symbols=2, exchanges=1, trades_per_day=1_500, seed=11)).to_pylist()
    ingest_rows(settings, catalog, base, tmp_path, "base", utc(2024, 3, 4, 0, 30))
    run_chunks(settings, plan_backfill(ALL, utc(2024, 3, 1), utc(2024, 3, 4), closed_before=utc(2030, 1, 1)), lambda: utc(2030, 1, 1))
    first = base[0]
    late = [
        trade(first["exchange"], first["symbol"], "late-1", 1.0, 2.0, utc(2024, 3, 2, 10, 0, 30)),
        trade(first["exchange"], first["symbol"], "late-2", 2.0, 1.0, utc(2024, 3, 2, 10, 0, 30)),  # equal timestamps
        trade(first["exchange"], first["symbol"], "late-3", 3.0, 1.0, utc(2024, 1, 31, 23, 59, 59, 999999)),  # month end
        trade(first["exchange"], first["symbol"], first["trade_id"], 999.0, 5.0, first["timestamp"]),  # a re-sent trade
    ]
    ingest_rows(settings, catalog, late, tmp_path, "late", utc(2024, 3, 11))
    return stored_trades(catalog)


@pytest.mark.slow
def test_one_scheduled_tick_absorbs_trades_days_late_in_all_five_tables(capsys, fast, catalog, workflows, tmp_path, monkeypatch):
    trades = late_scenario(fast, catalog, tmp_path)
    for name, value in (("OHLCV_WAREHOUSE", fast.warehouse), ("OHLCV_STEP_RETRY_DELAY", "0.5")):
        monkeypatch.setenv(name, value)
    as_of = utc(2024, 3, 12, 0, 15)
    code, out, err = ohlcv(capsys, "run", "--timeframe", "all", "--as-of", as_of.isoformat())
    assert code == 0, out + err
    assert "late window(s) recomputed" in out
    for tf in ALL:
        assert_closed_windows_match(catalog, tf, as_of, trades)
        table = load_candles(catalog, "market_data", tf)
        assert recorded_watermark(table).snapshot_id == load_trades(catalog, "market_data").current_snapshot().snapshot_id
    # A second tick with no new trades commits nothing.
    before = snapshot_ids(catalog)
    code, out, err = ohlcv(capsys, "run", "--timeframe", "all", "--as-of", (as_of + timedelta(minutes=50)).isoformat())
    assert code == 0, out + err
    assert snapshot_ids(catalog) == before
    code, out, err = ohlcv(capsys, "status")
    assert code == 0 and "backlog" in out


@pytest.mark.slow
def test_two_writers_never_move_the_watermark_backwards(settings, catalog, spark, tmp_path):
    late_scenario(settings, catalog, tmp_path)
    as_of = utc(2024, 3, 12, 0, 5)
    table = load_candles(catalog, "market_data", ONE_MINUTE)
    from workflows.spark.client import aggregate_chunk

    # Both plan from the same watermark. The slow one computes from the trades of then; the
    # winner, after one more trade landed, absorbs that too and commits first.
    slow = plan_tick(load_trades(catalog, "market_data"), table, ONE_MINUTE, as_of, WEEK)
    aggregated = aggregate_chunk(settings, slow.chunk)
    ingest_rows(settings, catalog, [trade("kraken", "ETH-USDT", "x", 5.0, 1.0, utc(2024, 3, 3, 1))], tmp_path, "more", utc(2024, 3, 12))
    run_tick_direct(settings, ONE_MINUTE, as_of, utc(2030, 1, 1))
    winner = recorded_watermark(load_candles(catalog, "market_data", ONE_MINUTE)).snapshot_id
    assert winner == load_trades(catalog, "market_data").current_snapshot().snapshot_id != aggregated.trades_snapshot
    # The slow one would move the watermark back, and lose the late trade: it must start over.
    with pytest.raises(CommitConflict, match="watermark moved"):
        commit_chunk(settings, slow.chunk, aggregated.candles, utc(2030, 1, 1), aggregated.trades_snapshot)
    assert recorded_watermark(load_candles(catalog, "market_data", ONE_MINUTE)).snapshot_id == winner
    assert_closed_windows_match(catalog, ONE_MINUTE, as_of, stored_trades(catalog))

    # Two writers that read the same trades snapshot compute the same candles: the second
    # commits (a backfill and a tick that raced), and the watermark stays where it is.
    first = plan_tick(load_trades(catalog, "market_data"), load_candles(catalog, "market_data", ONE_MINUTE), ONE_MINUTE, as_of, WEEK)
    again = aggregate_chunk(settings, first.chunk)
    run_tick_direct(settings, ONE_MINUTE, utc(2024, 3, 12, 0, 10), utc(2030, 1, 1))
    commit_chunk(settings, first.chunk, again.candles, utc(2030, 1, 1), again.trades_snapshot)
    assert recorded_watermark(load_candles(catalog, "market_data", ONE_MINUTE)).snapshot_id == winner
    assert_closed_windows_match(catalog, ONE_MINUTE, as_of, stored_trades(catalog))


@pytest.mark.slow
def test_trades_removed_since_the_watermark_are_recomputed_by_range(settings, catalog, spark, tmp_path):
    from pyiceberg.expressions import EqualTo

    trades = late_scenario(settings, catalog, tmp_path)
    as_of = utc(2024, 3, 4, 0, 5)
    run_tick_direct(settings, ONE_MINUTE, as_of, utc(2030, 1, 1))
    victim = next(t for t in trades if utc(2024, 3, 3) <= t["timestamp"] < utc(2024, 3, 3, 12))
    load_trades(catalog, "market_data").delete(EqualTo("trade_id", victim["trade_id"]))
    later = utc(2024, 3, 4, 0, 10)
    plan, _ = run_tick_direct(settings.with_overrides(recompute_limit_days=2.0), ONE_MINUTE, later, utc(2030, 1, 1))
    assert plan.since.state == "rewritten" and "removed trades" in plan.notes[0]
    # The 2 days before the lookback were recomputed by range: the removed trade is gone there.
    remaining = stored_trades(catalog)
    end = floor(later, ONE_MINUTE)
    rows = [r for r in load_candles(catalog, "market_data", ONE_MINUTE).scan().to_arrow().to_pylist()
            if utc(2024, 3, 2) <= r["window_start"] < end]
    assert not compare(rows, expected_candles(remaining, ONE_MINUTE.width, utc(2024, 3, 2), end))


# Trades late by seconds to 60 days, with duplicates and equal timestamps, across day and month
# boundaries; each step ingests a batch and runs one tick of every timeframe. A duplicate is an
# earlier trade sent again (same key and time, another price): the first version ingested wins.
# (A re-sent trade whose timestamp changed lands in another window: range reads cannot see its
# first version there; deduplication on write, the cost issue, is what will handle that.)
_AGES = st.sampled_from([timedelta(seconds=5), timedelta(minutes=7), timedelta(minutes=45), timedelta(hours=5),
                         timedelta(days=1, minutes=3), timedelta(days=9), timedelta(days=31), timedelta(days=60)])
_BATCH = st.lists(st.tuples(_AGES, st.integers(0, 2), st.integers(0, 59), st.integers(-1, 30)), min_size=1, max_size=6)


@pytest.mark.slow
@hypothesis_settings(max_examples=2, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(_BATCH, min_size=1, max_size=2))
def test_after_every_tick_every_closed_window_equals_the_oracle(settings, spark, tmp_path_factory, batches):
    from ohlcv.catalog import ensure_tables

    run = settings.with_overrides(warehouse=str(tmp_path_factory.mktemp("wh") / "warehouse"))
    catalog = open_catalog(run)
    ensure_tables(catalog, run.namespace)
    folder = tmp_path_factory.mktemp("files")
    start = utc(2024, 2, 28, 23, 50)
    sent = [trade("okx", "BTC-USDT", str(i), 100.0 + i, 1.0, start + timedelta(minutes=i)) for i in range(20)]
    ingest_rows(run, catalog, sent, folder, "seed", start)
    as_of = utc(2024, 3, 1, 0, 20)
    # History first: a backfill of the seed, which records the first watermark.
    run_chunks(run, plan_backfill(ALL, utc(2024, 2, 28), as_of, closed_before=as_of), lambda: as_of)
    serial = 100
    for number, batch in enumerate(batches):
        as_of += timedelta(hours=7, minutes=5)
        rows = []
        for age, symbol, second, repeat in batch:
            if 0 <= repeat < len(sent):  # an earlier trade sent again, with another price
                rows.append({**sent[repeat], "price": sent[repeat]["price"] + 1.0})
            stamp = (as_of - age).replace(second=second, microsecond=0)
            name = ("BTC-USDT", "ETH-USDT", "SOL-USDT")[symbol]
            rows.append(trade("okx", name, str(serial), 50.0 + second, 0.5, stamp))
            rows.append(trade("okx", name, str(serial + 1), 51.0, 0.25, stamp))  # an equal timestamp
            serial += 2
        ingest_rows(run, catalog, rows, folder, f"batch-{number}", as_of - timedelta(seconds=1))
        sent += rows
        consumed = stored_trades(catalog)
        for tf in ALL:
            run_tick_direct(run, tf, as_of, as_of)
            # The backfill, then ticks: every closed window with trades, of any age, is computed.
            end = floor(as_of, tf)
            rows_now = [r for r in load_candles(catalog, run.namespace, tf).scan().to_arrow().to_pylist() if r["window_start"] < end]
            problems = compare(rows_now, expected_candles(consumed, tf.width, None, end))
            assert not problems, f"{tf.name} after batch {number}: " + "; ".join(problems[:5])


@pytest.mark.slow
@pytest.mark.parametrize("read_mode, engine", [("auto", "spark"), ("arrow", "spark"), ("auto", "arrow")])
def test_many_late_windows_are_read_as_a_set_of_slots_and_match_the_oracle(settings, catalog, spark, tmp_path, read_mode, engine):
    """Past a few ranges the read tests each trade's slot against a set (ohlcv.store): the same
    trades as the comparisons would keep, here for late windows spread over a week. On local
    files ("auto") the few trades of those windows are read pruned, row group by row group, in
    the driver; through Arrow (as on S3) every Spark task filters its files. The driver's own
    engine (a tick's default) reads them pruned and computes them there."""
    settings = settings.with_overrides(read_mode=read_mode, driver_max_trades=0 if engine == "spark" else 500_000)
    late_scenario(settings, catalog, tmp_path)
    spread = [trade("kraken", "SOL-USDT", f"w{day}", 20.0 + day, 1.0, utc(2024, 3, 1 + day % 3, 3 * day, 7, 30)) for day in range(7)]
    ingest_rows(settings, catalog, spread, tmp_path, "spread", utc(2024, 3, 11, 12))
    as_of = utc(2024, 3, 12, 0, 5)
    # Both timeframes on the default path; the Arrow path reads the same way for each.
    for tf in (ONE_MINUTE, timeframes.get("1h")) if read_mode == "auto" else (ONE_MINUTE,):
        plan, _ = run_tick_direct(settings, tf, as_of, utc(2030, 1, 1))
        assert len(plan.chunk.reads) > 4  # the set-of-slots path
        assert (run_tick_direct.engine, run_tick_direct.read_mode) == (engine, "pruned" if read_mode == "auto" else "arrow")
        assert_closed_windows_match(catalog, tf, as_of, stored_trades(catalog))
    # The pruned read's scratch folder is gone with the read.
    trades_location = Path(load_trades(catalog, settings.namespace).location().removeprefix("file://"))
    assert not any((trades_location / "scratch").glob("*"))
