"""Run history: which runs storage keeps, and listing them at a cost that does not grow with it.

Every tick is a workflow with checkpoints and a journal: about 460 runs a day. The daily upkeep
(its `runs` step) and `ohlcv workflows prune` remove finished runs older than the history
window (`OHLCV_RUN_HISTORY_DAYS`, 14 by default), with their checkpoints and journals:

- SUCCESSFUL and CANCELED runs go once older than the window;
- FAILED runs stay until someone resolves them: `ohlcv workflows resume ID` (it then succeeds and
  goes with the rest), `ohlcv workflows cancel ID` (gone at the next prune), or
  `ohlcv workflows prune --include-failed`;
- RUNNING, PENDING and RESUMABLE (interrupted) runs always stay: the scheduler resumes them.

A run's age is the time its id names (`ids.run_time`), read without opening the run; ids this
platform did not make are never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from workflows.orchestration import journal
from workflows.orchestration.ids import run_time

__all__ = ["FINISHED", "PruneResult", "prune", "newest"]

log = logging.getLogger(__name__)

FINISHED = ("SUCCESSFUL", "CANCELED")


@dataclass
class PruneResult:
    cutoff: datetime
    removed: list[str] = field(default_factory=list)
    failed_kept: list[str] = field(default_factory=list)  # older than the cutoff, but FAILED
    dry_run: bool = False

    def summary(self) -> dict:
        return {"older than": self.cutoff.isoformat(), "removed": len(self.removed), "failed kept": len(self.failed_kept)}


def prune(older_than: datetime, *, include_failed: bool = False, dry_run: bool = False, workflow=None) -> PruneResult:
    """Remove finished runs whose time is before `older_than` (FAILED ones too with
    `include_failed`), each with its checkpoints and its journal."""
    from workflows.runtime import import_workflow

    workflow = workflow or import_workflow()
    result = PruneResult(older_than, dry_run=dry_run)
    removable = set(FINISHED) | ({"FAILED"} if include_failed else set())
    for workflow_id, status in workflow.list_all({*FINISHED, "FAILED"}):
        when = run_time(workflow_id)
        if when is None or when >= older_than:
            continue
        if status.name not in removable:
            result.failed_kept.append(workflow_id)
            continue
        result.removed.append(workflow_id)
        if not dry_run:
            workflow.delete(workflow_id)
            journal.delete_workflow(workflow_id)
    log.info("run history before %s: %d run(s) %s, %d failed kept", older_than.isoformat(), len(result.removed),
             "to remove" if dry_run else "removed", len(result.failed_kept))
    return result


def newest(workflow, limit: int, status: str | None = None) -> tuple[list[tuple[str, str]], int]:
    """The `limit` newest runs as (workflow_id, status), newest first by the time in their ids
    (ids of other origins last), and how many runs matched in all. One listing of the status
    index, whatever the history's length; nothing per run is read here."""
    listed = workflow.list_all(status) if status else workflow.list_all()
    ordered = sorted(listed, key=lambda item: (run_time(item[0]) is not None, run_time(item[0]) or 0, item[0]), reverse=True)
    return [(workflow_id, state.name) for workflow_id, state in ordered[:limit]], len(listed)
