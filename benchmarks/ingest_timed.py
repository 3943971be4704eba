"""`ohlcv ingest`'s work, timed without the CLI's start-up, in a process of its own.

    python -m benchmarks.ingest_timed [--repeats R --scratch DIR] FILE...   # settings from OHLCV_*

Run by benchmarks/run.py as a subprocess: the Arrow memory an ingest of 24M trades leaves in
its process's pool is then not counted in the project's peak memory measured later. Timed as
DuckDB's load is (benchmarks/duckdb_timed.py): `--repeats` ingests in this one process, each
into an empty warehouse, the first R-1 in throwaway warehouses under `--scratch` and the last
into the configured one, which the benchmark goes on with. Prints one JSON line: the wall time
of each (opening the catalog and ingesting the files).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone


def _ingest_seconds(settings, files: list[str]) -> float:
    from ohlcv.catalog import open_catalog
    from ohlcv.ingest import ingest_files

    started = time.monotonic()
    ingest_files(open_catalog(settings), settings.namespace, files, "us", datetime.now(timezone.utc))
    return time.monotonic() - started


def main() -> None:
    from ohlcv.catalog import ensure_tables, open_catalog
    from ohlcv.settings import from_environment

    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--scratch", default=None, help="where the throwaway warehouses go (default: the system's temp)")
    args = parser.parse_args()

    settings = from_environment()
    seconds = []
    for _ in range(args.repeats - 1):
        with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
            throwaway = settings.with_overrides(warehouse=f"{folder}/warehouse", catalog_uri=None)
            ensure_tables(open_catalog(throwaway), throwaway.namespace)
            seconds.append(_ingest_seconds(throwaway, args.files))
    seconds.append(_ingest_seconds(settings, args.files))
    print(json.dumps({"seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
