"""The Spark service: one RayDP Spark session kept warm in a named, detached Ray actor.

`raydp.init_spark` costs seconds, and a SparkSession cannot travel to a Ray task, so the
session lives in one actor that every caller (CLI, workflow step, scheduler) reaches by name.
Its executors are Ray actors too, sized from the cluster's CPUs and memory. The actor asks for
no CPU itself (its executors hold the cores); callers that only wait on it should ask for none
either, or they can starve the executors of a small cluster.

This module is the actor and its lifecycle (start, find, stop); `workflows.spark.client` holds
the requests callers make of it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
import uuid
from datetime import datetime

from ohlcv.errors import ConfigError, OhlcvError, ServiceUnavailable
from ohlcv.settings import Settings
from workflows import _ray_compat
from workflows.orchestration import failure_kinds
from workflows.runtime import NAMESPACE, ensure_ray, head_affinity, import_ray, use_arrow_threads
from workflows.spark.java import require_java
from workflows.spark.native_copies import prune_native_copies
from workflows.spark.sizing import SparkSizing, plan_sizing, spark_configs

__all__ = [
    "SERVICE_NAME", "SparkService", "start_service", "spark_service", "existing_service", "stop_service", "live_executors",
    "aggregate_result", "candles_without_spark",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "ohlcv-spark"
_GIB = 1024**3


class SparkService:
    """Holds the RayDP Spark session; every public method is one request from a caller."""

    def __init__(self, sizing: SparkSizing, app_name: str) -> None:
        # Nothing that can fail here: an error in an actor's constructor reaches callers only as
        # text inside ActorDiedError, while an error in `start` keeps its type (ConfigError).
        self.sizing = sizing
        self.app_name = app_name
        self.spark = None
        self.small_reads = None  # a session of the same context for reads of few trades (ohlcv/store.py)
        self.startup_seconds = 0.0
        self.native_copies_removed = 0  # folders of Ray's Java library this start deleted
        self.requests = 0
        self._catalogs: dict[tuple[str, str], object] = {}
        self._largest_ids: tuple[object, dict] = (None, {})  # (trade id index snapshot, largest id per day)
        self._starting = threading.Lock()

    def start(self) -> dict:
        """Start the Spark session unless it runs; every caller waits for the same start."""
        with self._starting:
            if self.spark is None:
                # Spark's Python workers run whatever PYSPARK_PYTHON names ("python3" on PATH by
                # default), which lacks this environment's packages.
                os.environ["PYSPARK_PYTHON"] = sys.executable
                require_java()
                import raydp

                started = time.monotonic()
                try:
                    spark = raydp.init_spark(
                        self.app_name, self.sizing.executors, self.sizing.executor_cores, self.sizing.executor_memory,
                        placement_group_strategy=self.sizing.placement, configs=spark_configs(self.sizing),
                    )
                except BaseException:
                    raydp.stop_spark()
                    raise
                spark.sparkContext.setLogLevel("WARN")
                self.small_reads = spark.newSession()  # the context's configs, its own SQL settings
                self.small_reads.conf.set("spark.sql.files.minPartitionNum", "1")
                self.startup_seconds = time.monotonic() - started
                self.spark = spark
                self.native_copies_removed = _prune_native_copies()
        return self.info()

    def info(self) -> dict:
        return {
            "app_name": self.app_name,
            "startup_seconds": round(self.startup_seconds, 2),
            "requests": self.requests,
            "executors": self.sizing.executors,
            "executor_cores": self.sizing.executor_cores,
            "executor_memory": self.sizing.executor_memory,
            "placement": self.sizing.placement,
            "native_copies_removed": self.native_copies_removed,
            "pid": os.getpid(),
            "arrow_threads": _arrow_threads(),  # what the last request's settings gave (workflows.runtime.use_arrow_threads)
            "ready": self.spark is not None,  # the Spark session is up (`start` returned)
            # Spark jobs running now (a request's aggregation is one): whether Spark is busy.
            "active_jobs": len(self.spark.sparkContext.statusTracker().getActiveJobsIds()) if self.spark is not None else 0,
        }

    def _catalog(self, settings: Settings):
        from ohlcv.catalog import open_catalog

        key = (settings.resolved_catalog_uri, settings.warehouse_uri)
        if key not in self._catalogs:
            self._catalogs[key] = open_catalog(settings)
        return self._catalogs[key]

    def _packed_order_fits(self, settings: Settings, ranges: list[tuple[datetime, datetime]], chosen) -> bool:
        """Whether the trade id index lets the packed order rank the ids of `ranges` (no day
        holds a number too large for it); a missing index says nothing, so the packed order is
        tried. Read once per index snapshot: ingest rewrites the index, ticks only read it."""
        from pyiceberg.exceptions import NoSuchTableError

        from ohlcv import aggregate, schema as s
        from ohlcv.catalog import load_table
        from ohlcv.dedup import days_of, largest_number_by_day
        from ohlcv.windows import WindowRange

        try:
            index = load_table(self._catalog(settings), settings.namespace, s.TRADE_ID_RANGES_TABLE)
        except NoSuchTableError:
            return True
        snapshot = index.current_snapshot()
        key = (settings.warehouse_uri, settings.namespace, snapshot.snapshot_id if snapshot else None)
        if self._largest_ids[0] != key:
            self._largest_ids = (key, largest_number_by_day(index) if snapshot else {})
        largest = self._largest_ids[1]
        days = days_of(WindowRange(start, end) for start, end in ranges)
        return max((largest.get(day, 0) for day in days), default=0) <= aggregate.largest_packed_id(chosen)

    def _over_trades(
        self, settings: Settings, ranges: list[tuple[datetime, datetime]], request_id: str | None, label: str, work,
        snapshot_id: int | None = None, slot_us: int | None = None,
    ):
        """Run `work(unique_trades, read_plan)` over the deduplicated trades of `ranges`, as of
        `snapshot_id` (default: the trades snapshot current now, which the read plan names).

        The trades are deduplicated here only where that snapshot may hold two versions of a
        trade (ohlcv/dedup.py): elsewhere ingest already kept one. `plan.deduplicated` says which.
        Nothing is cached: the work reads the trades once (the candles' aggregation carries the
        reconciliation counts), or twice only for the rare exact-order retry.
        """
        from ohlcv import aggregate
        from ohlcv.catalog import load_trades
        from ohlcv.dedup import duplicate_days
        from ohlcv.store import read_trades, scratch_folder
        from ohlcv.windows import WindowRange

        self.requests += 1
        use_arrow_threads(settings.arrow_threads)  # the pruned reads and hand-overs (Ray gave this actor one)
        windows = [WindowRange(start, end) for start, end in ranges]
        request_id = request_id or uuid.uuid4().hex
        self.spark.sparkContext.setJobGroup(request_id, f"ohlcv {label} {', '.join(map(str, windows))}", interruptOnCancel=True)
        try:
            table = load_trades(self._catalog(settings), settings.namespace)
            with scratch_folder(table) as scratch:
                trades, plan = read_trades(self.spark, table, windows, settings.read_mode, self.sizing.slots, snapshot_id,
                                           slot_us, scratch, small_spark=self.small_reads)
                if duplicate_days(table, plan.snapshot).meets(windows):
                    unique = aggregate.dedupe_trades(trades, partitions=aggregate.shuffle_partitions(plan.rows, self.sizing.slots))
                else:
                    unique, plan = aggregate.as_unique(trades), dataclasses.replace(plan, deduplicated=False)
                return work(unique, plan)
        except OhlcvError:
            raise
        except Exception as exc:  # py4j errors are not picklable: pass on their meaning, not the object
            raise failure_kinds.classify(exc) from None

    def aggregate(
        self,
        settings: Settings,
        timeframes: list[str],
        ranges: list[tuple[datetime, datetime]],
        request_id: str | None = None,
        count_groups: tuple[tuple[tuple[datetime, datetime], ...], ...] = (),
        snapshot_id: int | None = None,
    ) -> dict:
        """Candles of `timeframes` for trades in `ranges`, from one read of the trades (as of
        `snapshot_id`, or now), and the distinct trades per (exchange, symbol) in each of
        each of `count_groups`, a group being the ranges of one timeframe (for reconciliation).

        The Spark jobs run in a job group named `request_id`, so `cancel(request_id)` stops them.
        """
        from ohlcv import aggregate, timeframes as tfs
        from ohlcv.windows import WindowRange

        started = time.monotonic()
        chosen = [tfs.get(name) for name in timeframes]
        slot_us = min(tf.width_us for tf in chosen)  # every coarser width is a multiple of it
        counted = tuple([WindowRange(lo, hi) for lo, hi in group] for group in count_groups)

        use_arrow_threads(settings.arrow_threads)  # Ray gave this actor's Arrow one thread
        small = candles_without_spark(self._catalog(settings), settings, timeframes, ranges, count_groups, snapshot_id)
        if small is not None:
            self.requests += 1
            return small

        def work(unique, plan) -> dict:
            # Every trade read lies in `ranges` (store.read_trades keeps no other).
            read = [WindowRange(lo, hi) for lo, hi in ranges]
            computed = aggregate.compute_candles(unique, chosen, deduped=True, counted=counted, slot_us=slot_us,
                                                 packed=self._packed_order_fits(settings, ranges, chosen), read=read)
            return aggregate_result(computed, plan, "spark", count_groups, started)

        return self._over_trades(settings, ranges, request_id, ",".join(timeframes), work, snapshot_id=snapshot_id, slot_us=slot_us)

    def trade_counts(self, settings: Settings, timeframes: list[str], start: datetime, end: datetime) -> dict:
        """Distinct trades per (exchange, symbol, window) of each timeframe, for trades in [start, end)."""
        from ohlcv import aggregate, timeframes as tfs

        chosen = [tfs.get(name) for name in timeframes]

        def work(unique, plan) -> dict:
            frames = aggregate.trades_per_window(unique, chosen)
            try:
                return {name: aggregate.collect_arrow(frame, aggregate.WINDOW_COUNTS) for name, frame in frames.items()}
            finally:
                aggregate.release(frames)

        return self._over_trades(settings, [(start, end)], None, "counts " + ",".join(timeframes), work)

    def warm_up(self, folder: str, rounds: int = 1) -> float:
        """Aggregate a small synthetic hour of trades a few times, read from a Parquet file in
        `folder` the way a tick reads its trades (handed over, in one task), so that the first
        command after `ohlcv up` does not pay for the JVM's first compilations: the first 1m
        tick's Spark took 7.7 s there, the next ones about 1 s (measured on 2 cores). No table
        is read or written; the seconds spent."""
        from datetime import timedelta, timezone

        import pyarrow.parquet as pq

        from ohlcv import aggregate, timeframes as tfs
        from ohlcv.generate import GenerateSpec, generate
        from ohlcv.store import SPARK_TRADE_SCHEMA, one_task
        from ohlcv.windows import WindowRange

        started = time.monotonic()
        start = datetime(2024, 1, 1, tzinfo=timezone.utc)
        hour = WindowRange(start, start + timedelta(hours=1))
        path = os.path.join(folder, f"warm-up-{uuid.uuid4().hex[:8]}.parquet")
        pq.write_table(generate(GenerateSpec(hour.start, hour.end, trades_per_day=24 * 20_000)), path)
        try:
            one_minute = tfs.get("1m")
            for _ in range(rounds):
                trades = aggregate.as_unique(one_task(self.small_reads.read.schema(SPARK_TRADE_SCHEMA).parquet(path)))
                aggregate.compute_candles(trades, [one_minute], deduped=True, counted=([hour],), slot_us=one_minute.width_us)
        finally:
            os.remove(path)
        return time.monotonic() - started

    def cancel(self, request_id: str) -> None:
        """Stop the Spark jobs of a request (a timed-out step), leaving the session up."""
        self.spark.sparkContext.cancelJobGroup(request_id)
        log.warning("cancelled the Spark jobs of %s", request_id)

    def stop(self) -> None:
        import raydp

        raydp.stop_spark()


def _arrow_threads() -> int:
    import pyarrow as pa

    return pa.cpu_count()


def aggregate_result(computed, plan, engine: str, count_groups: tuple, started: float) -> dict:
    """What an aggregation request returns (workflows.spark.client.Aggregated's fields)."""
    return {
        "candles": computed.candles,
        "source_counts": dict(zip(count_groups, computed.counts)),
        "files": plan.files,
        "bytes": plan.bytes,
        "read_mode": plan.mode,
        "deduplicated": plan.deduplicated,
        "candle_order": computed.order,
        "engine": engine,
        "trades_snapshot": plan.snapshot,
        "seconds": time.monotonic() - started,
    }


def candles_without_spark(
    catalog, settings: Settings, timeframes: list[str], ranges: list[tuple[datetime, datetime]],
    count_groups: tuple = (), snapshot_id: int | None = None,
) -> dict | None:
    """`SparkService.aggregate`'s result for a request the manifests estimate at no more than
    `settings.driver_max_trades` trades, read and computed in this process in Arrow, with no
    Spark job (ohlcv/arrow_candles.py); None for a larger request, which Spark takes. The
    service's driver runs it, and so does a step whose Spark service is still starting (see
    workflows.spark.client.aggregate_chunk). The trades are deduplicated exactly where a Spark
    request would deduplicate them."""
    from ohlcv import aggregate, timeframes as tfs
    from ohlcv.arrow_candles import unique_trades
    from ohlcv.catalog import load_trades
    from ohlcv.windows import WindowRange

    if settings.driver_max_trades <= 0:
        return None
    started = time.monotonic()
    windows = [WindowRange(start, end) for start, end in ranges]
    try:
        read = unique_trades(load_trades(catalog, settings.namespace), windows, settings.driver_max_trades, snapshot_id)
        if read is None:
            return None
        unique, plan = read
        counted = tuple([WindowRange(lo, hi) for lo, hi in group] for group in count_groups)
        # Every trade read lies in `ranges` (store.read_in_driver keeps no other).
        computed = aggregate.compute_candles_in_arrow(unique, [tfs.get(name) for name in timeframes], counted=counted, read=windows)
        return aggregate_result(computed, plan, "arrow", count_groups, started)
    except OhlcvError:
        raise
    except Exception as exc:  # the same meaning as a Spark request's failure
        raise failure_kinds.classify(exc) from None


def _prune_native_copies() -> int:
    """Delete the copies of Ray's Java library this start (and earlier ones) left in /tmp/ray:
    both JVMs have loaded theirs by now (workflows/spark/native_copies.py). A failure here is
    logged, never a failed start."""
    try:
        return prune_native_copies().folders
    except OSError:
        log.warning("could not prune Ray's Java library copies in /tmp/ray", exc_info=True)
        return 0


def start_service(settings: Settings) -> None:
    """Begin starting the Spark service, without waiting for it.

    Commands call this as soon as Ray is up, so that the seconds RayDP takes to start overlap
    the workflow's own start-up; the first step that needs Spark then waits for the rest.
    """
    ensure_ray(settings)
    if existing_service() is None:
        handle = _create(settings)  # in a variable: a method called on a temporary handle fails
        handle.start.remote()


def existing_service():
    """The running service's handle, or None."""
    try:
        return import_ray().get_actor(SERVICE_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def _create(settings: Settings):
    ray = import_ray()
    resources = ray.cluster_resources()
    sizing = plan_sizing(settings, resources.get("CPU", 1), resources.get("memory", 4 * _GIB))
    app_name = f"{SERVICE_NAME}-{uuid.uuid4().hex[:8]}"
    return (
        ray.remote(SparkService)
        .options(
            name=SERVICE_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=8,  # a backfill's chunks in flight, ticks, and a cancel that must not queue
            scheduling_strategy=head_affinity(),  # the Spark driver: see runtime.head_affinity
        )
        .remote(sizing, app_name)
    )


def spark_service(settings: Settings):
    """A handle to the running Spark service, starting it on first use."""
    ray = import_ray()
    if not settings.ray_address and not ray.is_initialized():
        require_java()  # fail before paying for a local Ray start; remote nodes check their own Java
    ensure_ray(settings)
    handle = existing_service() or _create(settings)
    try:
        info = ray.get(handle.start.remote())  # at once when it runs; else waits for the one start
    except Exception as exc:
        log.warning("the Spark service did not start: %s", exc)  # the whole story, for the step's log
        _kill(handle)
        error = failure_kinds.classify(exc)
        # A missing prerequisite (no Java on the node) stays terminal; anything else transient:
        # a service that failed to start is worth another try on a fresh actor.
        if not isinstance(error, ConfigError):
            error = ServiceUnavailable(f"the Spark service did not start: {error}")
        raise error from None
    if info["requests"] == 0:
        log.info("Spark service %s up (started in %.1fs)", info["app_name"], info["startup_seconds"])
    return handle


def _kill(handle) -> None:
    try:
        import_ray().kill(handle)
    except Exception:  # noqa: BLE001 - already gone
        pass


def live_executors() -> int:
    """Spark executors (Ray actors) alive now, from Ray's own actor table.

    RayDP does not tell Spark when an executor's node dies: Spark notices only after its
    heartbeat timeout, and a job meanwhile hangs. Ray's actor table knows at once.
    """
    return sum(
        1 for actor in _ray_compat.actor_table()
        if actor.get("State") == "ALIVE" and "RayDPExecutor" in (actor.get("ActorClassName") or "")
    )


def stop_service() -> bool:
    """Stop the Spark service if one runs; True when one was stopped."""
    handle = existing_service()
    if handle is None:
        return False
    ray = import_ray()
    try:
        ray.get(handle.stop.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - a session that lost executors may not stop cleanly: kill it
        log.warning("the Spark service did not stop cleanly; killing it", exc_info=True)
    finally:
        ray.kill(handle)
    return True
