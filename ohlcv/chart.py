"""A candlestick chart with volume bars, written to a PNG file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

__all__ = ["plot_candles"]


def plot_candles(candles: pa.Table, path: str | Path, title: str) -> Path:
    """Draw candles (one series, in time order): bodies open->close, wicks low->high, volume below."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        from ohlcv.errors import InputError

        raise InputError(f"--plot {path}: charts are written as PNG, name the file *.png")
    frame = candles.to_pandas()
    figure, (price_ax, volume_ax) = plt.subplots(
        2, 1, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    if len(frame):
        starts = frame["window_start"].dt.tz_convert("UTC").dt.tz_localize(None)
        width_days = (frame["window_end"] - frame["window_start"]).dt.total_seconds().median() / 86_400 * 0.7
        x = mdates.date2num(starts.to_numpy())
        rising = (frame["close_price"] >= frame["open_price"]).to_numpy()
        colours = ["#26a69a" if up else "#ef5350" for up in rising]
        price_ax.vlines(x, frame["low_price"], frame["high_price"], colors=colours, linewidth=0.8)
        bottoms = frame[["open_price", "close_price"]].min(axis=1)
        heights = (frame["close_price"] - frame["open_price"]).abs()
        # A doji (open == close) still gets a visible body.
        heights = heights.where(heights > 0, (frame["high_price"].max() - frame["low_price"].min()) * 0.001)
        price_ax.bar(x, heights, width_days, bottoms, color=colours, edgecolor=colours, linewidth=0.5)
        volume_ax.bar(x, frame["volume"], width_days, color=colours, alpha=0.7)
        volume_ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d\n%H:%M"))
    else:
        price_ax.text(0.5, 0.5, "no candles", ha="center", va="center", transform=price_ax.transAxes)
    price_ax.set_title(title)
    price_ax.set_ylabel("price")
    price_ax.grid(alpha=0.3)
    volume_ax.set_ylabel("volume")
    volume_ax.set_xlabel("window start (UTC)")
    volume_ax.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
