"""Ray metrics of the pipeline, shown by the Ray dashboard's metrics view (Prometheus).

Every series carries exactly one `timeframe` label (a timeframe's name, or "upkeep"); a step
shared by several timeframes (a backfill chunk) is recorded once for each. The Grafana board in
deploy/grafana queries these names with Ray's `ray_` prefix.

Metric objects are created lazily, once per process, because `ray.util.metrics` needs a
connected Ray worker. Recording never raises: metrics must not fail a run.
"""

from __future__ import annotations

import logging
from functools import lru_cache

__all__ = ["run_finished", "step_finished", "candles_written", "validation_failed", "freshness_lag"]

log = logging.getLogger(__name__)
_STEP_SECONDS_BOUNDARIES = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]


@lru_cache(maxsize=None)
def _metrics():
    from ray.util import metrics as m

    return {
        "runs": m.Counter("ohlcv_runs_total", "Workflow runs by timeframe and final status.", ("timeframe", "status")),
        "step_seconds": m.Histogram(
            "ohlcv_step_seconds", "Duration of successful workflow steps.", _STEP_SECONDS_BOUNDARIES, ("timeframe", "step")
        ),
        "candles": m.Counter("ohlcv_candles_written_total", "Candles inserted or updated.", ("timeframe",)),
        "validation": m.Counter("ohlcv_validation_failures_total", "Failed audit checks.", ("timeframe", "check")),
        "freshness": m.Gauge("ohlcv_freshness_lag_seconds", "Now minus the end of the newest window a scheduled tick published (backfills leave it alone).", ("timeframe",)),
    }


def _safely(action) -> None:
    try:
        action(_metrics())
    except Exception:  # noqa: BLE001 - metrics are best effort
        log.debug("metric not recorded", exc_info=True)


def run_finished(timeframe: str, status: str) -> None:
    _safely(lambda m: m["runs"].inc(1, {"timeframe": timeframe, "status": status}))


def step_finished(timeframe: str, step: str, seconds: float) -> None:
    _safely(lambda m: m["step_seconds"].observe(seconds, {"timeframe": timeframe, "step": step}))


def candles_written(timeframe: str, count: int) -> None:
    if count:
        _safely(lambda m: m["candles"].inc(count, {"timeframe": timeframe}))


def validation_failed(timeframe: str, check: str, count: int) -> None:
    _safely(lambda m: m["validation"].inc(count, {"timeframe": timeframe, "check": check}))


def freshness_lag(timeframe: str, seconds: float) -> None:
    _safely(lambda m: m["freshness"].set(seconds, {"timeframe": timeframe}))
