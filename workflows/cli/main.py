"""The `ohlcv` command line: a thin layer over the `ohlcv` domain and the Ray `workflows`.

This module builds the Typer app from the command modules (data, runs, demo, quality,
operations, storage) and owns the one error handler: a domain error prints one red line and exits 1;
`--debug` shows the traceback instead. Messages for people go to the console; diagnostics go
through `logging`.
"""

from __future__ import annotations

import logging
import sys

import click
import typer
import typer.exceptions

from ohlcv.errors import OhlcvError
from workflows.cli import data, demo, local, operations, quality, runs, storage
from workflows.cli.common import errors, storage_problem

__all__ = ["app", "main"]

app = typer.Typer(
    name="ohlcv",
    help="OHLCV candles from crypto trades in Iceberg, computed by Spark on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and diagnostic logs.")) -> None:
    """OHLCV candles from crypto trades in Iceberg, computed by Spark on Ray."""


# The order here is the order of `ohlcv --help`.
for command in (
    data.init, data.generate, data.ingest, runs.run, runs.backfill, data.candles, demo.demo,
    quality.validate, quality.retention, quality.maintain, operations.schedule, operations.status, local.up, local.down,
):
    app.command()(command)
app.add_typer(operations.workflows_app, name="workflows")
app.add_typer(storage.storage_app, name="storage")


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pyiceberg and ray are chatty at INFO; keep their warnings.
    for noisy in ("pyiceberg", "ray", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Typer 0.29 vendors its own click; older releases raise click's own exceptions.
_USAGE_ERRORS = (click.ClickException, typer.exceptions.TyperException)
_ABORTS = (click.Abort, typer.Abort, KeyboardInterrupt)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ohlcv` command; exit code 0 on success, 1 on any error."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _configure_logging(debug)
    try:
        code = app(args=args, prog_name="ohlcv", standalone_mode=False)
    except OhlcvError as exc:
        if debug:
            raise
        errors.print(f"[red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except _USAGE_ERRORS as exc:
        context = getattr(exc, "ctx", None)
        command = context.info_name if context is not None and context.info_name != "ohlcv" else None
        hint = f" (see: ohlcv {command} --help)" if command else " (see: ohlcv --help)"
        errors.print(f"[red]error:[/] {exc.format_message()}{hint}", soft_wrap=True)
        sys.exit(1)
    except _ABORTS:
        errors.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # storage: name the bucket and what to check, never a key
        if debug:
            raise
        described = storage_problem(exc)
        text = described or f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
        errors.print(f"[red]error:[/] {text}", soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # one line for people; the traceback is one flag away
        if debug:
            raise
        errors.print(f"[red]error:[/] unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
