"""The timeframe table: the single source of truth every job, workflow and schedule reads.

Each row carries the candle width, how its table is partitioned, how far back a scheduled
run recomputes, how long its partitions are kept, and when it runs. Nothing
else in the code base may branch on a timeframe's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from ohlcv.errors import InputError

__all__ = ["Timeframe", "TIMEFRAMES", "get", "resolve", "rollup_parent"]

Partition = Literal["day", "month"]


@dataclass(frozen=True)
class Timeframe:
    name: str
    width: timedelta
    partition: Partition
    lookback: timedelta
    retention: timedelta
    cron: str

    @property
    def table(self) -> str:
        return f"gold_ohlcv_{self.name}"

    @property
    def width_us(self) -> int:
        return self.width // timedelta(microseconds=1)


# Figures from the original platform (see shared/reference): staggered crons so runs do not
# contend, lookbacks that absorb late trades, retention per timeframe.
TIMEFRAMES: dict[str, Timeframe] = {
    tf.name: tf
    for tf in (
        Timeframe("1m", timedelta(minutes=1), "day", timedelta(minutes=10), timedelta(days=90),
                  "*/5 * * * *"),
        Timeframe("5m", timedelta(minutes=5), "day", timedelta(minutes=20), timedelta(days=180),
                  "5,20,35,50 * * * *"),
        Timeframe("30m", timedelta(minutes=30), "day", timedelta(hours=1), timedelta(days=365),
                  "10,40 * * * *"),
        Timeframe("1h", timedelta(hours=1), "day", timedelta(hours=2), timedelta(days=3 * 365),
                  "15 * * * *"),
        Timeframe("1d", timedelta(days=1), "month", timedelta(days=2), timedelta(days=5 * 365),
                  "5 0 * * *"),
    )
}


def get(name: str) -> Timeframe:
    """Look a timeframe up by name; an unknown name lists the valid ones."""
    try:
        return TIMEFRAMES[name]
    except KeyError:
        valid = ", ".join(TIMEFRAMES)
        raise InputError(f"unknown timeframe {name!r}: choose one of {valid}, or all") from None


def resolve(spec: str) -> list[Timeframe]:
    """Turn a CLI value (`1m`, `1m,1h` or `all`) into timeframes, finest first."""
    if spec.strip().lower() == "all":
        return list(TIMEFRAMES.values())
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise InputError("no timeframe given: choose one of " + ", ".join(TIMEFRAMES) + ", or all")
    chosen = {get(name).name for name in names}
    return [tf for tf in TIMEFRAMES.values() if tf.name in chosen]


def rollup_parent(tf: Timeframe, computed: list[Timeframe]) -> Timeframe | None:
    """The coarsest timeframe in `computed` that is finer than `tf` and divides it evenly.

    Candles of `tf` can be rolled up exactly from that parent's candles over the same trades,
    so a run that computes several timeframes reads and aggregates the trades only once.
    """
    parents = [p for p in computed if p.width < tf.width and tf.width % p.width == timedelta(0)]
    return max(parents, key=lambda p: p.width, default=None)
