"""The OHLCV domain: timeframes, tables, trades in, candles out. Never imports Ray."""

from ohlcv.arrow_memory import choose_pool

__version__ = "0.1.0"

# Every process that handles trades imports this package first: ingest, the steps' workers, the
# Spark service's driver. Their Arrow buffers come from one allocator, chosen in arrow_memory.
choose_pool()
