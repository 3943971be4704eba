"""Audit candles before they are published, and audit what is already published.

Three kinds of checks, all in one report:
- exact invariant counts over ALL candles of the run (no sampling);
- the Pandera model (ohlcv/candle_model.py) on a seeded sample;
- reconciliation with the source: per (exchange, symbol), the candles' sum(trade_count) equals
  the number of distinct trades in the range, counted from the trades apart from the windowing.
Each check keeps its failing count and a few example rows, so a report says what failed, how
often, and where to look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from ohlcv import schema as s
from ohlcv.errors import TerminalError
from ohlcv.timeframes import Timeframe

__all__ = ["EXAMPLES_PER_CHECK", "CheckResult", "AuditReport", "AuditFailed", "invariant_checks", "reconcile", "sample_checks", "audit_candles"]

EXAMPLES_PER_CHECK = 5
# vwap = sum(p*q)/sum(q) can land a rounding error outside [low, high] when every price is equal.
VWAP_RELATIVE_SLACK = 1e-12
_KEY_COLUMNS = list(s.CANDLE_KEY)


@dataclass
class CheckResult:
    name: str
    failed: int
    examples: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failed == 0


@dataclass
class AuditReport:
    timeframe: str
    range: str
    candles: int
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.passed:
            return f"{self.timeframe} {self.range}: {self.candles} candles, all {len(self.checks)} checks passed"
        parts = []
        for check in self.failures:
            example = check.examples[0] if check.examples else {}
            where = ", ".join(f"{k}={v}" for k, v in example.items())
            parts.append(f"{check.name}: {check.failed}" + (f" (e.g. {where})" if where else ""))
        return f"{self.timeframe} {self.range}: {len(self.failures)} check(s) failed of {self.candles} candles: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "timeframe": self.timeframe,
            "range": self.range,
            "candles": self.candles,
            "passed": self.passed,
            "checks": [{"name": c.name, "failed": c.failed, "examples": c.examples} for c in self.checks],
        }


class AuditFailed(TerminalError):
    """Candles broke an invariant: they were not published. Carries the whole report."""

    def __init__(self, report: AuditReport) -> None:
        super().__init__(f"audit failed, nothing published: {report.summary()}")
        self.report = report

    def __reduce__(self):  # errors cross process boundaries in Ray: rebuild from the report
        return (AuditFailed, (self.report,))


def _examples(frame: pd.DataFrame, mask: np.ndarray, columns: list[str]) -> list[dict]:
    rows = frame.loc[mask, _KEY_COLUMNS + columns].head(EXAMPLES_PER_CHECK)
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()} for row in rows.to_dict("records")]


def invariant_checks(candles: pa.Table, tf: Timeframe) -> list[CheckResult]:
    frame = candles.to_pandas(date_as_object=True)
    o, h, l, c = (frame[f"{n}_price"].to_numpy() for n in ("open", "high", "low", "close"))
    vwap, volume = frame["vwap"].to_numpy(), frame["volume"].to_numpy()
    slack = np.abs(vwap) * VWAP_RELATIVE_SLACK
    starts = frame["window_start"]
    expected_end = starts + timedelta(microseconds=tf.width_us)
    epoch = pd.Timestamp(0, tz="UTC")
    offset_us = ((starts - epoch) // pd.Timedelta(microseconds=1)).to_numpy()
    with np.errstate(invalid="ignore"):
        rules = [
            ("high_price >= max(open_price, close_price)", ~(h >= np.maximum(o, c)), ["open_price", "high_price", "close_price"]),
            ("low_price <= min(open_price, close_price)", ~(l <= np.minimum(o, c)), ["open_price", "low_price", "close_price"]),
            ("low_price <= vwap <= high_price", ~((l - slack <= vwap) & (vwap <= h + slack)), ["low_price", "vwap", "high_price"]),
            ("volume > 0", ~(volume > 0), ["volume"]),
            ("trade_count > 0", ~(frame["trade_count"].to_numpy() > 0), ["trade_count"]),
            ("window_end = window_start + width", (frame["window_end"] != expected_end).to_numpy(), ["window_end"]),
            ("window_date = UTC date of window_start", (frame["window_date"] != starts.dt.date).to_numpy(), ["window_date"]),
            ("window_start aligned to the width", offset_us % tf.width_us != 0, []),
            ("no duplicate (exchange, symbol, window_start)", frame.duplicated(_KEY_COLUMNS, keep=False).to_numpy(), []),
        ]
    return [CheckResult(name, int(mask.sum()), _examples(frame, mask, cols) if mask.any() else []) for name, mask, cols in rules]


def reconcile(candles: pa.Table, source: pa.Table) -> CheckResult:
    """sum(trade_count) per (exchange, symbol) against the distinct trades the source holds."""
    have = candles.to_pandas()[["exchange", "symbol", "trade_count"]].groupby(["exchange", "symbol"])["trade_count"].sum()
    want = source.to_pandas().set_index(["exchange", "symbol"])["trades"] if source.num_rows else pd.Series(dtype="int64")
    both = pd.concat([have.rename("candles"), want.rename("trades")], axis=1).fillna(0).astype("int64")
    wrong = both[both["candles"] != both["trades"]].reset_index()
    examples = [
        {"exchange": r.exchange, "symbol": r.symbol, "sum(trade_count)": int(r.candles), "distinct trades": int(r.trades)}
        for r in wrong.head(EXAMPLES_PER_CHECK).itertuples()
    ]
    return CheckResult("reconciliation: sum(trade_count) = distinct trades, per exchange and symbol", len(wrong), examples)


def sample_checks(candles: pa.Table, sample_spec: str, seed_text: str) -> list[CheckResult]:
    """The Pandera model on a seeded sample that always holds each series' newest window."""
    from ohlcv.candle_model import model_failures, sample_candles

    frame = candles.to_pandas(date_as_object=True)
    sample = sample_candles(frame, sample_spec, seed_text)
    failures = model_failures(sample)
    results = [CheckResult(f"pandera model on a sample of {len(sample)}", 0)] if not failures else []
    for name, indexes in failures.items():
        mask = frame.index.isin(indexes)
        results.append(CheckResult(f"{name} (in a sample of {len(sample)})", len(indexes), _examples(frame, mask, [])))
    return results


def audit_candles(
    candles: pa.Table,
    tf: Timeframe,
    range_label: str,
    source_counts: pa.Table | None = None,
    sample_spec: str = "5000",
) -> AuditReport:
    """Every check on a batch of candles; `source_counts` (exchange, symbol, trades) enables reconciliation."""
    checks = invariant_checks(candles, tf)
    if candles.num_rows:
        checks += sample_checks(candles, sample_spec, f"{tf.name} {range_label}")
    if source_counts is not None:
        checks.append(reconcile(candles, source_counts))
    return AuditReport(tf.name, range_label, candles.num_rows, checks)
