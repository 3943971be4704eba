"""The run journal: per workflow step, every attempt with its outcome and error, and a summary.

Ray Workflows keeps outputs but not the error of a failed step, nor how many tries it took.
The journal keeps both, in the cluster's own storage (the one Ray Workflows writes to, so every
node sees it), under `ohlcv/runs/<workflow_id>/<task_id>.json`. Writing it is best effort: a
journal problem is logged and never fails a step.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from workflows import _ray_compat

__all__ = ["record", "read_step", "read_workflow", "delete_workflow"]

log = logging.getLogger(__name__)
ROOT = "ohlcv/runs"


def _client():
    # Ray's storage client: the same storage ray.workflow writes its checkpoints to.
    return _ray_compat.storage_client(ROOT)


def record(workflow_id: str, task_id: str, entry: dict[str, Any]) -> None:
    """Replace the journal entry of one step (it carries all attempts so far)."""
    try:
        _client().put(f"{workflow_id}/{task_id}.json", json.dumps(entry, default=str).encode())
    except Exception:  # noqa: BLE001 - the journal must never fail the run it describes
        log.warning("could not write the journal of %s/%s", workflow_id, task_id, exc_info=True)


def read_step(workflow_id: str, task_id: str) -> dict | None:
    """The journal entry of one step, or None (never written, or unreadable)."""
    try:
        return json.loads(_client().get(f"{workflow_id}/{task_id}.json"))
    except Exception:  # noqa: BLE001 - a missing journal only loses history, not the run
        return None


def read_workflow(workflow_id: str) -> dict[str, dict]:
    """{task_id: entry} of every step of a workflow that has written one."""
    client = _client()
    try:
        names = [info.base_name for info in client.list(workflow_id)]
    except FileNotFoundError:
        return {}
    entries = {}
    for name in names:
        if name.endswith(".json"):
            try:
                entries[name[: -len(".json")]] = json.loads(client.get(f"{workflow_id}/{name}"))
            except (FileNotFoundError, ValueError):
                continue
    return entries


def delete_workflow(workflow_id: str) -> None:
    try:
        _client().delete_dir(workflow_id)
    except Exception:  # noqa: BLE001
        log.warning("could not delete the journal of %s", workflow_id, exc_info=True)
