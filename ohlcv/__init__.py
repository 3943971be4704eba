"""The OHLCV domain: timeframes, tables, trades in, candles out. Never imports Ray."""

__version__ = "0.1.0"
