"""Workflow ids: which run a workflow is, readable from its id alone.

- a tick of timeframe TF at as-of T: `ohlcv-<tf>-<T:%Y%m%dT%H%MZ>`, stable, so running the same
  tick again returns its stored result and a half-finished tick is resumed, not redone;
- the daily upkeep: `ohlcv-upkeep-<T>`;
- a backfill: `ohlcv-backfill-<tfs>-<start>-<end>-at-<invoked>`, one per invocation, because
  running a backfill again (after late trades) must recompute, not return the stored result.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ohlcv.timeframes import TIMEFRAMES, Timeframe
from ohlcv.windows import as_utc

__all__ = ["UPKEEP", "tick_workflow_id", "upkeep_workflow_id", "backfill_workflow_id", "parse_scheduled_id", "run_time"]

_TICK_ID = re.compile(r"^ohlcv-(?P<tf>[0-9a-z]+)-(?P<at>\d{8}T\d{4}Z)$")
_BACKFILL_ID = re.compile(r"^ohlcv-backfill-.+-at-(?P<at>\d{8}T\d{6}Z)$")
UPKEEP = "upkeep"  # the name of the daily upkeep job, as the scheduler and the ids know it


def tick_workflow_id(tf: Timeframe, as_of: datetime) -> str:
    return f"ohlcv-{tf.name}-{as_utc(as_of):%Y%m%dT%H%MZ}"


def upkeep_workflow_id(at: datetime) -> str:
    return f"ohlcv-{UPKEEP}-{as_utc(at):%Y%m%dT%H%MZ}"


def backfill_workflow_id(tfs: list[Timeframe], start: datetime, end: datetime, invoked: datetime) -> str:
    names = "all" if len(tfs) == len(TIMEFRAMES) else "+".join(tf.name for tf in tfs)
    return f"ohlcv-backfill-{names}-{as_utc(start):%Y%m%dT%H%MZ}-{as_utc(end):%Y%m%dT%H%MZ}-at-{as_utc(invoked):%Y%m%dT%H%M%SZ}"


def parse_scheduled_id(workflow_id: str) -> tuple[str, datetime] | None:
    """(job name, tick) of a scheduled workflow: a timeframe's tick or the daily upkeep."""
    match = _TICK_ID.match(workflow_id)
    if not match or (match["tf"] not in TIMEFRAMES and match["tf"] != UPKEEP):
        return None
    return match["tf"], datetime.strptime(match["at"], "%Y%m%dT%H%MZ").replace(tzinfo=timezone.utc)


def run_time(workflow_id: str) -> datetime | None:
    """The time a run's id names (a tick's as-of, the upkeep's tick, a backfill's invocation), or
    None for an id this platform did not make. Run history is ordered and pruned by it: reading
    it costs nothing, where Ray's own start time is one storage read per run."""
    scheduled = parse_scheduled_id(workflow_id)
    if scheduled is not None:
        return scheduled[1]
    match = _BACKFILL_ID.match(workflow_id)
    if match is None:
        return None
    return datetime.strptime(match["at"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
