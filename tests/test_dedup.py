"""Deduplication on write (ohlcv/dedup.py): ingest keeps the first version of each trade, sends
later ones to quarantine, and its snapshots say which days may still hold two versions.

The oracle is plain Python over every row delivered: per (exchange, symbol, trade_id), the row
ranked first by (ingested_at, timestamp, price, quantity) wins.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from ohlcv import dedup, schema as s
from ohlcv.catalog import ensure_tables, load_table, load_trades, open_catalog
from ohlcv.ingest import ingest_files
from ohlcv.settings import Settings
from ohlcv.windows import WindowRange
from support import stored_trades, trade, trades_table, utc

DAY = utc(2024, 6, 3)
INGESTS = [utc(2024, 6, 10), utc(2024, 6, 10), utc(2024, 6, 11)]  # two ingests share a clock: ties
IDS = ["1", "2", "9", "10", "0010", "99", "100", "a-1", "a-10", "1234567890123456789012"]


def _rank(row: dict) -> tuple:
    return (row["ingested_at"], row["timestamp"], row["price"], row["quantity"])


def _key(row: dict) -> tuple:
    return (row["exchange"], row["symbol"], row["trade_id"])


def _ingest(settings: Settings, catalog, rows: list[dict], folder: Path, name: str, at):
    path = folder / f"{name}.parquet"
    pq.write_table(trades_table(rows), path)
    return ingest_files(catalog, settings.namespace, [str(path)], "us", at)[0]


def _quarantined(catalog) -> list[dict]:
    return load_table(catalog, "market_data", s.QUARANTINE_TABLE).scan().to_arrow().to_pylist()


rows_strategy = st.lists(
    st.builds(
        lambda exchange, trade_id, day, second, price, quantity: trade(
            exchange, "BTC-USDT", trade_id, price, quantity, DAY + timedelta(days=day, seconds=second)),
        st.sampled_from(["binance", "okx"]), st.sampled_from(IDS), st.integers(0, 2), st.integers(0, 3),
        st.sampled_from([100.0, 101.0]), st.sampled_from([1.0, 2.0]),
    ),
    min_size=1, max_size=12,
)


@hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deliveries=st.lists(rows_strategy, min_size=1, max_size=len(INGESTS)))
def test_every_trade_lands_once_as_its_first_version_outside_the_days_its_snapshot_names(deliveries):
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(warehouse=str(Path(folder) / "warehouse"))
        catalog = open_catalog(settings)
        ensure_tables(catalog, settings.namespace)
        delivered = []
        for number, rows in enumerate(deliveries):
            at = INGESTS[number]
            _ingest(settings, catalog, rows, Path(folder), f"file-{number}", at)
            delivered += [{**row, "ingested_at": at} for row in rows]

        stored = stored_trades(catalog)
        duplicates = [row for row in _quarantined(catalog) if row["reason"] == "duplicate"]
        assert len(stored) + len(duplicates) == len(delivered), "a delivered row is neither stored nor quarantined"

        winners: dict[tuple, dict] = {}
        for row in delivered:
            if _key(row) not in winners or _rank(row) < _rank(winners[_key(row)]):
                winners[_key(row)] = row
        stored_ranks = defaultdict(list)
        for row in stored:
            stored_ranks[_key(row)].append(_rank(row))
        for key, winner in winners.items():
            assert _rank(winner) in stored_ranks[key], f"the first version of {key} is not stored"

        at_risk = dedup.duplicate_days(load_trades(catalog, settings.namespace))
        for key, ranks in stored_ranks.items():
            for rank in ranks:
                if rank != _rank(winners[key]):
                    assert rank[1].date() in at_risk.days, f"a later version of {key} is stored on a day no snapshot names"
        for day in {row["timestamp"].date() for row in stored} - at_risk.days:  # what a read skips deduplicating
            keys = [_key(row) for row in stored if row["timestamp"].date() == day]
            assert len(keys) == len(set(keys)), f"{day} holds two versions of a trade but is not named"


def test_a_file_sent_again_lands_nothing_and_quarantines_every_row_verbatim(settings, catalog, tmp_path):
    rows = [trade("binance", "BTC-USDT", str(i), 100.0 + i, 1.0, DAY + timedelta(minutes=i)) for i in range(5)]
    _ingest(settings, catalog, rows, tmp_path, "first", INGESTS[0])
    report = _ingest(settings, catalog, rows, tmp_path, "again", INGESTS[2])
    assert (report.ingested, report.duplicates, report.quarantined) == (0, 5, 5)
    assert len(stored_trades(catalog)) == 5
    quarantined = sorted(_quarantined(catalog), key=lambda r: int(r["trade_id"]))
    assert [(r["trade_id"], float(r["price"]), r["reason"]) for r in quarantined] == [(str(i), 100.0 + i, "duplicate") for i in range(5)]
    assert dedup.duplicate_days(load_trades(catalog, settings.namespace)).days == frozenset()


def test_a_corrected_version_days_later_is_found_by_its_id_and_dropped(settings, catalog, tmp_path):
    _ingest(settings, catalog, [trade("okx", "ETH-USDT", "77", 10.0, 1.0, DAY)], tmp_path, "first", INGESTS[0])
    moved = trade("okx", "ETH-USDT", "77", 11.0, 1.0, DAY + timedelta(days=40))
    report = _ingest(settings, catalog, [moved, trade("okx", "ETH-USDT", "78", 12.0, 1.0, DAY + timedelta(days=40))],
                     tmp_path, "later", INGESTS[2])
    assert (report.ingested, report.duplicates) == (1, 1)
    assert sorted((r["trade_id"], r["price"]) for r in stored_trades(catalog)) == [("77", 10.0), ("78", 12.0)]


def test_a_new_day_of_trades_reads_no_stored_trades(settings, catalog, tmp_path):
    _ingest(settings, catalog, [trade("okx", "ETH-USDT", str(i), 10.0, 1.0, DAY) for i in range(1, 100)], tmp_path, "a", INGESTS[0])
    index = dedup.load_id_ranges(load_table(catalog, settings.namespace, s.TRADE_ID_RANGES_TABLE))
    assert index.to_pylist() == [{"exchange": "okx", "symbol": "ETH-USDT", "day": DAY.date(), "first_number": 1, "last_number": 99,
                                  "first_text": None, "last_text": None, "trades": 99}]
    tomorrow = dedup.id_ranges(trades_table([trade("okx", "ETH-USDT", str(i), 10.0, 1.0, DAY + timedelta(days=1))
                                             for i in range(100, 200)]).append_column("ingested_at", pa.array([INGESTS[1]] * 100)))
    assert dedup.series_to_check(index, tomorrow) == {}
    overlapping = dedup.id_ranges(trades_table([trade("okx", "ETH-USDT", "50", 10.0, 1.0, DAY + timedelta(days=1))]))
    assert dedup.series_to_check(index, overlapping) == {("okx", "ETH-USDT"): {DAY.date()}}


def test_days_another_writer_appended_are_named_until_and_after_the_next_ingest(settings, catalog, tmp_path):
    trades = load_trades(catalog, settings.namespace)
    _ingest(settings, catalog, [trade("okx", "ETH-USDT", "1", 10.0, 1.0, DAY)], tmp_path, "a", INGESTS[0])
    assert dedup.duplicate_days(trades.refresh()).days == frozenset()
    other = trades_table([trade("okx", "ETH-USDT", "1", 9.0, 1.0, DAY + timedelta(days=2))])
    other = other.append_column("ingested_at", pa.array([INGESTS[1]], pa.timestamp("us", tz="UTC")))
    trades.refresh().append(other.cast(s.arrow_schema(s.TRADES_SCHEMA)))  # no guarantee recorded
    third = DAY.date() + timedelta(days=2)
    assert dedup.duplicate_days(trades.refresh()).days == {third}
    _ingest(settings, catalog, [trade("okx", "ETH-USDT", "5", 10.0, 1.0, DAY + timedelta(days=5))], tmp_path, "b", INGESTS[2])
    assert dedup.duplicate_days(trades.refresh()).days == {third}, "the ingest carries the other writer's day forward"
    assert trades.current_snapshot().summary[dedup.DUPLICATE_DAYS] == "2024-06-05"


def test_an_ingest_rebased_onto_another_commit_vouches_for_nothing(settings, catalog, tmp_path):
    trades = load_trades(catalog, settings.namespace)
    _ingest(settings, catalog, [trade("okx", "ETH-USDT", "1", 10.0, 1.0, DAY)], tmp_path, "a", INGESTS[0])
    checked = trades.refresh().current_snapshot()
    _ingest(settings, catalog, [trade("okx", "ETH-USDT", "2", 10.0, 1.0, DAY + timedelta(days=1))], tmp_path, "b", INGESTS[1])
    late = trades_table([trade("okx", "ETH-USDT", "3", 10.0, 1.0, DAY + timedelta(days=3))])
    late = late.append_column("ingested_at", pa.array([INGESTS[2]], pa.timestamp("us", tz="UTC"))).cast(s.arrow_schema(s.TRADES_SCHEMA))
    # What an ingest that checked `checked` leaves when pyiceberg rebases its append onto "b".
    trades.refresh().append(late, snapshot_properties=dedup.guarantee(checked, dedup.DuplicateDays(frozenset())))
    assert dedup.duplicate_days(trades.refresh()).days == {DAY.date() + timedelta(days=3)}


def test_with_no_vouching_snapshot_left_every_day_with_trades_is_named(settings, catalog, tmp_path):
    trades = load_trades(catalog, settings.namespace)
    rows = trades_table([trade("okx", "ETH-USDT", "1", 10.0, 1.0, DAY), trade("okx", "ETH-USDT", "2", 10.0, 1.0, DAY + timedelta(days=1))])
    rows = rows.append_column("ingested_at", pa.array([INGESTS[0]] * 2, pa.timestamp("us", tz="UTC"))).cast(s.arrow_schema(s.TRADES_SCHEMA))
    trades.append(rows)  # a writer that knows nothing of the guarantee: everything is at risk
    assert dedup.duplicate_days(trades.refresh()).days == {DAY.date(), DAY.date() + timedelta(days=1)}


def test_day_runs_read_back_as_written():
    days = dedup.DuplicateDays(frozenset({date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3), date(2024, 6, 10)}))
    assert days.text() == "2024-05-01/2024-05-03,2024-06-10"
    assert dedup.DuplicateDays.parse(days.text()) == days
    assert days.meets([WindowRange(utc(2024, 5, 3, 23, 59), utc(2024, 5, 4))])
    assert not days.meets([WindowRange(utc(2024, 5, 4), utc(2024, 6, 10))]), "the end of a range is not in it"
    assert days.meets([WindowRange(utc(2024, 5, 4), utc(2024, 6, 10, 0, 1))])
    assert dedup.DuplicateDays.parse("*").meets([WindowRange(utc(2030, 1, 1), utc(2030, 1, 1, 0, 1))])


def test_the_index_gives_each_days_largest_numeric_id_over_every_series(settings, catalog, tmp_path):
    """What the Spark service reads to skip a packed-order pass that could not rank the ids
    (ohlcv/aggregate.largest_packed_id): per day, the largest id made of digits; text ids none."""
    rows = [trade("okx", "ETH-USDT", "5", 10.0, 1.0, DAY), trade("binance", "BTC-USDT", "137438953471", 10.0, 1.0, DAY),
            trade("okx", "ETH-USDT", "900", 10.0, 1.0, DAY + timedelta(days=1)),
            trade("okx", "ETH-USDT", "x-1", 10.0, 1.0, DAY + timedelta(days=2))]
    _ingest(settings, catalog, rows, tmp_path, "ids", INGESTS[0])
    index = load_table(catalog, settings.namespace, s.TRADE_ID_RANGES_TABLE)
    assert dedup.largest_number_by_day(index) == {DAY.date(): 137438953471, DAY.date() + timedelta(days=1): 900}


@given(start_us=st.integers(0, 10 * 86_400_000_000), length_us=st.integers(1, 5 * 86_400_000_000))
def test_days_of_a_range_are_the_utc_days_it_meets(start_us, length_us):
    start = utc(2024, 1, 1) + timedelta(microseconds=start_us)
    end = start + timedelta(microseconds=length_us)
    last = end - timedelta(microseconds=1)
    expected = {start.date() + timedelta(days=i) for i in range((last.date() - start.date()).days + 1)}
    assert dedup.days_of([WindowRange(start, end)]) == expected
