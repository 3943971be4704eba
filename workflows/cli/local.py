"""`ohlcv up` and `ohlcv down`: the warm local mode (see workflows/local_ray.py)."""

from __future__ import annotations

import time

from ohlcv.errors import InputError, ServiceUnavailable
from workflows.cli.common import command_settings, console

__all__ = ["up", "down"]


def up() -> None:
    """Start a local Ray head in the background, with the Spark service warm: later commands on
    this machine use it (no RAY_ADDRESS needed) until `ohlcv down`."""
    from workflows import local_ray
    from workflows.runtime import check_workflow_storage
    from workflows.spark.java import require_java

    started = time.monotonic()
    settings = command_settings(writes=True)
    if settings.ray_address:
        raise InputError(f"RAY_ADDRESS is set ({settings.ray_address}): commands use that cluster; unset it for a local one")
    head = local_ray.find()
    if head is not None and head.alive() and head.storage == settings.ray_storage_uri:
        console.print(f"already up: Ray at {head.address}, dashboard {head.dashboard}")
        fresh = False
    else:
        if head is not None:
            reason = "its workflow storage differs" if head.alive() else "it is gone"
            console.print(f"replacing the local Ray at {head.address} ({reason})")
            local_ray.stop(head)
        require_java()  # before starting a head that could not run Spark
        check_workflow_storage(settings)
        head = local_ray.start(settings.ray_storage_uri, keeper=True)
        console.print(f"Ray is up at {head.address}, dashboard {head.dashboard}, runs in {head.storage}")
        fresh = True
    try:
        if fresh:
            # The keeper creates the workflow actors and the Spark service, and says when Spark
            # is warm: this process need not connect to Ray at all.
            local_ray.wait_keeper(head)
        elif not local_ray.keeper_alive(head):
            console.print("its keeper is gone: starting a new one")
            local_ray.start_keeper(head)
        else:
            from workflows.runtime import ensure_ray
            from workflows.spark.service import spark_service

            settings = settings.with_overrides(ray_address=head.address)
            ensure_ray(settings)
            spark_service(settings)  # the keeper's, or a new one if it went away; waits until warm
    except ServiceUnavailable:
        if head.alive():
            raise
        local_ray.forget(head)
        raise ServiceUnavailable(
            f"the local Ray head stopped while it started; why is in {head.temp_dir}/session_latest/logs "
            "(dashboard.log, gcs_server.out)"
        ) from None
    console.print(f"Spark service ready ({time.monotonic() - started:.0f}s); "
                  "commands on this machine use this Ray until `ohlcv down`")


def down() -> None:
    """Stop the local Ray head (and its Spark service) that `ohlcv up` started."""
    from workflows import local_ray

    head = local_ray.find()
    if head is None:
        console.print("no local Ray from `ohlcv up` is running")
        return
    local_ray.stop(head, remove_files=True)
    console.print(f"stopped the local Ray at {head.address} and removed its files ({head.temp_dir})")
