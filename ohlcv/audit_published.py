"""The audit of published candles (`ohlcv validate`): the checks of every run, plus checks of
the candles against each other and against the trades the table holds now (pure pandas).

- Roll-up: each 5m/30m/1h/1d candle must equal the roll-up of the 1m candles it covers, where
  the 1m data still exists (1m has the shortest retention).
- Staleness: a window whose stored trade_count differs from the distinct trades the source now
  holds (or that has trades but no candle) missed trades that arrived after its last recompute.
  Inside the timeframe's lookback the next scheduled tick absorbs them ("pending"); beyond it
  nothing will, and only a backfill fixes them ("late beyond lookback").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from ohlcv import schema as s
from ohlcv import timeframes
from ohlcv.timeframes import Timeframe
from ohlcv.validate import EXAMPLES_PER_CHECK, CheckResult, audit_candles
from ohlcv.windows import WindowRange, floor, tick_range

__all__ = [
    "rollup_check",
    "Staleness",
    "stale_windows",
    "backfill_command",
    "TableAudit",
    "read_published",
    "audit_published",
]

_KEY = list(s.CANDLE_KEY)
_RELATIVE = 1e-9


def _rolled_up(one_minute: pd.DataFrame, tf: Timeframe) -> pd.DataFrame:
    frame = one_minute.sort_values("window_start")
    epoch = pd.Timestamp(0, tz="UTC")
    offset = (frame["window_start"] - epoch) // pd.Timedelta(microseconds=1)
    frame = frame.assign(
        coarse=epoch + pd.to_timedelta(offset - offset % tf.width_us, unit="us"),
        notional=frame["vwap"] * frame["volume"],
    )
    grouped = frame.groupby(["exchange", "symbol", "coarse"], sort=False)
    rolled = grouped.agg(
        open_price=("open_price", "first"), high_price=("high_price", "max"), low_price=("low_price", "min"),
        close_price=("close_price", "last"), volume=("volume", "sum"), trade_count=("trade_count", "sum"),
        notional=("notional", "sum"),
    ).reset_index().rename(columns={"coarse": "window_start"})
    rolled["vwap"] = rolled["notional"] / rolled["volume"]
    return rolled.drop(columns="notional")


def rollup_check(one_minute: pd.DataFrame, coarse: pd.DataFrame, tf: Timeframe) -> CheckResult:
    """Coarse candles against the roll-up of the stored 1m candles, over the span 1m covers."""
    name = f"{tf.name} candles = roll-up of the 1m candles"
    if one_minute.empty:
        return CheckResult(name + " (no 1m data to compare with)", 0)
    # 1m partitions are whole UTC days, so the 1m data covers whole coarse windows from its
    # first day to the end of its newest window.
    covered_from = one_minute["window_start"].min().floor("D")
    covered_to = one_minute["window_end"].max()
    ends = coarse["window_start"] + pd.Timedelta(microseconds=tf.width_us)
    coarse = coarse[(coarse["window_start"] >= covered_from) & (ends <= covered_to)]
    rolled = _rolled_up(one_minute, tf)
    rolled_ends = rolled["window_start"] + pd.Timedelta(microseconds=tf.width_us)
    rolled = rolled[(rolled["window_start"] >= covered_from) & (rolled_ends <= covered_to)]
    joined = coarse.merge(rolled, on=_KEY, how="outer", suffixes=("", "_1m"), indicator=True)
    bad = (joined["_merge"] != "both").to_numpy()
    both = ~bad
    for column in ("open_price", "high_price", "low_price", "close_price", "trade_count"):
        bad[both] |= (joined.loc[both, column] != joined.loc[both, f"{column}_1m"]).to_numpy()
    for column in ("volume", "vwap"):
        a, b = joined.loc[both, column].to_numpy(float), joined.loc[both, f"{column}_1m"].to_numpy(float)
        bad[both] |= ~np.isclose(a, b, rtol=_RELATIVE, atol=0.0)
    wrong = joined[bad]
    examples = []
    for row in wrong.head(EXAMPLES_PER_CHECK).to_dict("records"):
        where = {k: (row[k].isoformat() if k == "window_start" else row[k]) for k in _KEY}
        if row["_merge"] == "left_only":
            where["problem"] = "no 1m candles under it"
        elif row["_merge"] == "right_only":
            where["problem"] = f"missing {tf.name} candle"
        else:
            diffs = [c for c in ("open_price", "high_price", "low_price", "close_price", "trade_count", "volume", "vwap")
                     if not _same(row[c], row[f"{c}_1m"], c)]
            where["problem"] = "; ".join(f"{c} {row[c]!r} vs 1m roll-up {row[f'{c}_1m']!r}" for c in diffs)
        examples.append(where)
    return CheckResult(name, int(bad.sum()), examples)


def _same(a, b, column: str) -> bool:
    if column in ("volume", "vwap"):
        return math.isclose(float(a), float(b), rel_tol=_RELATIVE, abs_tol=0.0)
    return a == b


@dataclass
class Staleness:
    timeframe: Timeframe
    late: pd.DataFrame  # beyond the lookback: only a backfill fixes them
    pending: pd.DataFrame  # inside the lookback: the next tick absorbs them

    def check(self) -> CheckResult:
        examples = [
            {"exchange": r.exchange, "symbol": r.symbol, "window_start": r.window_start.isoformat(),
             "stored trade_count": int(r.stored), "distinct trades now": int(r.trades)}
            for r in self.late.head(EXAMPLES_PER_CHECK).itertuples()
        ]
        return CheckResult(f"{self.timeframe.name} windows with trades that arrived after their last recompute, beyond the lookback",
                           len(self.late), examples)


def stale_windows(stored: pd.DataFrame, source: pd.DataFrame, tf: Timeframe, now: datetime) -> Staleness:
    """Closed windows whose stored trade_count differs from the distinct trades the source holds."""
    closed_before = pd.Timestamp(floor(now, tf))
    lookback_start = pd.Timestamp(tick_range(tf, now).start)
    have = stored[_KEY + ["trade_count"]].rename(columns={"trade_count": "stored"})
    joined = source[_KEY + ["trades"]].merge(have, on=_KEY, how="outer").fillna({"stored": 0, "trades": 0})
    joined = joined[joined["window_start"] < closed_before]
    differing = joined[joined["stored"] != joined["trades"]].sort_values(_KEY)
    return Staleness(tf, differing[differing["window_start"] < lookback_start], differing[differing["window_start"] >= lookback_start])


def backfill_command(staleness: Staleness) -> str | None:
    """The `ohlcv backfill` that recomputes every late window of a timeframe."""
    if staleness.late.empty:
        return None
    start = staleness.late["window_start"].min()
    end = staleness.late["window_start"].max() + timedelta(microseconds=staleness.timeframe.width_us)
    return (f"ohlcv backfill --timeframe {staleness.timeframe.name} "
            f"--start {start:%Y-%m-%dT%H:%M}Z --end {end:%Y-%m-%dT%H:%M}Z")


@dataclass
class TableAudit:
    """The audit of one timeframe's published candles."""

    timeframe: Timeframe
    candles: int
    checks: list[CheckResult]
    pending: int  # windows inside the lookback that missed trades: the next tick absorbs them
    backfill_hint: str | None  # the `ohlcv backfill` that fixes the late windows, if any

    @property
    def failed(self) -> int:
        return sum(1 for check in self.checks if check.failed)


def read_published(catalog, namespace: str, tfs: list[Timeframe], rng: WindowRange) -> dict[str, pa.Table]:
    """The stored candles of `tfs` whose window starts in `rng`, with 1m's too (for roll-ups)."""
    from ohlcv.catalog import load_candles
    from ohlcv.store import read_candles

    wanted = list(tfs)
    if any(tf.name != "1m" for tf in tfs) and all(tf.name != "1m" for tf in tfs):
        wanted.append(timeframes.get("1m"))
    return {tf.name: read_candles(load_candles(catalog, namespace, tf), rng) for tf in wanted}


def audit_published(
    stored: dict[str, pa.Table],
    trade_counts: dict[str, pa.Table],
    tfs: list[Timeframe],
    range_label: str,
    now: datetime,
    sample_spec: str = "5000",
) -> list[TableAudit]:
    """Every check of `tfs`'s published candles: the run's audit (invariants and Pandera), the
    late windows against `trade_counts` (distinct trades per window, from `read_published`'s
    range), and for coarse timeframes the roll-up of the 1m candles."""
    one_minute = stored["1m"].to_pandas()
    audits = []
    for tf in tfs:
        candles = stored[tf.name]
        frame = candles.to_pandas()
        report = audit_candles(candles, tf, range_label, sample_spec=sample_spec)
        staleness = stale_windows(frame, trade_counts[tf.name].to_pandas(), tf, now)
        checks = report.checks + [staleness.check()]
        if tf.name != "1m":
            checks.append(rollup_check(one_minute, frame, tf))
        audits.append(TableAudit(tf, candles.num_rows, checks, len(staleness.pending), backfill_command(staleness)))
    return audits
