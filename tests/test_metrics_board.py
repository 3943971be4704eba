"""The Grafana board against a real scrape: after real ticks (one of them failing its audit), the
session node's metrics endpoint has every series and label the board queries, and every series
carries one timeframe."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard_queries import missing_from_scrape
from ohlcv import timeframes
from ohlcv.errors import RunFailed
from support import AS_OF
from workflows.orchestration import failpoints, runs

pytestmark = pytest.mark.slow

BOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "ohlcv.json"
JOBS = {*timeframes.TIMEFRAMES, "upkeep"}


def scrape() -> str:
    import ray

    port = ray._private.worker._global_node.metrics_export_port  # the node's Prometheus endpoint
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_every_series_the_board_queries_is_exported_with_one_timeframe_each(fast, workflows, day_of_trades):
    runs.run_tick(fast, timeframes.get("5m"), AS_OF["5m"])
    failpoints.arm(fast.failpoint_dir, "aggregate", "corrupt", kinds=["high_below_low"])
    with pytest.raises(RunFailed, match="validate"):
        runs.run_tick(fast, timeframes.get("1h"), AS_OF["1h"])

    board = json.loads(BOARD.read_text())

    def failures(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("ray_ohlcv_validation_failures_total{")]

    # Workers export every few seconds. Wait for this test's failed audit too: the session's node
    # may show another test's failure first, which alone would satisfy the board's queries.
    deadline, missing, text = time.monotonic() + 90, ["nothing scraped yet"], ""
    while (missing or not any('timeframe="1h"' in line for line in failures(text))) and time.monotonic() < deadline:
        time.sleep(3)
        text = scrape()
        missing = missing_from_scrape(board, text)
    assert not missing, missing

    ours = "\n".join(line for line in text.splitlines() if line.startswith("ray_ohlcv_"))
    labelled = set(re.findall(r'timeframe="([^"]*)"', ours))
    assert labelled and labelled <= JOBS, labelled  # never a comma list of timeframes
    assert any('timeframe="1h"' in line for line in failures(ours)), failures(ours)  # the audit that failed, under its timeframe
