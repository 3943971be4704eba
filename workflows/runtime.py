"""Connect this process to Ray: join the cluster at RAY_ADDRESS, or start a local one."""

from __future__ import annotations

import logging
import os
import warnings

from ohlcv.errors import ConfigError, ServiceUnavailable
from ohlcv.settings import Settings

__all__ = ["NAMESPACE", "ensure_ray", "import_ray", "import_workflow", "require_workflow_storage", "call"]

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
            if settings.ray_address:
                ray.init(address=settings.ray_address, **common)
            else:
                os.environ.pop("RAY_ADDRESS", None)
                # Ray Workflows keeps its checkpoints in the cluster's storage; Ray 2.47 warns
                # that this setting is deprecated, and 2.47 is pinned for Ray Workflows itself.
                warnings.filterwarnings("ignore", message="Cluster-wide storage configuration is deprecated")
                ray.init(
                    num_cpus=os.cpu_count(), include_dashboard=False,
                    storage=settings.resolved_workflow_storage, **common,
                )
        except ConnectionError as exc:
            raise ServiceUnavailable(f"cannot reach the Ray cluster at {settings.ray_address}: {exc}") from None
    log.info("connected to Ray (%s)", settings.ray_address or "local")


def import_workflow():
    """`ray.workflow`, without its one deprecation warning (ray 2.47 is pinned for it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The experimental Ray Workflows library is deprecated")
        from ray import workflow
    return workflow


def require_workflow_storage(settings: Settings) -> None:
    """A cluster without workflow storage cannot run workflows: say how to start one that can."""
    from ray._private import storage

    if storage._get_storage_uri() is None:
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
    from ohlcv.errors import OhlcvError

    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, OhlcvError):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise ServiceUnavailable(f"the actor serving this call died: {exc.error_msg if hasattr(exc, 'error_msg') else exc}") from None
