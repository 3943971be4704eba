"""The DuckDB references of one day, timed in a process of their own.

    python -m benchmarks.duckdb_timed --trades FILE --files F... --start-us S --end-us E \
        --cores N --repeats R --scratch DIR [--deduplicate]

Run by benchmarks/run.py as a subprocess, as plain Spark is: DuckDB's memory (12 GiB for the
24M day's pipeline) then stays out of the process that later drives the project, whose peak
memory is measured. Prints one JSON line: the seconds of each repeat of the candles, the load
and the pipeline (each load and pipeline in a fresh folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def _timed(repeats: int, work) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.monotonic()
        work()
        seconds.append(time.monotonic() - started)
    return seconds


def main() -> None:
    from ohlcv import timeframes
    from benchmarks.reference import duckdb_candles, duckdb_load, duckdb_pipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", required=True, help="the day's generated file (what ingest loads)")
    parser.add_argument("--files", nargs="+", required=True, help="the trades table's data files of the day")
    parser.add_argument("--start-us", type=int, required=True)
    parser.add_argument("--end-us", type=int, required=True)
    parser.add_argument("--cores", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scratch", required=True, help="where the load and pipeline repeats write")
    parser.add_argument("--deduplicate", action="store_true")
    args = parser.parse_args()

    widths = {tf.name: tf.width_us for tf in timeframes.TIMEFRAMES.values()}

    def in_fresh_folder(work):
        def run() -> None:
            with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
                work(folder)
        return run

    result = {
        "candles": _timed(args.repeats, lambda: duckdb_candles(args.files, args.start_us, args.end_us, widths, args.cores,
                                                               args.deduplicate)),
        "load": _timed(args.repeats, in_fresh_folder(lambda folder: duckdb_load([args.trades], folder, args.cores))),
        "pipeline": _timed(args.repeats, in_fresh_folder(
            lambda folder: duckdb_pipeline([args.trades], f"{folder}/ohlcv.duckdb", widths, args.cores))),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
