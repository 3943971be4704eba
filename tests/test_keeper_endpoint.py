"""The keeper's endpoint (workflows/cli/keeper_client.py, keeper_server.py): what a command gets
through it equals what the command computes itself, errors keep their type, and the keeper
acts only for callers with its own settings, credentials and token.

The endpoint runs in a thread of the test process here; `ohlcv up`'s own keeper, with real
ticks through it, is tested in test_local_mode.py.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
from datetime import timedelta

import pyarrow as pa
import pytest

from ohlcv import timeframes
from ohlcv.catalog import load_candles, open_catalog
from ohlcv.errors import InputError, OhlcvError, RunFailed, TableNotFound
from ohlcv.aggregate import candle_arrow_schema
from ohlcv.store import commit_candles
from ohlcv.windows import WindowRange
from support import utc
from workflows.cli import keeper_client, keeper_server
from workflows.cli.data import query_candles
from workflows.cli.runs import TickReport
from workflows.local_ray import KEEPER_FILE

ONE_MINUTE = timeframes.get("1m")
START = utc(2024, 6, 3)


@pytest.fixture
def endpoint(settings, tmp_path):
    """The keeper's endpoint for `settings`, serving in a thread; the client's view of it."""
    temp_dir = tmp_path / "head"
    temp_dir.mkdir()
    server = keeper_server.open_endpoint(settings, str(temp_dir))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    record = json.loads((temp_dir / KEEPER_FILE).read_text())
    assert (temp_dir / KEEPER_FILE).stat().st_mode & 0o077 == 0  # the token is its owner's only
    yield keeper_client.Keeper(record["port"], record["token"], record["pid"], record["fingerprint"],
                               "127.0.0.1:6379", "http://127.0.0.1:8265")
    server.shutdown()
    server.server_close()


def stored_minutes(settings, seed: int) -> list[dict]:
    """Random 1m candles of two symbols on two exchanges over two days, committed; the rows."""
    rng = random.Random(seed)
    rows = []
    for minute in sorted(rng.sample(range(2 * 1440), 300)):
        for exchange, symbol in (("okx", "BTC-USDT"), ("binance", "BTC-USDT"), ("okx", "ETH-USDT")):
            start = START + timedelta(minutes=minute)
            low = rng.uniform(10, 100)
            rows.append(dict(symbol=symbol, exchange=exchange, window_start=start, window_end=start + ONE_MINUTE.width,
                             window_date=start.date(), open_price=low + 1, high_price=low + 2, low_price=low,
                             close_price=low + 0.5, volume=rng.uniform(0.1, 5), trade_count=rng.randint(1, 50),
                             vwap=low + 1.2))
    table = load_candles(open_catalog(settings), settings.namespace, ONE_MINUTE)
    commit_candles(table, pa.Table.from_pylist(rows, schema=candle_arrow_schema()),
                   WindowRange(START, START + timedelta(days=2)), utc(2030, 1, 1))
    return rows


def through(endpoint, query: dict) -> pa.Table:
    kind, payload = endpoint.request("/candles", query)
    assert kind == "application/vnd.apache.arrow.stream"
    return pa.ipc.open_stream(payload).read_all()


QUERIES = [
    dict(timeframe="1m", symbol="BTC-USDT", exchange=None, start=None, end=None, limit=None),
    dict(timeframe="1m", symbol="BTC-USDT", exchange="okx", start="2024-06-03T12:00Z", end="2024-06-04T06:00", limit=None),
    dict(timeframe="1m", symbol="ETH-USDT", exchange=None, start=None, end=None, limit=25),
    dict(timeframe="1m", symbol="SOL-USDT", exchange=None, start=None, end=None, limit=None),  # none stored
]


@pytest.mark.parametrize("query", QUERIES)
def test_candles_through_the_keeper_are_the_commands_own_query_and_the_rows_stored(settings, endpoint, query):
    rows = stored_minutes(settings, seed=5)
    answer = through(endpoint, query)
    assert answer.equals(query_candles(settings, **query))

    first = START if query["start"] is None else utc(2024, 6, 3, 12)
    last = utc(9999, 1, 1) if query["end"] is None else utc(2024, 6, 4, 6)
    expected = sorted(
        (r for r in rows if r["symbol"] == query["symbol"] and query["exchange"] in (None, r["exchange"])
         and first <= r["window_start"] < last),
        key=lambda r: (r["window_start"], r["exchange"]),
    )
    if query["limit"] is not None:
        expected = expected[-query["limit"]:]
    got = sorted(answer.to_pylist(), key=lambda r: (r["window_start"], r["exchange"]))
    assert len(got) == len(expected)
    for actual, wanted in zip(got, expected):
        for name, value in wanted.items():
            assert actual[name] == value, (name, actual, wanted)


def test_an_error_in_the_keeper_reaches_the_command_with_its_own_type_and_words(settings, endpoint):
    bad = dict(QUERIES[0], symbol="BTC USDT;")
    with pytest.raises(InputError) as direct:
        query_candles(settings, **bad)
    with pytest.raises(InputError) as relayed:
        through(endpoint, bad)
    assert str(relayed.value) == str(direct.value)

    with pytest.raises(InputError, match="--start 'noon'"):
        through(endpoint, dict(QUERIES[0], start="noon"))


def test_a_missing_table_is_said_as_the_command_says_it(settings, endpoint):
    open_catalog(settings).drop_table(f"{settings.namespace}.{ONE_MINUTE.table}")
    with pytest.raises(TableNotFound, match="run `ohlcv init` first"):
        through(endpoint, QUERIES[0])


def test_the_keeper_acts_only_for_its_own_settings_and_token(settings, endpoint, tmp_path, monkeypatch):
    other_warehouse = dataclasses.replace(settings, warehouse=str(tmp_path / "elsewhere"))
    assert keeper_client.fingerprint(other_warehouse) != endpoint.fingerprint
    with pytest.raises(keeper_client.NotServed):
        dataclasses.replace(endpoint, fingerprint=keeper_client.fingerprint(other_warehouse)).request("/candles", QUERIES[0])

    with pytest.raises(OhlcvError, match="wrong token"):
        dataclasses.replace(endpoint, token="guessed").request("/candles", QUERIES[0])

    # Other storage keys in the caller's environment: another fingerprint too; the Ray address is not part of it.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "someone-else")
    assert keeper_client.fingerprint(settings) != endpoint.fingerprint
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert keeper_client.fingerprint(dataclasses.replace(settings, ray_address="10.0.0.1:6379")) == endpoint.fingerprint

    # A keeper that went away: the command is told to go its own way, not failed.
    gone = dataclasses.replace(endpoint, port=_closed_port())
    with pytest.raises(keeper_client.NotServed):
        gone.request("/candles", QUERIES[0])


def test_without_a_head_or_with_ray_address_set_no_keeper_is_found(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert keeper_client.find(settings) is None
    assert keeper_client.find(dataclasses.replace(settings, ray_address="127.0.0.1:6379")) is None


def test_a_tick_report_travels_as_json_with_its_failures_typed():
    report = TickReport(rows=[["ohlcv-1m-20240603T1200Z", "gold_ohlcv_1m", "[a, b)", "60", "12", "0", "48", "42"]],
                        lines=["ohlcv-1m-20240603T1200Z: 3 late window(s) recomputed, in 1 range(s)"],
                        notes=["read through Arrow"], failures=[RunFailed("step aggregate failed: boom")])
    back = TickReport.from_json(json.loads(json.dumps(report.to_json())))
    assert (back.rows, back.lines, back.notes) == (report.rows, report.lines, report.notes)
    assert [type(f) for f in back.failures] == [RunFailed] and str(back.failures[0]) == "step aggregate failed: boom"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
