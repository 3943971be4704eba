"""Ingest: every timestamp form, bad rows quarantined with their reasons, malformed files refused
before anything is written. Real Iceberg tables on a real SQLite catalog; no Spark needed."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from support import BOTH_CATALOGS, stored_trades, trades_table, utc
from ohlcv import schema as s
from ohlcv.catalog import ensure_tables, load_table
from ohlcv.errors import InputError, TableNotFound
from ohlcv.ingest import ingest_files
from ohlcv.settings import Settings
from ohlcv.catalog import open_catalog

NOW = utc(2024, 6, 1, 12)
HEADER = "exchange,symbol,trade_id,price,quantity,side,timestamp\n"


def write_csv(tmp_path, body: str, name: str = "trades.csv", header: str = HEADER):
    path = tmp_path / name
    path.write_text(header + body)
    return path


def quarantined(catalog) -> list[dict]:
    return load_table(catalog, "market_data", s.QUARANTINE_TABLE).scan().to_arrow().to_pylist()


def snapshot_ids(catalog) -> tuple:
    tables = (s.TRADES_TABLE, s.QUARANTINE_TABLE)
    return tuple((load_table(catalog, "market_data", t).current_snapshot() or None) and
                 load_table(catalog, "market_data", t).current_snapshot().snapshot_id for t in tables)


def test_csv_timestamps_in_every_accepted_form(settings, catalog, tmp_path):
    body = (
        "binance,BTC-USDT,1,100,1,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC-USDT,2,100,1,buy,2024-05-01T12:00:00+02:00\n"  # offset: 10:00 UTC
        "binance,BTC-USDT,3,100,1,,2024-05-01 10:00:00.123456\n"  # naive: UTC
        "binance,BTC-USDT,4,100,1,sell,1714557600000000\n"  # epoch microseconds
        "binance,BTC-USDT,5,100,1,sell,2024-05-01T05:00:00-05:00\n"  # another offset in the same file
        "binance,BTC-USDT,6,100,1,sell,2024-05-01\n"  # a date: midnight UTC
    )
    ingest_files(catalog, "market_data", [write_csv(tmp_path, body)], "us", NOW)
    rows = {r["trade_id"]: r for r in stored_trades(catalog)}
    ten = utc(2024, 5, 1, 10)
    assert [rows[i]["timestamp"] for i in "1245"] == [ten] * 4
    assert rows["3"]["timestamp"] == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert rows["6"]["timestamp"] == utc(2024, 5, 1)
    assert rows["3"]["side"] is None and rows["1"]["side"] == "buy"
    assert all(r["ingested_at"] == NOW for r in rows.values())


@pytest.mark.parametrize(
    ("unit", "value"),
    [("s", 1714557600), ("ms", 1714557600000), ("us", 1714557600000000), ("ns", 1714557600000000789)],
)
def test_integer_epochs_in_each_unit(settings, catalog, tmp_path, unit, value):
    path = tmp_path / "epochs.parquet"
    pq.write_table(pa.table({"exchange": ["okx"], "symbol": ["SOL-USDT"], "trade_id": [7], "price": [150],
                             "quantity": [2.5], "timestamp": pa.array([value], pa.int64())}), path)
    ingest_files(catalog, "market_data", [path], unit, NOW)
    [row] = stored_trades(catalog)
    assert row["timestamp"] == utc(2024, 5, 1, 10) and row["trade_id"] == "7" and row["price"] == 150.0


def test_parquet_timestamps_naive_and_zoned(settings, catalog, tmp_path):
    naive = pa.array([datetime(2024, 5, 1, 10)], pa.timestamp("ns"))
    zoned = pa.array([datetime(2024, 5, 1, 10, tzinfo=timezone.utc)], pa.timestamp("ms", tz="Asia/Tokyo"))
    for name, column in (("naive", naive), ("zoned", zoned)):
        pq.write_table(pa.table({"exchange": ["a"], "symbol": ["b"], "trade_id": [name], "price": [1.0],
                                 "quantity": [1.0], "timestamp": column}), tmp_path / f"{name}.parquet")
    ingest_files(catalog, "market_data", [tmp_path / "naive.parquet", tmp_path / "zoned.parquet"], "us", NOW)
    assert {r["trade_id"]: r["timestamp"] for r in stored_trades(catalog)} == {
        "naive": utc(2024, 5, 1, 10), "zoned": utc(2024, 5, 1, 10)}


@BOTH_CATALOGS
def test_bad_rows_go_to_quarantine_with_reasons_and_good_rows_land(settings, catalog, tmp_path):
    body = (
        "binance,BTC-USDT,1,100,1,buy,2024-05-01T10:00:00Z\n"
        ",BTC-USDT,2,100,1,buy,2024-05-01T10:00:00Z\n"
        "binance,,3,100,1,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC-USDT,,100,1,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC-USDT,5,abc,1,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC-USDT,6,-3,1,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC-USDT,7,100,0,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC-USDT,8,inf,nan,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC-USDT,9,100,1,buy,yesterday noon\n"
        "binance,BTC-USDT,10,100,1,buy,\n"
        "binance,BTC-USDT,11,100,1,buy,1714557600\n"  # seconds read as microseconds: 1970
        ",,12,,1,buy,2024-05-01T10:00:00Z\n"
        "bin ance,BTC-USDT,14,100,1,buy,2024-05-01T10:00:00Z\n"
        "binance,BTC;DROP TABLE,15,100,1,buy,2024-05-01T10:00:00Z\n"
        "binance,../../etc,16,100,1,buy,2024-05-01T10:00:00Z\n"
        "kraken,ETH-USDT,13,3000.5,0.25,sell,2024-05-01T10:00:01Z\n"
    )
    [report] = ingest_files(catalog, "market_data", [write_csv(tmp_path, body)], "us", NOW)
    assert (report.rows, report.ingested, report.quarantined) == (16, 2, 14)
    assert sorted(r["trade_id"] for r in stored_trades(catalog)) == ["1", "13"]
    reasons = {r["trade_id"]: r["reason"] for r in quarantined(catalog)}
    assert reasons == {
        "2": "missing exchange",
        "3": "missing symbol",
        "": "missing trade_id",
        "5": "price is not a number",
        "6": "price is not positive and finite",
        "7": "quantity is not positive and finite",
        "8": "price is not positive and finite; quantity is not positive and finite",
        "9": "timestamp is not parseable",
        "10": "missing timestamp",
        "11": "timestamp out of range 2000..2100 (check --epoch-unit)",
        "12": "missing exchange; missing symbol; missing price",
        "14": "exchange is not a valid name (letters, digits and . _ - / : (at most 64))",
        "15": "symbol is not a valid name (letters, digits and . _ - / : (at most 64))",
        "16": "symbol is not a valid name (letters, digits and . _ - / : (at most 64))",
    }
    raw = {r["trade_id"]: r for r in quarantined(catalog)}
    assert raw["5"]["price"] == "abc" and raw["9"]["timestamp"] == "yesterday noon"
    assert raw["5"]["source"].endswith("trades.csv") and raw["5"]["ingested_at"] == NOW
    assert report.reasons["missing exchange"] == 2 and report.reasons["price is not positive and finite"] == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("trades.json", "{}", "unknown file format '.json'"),
        ("trades.csv", "exchange,symbol,price,quantity\nbinance,BTC,1,1\n", "missing required columns trade_id, timestamp"),
        ("trades.csv", "", "empty CSV file"),
        ("trades.parquet", "not parquet at all", "cannot be read as parquet"),
    ],
)
@BOTH_CATALOGS
def test_malformed_files_are_refused_and_nothing_is_written(settings, catalog, tmp_path, name, content, message):
    good = write_csv(tmp_path, "binance,BTC-USDT,1,100,1,buy,2024-05-01T10:00:00Z\n", name="good.csv")
    bad = tmp_path / name
    bad.write_text(content)
    before = snapshot_ids(catalog)
    with pytest.raises(InputError, match=message):
        ingest_files(catalog, "market_data", [good, bad], "us", NOW)  # the good file first: still nothing lands
    assert snapshot_ids(catalog) == before


def test_missing_file_and_bad_epoch_unit(settings, catalog, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        ingest_files(catalog, "market_data", [tmp_path / "nope.csv"], "us", NOW)
    with pytest.raises(InputError, match="--epoch-unit"):
        ingest_files(catalog, "market_data", [write_csv(tmp_path, "")], "minutes", NOW)


def test_ingest_before_init_names_the_fix(tmp_path):
    catalog = open_catalog(Settings(warehouse=str(tmp_path / "empty")))
    with pytest.raises(TableNotFound, match="ohlcv init"):
        ingest_files(catalog, "market_data", [write_csv(tmp_path, "a,b,1,1,1,,2024-05-01\n")], "us", NOW)


def test_a_trade_repeated_within_a_file_lands_once_and_the_repeats_go_to_quarantine(settings, catalog, tmp_path):
    body = "binance,BTC-USDT,1,100,1,buy,2024-05-01T10:00:00Z\n" * 3
    [report] = ingest_files(catalog, "market_data", [write_csv(tmp_path, body)], "us", NOW)
    assert (report.ingested, report.duplicates, report.quarantined) == (1, 2, 2)
    assert [r["reason"] for r in quarantined(catalog)] == ["duplicate", "duplicate"]


def test_trades_land_in_time_order_in_row_groups_that_each_cover_a_short_span(settings, catalog, tmp_path):
    """A file out of time order, over two days: each data file is in time order (equal times in
    the file's order), and its row groups follow one another in time, so a read of a few
    minutes can skip all but one or two of them."""
    import random

    from ohlcv.catalog import TRADES_TABLE_PROPERTIES

    limit = int(TRADES_TABLE_PROPERTIES["write.parquet.row-group-limit"])
    generator = random.Random(7)
    start = int(utc(2024, 5, 1, 20).timestamp() * 1_000_000)
    count = 2 * limit + 123
    stamps = [start + generator.randrange(0, 8 * 3_600_000_000) for _ in range(count)]  # across midnight
    stamps[10:20] = [stamps[9]] * 10  # equal times: kept in the file's order
    ids = [f"t{i:06d}" for i in range(count)]
    order = list(range(count))
    generator.shuffle(order)
    path = tmp_path / "shuffled.parquet"
    pq.write_table(pa.table({
        "exchange": ["binance"] * count, "symbol": ["BTC-USDT"] * count, "trade_id": [ids[i] for i in order],
        "price": [100.0] * count, "quantity": [1.0] * count, "timestamp": pa.array([stamps[i] for i in order], pa.timestamp("us", tz="UTC")),
    }), path)
    [report] = ingest_files(catalog, "market_data", [path], "us", NOW)
    assert report.ingested == count

    table = load_table(catalog, "market_data", s.TRADES_TABLE)
    assert table.properties["write.parquet.row-group-limit"] == str(limit)
    files = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
    assert len(files) == 2  # one a day
    landed = 0
    for file in files:
        parquet = pq.ParquetFile(file)
        rows = parquet.read(columns=["timestamp", "trade_id"])
        times = rows.column("timestamp").cast(pa.int64()).to_pylist()
        assert times == sorted(times)
        # Equal times keep the order they had in the file.
        by_time: dict[int, list[str]] = {}
        for t, trade_id in zip(times, rows.column("trade_id").to_pylist()):
            by_time.setdefault(t, []).append(trade_id)
        shuffled_position = {ids[i]: position for position, i in enumerate(order)}
        assert all(ids_ == sorted(ids_, key=shuffled_position.get) for ids_ in by_time.values())
        groups = [parquet.metadata.row_group(i) for i in range(parquet.num_row_groups)]
        assert all(g.num_rows <= limit for g in groups)
        column = parquet.schema_arrow.get_field_index("timestamp")
        spans = [(g.column(column).statistics.min, g.column(column).statistics.max) for g in groups]
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:]))
        landed += parquet.metadata.num_rows
    assert landed == count


def test_names_are_trimmed_and_checked_whatever_the_column_type(settings, catalog, tmp_path):
    """Exchange and symbol are checked once per distinct name (in the column's dictionary): the
    rule must hold the same for padded text, dictionary columns and numbers."""
    at = datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    path = tmp_path / "names.parquet"
    pq.write_table(pa.table({
        "exchange": pa.array([" binance", "binance ", "bin ance", None, "kraken"]).dictionary_encode(),
        "symbol": pa.array([7, 7, 7, 7, 8], pa.int64()),  # a numeric code as a symbol is a valid name
        "trade_id": ["1", "2", "3", "4", "5"],
        "price": [1.0] * 5, "quantity": [1.0] * 5,
        "timestamp": pa.array([at] * 5, pa.timestamp("us", tz="UTC")),
    }), path)
    [report] = ingest_files(catalog, "market_data", [path], "us", NOW)
    assert (report.ingested, report.quarantined) == (3, 2)
    landed = {(r["exchange"], r["symbol"], r["trade_id"]) for r in stored_trades(catalog)}
    assert landed == {("binance", "7", "1"), ("binance", "7", "2"), ("kraken", "8", "5")}
    reasons = {r["trade_id"]: r["reason"] for r in quarantined(catalog)}
    assert reasons == {"3": "exchange is not a valid name (letters, digits and . _ - / : (at most 64))", "4": "missing exchange"}


# Each row is valid or broken in one way; ids come from a small pool so that keys repeat.
_ROW_KINDS = {
    "valid": {},
    "no price": {"price": None},
    "negative price": {"price": -1.0},
    "NaN quantity": {"quantity": float("nan")},
    "no exchange": {"exchange": None},
    "bad exchange": {"exchange": "bin ance"},
    "no timestamp": {"timestamp": None},
}
_EXPECTED_REASON = {
    "no price": "missing price", "negative price": "price is not positive and finite",
    "NaN quantity": "quantity is not positive and finite", "no exchange": "missing exchange",
    "bad exchange": "exchange is not a valid name (letters, digits and . _ - / : (at most 64))",
    "no timestamp": "missing timestamp",
}
_file_rows = st.lists(
    st.tuples(st.one_of(st.just("valid"), st.sampled_from(sorted(_EXPECTED_REASON))),  # half of the rows valid
              st.sampled_from(["1", "2", "3", "x"]), st.integers(0, 2),
              st.sampled_from([100.0, 101.0])),
    min_size=1, max_size=30,
)


@hypothesis_settings(max_examples=30, deadline=None)
@given(rows=_file_rows, row_group=st.integers(1, 7))
def test_each_row_of_a_file_in_many_row_groups_lands_or_is_quarantined_as_a_row_by_row_oracle_says(rows, row_group):
    """Validation and the duplicate check pick rows by masks over a file read as many chunks (one
    per row group): every row must land, or reach quarantine verbatim with its reason, exactly as
    a row-by-row oracle says. `side` tags each row with its position in the file."""
    at = datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    file_rows = []
    for position, (kind, trade_id, second, price) in enumerate(rows):
        row = {"exchange": "binance", "symbol": "BTC-USDT", "trade_id": trade_id, "price": price, "quantity": 1.0,
               "side": f"r{position}", "timestamp": at + timedelta(seconds=second)}
        file_rows.append({**row, **_ROW_KINDS[kind]})
    # The oracle: a broken row's reason; of the valid rows of a key, the first by (timestamp,
    # price, quantity, position in the file) lands and the others are duplicates.
    expected_reasons = {f"r{p}": _EXPECTED_REASON[kind] for p, (kind, *_) in enumerate(rows) if kind != "valid"}
    winners: dict[str, tuple] = {}
    for position, row in enumerate(file_rows):
        if rows[position][0] == "valid":
            rank = (row["timestamp"], row["price"], row["quantity"], position)
            winners[row["trade_id"]] = min(winners.get(row["trade_id"], rank), rank)
    landing = {f"r{rank[3]}" for rank in winners.values()}
    expected_reasons |= {f"r{p}": "duplicate" for p, (kind, *_) in enumerate(rows) if kind == "valid" and f"r{p}" not in landing}

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(warehouse=f"{folder}/warehouse")
        catalog = open_catalog(settings)
        ensure_tables(catalog, settings.namespace)
        path = f"{folder}/trades.parquet"
        pq.write_table(trades_table(file_rows), path, row_group_size=row_group)
        [report] = ingest_files(catalog, settings.namespace, [path], "us", NOW)
        stored = {r["side"]: r for r in stored_trades(catalog)}
        held = {r["side"]: r for r in quarantined(catalog)}

    assert set(stored) == landing
    for tag, row in stored.items():
        source = file_rows[int(tag[1:])]
        assert (row["trade_id"], row["price"], row["timestamp"]) == (source["trade_id"], source["price"], source["timestamp"])
    assert {tag: row["reason"] for tag, row in held.items()} == expected_reasons
    for tag, row in held.items():  # verbatim: the file's own values, as text
        source = file_rows[int(tag[1:])]
        assert row["trade_id"] == source["trade_id"] and row["exchange"] == source["exchange"]
        assert (None if row["price"] is None else float(row["price"])) == source["price"]
    assert (report.ingested, report.quarantined, report.duplicates) == (
        len(landing), len(expected_reasons), sum(reason == "duplicate" for reason in expected_reasons.values()))


@pytest.mark.parametrize(("chosen", "expected"), [(None, "jemalloc"), ("system", "system"), ("mimalloc", "mimalloc")])
def test_arrow_allocates_through_jemalloc_unless_the_operator_chose_a_pool(chosen, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    probe = "import ohlcv, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
