"""Tick and backfill workflows on a real local Ray cluster with real workflow storage:
end to end per timeframe, failures and resume, retries with a delay, a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest


from support import ALL, AS_OF, run_chunks, stored_trades, table_rows, utc, values, warehouse_with
from oracle import compare, expected_candles
from ohlcv import timeframes
from ohlcv.errors import RunFailed
from ohlcv.windows import WindowRange, tick_chunks
from workflows.orchestration import failpoints, ids, journal, runs

pytestmark = pytest.mark.slow

def test_each_timeframes_tick_workflow_equals_the_direct_path(fast, catalog, workflows, day_of_trades, tmp_path):
    direct, direct_catalog = warehouse_with(fast, day_of_trades, tmp_path, "direct")

    for tf in ALL:
        workflow_id, results = runs.run_tick(fast, tf, AS_OF[tf.name])
        assert workflow_id == f"ohlcv-{tf.name}-{AS_OF[tf.name]:%Y%m%dT%H%MZ}"
        assert workflows.get_status(workflow_id).name == "SUCCESSFUL"
        assert [r.inserted for r in results] == [len(table_rows(catalog, tf))] and results[0].inserted > 0
        run_chunks(direct, tick_chunks([tf], AS_OF[tf.name]), lambda: utc(2030, 1, 1))
        assert values(table_rows(catalog, tf)) == values(table_rows(direct_catalog, tf)), tf.name
        steps = journal.read_workflow(workflow_id)
        assert {s: e["status"] for s, e in steps.items()} == dict.fromkeys(["plan", "aggregate", "validate", "commit"], "SUCCESSFUL")

    # The same tick again returns the stored result; nothing is recomputed.
    started = workflows.get_metadata(f"ohlcv-1m-{AS_OF['1m']:%Y%m%dT%H%MZ}", "aggregate")["stats"]
    again_id, again = runs.run_tick(fast, timeframes.get("1m"), AS_OF["1m"])
    assert workflows.get_metadata(again_id, "aggregate")["stats"] == started
    assert again[0].inserted > 0  # the stored output of the first run, not a fresh "unchanged"


def test_a_failed_commit_leaves_the_workflow_failed_and_resume_finishes_it(fast, catalog, workflows, day_of_trades, tmp_path):
    tf = timeframes.get("5m")
    failpoints.arm(fast.failpoint_dir, "commit", "terminal")
    with pytest.raises(RunFailed, match=r"step commit failed: failpoint commit \(terminal\).*ohlcv workflows resume"):
        runs.run_tick(fast, tf, AS_OF["5m"])
    workflow_id = ids.tick_workflow_id(tf, AS_OF["5m"])
    assert workflows.get_status(workflow_id).name == "FAILED"
    assert table_rows(catalog, tf) == []  # nothing was published
    aggregate_before = journal.read_step(workflow_id, "aggregate")
    commit_before = journal.read_step(workflow_id, "commit")
    assert commit_before["status"] == "FAILED" and len(commit_before["attempts"]) == 1  # terminal: no retry

    results = runs.resume(fast, workflow_id)

    assert workflows.get_status(workflow_id).name == "SUCCESSFUL"
    assert journal.read_step(workflow_id, "aggregate") == aggregate_before  # not executed again
    commit_after = journal.read_step(workflow_id, "commit")
    assert [a["outcome"] for a in commit_after["attempts"]] == ["terminal", "ok"]
    assert results[0].inserted == len(table_rows(catalog, tf)) > 0

    # The tables equal a clean run's (in another warehouse).
    clean, clean_catalog = warehouse_with(fast, day_of_trades, tmp_path, "clean")
    run_chunks(clean, tick_chunks([tf], AS_OF["5m"]), lambda: utc(2030, 1, 1))
    assert values(table_rows(catalog, tf)) == values(table_rows(clean_catalog, tf))


def test_transient_errors_are_retried_after_the_delay(fast, catalog, workflows, day_of_trades):
    failpoints.arm(fast.failpoint_dir, "aggregate", "transient", times=2)
    workflow_id, results = runs.run_tick(fast.with_overrides(step_retry_delay=1.5), timeframes.get("30m"), AS_OF["30m"])
    attempts = journal.read_step(workflow_id, "aggregate")["attempts"]
    assert [a["outcome"] for a in attempts] == ["transient", "transient", "ok"]
    gaps = [
        (_parse(later["started"]) - _parse(earlier["ended"])).total_seconds() for earlier, later in zip(attempts, attempts[1:])
    ]
    assert all(gap >= 1.5 for gap in gaps), gaps
    assert results[0].inserted > 0


def test_transient_errors_past_the_retries_fail_the_run(fast, workflows, day_of_trades):
    failpoints.arm(fast.failpoint_dir, "validate", "transient", times=5)
    with pytest.raises(RunFailed, match="validate failed 3 times"):
        runs.run_tick(fast.with_overrides(step_retries=2, step_retry_delay=0.2), timeframes.get("1h"), AS_OF["1h"])


def test_a_step_past_its_timeout_is_cancelled_and_counts_as_a_failed_try(fast, workflows, day_of_trades):
    failpoints.arm(fast.failpoint_dir, "plan", "sleep", seconds=60)
    workflow_id, _ = runs.run_tick(fast.with_overrides(step_timeout=12.0, step_retry_delay=0.2), timeframes.get("1m"), AS_OF["1m"])
    attempts = journal.read_step(workflow_id, "plan")["attempts"]
    assert [a["outcome"] for a in attempts] == ["timeout", "ok"]
    sleeper = int(failpoints.pid_file(fast.failpoint_dir, "plan").read_text())
    assert not _alive(sleeper)  # the timed-out try's process was really stopped


def test_a_worker_killed_during_the_spark_step_does_not_stop_the_run(fast, catalog, workflows, day_of_trades):
    tf = timeframes.get("1h")
    failpoints.arm(fast.failpoint_dir, "aggregate", "sleep", seconds=120)
    workflow_id, ref = runs.start_tick(fast, tf, AS_OF["1h"])
    pid_path = failpoints.pid_file(fast.failpoint_dir, "aggregate")
    deadline = time.monotonic() + 120
    while not pid_path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(int(pid_path.read_text()), signal.SIGKILL)

    results = runs.wait(workflow_id, ref)

    attempts = journal.read_step(workflow_id, "aggregate")["attempts"]
    assert attempts[0]["outcome"] == "transient" and attempts[-1]["outcome"] == "ok"
    trades = stored_trades(catalog)
    rng = tick_chunks([tf], AS_OF["1h"])[0].read
    assert not compare(table_rows(catalog, tf), expected_candles(trades, tf.width, rng.start, rng.end))
    assert results[0].inserted > 0


def test_backfill_is_one_workflow_and_resume_skips_committed_chunks(fast, catalog, workflows, day_of_trades):
    tfs = [timeframes.get("1m"), timeframes.get("1h")]
    # 6,000 trades a day: two days do not fit; both chunks aggregated at once (2 cores alone would give 1).
    # In Spark, as a backfill's chunks are: computed in the service's driver, a chunk this small
    # takes tens of milliseconds, and a loaded machine can start the second step's worker later
    # than that, so that the overlap checked below would depend on timing alone.
    one_day_each = fast.with_overrides(backfill_chunk_trades=9_000, backfill_concurrency=2, driver_max_trades=0)
    failpoints.arm(fast.failpoint_dir, "commit", "terminal", skip=1)  # chunk Apr 1 commits, Apr 2 fails
    progress = []
    with pytest.raises(RunFailed, match="step commit-0001 failed"):
        runs.run_backfill(one_day_each, tfs, utc(2024, 4, 1), utc(2024, 4, 3), utc(2030, 1, 1), on_progress=progress.append,
                          poll_seconds=0.2)
    [(workflow_id, status)] = workflows.list_all()
    assert status.name == "FAILED" and workflow_id.startswith("ohlcv-backfill-1m+1h-20240401T0000Z-20240403T0000Z-at-")
    assert progress and progress[-1].chunks == 2 and progress[-1].committed == 1
    first_chunk = journal.read_step(workflow_id, "aggregate-0000")
    # Both chunks were aggregated at once, and only their commits waited in turn.
    second_chunk = journal.read_step(workflow_id, "aggregate-0001")
    assert _parse(second_chunk["attempts"][0]["started"]) < _parse(first_chunk["attempts"][-1]["ended"])

    commits = runs.resume(fast, workflow_id)

    assert journal.read_step(workflow_id, "aggregate-0000") == first_chunk
    assert [c.range.start for c in commits] == [utc(2024, 4, 1), utc(2024, 4, 1), utc(2024, 4, 2), utc(2024, 4, 2)]
    trades = stored_trades(catalog)
    for tf in tfs:
        assert not compare(table_rows(catalog, tf), expected_candles(trades, tf.width)), tf.name

    # With the default budget both small days are one chunk: one Spark pass, one commit per table.
    _, commits = runs.run_backfill(fast, tfs, utc(2024, 4, 1), utc(2024, 4, 3), utc(2030, 1, 2))
    assert [(c.table, c.range) for c in commits] == [(tf.table, WindowRange(utc(2024, 4, 1), utc(2024, 4, 3))) for tf in tfs]
    assert sum(c.changed for c in commits) == 0, "the same candles as the day chunks"
    for tf in tfs:
        assert not compare(table_rows(catalog, tf), expected_candles(trades, tf.width)), tf.name


def _parse(text: str):
    return datetime.fromisoformat(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_unknown_workflow_ids_get_one_line(fast, workflows, capsys, monkeypatch):
    from support import ohlcv

    monkeypatch.setenv("OHLCV_WAREHOUSE", fast.warehouse)
    for command in (["show", "ohlcv-1m-20990101T0000Z"], ["resume", "nope"], ["cancel", "nope"]):
        code, _, err = ohlcv(capsys, "workflows", *command)
        assert code == 1 and "no workflow" in err and "ohlcv workflows list" in err, command


def test_rerun_of_a_tick_that_never_ran_just_runs_it(fast, workflows, day_of_trades):
    workflow_id, results = runs.run_tick(fast, timeframes.get("5m"), AS_OF["5m"], rerun=True)
    assert workflows.get_status(workflow_id).name == "SUCCESSFUL" and results[0].inserted > 0


# Last in the file, and this file last among the Spark tests: it stops the shared Spark service,
# and any Spark test after it would pay for a cold start again.
def test_a_node_whose_java_is_too_old_fails_at_once_not_after_retries(fast, workflows, tmp_path):
    """The Spark service cannot start there: a terminal ConfigError, not a transient one."""
    import ray

    from ohlcv.errors import ConfigError
    from workflows.spark.service import SERVICE_NAME, stop_service

    stop_service()  # a fresh service must start, on a "node" whose Java is 8
    java_home = tmp_path / "java8"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_392\"' >&2\n")
    (java_home / "bin" / "java").chmod(0o755)

    @ray.remote(num_cpus=0, runtime_env={"env_vars": {"JAVA_HOME": str(java_home)}})
    def start_the_service_there():
        from workflows.spark.service import spark_service

        try:
            spark_service(fast)
        except Exception as exc:  # noqa: BLE001 - the type is what this test is about
            return type(exc).__name__, str(exc)
        return None

    kind, message = ray.get(start_the_service_there.remote())
    assert kind == ConfigError.__name__ and "found Java 8" in message
    with pytest.raises(ValueError):
        ray.get_actor(SERVICE_NAME, namespace="ohlcv")


# Run in a process of its own: this test process is joined to the session's Ray already.
_WARM_WORKERS_SCRIPT = """
import json, os, sys, time
import ray
from ohlcv.settings import Settings
from workflows.runtime import ensure_ray

ensure_ray(Settings(warehouse=sys.argv[1], workflow_storage=sys.argv[2]))

@ray.remote(num_cpus=0)
class Holder:  # long-lived actors, as the workflow manager and the Spark service are
    def pid(self):
        return os.getpid()

@ray.remote(num_cpus=0)
def attempt():  # a step's try, as retry.run_step starts it
    return os.getpid()

@ray.remote
def step():
    return [os.getpid(), ray.get(attempt.remote())]

holders = [Holder.remote() for _ in range(3)]
ray.get([h.pid.remote() for h in holders])
rounds = []
for _ in range(3):
    rounds.append(ray.get([step.remote(), step.remote()]))
    time.sleep(2)  # idle for longer than Ray waits before it kills a worker over its soft limit
print(json.dumps(rounds))
"""


def test_a_local_ray_of_its_own_keeps_the_steps_workers_between_runs(tmp_path):
    """The embedded default (no RAY_ADDRESS, no `ohlcv up`) keeps idle workers: with Ray's own
    soft limit each round of steps started 2 fresh workers here, each importing the project."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_num_workers_soft_limit", "OHLCV_"))}
    result = subprocess.run([sys.executable, "-c", _WARM_WORKERS_SCRIPT, str(tmp_path / "warehouse"), str(tmp_path / "runs")],
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rounds = json.loads(result.stdout.strip().splitlines()[-1])
    workers = {pid for steps in rounds for pair in steps for pid in pair}
    # Two steps at a time, each waiting on its try: four workers do it all (eight without).
    assert len(rounds) == 3 and len(workers) <= 4, rounds


def test_each_steps_try_gives_arrow_every_core_not_the_one_thread_ray_sets(ray_cluster, settings):
    """Ray starts the workers of CPU-less tasks with OMP_NUM_THREADS=1, which Arrow's thread pool
    follows: every step decoded and encoded Parquet on one thread (workflows.runtime.use_arrow_threads)."""
    import pyarrow as pa

    from workflows.orchestration.retry import StepContext, StepPolicy, run_step

    context = StepContext("arrow-threads-probe", "probe", "probe", "1m")
    try:
        assert run_step(context, StepPolicy.from_settings(settings.with_overrides(arrow_threads=1)), pa.cpu_count, ()) == 1
        assert run_step(context, StepPolicy.from_settings(settings), pa.cpu_count, ()) == len(os.sched_getaffinity(0))
    finally:
        journal.delete_workflow(context.workflow_id)
