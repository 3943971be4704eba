"""Workflow runs: start, follow, wait for, resume and explain ticks, backfills and upkeeps.

Every run is a durable Ray workflow (DAGs in `dags`, ids in `ids`). A failure comes back as one
line that names the failed step, its error and the command that resumes the run, read from the
run journal, since Ray Workflows keeps no error of a failed step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ohlcv.errors import InputError, RunFailed
from ohlcv.settings import Settings
from ohlcv.store import CommitResult
from ohlcv.timeframes import Timeframe
from ohlcv.windows import as_utc, plan_backfill
from workflows.orchestration import journal
from workflows.orchestration.dags import backfill_dag, tick_dag, upkeep_dag
from workflows.orchestration.ids import UPKEEP, backfill_workflow_id, tick_workflow_id, upkeep_workflow_id
from workflows.runtime import ensure_ray, import_ray, import_workflow, pin_workflow_actors_to_head, require_workflow_storage

__all__ = [
    "connect",
    "start_tick",
    "start_upkeep",
    "run_tick",
    "run_backfill",
    "BackfillProgress",
    "resume",
    "wait",
    "wait_all",
    "failure_of",
    "status_of",
    "require_workflow",
]

log = logging.getLogger(__name__)


def connect(settings: Settings):
    """Ray up (local, with workflow storage, or the cluster's) and `ray.workflow` ready."""
    ensure_ray(settings)
    require_workflow_storage(settings)
    pin_workflow_actors_to_head()
    return import_workflow()


def start_upkeep(settings: Settings, at: datetime):
    """Start (or resume, or fetch) the daily upkeep workflow of a tick; (workflow_id, ObjectRef)."""
    workflow = connect(settings)
    at = _minute(at)
    workflow_id = upkeep_workflow_id(at)
    metadata = {"kind": UPKEEP, "at": at.isoformat(), "namespace": settings.namespace}
    return workflow_id, workflow.run_async(upkeep_dag(settings, at), workflow_id=workflow_id, metadata=metadata)


def _minute(ts: datetime) -> datetime:
    return as_utc(ts).replace(second=0, microsecond=0)


def start_tick(settings: Settings, tf: Timeframe, as_of: datetime, rerun: bool = False):
    """Start (or resume, or fetch the stored result of) a tick; returns (workflow_id, ObjectRef)."""
    workflow = connect(settings)
    as_of = _minute(as_of)  # the id has minute precision, so the tick it names does too
    workflow_id = tick_workflow_id(tf, as_of)
    if rerun:
        _forget(workflow, workflow_id)
    metadata = {"kind": "tick", "timeframe": tf.name, "as_of": as_of.isoformat(), "namespace": settings.namespace}
    ref = workflow.run_async(tick_dag(settings, tf, as_of), workflow_id=workflow_id, metadata=metadata)
    return workflow_id, ref


def status_of(workflow, workflow_id: str) -> str | None:
    """A workflow's status name, or None when storage has no such workflow."""
    from ray.workflow.exceptions import WorkflowNotFoundError

    try:
        return workflow.get_status(workflow_id).name
    except (ValueError, WorkflowNotFoundError):  # Ray 2.47 raises the latter, wrapped
        return None


def require_workflow(workflow, workflow_id: str) -> str:
    status = status_of(workflow, workflow_id)
    if status is None:
        raise InputError(f"no workflow {workflow_id!r}: see `ohlcv workflows list`")
    return status


def _forget(workflow, workflow_id: str) -> None:
    status = status_of(workflow, workflow_id)
    if status is None:
        return
    if status == "RUNNING":
        raise InputError(f"{workflow_id} is running: wait for it, or `ohlcv workflows cancel {workflow_id}` first")
    workflow.delete(workflow_id)
    journal.delete_workflow(workflow_id)


def wait(workflow_id: str, ref) -> list[CommitResult]:
    """The result of a started workflow, or RunFailed naming the failed step and its error."""
    ray = import_ray()
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - turned into one line that names the step
        raise RunFailed(failure_of(workflow_id, exc)) from None


def failure_of(workflow_id: str, exc: BaseException | None = None) -> str:
    """One line: which step of a workflow failed, with what error, and how to resume it."""
    failed = [(task, entry) for task, entry in journal.read_workflow(workflow_id).items() if entry.get("status") == "FAILED"]
    if failed:
        task, entry = failed[-1]
        reason = f"step {task} failed: {entry.get('error')}"
    elif exc is not None:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[-1][:400] if lines else type(exc).__name__
    else:
        reason = "failed (no step recorded an error)"
    return f"{workflow_id}: {reason} (after fixing the cause: ohlcv workflows resume {workflow_id})"


def run_tick(settings: Settings, tf: Timeframe, as_of: datetime, rerun: bool = False) -> tuple[str, list[CommitResult]]:
    workflow_id, ref = start_tick(settings, tf, as_of, rerun)
    return workflow_id, wait(workflow_id, ref)


@dataclass
class BackfillProgress:
    workflow_id: str
    chunks: int
    committed: int


def run_backfill(
    settings: Settings,
    tfs: list[Timeframe],
    start: datetime,
    end: datetime,
    now: datetime,
    on_progress: Callable[[BackfillProgress], None] | None = None,
    poll_seconds: float = 1.0,
) -> tuple[str, list[CommitResult]]:
    """Run a backfill as one workflow, reporting committed chunks while it runs."""
    chunks = plan_backfill(tfs, start, end, closed_before=now, trades_per_day=_trades_per_day(settings, start, end),
                           chunk_trades=settings.backfill_chunk_trades)
    if not chunks:
        return "", []
    workflow = connect(settings)
    ray = import_ray()
    workflow_id = backfill_workflow_id(tfs, start, end, now)
    metadata = {"kind": "backfill", "timeframes": [tf.name for tf in tfs], "start": as_utc(start).isoformat(),
                "end": as_utc(end).isoformat(), "chunks": len(chunks), "namespace": settings.namespace}
    ref = workflow.run_async(backfill_dag(settings, chunks), workflow_id=workflow_id, metadata=metadata)
    return workflow_id, _follow(workflow_id, ref, len(chunks), on_progress, poll_seconds, ray)


def _trades_per_day(settings: Settings, start: datetime, end: datetime) -> dict:
    """The manifests' estimate of each day's trades, which sizes the backfill's chunks."""
    from ohlcv.catalog import load_trades, open_catalog
    from ohlcv.store import trades_per_day
    from ohlcv.windows import WindowRange, floor
    from ohlcv.timeframes import get

    day = get("1d")
    return trades_per_day(load_trades(open_catalog(settings), settings.namespace),
                          WindowRange(floor(start, day), floor(as_utc(end), day) + day.width))


def _follow(workflow_id, ref, chunks, on_progress, poll_seconds, ray) -> list[CommitResult]:
    reported = -1
    while True:
        ready, _ = ray.wait([ref], timeout=poll_seconds)
        if on_progress is not None:
            entries = journal.read_workflow(workflow_id)
            committed = sum(1 for task, e in entries.items() if task.startswith("commit-") and e.get("status") == "SUCCESSFUL")
            if committed != reported:
                on_progress(BackfillProgress(workflow_id, chunks, committed))
                reported = committed
        if ready:
            return wait(workflow_id, ref)


def resume(settings: Settings, workflow_id: str, on_progress=None) -> list[CommitResult]:
    """Continue a failed or interrupted workflow: only its unfinished steps run."""
    workflow = connect(settings)
    if require_workflow(workflow, workflow_id) == "SUCCESSFUL":
        return workflow.get_output(workflow_id)
    ref = workflow.resume_async(workflow_id)
    chunks = workflow.get_metadata(workflow_id).get("user_metadata", {}).get("chunks", 1)
    return _follow(workflow_id, ref, chunks, on_progress, 1.0, import_ray())


def wait_all(started: list[tuple[str, object]]) -> dict[str, list[CommitResult] | RunFailed]:
    """Wait for several started workflows; failures are returned, not raised."""
    results: dict[str, list[CommitResult] | RunFailed] = {}
    for workflow_id, ref in started:
        try:
            results[workflow_id] = wait(workflow_id, ref)
        except RunFailed as failure:
            results[workflow_id] = failure
    return results
