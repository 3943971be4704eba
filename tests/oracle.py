"""An independent oracle: candles computed in plain Python from the same trades.

It shares nothing with the Spark code but the written rules of DESIGN section 3, so a bug in
one is not repeated in the other.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(ts: datetime) -> int:
    since = ts - EPOCH  # whole fields, not timedelta division: this runs once per trade
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def _id_order(trade_id: str) -> tuple:
    # All-digit ids compare as integers and come before any other id; others compare as text.
    if trade_id.isdigit() and trade_id.isascii():
        return (0, int(trade_id), trade_id)
    return (1, 0, trade_id)


def unique_trades(trades: list[dict]) -> list[dict]:
    """One trade per (exchange, symbol, trade_id): the first ingested version."""
    best: dict[tuple, dict] = {}
    for t in trades:
        key = (t["exchange"], t["symbol"], t["trade_id"])
        rank = (t["ingested_at"], t["timestamp"], t["price"], t["quantity"])
        if key not in best or rank < (best[key]["ingested_at"], best[key]["timestamp"], best[key]["price"], best[key]["quantity"]):
            best[key] = t
    return list(best.values())


def expected_candles(trades: list[dict], width: timedelta, start: datetime | None = None, end: datetime | None = None) -> dict[tuple, dict]:
    """{(exchange, symbol, window_start): candle fields} for trades in [start, end)."""
    width_us = width // timedelta(microseconds=1)
    lowest = -math.inf if start is None else _us(start)
    highest = math.inf if end is None else _us(end)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for t in unique_trades(trades):
        ts = _us(t["timestamp"])
        if lowest <= ts < highest:
            groups[(t["exchange"], t["symbol"], ts - ts % width_us)].append(t)
    result = {}
    for (exchange, symbol, window_us), members in groups.items():
        window = EPOCH + timedelta(microseconds=window_us)
        ordered = sorted(members, key=lambda t: (t["timestamp"], _id_order(t["trade_id"])))
        volume = math.fsum(t["quantity"] for t in members)
        notional = math.fsum(t["price"] * t["quantity"] for t in members)
        result[(exchange, symbol, window)] = {
            "window_end": window + width,
            "window_date": date(window.year, window.month, window.day),
            "open_price": ordered[0]["price"],
            "high_price": max(t["price"] for t in members),
            "low_price": min(t["price"] for t in members),
            "close_price": ordered[-1]["price"],
            "volume": volume,
            "trade_count": len(members),
            "vwap": notional / volume,
        }
    return result


def compare(actual_rows: list[dict], expected: dict[tuple, dict], rel: float = 1e-9) -> list[str]:
    """Every difference between stored candles and the oracle, as readable lines (empty: equal)."""
    problems = []
    actual = {(r["exchange"], r["symbol"], r["window_start"]): r for r in actual_rows}
    for key in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing candle {key}")
    for key in sorted(actual.keys() - expected.keys()):
        problems.append(f"unexpected candle {key}")
    for key in sorted(expected.keys() & actual.keys()):
        want, got = expected[key], actual[key]
        for name, value in want.items():
            if name in ("volume", "vwap"):
                if not math.isclose(got[name], value, rel_tol=rel, abs_tol=0.0):
                    problems.append(f"{key} {name}: got {got[name]!r}, expected {value!r}")
            elif got[name] != value:
                problems.append(f"{key} {name}: got {got[name]!r}, expected {value!r}")
    if len(actual_rows) != len(actual):
        problems.append(f"{len(actual_rows) - len(actual)} duplicate candle keys")
    return problems
