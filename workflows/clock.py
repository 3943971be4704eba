"""The one place that reads the wall clock; everything below the edge takes times as arguments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from ohlcv.errors import InputError
from ohlcv.windows import as_utc

__all__ = ["Clock", "utc_now", "parse_time"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(text: str, option: str) -> datetime:
    """An ISO-8601 time from the command line; without an offset it means UTC."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(raw))
    except ValueError:
        raise InputError(f"{option} {text!r} is not an ISO-8601 time (for example 2024-05-01 or 2024-05-01T12:00Z)") from None
