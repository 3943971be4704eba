"""The scheduler's launcher: starts tick workflows and answers for them from workflow storage."""

from __future__ import annotations

from datetime import datetime

from ohlcv.settings import Settings
from ohlcv.timeframes import TIMEFRAMES
from workflows.orchestration import runs
from workflows.orchestration.ids import UPKEEP, parse_scheduled_id
from workflows.runtime import import_ray

__all__ = ["WorkflowLauncher", "scheduled_statuses"]


def scheduled_statuses(workflow) -> list[tuple[str, str, datetime, str]]:
    """(workflow_id, job name, tick, status name) of every scheduled workflow in storage."""
    found = []
    for workflow_id, status in workflow.list_all():
        parsed = parse_scheduled_id(workflow_id)
        if parsed is not None:
            found.append((workflow_id, parsed[0], parsed[1], status.name))
    return found


class WorkflowLauncher:
    """Handles are (workflow_id, ObjectRef or None); None for a workflow another driver runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workflow = runs.connect(settings)
        self.ray = import_ray()

    def history(self) -> dict[str, datetime]:
        newest: dict[str, datetime] = {}
        for _, name, tick, _ in scheduled_statuses(self.workflow):
            newest[name] = max(tick, newest.get(name, tick))
        return newest

    def resume_interrupted(self) -> dict[str, object]:
        """Resume ticks a cluster failure interrupted; adopt ticks still running elsewhere."""
        handles: dict[str, object] = {}
        for workflow_id, name, tick, status in sorted(scheduled_statuses(self.workflow), key=lambda t: t[2]):
            if status == "RUNNING":
                handles[name] = (workflow_id, None)
        for workflow_id, ref in self.workflow.resume_all(include_failed=False):
            parsed = parse_scheduled_id(workflow_id)
            if parsed is not None:
                handles[parsed[0]] = (workflow_id, ref)
        return handles

    def start(self, job, tick: datetime) -> object:
        if job.name == UPKEEP:
            return runs.start_upkeep(self.settings, tick)
        return runs.start_tick(self.settings, TIMEFRAMES[job.name], tick)

    def running(self, handle: object) -> bool:
        workflow_id, ref = handle
        if ref is None:
            return self.workflow.get_status(workflow_id).name == "RUNNING"
        ready, _ = self.ray.wait([ref], timeout=0)
        return not ready

    def finished(self, handle: object) -> str:
        workflow_id, ref = handle
        if ref is None:
            status = self.workflow.get_status(workflow_id).name
            return "succeeded" if status == "SUCCESSFUL" else runs.failure_of(workflow_id)
        try:
            self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - reported as the tick's one line
            return runs.failure_of(workflow_id, exc)
        return "succeeded"
