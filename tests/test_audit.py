"""The audit before publish: each invariant counts exactly the rows that break it (against a
row-by-row oracle, on randomly corrupted candles), a corrupted batch is refused, nothing is
published, and the kept report names each failing row; reconciliation catches a trade_count
that disagrees."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from support import utc
from ohlcv import timeframes
from ohlcv.aggregate import candle_arrow_schema
from ohlcv.catalog import load_candles
from ohlcv.errors import RunFailed
from ohlcv.validate import audit_candles, invariant_checks, sample_rows
from support import ohlcv as run_cli
from support import AS_OF, table_rows
from workflows.orchestration import failpoints, ids, journal, runs


def honest(count: int = 30) -> pa.Table:
    start = utc(2024, 1, 1)
    rows = [
        dict(symbol="BTC-USDT", exchange="binance", window_start=start + timedelta(minutes=i),
             window_end=start + timedelta(minutes=i + 1), window_date=start.date(), open_price=100.0 + i,
             high_price=102.0 + i, low_price=99.0 + i, close_price=101.0 + i, volume=2.0, trade_count=4, vwap=100.5 + i)
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=candle_arrow_schema())


def test_honest_candles_pass_every_check():
    source = pa.table({"exchange": ["binance"], "symbol": ["BTC-USDT"], "trades": pa.array([120], pa.int64())})
    report = audit_candles(honest(), timeframes.get("1m"), "r", source, "10")
    assert report.passed, report.summary()
    names = [c.name for c in report.checks]
    assert {
        "high_price >= max(open_price, close_price)", "low_price <= vwap <= high_price",
        "no duplicate (exchange, symbol, window_start)", "pandera model on a sample of 11",  # 10 + the newest window
        "reconciliation: sum(trade_count) = distinct trades, per exchange and symbol",
    } <= set(names)


def test_the_sample_is_seeded_and_always_holds_the_newest_windows():
    kraken = honest(200)
    kraken = kraken.set_column(1, kraken.schema.field(1), pa.array(["kraken"] * 200, kraken.schema.field(1).type))
    table = pa.concat_tables([honest(200), kraken])
    one = sample_rows(table, "20", "1m [a, b)")
    assert np.array_equal(one, sample_rows(table, "20", "1m [a, b)"))  # same range, same rows
    assert not np.array_equal(one, sample_rows(table, "20", "1m [b, c)"))
    assert len(one) == len(set(one)) == 22  # 20 sampled + the newest window of each of the two series
    assert {199, 399} <= set(one.tolist()) and list(one) == sorted(one)
    assert len(sample_rows(table, "10%", "x")) == 40 + 2
    assert len(sample_rows(table, "1000", "x")) == 400  # never more rows than there are
    # A row whose window_start or series is missing is no series' newest window.
    starts = table.column("window_start").to_pylist()
    broken = table.set_column(2, pa.field("window_start", table.schema.field(2).type), pa.array([None] + starts[1:], table.schema.field(2).type))
    newest_only = sample_rows(broken, "1", "x")
    assert 0 not in set(newest_only.tolist()) and len(newest_only) == 3  # the two newest windows and one sampled row


def oracle_failures(rows: list[dict], width: timedelta) -> dict[str, int]:
    """Each invariant's failing rows, one row at a time in plain Python (None fails every rule it is in)."""
    def fails(check, *values) -> bool:
        return any(v is None for v in values) or not check(*values)

    keys = [(r["exchange"], r["symbol"], r["window_start"]) for r in rows]
    slack = lambda v: abs(v) * 1e-12  # noqa: E731 - VWAP_RELATIVE_SLACK
    epoch = utc(1970, 1, 1)
    return {
        "high_price >= max(open_price, close_price)":
            sum(fails(lambda o, h, c: h >= max(o, c), r["open_price"], r["high_price"], r["close_price"]) for r in rows),
        "low_price <= min(open_price, close_price)":
            sum(fails(lambda o, lo, c: lo <= min(o, c), r["open_price"], r["low_price"], r["close_price"]) for r in rows),
        "low_price <= vwap <= high_price":
            sum(fails(lambda lo, v, h: lo - slack(v) <= v <= h + slack(v), r["low_price"], r["vwap"], r["high_price"]) for r in rows),
        "volume > 0": sum(fails(lambda v: v > 0, r["volume"]) for r in rows),
        "trade_count > 0": sum(fails(lambda n: n > 0, r["trade_count"]) for r in rows),
        "window_end = window_start + width": sum(fails(lambda s, e: e == s + width, r["window_start"], r["window_end"]) for r in rows),
        "window_date = UTC date of window_start": sum(fails(lambda s, d: d == s.date(), r["window_start"], r["window_date"]) for r in rows),
        "window_start aligned to the width": sum(fails(lambda s: (s - epoch) % width == timedelta(0), r["window_start"]) for r in rows),
        "no duplicate (exchange, symbol, window_start)": sum(keys.count(key) > 1 for key in keys),
    }


_DEFECTS = ("high", "low", "vwap", "volume", "count", "end", "date", "misaligned", "duplicate", "null price", "null start", "nan")


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.sampled_from(["1m", "5m", "1h", "1d"]), st.integers(4, 40),
       st.lists(st.tuples(st.sampled_from(_DEFECTS), st.integers(0, 10_000)), max_size=8))
def test_each_invariant_counts_exactly_the_rows_that_break_it(tf_name, count, defects):
    tf = timeframes.get(tf_name)
    width = timedelta(microseconds=tf.width_us)
    start = utc(2023, 12, 31, 22) if tf_name != "1d" else utc(2023, 12, 30)
    rows = []
    for i in range(count):
        window = start + width * (i // 2)
        rows.append(dict(symbol="BTC-USDT" if i % 2 else "ETH-USDT", exchange="binance", window_start=window, window_end=window + width,
                         window_date=window.date(), open_price=100.0 + i, high_price=102.0 + i, low_price=99.0 + i,
                         close_price=101.0 + i, volume=2.0, trade_count=4, vwap=100.5 + i))
    for kind, at in defects:
        row = rows[at % len(rows)]
        if kind == "high":
            row["high_price"] = row["low_price"] - 1.0
        elif kind == "low":
            row["low_price"] = row["high_price"] + 1.0
        elif kind == "vwap":
            row["vwap"] = row["high_price"] * 2
        elif kind == "volume":
            row["volume"] = 0.0
        elif kind == "count":
            row["trade_count"] = 0
        elif kind == "end":
            row["window_end"] = row["window_end"] + timedelta(microseconds=1)
        elif kind == "date":
            row["window_date"] = row["window_date"] + timedelta(days=1)
        elif kind == "misaligned" and row["window_start"] is not None:
            row["window_start"] = row["window_start"] + timedelta(seconds=1)
        elif kind == "duplicate":
            rows.append(dict(row))
        elif kind == "null price":
            row["close_price"] = None
        elif kind == "null start":
            row["window_start"] = None
        elif kind == "nan":
            row["vwap"] = float("nan")
    table = pa.Table.from_pylist(rows, schema=candle_arrow_schema())
    got = {check.name: check.failed for check in invariant_checks(table, tf)}
    want = oracle_failures(rows, width)
    assert got == want
    for check in invariant_checks(table, tf):
        assert len(check.examples) == min(check.failed, 5)


@pytest.mark.slow
def test_a_corrupted_batch_is_refused_and_the_report_names_each_row(fast, catalog, workflows, day_of_trades, capsys, monkeypatch):
    tf = timeframes.get("1h")
    failpoints.arm(fast.failpoint_dir, "aggregate", "corrupt", kinds=("high_below_low", "bad_vwap", "duplicate_window"))
    with pytest.raises(RunFailed, match="step validate failed: audit failed, nothing published"):
        runs.run_tick(fast, tf, AS_OF["1h"])
    assert table_rows(catalog, tf) == []
    assert load_candles(catalog, "market_data", tf).current_snapshot() is None  # not one commit

    workflow_id = ids.tick_workflow_id(tf, AS_OF["1h"])
    entry = journal.read_step(workflow_id, "validate")
    assert entry["status"] == "FAILED" and len(entry["attempts"]) == 1  # terminal: not retried
    failing = {c["name"]: c for c in entry["report"]["checks"] if c["failed"]}
    assert failing["high_price >= max(open_price, close_price)"]["failed"] == 1
    assert failing["no duplicate (exchange, symbol, window_start)"]["failed"] == 2
    assert failing["low_price <= vwap <= high_price"]["failed"] == 2  # the bad vwap and the high below low
    [bad_high] = failing["high_price >= max(open_price, close_price)"]["examples"]
    assert bad_high["high_price"] < bad_high["open_price"] and bad_high["window_start"].startswith("2024-04-02T1")
    aggregate = journal.read_step(workflow_id, "aggregate")
    assert aggregate["status"] == "SUCCESSFUL"

    # `ohlcv workflows show` prints the kept report.
    monkeypatch.setenv("OHLCV_WAREHOUSE", fast.warehouse)
    code, out, _ = run_cli(capsys, "workflows", "show", workflow_id)
    assert code == 0 and "audit report of validate" in out and "high_price >= max(open_price, close_price)" in out
    assert f"window_start={bad_high['window_start']}" in out


@pytest.mark.slow
def test_reconciliation_catches_a_trade_count_that_disagrees_with_the_source(fast, catalog, workflows, day_of_trades):
    tf = timeframes.get("30m")
    failpoints.arm(fast.failpoint_dir, "aggregate", "corrupt", kinds=("trade_count",))
    with pytest.raises(RunFailed, match="reconciliation"):
        runs.run_tick(fast, tf, AS_OF["30m"])
    entry = journal.read_step(ids.tick_workflow_id(tf, AS_OF["30m"]), "validate")
    failing = [c for c in entry["report"]["checks"] if c["failed"]]
    assert [c["name"] for c in failing] == ["reconciliation: sum(trade_count) = distinct trades, per exchange and symbol"]
    [example] = failing[0]["examples"]
    assert example["sum(trade_count)"] == example["distinct trades"] + 1
    assert table_rows(catalog, tf) == []
