"""Against real `ray start --head` clusters with the warehouse and the workflow storage in a bucket:
resume after the cluster is stopped and started again on the same storage, then the scheduler
submitted with `ray job submit` to the second cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from support import utc
from headnode import BIN, HeadNode
from oracle import compare, expected_candles
from ohlcv import timeframes
from ohlcv.catalog import load_candles, load_trades, open_catalog
from ohlcv import object_store
from ohlcv.settings import from_environment
from ohlcv.windows import tick_range
from workflows.orchestration import failpoints
from workflows.scheduling.cron import latest_tick

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster(seconds=300)]

REPO = Path(__file__).resolve().parent.parent
START, END = utc(2024, 6, 3), utc(2024, 6, 4)


def user_environment(tmp_path, **settings: str) -> dict[str, str]:
    """A warehouse with a day of trades, and the environment of a user of the CLI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OHLCV_", "RAY_ADDRESS"))}
    env.update(
        OHLCV_WAREHOUSE=str(tmp_path / "warehouse"),
        OHLCV_FAILPOINT_DIR=str(tmp_path / "failpoints"),
        OHLCV_STEP_RETRY_DELAY="0.5",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(settings)
    ohlcv(env, "init")
    ohlcv(env, "generate", "--out", str(tmp_path / "day.parquet"), "--start", START.isoformat(), "--end", END.isoformat(),
          "--symbols", "2", "--exchanges", "2", "--trades-per-day", "5000")
    ohlcv(env, "ingest", str(tmp_path / "day.parquet"))
    return env


@pytest.fixture
def s3_user_environment(tmp_path, s3_environment) -> dict[str, str]:
    """The same, with the warehouse and the workflow storage in a bucket (a SQLite catalog file)."""
    bucket = s3_environment["BUCKET"]
    return user_environment(
        tmp_path, OHLCV_WAREHOUSE=f"s3://{bucket}/warehouse", OHLCV_WORKFLOW_STORAGE=f"s3://{bucket}/workflow-storage",
        OHLCV_CATALOG_URI=f"sqlite:///{tmp_path / 'catalog.db'}",
    )


def ohlcv(env: dict[str, str], *args: str, expect: int = 0, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "ohlcv"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == expect, f"ohlcv {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def assert_tick_candles(env: dict[str, str], tf_name: str, as_of) -> None:
    settings = from_environment(env)
    catalog = open_catalog(settings)
    tf = timeframes.get(tf_name)
    trades = load_trades(catalog, settings.namespace).scan().to_arrow().to_pylist()
    rng = tick_range(tf, as_of)
    rows = [r for r in load_candles(catalog, settings.namespace, tf).scan().to_arrow().to_pylist()
            if rng.start <= r["window_start"] < rng.end]
    assert rows, f"no {tf_name} candles"
    assert not compare(rows, expected_candles(trades, tf.width, rng.start, rng.end)), tf_name


def journal_entry(settings, workflow_id: str, task_id: str) -> dict:
    """A step's journal entry, read straight from the workflow storage's bucket."""
    filesystem, root = object_store.filesystem(settings.resolved_workflow_storage, settings.fileio_properties())
    with filesystem.open_input_stream(f"{root}/ohlcv/runs/{workflow_id}/{task_id}.json") as stream:
        return json.loads(stream.read())


def test_a_cluster_on_s3_resumes_runs_after_a_restart_and_runs_the_scheduler_as_a_job(s3_user_environment, tmp_path):
    """Workflow storage and warehouse in a bucket: the second cluster shares no disk with the first.
    One test, so the clusters, the trades and Spark start once for both halves."""
    environment = s3_user_environment
    settings = from_environment(environment)
    storage = settings.ray_storage_uri  # the endpoint as Ray's query parameters: built, never written by hand
    assert "endpoint_override=127.0.0.1" in storage
    failed_tick, interrupted_tick = utc(2024, 6, 3, 14, 15), utc(2024, 6, 3, 14, 20)
    failed_id, interrupted_id = "ohlcv-1h-20240603T1415Z", "ohlcv-1m-20240603T1420Z"

    first = HeadNode(storage, tmp_path).start()
    try:
        env = {**environment, "RAY_ADDRESS": first.address}
        failpoints.arm(env["OHLCV_FAILPOINT_DIR"], "commit", "terminal")
        result = ohlcv(env, "run", "--timeframe", "1h", "--as-of", failed_tick.isoformat(), expect=1)
        assert f"{failed_id}: step commit failed: failpoint commit (terminal)" in result.stderr

        # A second tick is stopped in the middle of its Spark step by the cluster going down.
        failpoints.arm(env["OHLCV_FAILPOINT_DIR"], "aggregate", "sleep", seconds=600)
        running = subprocess.Popen([str(BIN / "ohlcv"), "run", "--timeframe", "1m", "--as-of", interrupted_tick.isoformat()],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_path = failpoints.pid_file(env["OHLCV_FAILPOINT_DIR"], "aggregate")
        deadline = time.monotonic() + 300
        while not pid_path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pid_path.exists(), "the 1m tick never reached its Spark step"
    finally:
        first.stop()  # `ray stop`, for this cluster only
    running.wait(timeout=120)
    assert running.returncode != 0

    second = HeadNode(storage, tmp_path).start()
    try:
        second.keep_workflow_actors(environment)
        env = {**environment, "RAY_ADDRESS": second.address}
        listed = ohlcv(env, "workflows", "list").stdout
        assert failed_id in listed and "FAILED" in listed
        assert interrupted_id in listed and "RESUMABLE" in listed

        aggregate_before = journal_entry(settings, failed_id, "aggregate")
        resumed = ohlcv(env, "workflows", "resume", failed_id)
        assert f"{failed_id} SUCCESSFUL" in resumed.stdout
        assert journal_entry(settings, failed_id, "aggregate") == aggregate_before  # its candles came from the checkpoint
        assert_tick_candles(env, "1h", failed_tick)

        resumed_all = ohlcv(env, "workflows", "resume-all", "--interrupted-only")
        assert f"{interrupted_id}: SUCCESSFUL" in resumed_all.stdout
        assert_tick_candles(env, "1m", interrupted_tick)
        shown = ohlcv(env, "workflows", "show", interrupted_id).stdout
        assert "aggregate" in shown and "SUCCESSFUL" in shown

        scheduler_runs_as_a_ray_job(environment, second)
    finally:
        second.stop()
    assert not (tmp_path / "warehouse").exists() and not (tmp_path / "workflow-storage").exists()


def scheduler_runs_as_a_ray_job(environment: dict[str, str], head: HeadNode) -> None:
    """`ray job submit -- ohlcv schedule --once`, its metrics and log lines, status, and a
    long-running scheduler stopped by `ray job stop`. The S3 keys are the nodes' own
    environment, never the job's: a job's runtime_env is kept in the workflow checkpoints."""
    as_of = utc(2024, 6, 3, 18, 15)
    job_env = {k: environment[k] for k in ("OHLCV_WAREHOUSE", "OHLCV_CATALOG_URI", "OHLCV_WORKFLOW_STORAGE", "OHLCV_STEP_RETRY_DELAY")}
    for _ in range(3):  # Ray's own advice when its job agent is still starting: "try again later"
        submitted = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--working-dir", str(REPO),
             "--runtime-env-json", json.dumps({"env_vars": job_env}), "--",
             "ohlcv", "schedule", "--once", "--as-of", as_of.isoformat()],
            env={**environment, "RAY_ADDRESS": ""}, capture_output=True, text=True, timeout=900,
        )
        if "No available agent" not in submitted.stderr:
            break
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    [job] = [j for j in head.jobs() if "ohlcv schedule --once" in j["entrypoint"]]
    assert job["status"] == "SUCCEEDED", job
    for tf in timeframes.resolve("all"):
        assert f"{tf.name} fired {latest_tick(tf, as_of):%Y-%m-%dT%H:%MZ}" in submitted.stdout
        assert f"{tf.name} finished" in submitted.stdout
    for name in ("1m", "5m", "30m", "1h"):
        assert_tick_candles(environment, name, latest_tick(timeframes.get(name), as_of))

    # The pipeline's metrics reach the node's Prometheus endpoint (exported every few seconds).
    wanted = ("ohlcv_runs_total", "ohlcv_step_seconds", "ohlcv_candles_written_total", "ohlcv_freshness_lag_seconds")
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline and not all(name in text for name in wanted):
        time.sleep(2)
        text = head.metrics()
    assert all(name in text for name in wanted), [name for name in wanted if name not in text]
    assert 'status="succeeded"' in text and 'timeframe="1h"' in text

    # Worker log lines say which workflow and step they come from.
    tick_id = f"ohlcv-1h-{latest_tick(timeframes.get('1h'), as_of):%Y%m%dT%H%MZ}"
    logs = "".join(p.read_text(errors="replace") for p in Path(head.temp_dir).glob("session_*/logs/worker-*.err"))
    assert f"[{tick_id}/commit] workflows.orchestration.retry: done in" in logs
    assert f"[{tick_id}/commit] ohlcv.store: committed gold_ohlcv_1h" in logs

    # The status command, from outside the job, sees what the job did.
    status = ohlcv({**environment, "RAY_ADDRESS": head.address}, "status").stdout
    assert f"{latest_tick(timeframes.get('1h'), as_of):%Y-%m-%d %H:%M}" in status

    # The long-running scheduler stops cleanly on `ray job stop` (SIGTERM).
    ray_job = [str(BIN / "ray"), "job"]
    # No catch-up at start (OHLCV_CATCHUP=skip): this half is about starting and stopping.
    started = subprocess.run(
        [*ray_job, "submit", "--address", head.dashboard, "--no-wait", "--submission-id", "scheduler-test",
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"env_vars": {**job_env, "OHLCV_CATCHUP": "skip"}}),
         "--", "ohlcv", "schedule"],
        env={**environment, "RAY_ADDRESS": ""}, capture_output=True, text=True, timeout=300,
    )
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 300
    while "scheduler started" not in head.job_logs("scheduler-test") and time.monotonic() < deadline:
        time.sleep(1)
    assert "scheduler started" in head.job_logs("scheduler-test")
    stopped = subprocess.run([*ray_job, "stop", "--address", head.dashboard, "scheduler-test"],
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    [job] = [j for j in head.jobs() if j.get("submission_id") == "scheduler-test"]
    assert job["status"] == "STOPPED"
    assert "scheduler stopped" in head.job_logs("scheduler-test")
