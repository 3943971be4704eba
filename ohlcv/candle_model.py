"""The Pandera model of a candle, checked on a seeded sample of a run's candles.

The exact invariant counts (ohlcv/validate.py) already cover every candle; Pandera adds the
type, nullability and range checks of every column. A sample keeps that affordable on large
batches: its size is a setting, it is seeded by the run's range (the same run samples the same
rows), and it always contains the newest window of every series: the candles a reader will
look at first.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


__all__ = ["CandleModel", "model_failures"]

# vwap is a ratio of sums: it may sit a rounding error outside [low, high].
_SLACK = 1e-12
UtcMicros = Annotated[pd.DatetimeTZDtype, "us", "UTC"]


class CandleModel(pa.DataFrameModel):
    symbol: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    exchange: Series[str] = pa.Field(nullable=False, str_length={"min_value": 1})
    window_start: Series[UtcMicros] = pa.Field(nullable=False)
    window_end: Series[UtcMicros] = pa.Field(nullable=False)
    window_date: Series[pa.Date] = pa.Field(nullable=False)
    open_price: Series[float] = pa.Field(gt=0, nullable=False)
    high_price: Series[float] = pa.Field(gt=0, nullable=False)
    low_price: Series[float] = pa.Field(gt=0, nullable=False)
    close_price: Series[float] = pa.Field(gt=0, nullable=False)
    volume: Series[float] = pa.Field(gt=0, nullable=False)
    trade_count: Series["int64"] = pa.Field(ge=1, nullable=False)
    vwap: Series[float] = pa.Field(gt=0, nullable=False)

    @pa.dataframe_check(name="high_price >= max(open_price, close_price)")
    def high_is_highest(cls, df: pd.DataFrame) -> Series[bool]:
        return df["high_price"] >= df[["open_price", "close_price"]].max(axis=1)

    @pa.dataframe_check(name="low_price <= min(open_price, close_price)")
    def low_is_lowest(cls, df: pd.DataFrame) -> Series[bool]:
        return df["low_price"] <= df[["open_price", "close_price"]].min(axis=1)

    @pa.dataframe_check(name="low_price <= vwap <= high_price")
    def vwap_in_range(cls, df: pd.DataFrame) -> Series[bool]:
        slack = df["vwap"].abs() * _SLACK
        return (df["low_price"] - slack <= df["vwap"]) & (df["vwap"] <= df["high_price"] + slack)

    @pa.dataframe_check(name="window_end > window_start")
    def window_is_forward(cls, df: pd.DataFrame) -> Series[bool]:
        return df["window_end"] > df["window_start"]

    class Config:
        strict = "filter"  # created_at/updated_at of stored candles are not the model's business
        ordered = False


def model_failures(sample: pd.DataFrame) -> dict[str, list[int]]:
    """{check name: sample row indexes that fail it}; empty when the sample passes."""
    try:
        CandleModel.validate(sample, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        failures: dict[str, list[int]] = {}
        for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
            name = str(check) if str(check).startswith(("high", "low", "window")) else f"{column}: {check}"
            indexes = sorted({int(i) for i in group["index"].dropna()})
            failures.setdefault(f"pandera {name}", [])
            failures[f"pandera {name}"] = sorted(set(failures[f"pandera {name}"]) | set(indexes))
        return failures
    return {}
