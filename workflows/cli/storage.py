"""`ohlcv storage ...`: check the warehouse and the workflow storage, and give Ray its storage URI."""

from __future__ import annotations

import typer

from workflows.cli.common import command_settings, console

__all__ = ["storage_app", "check", "ray_uri"]

storage_app = typer.Typer(help="Check the object storage, and print the workflow storage URI for `ray start`.", no_args_is_help=True)


@storage_app.command("check")
def check() -> None:
    """Check that the warehouse and the workflow storage can be listed and written (one line each)."""
    from ohlcv.object_store import check_bucket, is_s3

    settings = command_settings()
    for uri, what in ((settings.warehouse_uri, "OHLCV_WAREHOUSE"), (settings.resolved_workflow_storage, "OHLCV_WORKFLOW_STORAGE")):
        check_bucket(uri, settings.s3_endpoint, settings.s3_region, what, write=True)
        where = f" at {settings.s3_endpoint or 'AWS S3'}" if is_s3(uri) else ""
        console.print(f"{what:<23} {uri}{where}: {'readable and writable' if is_s3(uri) else 'a local folder'}")


@storage_app.command("ray-uri")
def ray_uri() -> None:
    """Print the workflow storage as `ray start --head --storage=...` takes it (endpoint included)."""
    print(command_settings().ray_storage_uri)
