"""Synthetic but realistic crypto trades, for demos, tests and benchmarks.

What makes them realistic enough to exercise the pipeline:
- one random-walk mid price per symbol, shared by its exchanges, each exchange adding a
  small basis and rounding to its tick;
- a daily activity cycle plus market-wide bursts (more trades and more volatility at once);
- aggressive orders that sweep the book: several fills with the SAME millisecond timestamp
  and consecutive trade ids, so the trade_id tie-break matters;
- lognormal order sizes and sequential numeric trade ids per exchange and symbol.
Everything derives from the seed: the same arguments give the same trades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ohlcv.errors import InputError
from ohlcv.windows import EPOCH, as_utc

__all__ = ["GenerateSpec", "generate", "write_trades", "SYMBOLS", "EXCHANGES"]

# (symbol, starting price, tick size)
SYMBOLS = [
    ("BTC-USDT", 64_000.0, 0.01),
    ("ETH-USDT", 3_400.0, 0.01),
    ("SOL-USDT", 150.0, 0.001),
    ("XRP-USDT", 0.62, 0.0001),
    ("DOGE-USDT", 0.15, 0.00001),
    ("ADA-USDT", 0.45, 0.0001),
    ("AVAX-USDT", 35.0, 0.001),
    ("LINK-USDT", 15.0, 0.001),
    ("DOT-USDT", 7.0, 0.001),
    ("LTC-USDT", 80.0, 0.01),
]
EXCHANGES = ["binance", "coinbase", "kraken", "okx", "bybit", "bitstamp"]
_ANNUAL_VOLATILITY = 0.6
_SECONDS_PER_YEAR = 365 * 86_400


@dataclass(frozen=True)
class GenerateSpec:
    start: datetime
    end: datetime
    symbols: int = 3
    exchanges: int = 2
    trades_per_day: int = 100_000
    seed: int = 7
    # The share of all trades in the busiest series (the first symbol on the first exchange);
    # None: about 15% with the default popularity curve. Real markets often reach 30 to 40%.
    largest_share: float | None = None

    def validate(self) -> None:
        if as_utc(self.end) <= as_utc(self.start):
            raise InputError("--end must be after --start")
        if not 1 <= self.exchanges <= len(EXCHANGES):
            raise InputError(f"--exchanges must be between 1 and {len(EXCHANGES)}")
        if self.symbols < 1:
            raise InputError("--symbols must be at least 1")
        if self.trades_per_day < 1:
            raise InputError("--trades-per-day must be at least 1")
        if self.largest_share is not None and not 0 < self.largest_share < 1:
            raise InputError("--largest-share must be between 0 and 1 (exclusive)")


def _symbols(count: int) -> list[tuple[str, float, float]]:
    extra = [(f"ALT{i}-USDT", 1.0 + i, 0.0001) for i in range(count - len(SYMBOLS))]
    return (SYMBOLS + extra)[:count]


def _activity(minutes: int, first_minute: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute trade intensity and volatility multiplier: a daily cycle and random bursts."""
    minute_of_day = (first_minute + np.arange(minutes)) % 1440
    intensity = 1.0 + 0.6 * np.sin(2 * math.pi * (minute_of_day / 1440.0 - 0.35))
    volatility = np.ones(minutes)
    for _ in range(max(1, int(minutes / 1440 * 24))):
        at = rng.integers(0, minutes)
        length = int(rng.integers(1, 15))
        strength = float(rng.uniform(3, 12))
        intensity[at : at + length] *= strength
        volatility[at : at + length] *= math.sqrt(strength)
    return intensity, volatility


def _mid_prices(seconds: int, p0: float, volatility_per_minute: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A log-normal random walk sampled every second."""
    sigma = _ANNUAL_VOLATILITY / math.sqrt(_SECONDS_PER_YEAR)
    scale = np.repeat(volatility_per_minute, 60)[:seconds]
    steps = rng.normal(0.0, sigma, seconds) * scale
    return p0 * np.exp(np.cumsum(steps))


def _series(
    count: int,
    start_us: int,
    seconds: int,
    intensity: np.ndarray,
    mid: np.ndarray,
    tick: float,
    basis: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Trades of one (exchange, symbol): orders placed by intensity, each filled one or more times."""
    fills_per_order = rng.geometric(0.65, size=max(1, int(count / 1.5) + 8))
    fills_per_order = fills_per_order[np.cumsum(fills_per_order) <= count]
    shortfall = count - int(fills_per_order.sum())
    fills_per_order = np.concatenate([fills_per_order, np.ones(shortfall, dtype=fills_per_order.dtype)])
    orders = len(fills_per_order)

    minute = rng.choice(len(intensity), size=orders, p=intensity / intensity.sum())
    order_us = minute.astype("int64") * 60_000_000 + rng.integers(0, 60_000_000, size=orders)
    order_us = np.minimum(order_us, seconds * 1_000_000 - 1)
    order_us -= order_us % 1_000  # exchanges stamp trades in milliseconds
    order_us.sort()

    order_of_fill = np.repeat(np.arange(orders), fills_per_order)
    fill_index = np.arange(count) - np.repeat(np.cumsum(fills_per_order) - fills_per_order, fills_per_order)
    direction = np.where(rng.random(orders) < 0.5, 1.0, -1.0)[order_of_fill]
    second = np.minimum(order_us[order_of_fill] // 1_000_000, seconds - 1)
    # Each further fill of a sweep trades one or two ticks worse than the one before.
    walk = mid[second] * (1.0 + basis) + direction * fill_index * tick * rng.integers(1, 3, size=count)
    price = np.maximum(np.round(walk / tick) * tick, tick)
    notional = np.exp(rng.normal(math.log(400.0), 1.3, size=count))
    quantity = np.maximum(np.round(notional / price, 6), 1e-6)
    return {
        "timestamp": start_us + order_us[order_of_fill],
        "price": np.round(price, 10),
        "quantity": quantity,
        "side": np.where(direction > 0, "buy", "sell"),
    }


def generate(spec: GenerateSpec) -> pa.Table:
    """Trades in `[start, end)` in time order, with the columns `ohlcv ingest` reads."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    start, end = as_utc(spec.start), as_utc(spec.end)
    seconds = max(1, int((end - start) / timedelta(seconds=1)))
    minutes = math.ceil(seconds / 60)
    start_us = (start - EPOCH) // timedelta(microseconds=1)
    total = max(1, round(spec.trades_per_day * seconds / 86_400))
    intensity, volatility = _activity(minutes, (start_us // 60_000_000) % 1440, rng)

    symbols = _symbols(spec.symbols)
    exchanges = EXCHANGES[: spec.exchanges]
    popularity = np.array([1.0 / (rank + 1) for rank in range(len(symbols))])
    venue_share = np.array([1.0 / (rank + 1) ** 0.5 for rank in range(len(exchanges))])
    weights = np.outer(popularity, venue_share).ravel()
    weights = weights / weights.sum()
    if spec.largest_share is not None and len(weights) > 1:
        weights = np.concatenate([[spec.largest_share], weights[1:] / weights[1:].sum() * (1 - spec.largest_share)])
    counts = rng.multinomial(total, weights)

    parts = []
    for s_index, (symbol, p0, tick) in enumerate(symbols):
        mid = _mid_prices(seconds, p0, volatility, rng)
        for e_index, exchange in enumerate(exchanges):
            count = int(counts[s_index * len(exchanges) + e_index])
            if count == 0:
                continue
            trades = _series(count, start_us, seconds, intensity, mid, tick, rng.normal(0, 2e-4), rng)
            first_id = int(rng.integers(10**8, 10**10))
            parts.append(
                pa.table(
                    {
                        "exchange": pa.array(np.full(count, exchange)),
                        "symbol": pa.array(np.full(count, symbol)),
                        "trade_id": pc.cast(pa.array(np.arange(first_id, first_id + count)), pa.string()),
                        "price": pa.array(trades["price"]),
                        "quantity": pa.array(trades["quantity"]),
                        "side": pa.array(trades["side"]),
                        "timestamp": pa.array(trades["timestamp"]).cast(pa.timestamp("us", tz="UTC")),
                    }
                )
            )
    table = pa.concat_tables(parts)
    return table.sort_by([("timestamp", "ascending"), ("exchange", "ascending"), ("symbol", "ascending")])


def write_trades(table: pa.Table, path: str | Path) -> Path:
    """Write trades as Parquet or CSV (ISO-8601 timestamps), by the file's extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".parquet", ".pq"):
        pq.write_table(table, path, compression="zstd")
    elif suffix == ".csv":
        iso = pc.strftime(table.column("timestamp"), format="%Y-%m-%dT%H:%M:%S", locale="C")
        text = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pc.binary_join_element_wise(iso, "Z", ""))
        pacsv.write_csv(text, path)
    else:
        raise InputError(f"--out {path}: unknown format {suffix or '(none)'}: use .parquet or .csv")
    return path
