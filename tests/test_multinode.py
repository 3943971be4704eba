"""A head and two worker nodes on this machine, sharing no disk (warehouse and workflow storage
in a bucket of a real S3 endpoint): Spark executors spread over the nodes, the control plane
stays on the head, chunks of a backfill aggregated at once still commit in order, and losing a
worker node in the middle of the Spark step still ends in a completed workflow whose candles
equal the oracle's. One cluster run checks all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oracle import compare, expected_candles
from ohlcv import timeframes
from ohlcv.catalog import load_candles, load_trades, open_catalog
from ohlcv.settings import from_environment

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster(seconds=130)]

SCRIPT = Path(__file__).with_name("multinode.py")


@pytest.fixture
def s3_work(tmp_path, s3_environment, monkeypatch) -> Path:
    """The warehouse and the workflow storage in a bucket; locally only the catalog file."""
    bucket = s3_environment["BUCKET"]
    monkeypatch.setenv("OHLCV_WAREHOUSE", f"s3://{bucket}/warehouse")
    monkeypatch.setenv("OHLCV_WORKFLOW_STORAGE", f"s3://{bucket}/workflow-storage")
    monkeypatch.setenv("OHLCV_CATALOG_URI", f"sqlite:///{tmp_path / 'catalog.db'}")
    return tmp_path


def run_cluster(work: Path, mode: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    environment["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parent.parent), environment.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, str(SCRIPT), str(work), mode], env=environment, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_candles_match_the_oracle(work: Path) -> None:
    settings = from_environment()
    catalog = open_catalog(settings)
    trades = load_trades(catalog, settings.namespace).scan().to_arrow().to_pylist()
    for tf in timeframes.resolve("all"):
        rows = load_candles(catalog, settings.namespace, tf).scan().to_arrow().to_pylist()
        assert rows and not compare(rows, expected_candles(trades, tf.width)), tf.name
    # Nothing of the tables or the runs on local disk: the input file and the catalog only.
    assert sorted(p.name for p in work.rglob("*") if p.is_file()) == ["catalog.db", "day.parquet", "history.parquet"]


def test_executors_spread_and_losing_a_worker_node_mid_spark_step_still_completes_correctly(s3_work):
    outcome = run_cluster(s3_work, "node-loss")
    # Before the loss: one executor on each worker node, the control plane on the head.
    assert len(outcome["executor_nodes"]) == 2
    assert sorted(set(outcome["executor_nodes"])) == outcome["worker_nodes"]
    assert set(outcome["control_nodes"].values()) == {outcome["head_node"]}
    # Three one-day chunks, two in flight: some aggregations overlapped, the commits did not.
    assert outcome["concurrent_chunks"] == 3 and outcome["concurrent_overlaps"], outcome
    assert outcome["commits_in_order"]
    assert outcome["removed_node"] in outcome["worker_nodes"]
    assert outcome["removed_while"] == "RUNNING"  # the node went away during the Spark step
    assert outcome["status"] == "SUCCESSFUL"
    # Spark absorbed the loss, or the watchdog failed the try (transient) and a retry on a fresh
    # session succeeded; a retry that raced Ray's detection of the dead node may fail once more.
    *failed, last = outcome["aggregate_attempts"]
    assert last == "ok" and set(failed) <= {"transient"} and len(failed) <= 2, outcome["aggregate_errors"]
    assert outcome["removed_node"] not in outcome["executors_after"]
    assert_candles_match_the_oracle(s3_work)
