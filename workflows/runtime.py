"""Connect this process to Ray: join the cluster at RAY_ADDRESS, or start a local one.

Shared by every layer of `workflows/` (CLI, Spark service, orchestration, scheduling).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from ohlcv.errors import ConfigError, OhlcvError, ServiceUnavailable
from ohlcv.object_store import bucket_of, check_bucket, describe_storage_error
from ohlcv.settings import Settings
from workflows import _ray_compat

__all__ = [
    "NAMESPACE", "ensure_ray", "check_workflow_storage", "import_ray", "import_workflow", "require_workflow_storage", "call", "head_affinity",
    "pin_workflow_actors_to_head", "use_arrow_threads",
]

log = logging.getLogger(__name__)

# Every actor and workflow of the platform lives in this Ray namespace.
NAMESPACE = "ohlcv"


def import_ray():
    import ray

    return ray


def ensure_ray(settings: Settings) -> None:
    """Initialise Ray once per process; a no-op when already connected (tests, Ray jobs)."""
    ray = import_ray()
    if ray.is_initialized():
        return
    # A job submitted with `ray job submit` inherits RAY_ADDRESS; so does a user's shell.
    common = dict(namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            warm = None if settings.ray_address else _warm_local_ray(settings)
            if settings.ray_address or warm is not None:
                ray.init(address=settings.ray_address or warm.address, **common)
            else:
                os.environ.pop("RAY_ADDRESS", None)
                check_workflow_storage(settings)
                # Ray Workflows keeps its checkpoints in the cluster's storage; Ray 2.47 warns
                # that this setting is deprecated, and 2.47 is pinned for Ray Workflows itself.
                warnings.filterwarnings("ignore", message="Cluster-wide storage configuration is deprecated")
                # address="local": a new Ray of this process's own. Without it, ray.init joins the
                # newest cluster `ray start` left on this machine (/tmp/ray/ray_current_cluster),
                # another user's or a test's, and fails there. It keeps idle workers as the head of
                # `ohlcv up` does: with Ray's default, each step's try (a task of its own, see
                # retry.run_step) started a fresh worker that imported pandas and Pandera again.
                from workflows.local_ray import WARM_WORKERS

                ray.init(
                    address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                    storage=settings.ray_storage_uri, _system_config={"num_workers_soft_limit": WARM_WORKERS}, **common,
                )
        except ConnectionError as exc:
            raise ServiceUnavailable(f"cannot reach the Ray cluster at {settings.ray_address}: {exc}") from None
        except OSError as exc:  # the storage failed after the check passed (it went away meanwhile)
            storage = settings.resolved_workflow_storage
            described = describe_storage_error(exc, bucket_of(storage), settings.s3_endpoint, "OHLCV_WORKFLOW_STORAGE")
            if described is None:
                raise
            raise ConfigError(described) from None
    log.info("connected to Ray (%s)", settings.ray_address or "local")


def check_workflow_storage(settings: Settings) -> None:
    """Ray would create a missing bucket itself, and wait out a dead endpoint for seconds: check
    the workflow storage before a local Ray starts on it, and say what is wrong in one line."""
    check_bucket(settings.resolved_workflow_storage, settings.s3_endpoint, settings.s3_region,
                 "OHLCV_WORKFLOW_STORAGE", write=True)


def _warm_local_ray(settings: Settings):
    """The head `ohlcv up` started, when it lives and keeps this command's workflow storage;
    what is found is said once on stderr."""
    from workflows import local_ray

    head = local_ray.find()
    if head is None:
        return None
    if not head.alive():
        print(f"the local Ray of `ohlcv up` (pid {head.pid}) is gone: this command starts its own; "
              "`ohlcv up` starts a fresh one", file=sys.stderr)
        local_ray.forget(head)
        return None
    if head.storage != settings.ray_storage_uri:
        print(f"not using the local Ray of `ohlcv up`: it keeps its runs in {head.storage}, "
              f"this command in {settings.ray_storage_uri}", file=sys.stderr)
        return None
    print(f"using the local Ray started by `ohlcv up` at {head.address} (dashboard {head.dashboard}); "
          "`ohlcv down` stops it", file=sys.stderr)
    return head


def import_workflow():
    """`ray.workflow`, without its one deprecation warning (ray 2.47 is pinned for it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The experimental Ray Workflows library is deprecated")
        from ray import workflow
    return workflow


def head_affinity():
    """A scheduling strategy that places an actor on the head node.

    The control plane (the Spark service, which is the Spark driver, and the actors of Ray
    Workflows) lives on the head: it is the node a cluster cannot lose anyway, so losing a
    worker node costs only that node's executors and steps, which Spark and the workflow retry.
    The affinity is hard: a soft one let Ray 2.47 place the actor elsewhere whenever the head
    has no CPU to offer (as cluster.yaml's head has not), even for actors that ask for none.
    """
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = next((n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})), None)
    return NodeAffinitySchedulingStrategy(head, soft=False) if head else "DEFAULT"


def pin_workflow_actors_to_head() -> None:
    """Create Ray Workflows' two detached actors on the head, before ray.workflow would create
    them wherever the scheduler likes."""
    _ray_compat.create_workflow_actors(head_affinity())


def require_workflow_storage(settings: Settings) -> None:
    """A cluster without workflow storage cannot run workflows: say how to start one that can."""
    if _ray_compat.storage_uri() is None:
        where = settings.ray_address or "this process"
        raise ConfigError(
            f"the Ray cluster at {where} has no workflow storage: start its head with "
            "`ray start --head --storage=file:///path/to/workflow-storage` (a folder every node can reach)"
        )


def call(ref, timeout: float | None = None):
    """`ray.get` that re-raises our own errors as themselves, not wrapped in Ray's error types.

    A domain error raised in an actor or task reaches the caller as a RayTaskError whose text
    is a whole remote traceback; people should see the one-line message instead.
    """
    ray = import_ray()
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, OhlcvError):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise ServiceUnavailable(f"the actor serving this call died: {exc.error_msg if hasattr(exc, 'error_msg') else exc}") from None


def use_arrow_threads(threads: int = 0) -> int:
    """Size Arrow's CPU thread pool in this process: `threads` (Settings.arrow_threads), or
    with 0 every core the process may run on. Returns the threads it now has.

    Ray sets OMP_NUM_THREADS=1 in every worker it starts for a task or actor of no CPU (all of
    ours: see dags._options), and Arrow sizes its pool by that variable. So each step and the
    Spark service decoded and encoded Parquet on one thread, where a process outside Ray uses
    every core. A late tick absorbing 100 trades spread over 30 days (2 cores, measured): its
    read of those minutes took 0.93 s in the service, and its commit, which reads and rewrites
    30 day files of 1m candles, 1.4 s; the whole tick went from 2.64 to 1.95 s with both cores.
    A tick's steps run one after another, in short bursts, so they take the cores rather than
    leave one idle."""
    import pyarrow as pa

    wanted = threads if threads > 0 else _usable_cores()
    if pa.cpu_count() != wanted:
        pa.set_cpu_count(wanted)
    return wanted


def _usable_cores() -> int:
    """The cores this process may run on (its affinity where the platform tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
