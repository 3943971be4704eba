"""Every use of Ray's internals, in one place: the module to read first on a Ray upgrade.

Ray 2.47.1 is pinned because it is the last release with `ray.workflow`. The platform needs
a few things Ray's public API does not offer, and each is wrapped here:

- the cluster storage Ray Workflows writes to (`ray._private.storage`), where the run journal
  lives beside the checkpoints so that every node sees it;
- the GCS actor table (`ray._private.state`), which knows at once when a Spark executor's node
  died (the public state API needs the dashboard, which test clusters do not run);
- the id of the workflow and step a process is running (`ray.workflow.workflow_context`);
- Ray Workflows' two detached actors, created by us with Ray's own names and classes so that
  they can be pinned to the head node (`ray.workflow.common`, `workflow_access`,
  `serialization`).

`tests/test_structure.py` pins the version this was written for (`WRITTEN_FOR_RAY`); the
wrappers are exercised by every workflow, journal and node-loss test.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = [
    "WRITTEN_FOR_RAY",
    "storage_uri",
    "storage_client",
    "actor_table",
    "current_workflow_step",
    "create_workflow_actors",
]

WRITTEN_FOR_RAY = "2.47.1"


def _workflow_package():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The experimental Ray Workflows library is deprecated")
        from ray import workflow
    return workflow


def storage_uri() -> str | None:
    """The storage URI this Ray cluster was started with (`--storage`), or None."""
    from ray._private import storage

    return storage._get_storage_uri()


def storage_client(prefix: str):
    """Ray's client of the cluster storage, rooted at `prefix` (put/get/list/delete_dir)."""
    from ray._private import storage

    return storage.get_client(prefix)


def actor_table() -> list[dict[str, Any]]:
    """Every actor the GCS knows of, alive or dead, with its `State` and `ActorClassName`."""
    from ray._private import state

    return list(state.actors().values())


def current_workflow_step() -> tuple[str, str]:
    """(workflow_id, task_id) of the workflow step this process is running."""
    _workflow_package()
    from ray.workflow import workflow_context

    return workflow_context.get_current_workflow_id(), workflow_context.get_current_task_id()


def create_workflow_actors(scheduling_strategy) -> None:
    """Create Ray Workflows' management and storage actors with `scheduling_strategy`, unless
    they exist; same names, classes and arguments as ray 2.47 itself uses, so `ray.workflow`
    finds and uses ours."""
    import ray

    _workflow_package()
    from ray.workflow import common, serialization, workflow_access

    for name, cls, args, ready in (
        (common.MANAGEMENT_ACTOR_NAME, workflow_access.WorkflowManagementActor, (-1, -1), "ready"),
        (common.STORAGE_ACTOR_NAME, serialization.Manager, (), "ping"),
    ):
        try:
            ray.get_actor(name, namespace=common.MANAGEMENT_ACTOR_NAMESPACE)
            continue
        except ValueError:
            pass
        handle = cls.options(
            name=name, namespace=common.MANAGEMENT_ACTOR_NAMESPACE, lifetime="detached",
            get_if_exists=True, scheduling_strategy=scheduling_strategy, num_cpus=0,  # a CPU-less head must fit them
        ).remote(*args)
        ray.get(getattr(handle, ready).remote())
