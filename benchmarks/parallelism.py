"""The parallelism ceiling of the project's aggregation, from Spark's own task metrics.

    python -m benchmarks.parallelism --files F.parquet ... --start-us S --end-us E [--slots 32]

Runs the project's transform (ohlcv/aggregate.py: the dedupe when asked, then all five
timeframes) in plain PySpark `local[cores]`, configured as the project's Spark service would be
on a cluster of `--slots` cores: its Spark configs (workflows/spark/sizing.py), its shuffle width
(aggregate.shuffle_partitions) and that many default tasks. Spark's event log then gives each
task's run time, and for each stage

    ceiling = total task time / longest task

which is how many cores the stage could keep busy however many it had. The aggregation's ceiling
is the lowest over its stages. Printed as one JSON line: the ceiling over every stage, and over
the stages that carry at least 5% of the aggregation's task time (the rest, roll-ups of a few
thousand candles, last milliseconds, and their ceilings measure task start-up jitter, not the
data's skew).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

SIGNIFICANT_SHARE = 0.05


MEASURED = "measured"


def stage_times(event_log: Path) -> dict[int, list[int]]:
    """Run time (ms) of every task of every stage of the measured jobs, from a Spark event log."""
    tasks: dict[int, list[int]] = defaultdict(list)
    measured: set[int] = set()
    for path in event_log.iterdir():
        for line in path.read_text().splitlines():
            event = json.loads(line)
            kind = event.get("Event")
            if kind == "SparkListenerJobStart" and (event.get("Properties") or {}).get("spark.jobGroup.id") == MEASURED:
                measured.update(event["Stage IDs"])
            elif kind == "SparkListenerTaskEnd" and event.get("Task Metrics") and event["Stage ID"] in measured:
                tasks[event["Stage ID"]].append(max(1, int(event["Task Metrics"]["Executor Run Time"])))
    return dict(tasks)


def ceilings(tasks: dict[int, list[int]]) -> dict:
    total = sum(sum(times) for times in tasks.values())
    per_stage = {stage: {"tasks": len(times), "task_ms": sum(times), "longest_ms": max(times), "ceiling": sum(times) / max(times)}
                 for stage, times in sorted(tasks.items())}
    significant = [s for s in per_stage.values() if s["task_ms"] >= SIGNIFICANT_SHARE * total]
    return {
        "ceiling": min(s["ceiling"] for s in significant),
        "ceiling_all_stages": min(s["ceiling"] for s in per_stage.values()),
        "task_ms": total,
        "stages": per_stage,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", nargs="+", required=True)
    parser.add_argument("--start-us", type=int, required=True)
    parser.add_argument("--end-us", type=int, required=True)
    parser.add_argument("--rows", type=int, required=True, help="trades in the range (the manifests' count)")
    parser.add_argument("--slots", type=int, default=32, help="the cluster's cores the project is sized for")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--deduplicate", action="store_true", help="deduplicate first, as for trades ingest did not vouch for")
    args = parser.parse_args()

    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from ohlcv import aggregate, timeframes
    from ohlcv.store import SPARK_TRADE_SCHEMA
    from workflows.spark.sizing import SparkSizing, spark_configs

    cluster = SparkSizing(executors=max(1, args.slots // 4), executor_cores=min(4, args.slots), executor_memory="2g", driver_memory="2g")
    with tempfile.TemporaryDirectory() as folder:
        builder = SparkSession.builder.master(f"local[{args.cores}]")
        for key, value in {**spark_configs(cluster), "spark.default.parallelism": str(cluster.slots),
                           "spark.eventLog.enabled": "true", "spark.eventLog.dir": folder}.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        trades = spark.read.schema(SPARK_TRADE_SCHEMA).parquet(*args.files)
        ts = F.unix_micros("timestamp")
        trades = trades.where((ts >= F.lit(args.start_us)) & (ts < F.lit(args.end_us)))
        width = aggregate.shuffle_partitions(args.rows, cluster.slots)
        for group in ("warm-up", MEASURED):  # a fresh JVM's first tasks wait on class loading and the JIT
            spark.sparkContext.setJobGroup(group, group)
            unique = aggregate.dedupe_trades(trades, partitions=width) if args.deduplicate else aggregate.as_unique(trades)
            candles = sum(table.num_rows for table in aggregate.compute_candles(unique, timeframes.resolve("all"), deduped=True)[0].values())
        spark.stop()
        result = ceilings(stage_times(Path(folder)))
    print(json.dumps({"slots": cluster.slots, "shuffle_width": width, "deduplicated": args.deduplicate, "candles": candles, **result}))


if __name__ == "__main__":
    main()
