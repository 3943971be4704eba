"""How big the Spark session is: executors from the cluster's CPUs and memory, and its configs."""

from __future__ import annotations

from dataclasses import dataclass

from ohlcv.settings import Settings
from workflows.spark.java import JAVA_OPTIONS

__all__ = ["SparkSizing", "plan_sizing", "spark_configs"]

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


def spark_configs(sizing: SparkSizing) -> dict[str, str]:
    return {
        "spark.driver.extraJavaOptions": JAVA_OPTIONS,
        "spark.executor.extraJavaOptions": JAVA_OPTIONS,
        "spark.ray.raydp_app_master.extraJavaOptions": JAVA_OPTIONS,
        "spark.driver.memory": sizing.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(max(4, sizing.slots * 2)),
        # A read is cut into at least four splits per core, of whole row groups (32k trades,
        # about half a MB: see catalog.py), so that a day's single file keeps every core of a
        # cluster busy. Spark's defaults (4 MB, one split per core) gave a 2.4M-trade day 12
        # tasks on 32 cores, the longest a quarter of the total (benchmarks/parallelism.py).
        "spark.sql.files.minPartitionNum": str(4 * sizing.slots),
        "spark.sql.files.openCostInBytes": str(512 * 1024),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
    }
