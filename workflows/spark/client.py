"""The requests callers make of the Spark service: a chunk's candles (watched for lost
executors), per-window trade counts, and cancelling a request that timed out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from ohlcv.errors import TransientError
from ohlcv.settings import Settings
from ohlcv.windows import Chunk, WindowRange
from workflows.runtime import call, import_ray
from workflows.spark.service import candles_without_spark, existing_service, live_executors, spark_service, start_service, stop_service

__all__ = ["Aggregated", "count_group", "aggregate_chunk", "WATCHDOG_SECONDS", "trade_counts", "cancel_request"]

log = logging.getLogger(__name__)


@dataclass
class Aggregated:
    """What the Spark service returned for one chunk."""

    candles: dict[str, pa.Table]
    # Distinct trades per (exchange, symbol) over each timeframe's target ranges (keyed by
    # `count_group`), counted apart from the candles.
    source_counts: dict[tuple[tuple[datetime, datetime], ...], pa.Table]
    files: int
    bytes: int
    read_mode: str
    seconds: float
    trades_snapshot: int | None = None  # the trades snapshot the candles were computed from
    deduplicated: bool = True  # False: ingest vouched that the trades read hold one version each
    # "packed": trades ranked by one number per trade; "exact": some id needed the full order
    # (ohlcv/aggregate.py, compute_candles).
    candle_order: str = "exact"
    # "spark", or "arrow": a request of few trades computed in the service's driver with no
    # Spark job (ohlcv/arrow_candles.py, Settings.driver_max_trades).
    engine: str = "spark"


def count_group(chunk: Chunk, tf) -> tuple[tuple[datetime, datetime], ...]:
    """The key of a timeframe's reconciliation counts: its target ranges."""
    return tuple((rng.start, rng.end) for rng in chunk.ranges_of(tf))


def aggregate_chunk(settings: Settings, chunk: Chunk, request_id: str | None = None) -> Aggregated:
    """Candles of every timeframe of the chunk over its read range: one Spark pass, or for few
    trades one computation in Arrow, in the service's driver, or here while the service is
    still starting (a cold command's first tick does not wait the 20 s RayDP takes)."""
    names = [tf.name for tf in chunk.timeframes]
    groups = tuple(dict.fromkeys(count_group(chunk, tf) for tf in chunk.timeframes))
    reads = [(rng.start, rng.end) for rng in chunk.read_ranges]
    service, result = _ready_service(settings), None
    if service is None:  # still starting: a request of few trades is computed here meanwhile
        from ohlcv.catalog import open_catalog

        result = candles_without_spark(open_catalog(settings), settings, names, reads, groups, chunk.trades_snapshot)
    if result is None:
        service = service or spark_service(settings)  # keep the handle in a variable: see DESIGN section 6
        request_id = request_id or f"aggregate-{chunk.read}"
        ref = service.aggregate.remote(settings, names, reads, request_id, groups, chunk.trades_snapshot)
        result = _await_with_watchdog(settings, ref, request_id)
    return Aggregated(
        result["candles"], result["source_counts"], result["files"], result["bytes"], result["read_mode"], result["seconds"],
        result["trades_snapshot"], result["deduplicated"], result["candle_order"], result["engine"],
    )


def _ready_service(settings: Settings):
    """The Spark service's handle when its session is up (one call, no second round trip to
    find it), or when every request must go to Spark (after waiting for its start); otherwise
    None, its start begun (or going on) in the background for the requests that need Spark."""
    if settings.driver_max_trades <= 0:
        return spark_service(settings)
    handle = existing_service()
    if handle is None:
        start_service(settings)
        return None
    try:
        if call(handle.info.remote(), timeout=10).get("ready", True):  # older services: no flag
            return handle
    except Exception:  # noqa: BLE001 - a service that does not answer is treated as still starting
        log.debug("the Spark service did not answer whether it is ready", exc_info=True)
    return None


WATCHDOG_SECONDS = 5.0


def _await_with_watchdog(settings: Settings, ref, request_id: str) -> dict:
    """Wait for a Spark request, checking every few seconds that its executors still live.

    A lost executor (its node died) makes Spark hang until its heartbeat timeout; instead, the
    request is cancelled and the session stopped, and the try fails as transient: the retry
    starts a fresh session on the nodes that are left. The yardstick is the most executors seen
    alive during the request, not the number asked for: a cluster that could only ever place
    some of them is slow, not broken.
    """
    ray = import_ray()
    most_alive = live_executors()
    while True:
        ready, _ = ray.wait([ref], timeout=WATCHDOG_SECONDS)
        if ready:
            return call(ref)
        alive = live_executors()
        most_alive = max(most_alive, alive)
        if alive < most_alive:
            log.warning("%d of %d Spark executors left: restarting the Spark session", alive, most_alive)
            cancel_request(settings, request_id)
            stop_service()
            raise TransientError(
                f"Spark executors alive fell from {most_alive} to {alive} (a node died?); the Spark session was restarted"
            )


def trade_counts(settings: Settings, tfs, rng: WindowRange) -> dict[str, pa.Table]:
    """Distinct trades per window of each timeframe over `rng`, computed by the Spark service."""
    service = spark_service(settings)
    return call(service.trade_counts.remote(settings, [tf.name for tf in tfs], rng.start, rng.end))


def cancel_request(settings: Settings, request_id: str) -> None:
    """Stop the Spark jobs of a request that timed out; quiet when the service is gone."""
    try:
        service = spark_service(settings)
        call(service.cancel.remote(request_id), timeout=30)
    except Exception:  # noqa: BLE001 - the try is being abandoned anyway
        log.warning("could not cancel Spark request %s", request_id, exc_info=True)
