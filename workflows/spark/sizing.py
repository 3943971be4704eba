"""How big the Spark session is: executors from the cluster's CPUs and memory, and its configs."""

from __future__ import annotations

from dataclasses import dataclass

from ohlcv.settings import Settings
from workflows.spark.java import JAVA_OPTIONS

__all__ = ["SparkSizing", "plan_sizing", "spark_configs", "splits_per_core"]

_GIB = 1024**3


@dataclass(frozen=True)
class SparkSizing:
    executors: int
    executor_cores: int
    executor_memory: str
    driver_memory: str
    placement: str | None = None  # a Ray placement group strategy for the executors

    @property
    def slots(self) -> int:
        return self.executors * self.executor_cores


def plan_sizing(settings: Settings, cluster_cpus: float, cluster_memory_bytes: float) -> SparkSizing:
    """Executors from the cluster's resources unless the settings fix them.

    Executors take the cluster's cores (at most four per executor: beyond that one JVM's
    shuffle and GC stop scaling) and a share of its memory, capped at 2 GiB each: candles
    are small, and a larger heap only delays garbage collection and inflates the footprint.
    """
    cpus = max(1, int(cluster_cpus))
    cores = settings.spark_executor_cores or min(cpus, 4)
    executors = settings.spark_executors or max(1, cpus // cores)
    if settings.spark_executor_memory:
        memory = settings.spark_executor_memory
    else:
        share = cluster_memory_bytes * 0.3 / executors
        memory = f"{int(min(max(share, 1 * _GIB), 2 * _GIB) // 2**20)}m"
    return SparkSizing(executors, cores, memory, settings.spark_driver_memory, settings.spark_placement)


def splits_per_core(sizing: SparkSizing) -> int:
    """Splits of a read per core: four on a cluster, one in a session of a single executor.

    On many cores a day's share per core is a few row groups, and splits of whole row groups
    are uneven unless each core takes several: Spark's defaults (4 MB, one split per core)
    gave a 2.4M-trade day 12 tasks on 32 cores, the longest a quarter of the total
    (benchmarks/parallelism.py). One executor has at most four cores (`plan_sizing`), each of
    whose shares is tens of row groups, and there every further split only costs its task
    (8 splits on 2 cores: 1.40 s per aggregation of a 2.4M-trade day, against 1.25 s with 2
    and 1.28 s with 4, measured through RayDP).
    """
    return 1 if sizing.executors == 1 else 4


def spark_configs(sizing: SparkSizing) -> dict[str, str]:
    return {
        "spark.driver.extraJavaOptions": JAVA_OPTIONS,
        "spark.executor.extraJavaOptions": JAVA_OPTIONS,
        "spark.ray.raydp_app_master.extraJavaOptions": JAVA_OPTIONS,
        "spark.driver.memory": sizing.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(max(4, sizing.slots * 2)),
        # A read is cut into splits of whole row groups (16k trades, about a quarter MB: see
        # catalog.py), `splits_per_core` per core, so that a day's single file keeps every core busy.
        "spark.sql.files.minPartitionNum": str(splits_per_core(sizing) * sizing.slots),
        "spark.sql.files.openCostInBytes": str(512 * 1024),
        # Every `isin` of literals becomes a set passed by reference, not literals compiled
        # into the generated code (past 10 values by default): see store.spark_slots_condition.
        "spark.sql.optimizer.inSetConversionThreshold": "0",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
    }
