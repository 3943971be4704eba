"""`ohlcv ingest`'s work, timed without the CLI's start-up, in a process of its own.

    python -m benchmarks.ingest_timed FILE...     # settings from the environment (OHLCV_*)

Run by benchmarks/run.py as a subprocess: the Arrow memory an ingest of 24M trades leaves in
its process's pool is then not counted in the project's peak memory measured later. Prints one
JSON line: the wall time of opening the catalog and ingesting the files.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone


def main(files: list[str]) -> None:
    from ohlcv.catalog import open_catalog
    from ohlcv.ingest import ingest_files
    from ohlcv.settings import from_environment

    settings = from_environment()
    started = time.monotonic()
    ingest_files(open_catalog(settings), settings.namespace, files, "us", datetime.now(timezone.utc))
    print(json.dumps({"seconds": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
