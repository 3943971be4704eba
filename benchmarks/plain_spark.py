"""Plain PySpark `local[N]`, no Ray: the reference the project's RayDP session is held against.

Run as a subprocess by benchmarks/run.py so that its JVM and memory are its own; prints one JSON
line with the timings of each repeat and the peak memory of its process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext

from benchmarks.memory import MemorySampler
from benchmarks.reference import plain_spark_candles


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", nargs="+", required=True)
    parser.add_argument("--start-us", type=int, required=True)
    parser.add_argument("--end-us", type=int, required=True)
    parser.add_argument("--cores", type=int, required=True)
    parser.add_argument("--memory", default="2g")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warm-up", type=int, default=1, help="runs before the counted ones (the JVM compiles its hot code)")
    parser.add_argument("--no-deduplicate", dest="deduplicate", action="store_false",
                        help="skip the deduplication, as the project does for trades ingest vouched for")
    args = parser.parse_args()

    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from ohlcv import timeframes
    from workflows.spark.java import JAVA_OPTIONS

    with MemorySampler() as sampler:
        with sampler.phase("plain spark"):
            started = time.monotonic()
            spark = (
                SparkSession.builder.master(f"local[{args.cores}]")
                .config("spark.driver.memory", args.memory)
                .config("spark.driver.extraJavaOptions", JAVA_OPTIONS)
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.shuffle.partitions", str(max(4, args.cores * 2)))
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .getOrCreate()
            )
            spark.sparkContext.setLogLevel("ERROR")
            startup = time.monotonic() - started
            tfs = timeframes.resolve("all")
            seconds, candles = [], 0
            for attempt in range(args.warm_up + args.repeats):
                with sampler.paused() if attempt >= args.warm_up else nullcontext():
                    started = time.monotonic()
                    result = plain_spark_candles(spark, args.files, args.start_us, args.end_us, tfs, args.deduplicate)
                    seconds.append(time.monotonic() - started)
                candles = sum(t.num_rows for t in result.values())
            spark.stop()
    print(json.dumps({"startup": startup, "seconds": seconds[args.warm_up:], "candles": candles, "peak_bytes": sampler.peaks["plain spark"]}))


if __name__ == "__main__":
    main()
