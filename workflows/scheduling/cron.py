"""Cron decisions, pure functions of times: the next tick, the ticks due, what to catch up.

The scheduler fires jobs: anything with a `name` and a `cron`, that is every Timeframe of the
timeframe table, plus the daily upkeep (`Job("upkeep", settings.upkeep_cron)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from croniter import croniter

from ohlcv.windows import as_utc

__all__ = ["Scheduled", "Job", "CATCH_UP_LIMIT", "next_tick", "latest_tick", "due_ticks", "catch_up"]


class Scheduled(Protocol):
    """What the scheduler fires: a Timeframe, or a Job such as the daily upkeep."""

    name: str
    cron: str


@dataclass(frozen=True)
class Job:
    name: str
    cron: str


def next_tick(tf: Scheduled, after: datetime) -> datetime:
    """The first cron tick strictly after `after`."""
    return as_utc(croniter(tf.cron, as_utc(after)).get_next(datetime))


def latest_tick(tf: Scheduled, at_or_before: datetime) -> datetime:
    """The newest cron tick at or before the given time."""
    moment = as_utc(at_or_before)
    candidate = as_utc(croniter(tf.cron, moment).get_prev(datetime))
    following = next_tick(tf, candidate)
    return following if following <= moment else candidate


# Catching up never looks further back than this many ticks of a timeframe: after a long gap
# (months of 1m ticks) counting them one by one would stall the start-up.
CATCH_UP_LIMIT = 10_000


def due_ticks(tf: Scheduled, after: datetime, until: datetime, limit: int = CATCH_UP_LIMIT) -> list[datetime]:
    """Cron ticks in `(after, until]`, oldest first; only the newest `limit` of them."""
    after, until = as_utc(after), as_utc(until)
    # croniter has whole-second precision: start one second past `until` so a tick at
    # `until` itself is found, walk back, and stop at `after` or at the limit.
    walker = croniter(tf.cron, until + timedelta(seconds=1))
    newest_first: list[datetime] = []
    while len(newest_first) < limit:
        tick = as_utc(walker.get_prev(datetime))
        if tick <= after:
            break
        if tick <= until:
            newest_first.append(tick)
    return newest_first[::-1]


def catch_up(tf: Scheduled, last_fired: datetime | None, now: datetime, policy: str) -> tuple[list[datetime], int]:
    """(ticks to fire now, missed ticks not fired) for a scheduler (re)starting at `now`.

    Without history the newest due tick is fired, so a new deployment produces candles at once.
    """
    missed = due_ticks(tf, last_fired, now) if last_fired is not None else [latest_tick(tf, now)]
    # Past CATCH_UP_LIMIT the count is a lower bound; the newest tick is always right.
    if policy == "all":
        return missed, 0
    if policy == "skip":
        return [], len(missed)
    return missed[-1:], max(0, len(missed) - 1)
