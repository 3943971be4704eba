"""The benchmark's --quick size runs to the end and reports every figure (no time is asserted:
speed is the benchmark's business, not the tests')."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Not in the default run (its runtime would take most of the suite's budget): `pytest -m bench`,
# which `.ci/run` runs after the README's test command.
pytestmark = [pytest.mark.slow, pytest.mark.bench]

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "project_aggregation_seconds", "plain_spark_seconds", "duckdb_seconds", "end_to_end_seconds",
    "warm_tick_seconds", "cold_tick_seconds", "project_peak_bytes", "plain_spark_peak_bytes", "duckdb_peak_bytes",
    "ingest_seconds", "service_startup_seconds", "duckdb_load_seconds", "duckdb_pipeline_seconds",
)
RATIOS = ("aggregation / plain spark", "aggregation / duckdb", "end to end / aggregation", "ingest / duckdb load",
          "day pipeline / duckdb pipeline", "warm 1m tick seconds")


def finite(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def test_the_quick_benchmark_reports_every_figure(tmp_path):
    out = tmp_path / "latest.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OHLCV_", "RAY_ADDRESS"))}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--ticks", "3", "--history-days", "2",
         "--data", str(tmp_path / "data"), "--out", str(out)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpus"] == os.cpu_count()
    assert {"ray", "raydp", "pyspark", "pyiceberg", "duckdb", "java"} <= report["versions"].keys()
    quick = report["sizes"]["quick"]
    missing = [name for name in FIGURES if not finite(quick.get(name))]
    assert not missing, missing
    assert len(quick["warm_tick_seconds"]) == 3
    # The ingest is timed as DuckDB's load is: as many times, each into an empty warehouse.
    assert len(quick["ingest_seconds"]) == len(quick["duckdb_load_seconds"]) == report["plan"]["repeats"]
    # The references with the tightest targets are timed before and after the project.
    assert len(quick["plain_spark_seconds"]) == len(report["history_backfill"]["duckdb_seconds"]) == 2 * report["plan"]["repeats"]
    assert all(finite(report["ratios"]["quick"][name]) for name in RATIOS)
    history = report["history"]
    assert history["days"] == 2 and finite(history["one_day_seconds"]) and finite(history["many_days_seconds"])
    assert finite(report["ratios"]["history"]["tick with history / tick with 1 day"])
    assert history["late_trades"] == 100 and finite(history["late_tick_seconds"])
    assert finite(report["ratios"]["history"]["late tick / plain tick"])
    backfill = report["history_backfill"]
    assert backfill["days"] == 3 and finite(backfill["project_seconds"]) and finite(backfill["duckdb_seconds"])
    assert finite(report["ratios"]["history backfill"]["history backfill / duckdb"])
    assert report["parallelism"]["largest_share"] == 0.4 and finite(report["ratios"]["parallelism"]["parallelism ceiling"])
    for line in ("aggregation / duckdb", "peak memory, project (GiB)", "warm 1m tick", "cold first 1m tick"):
        assert line in result.stdout
