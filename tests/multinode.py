"""The pipeline on a three-node Ray cluster on this machine (ray.cluster_utils.Cluster: real
raylets), run by tests/test_multinode.py in a process of its own (a process joins one Ray).

The warehouse, the workflow storage and the catalog come from the environment (OHLCV_*, AWS_*):
the test puts the tables and the workflow storage in a bucket, so the nodes share no disk.

    python tests/multinode.py WORK_DIR spread      # executors on different nodes, a backfill
    python tests/multinode.py WORK_DIR node-loss   # the same, a worker node killed mid-Spark

Before either, a backfill of three small days, one chunk each, aggregated two at a time.

Prints one JSON line: where the executors ran, which node was removed, the workflows' status,
and which of the small days' aggregations overlapped in time.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

DAY = datetime(2024, 9, 2, tzinfo=timezone.utc)
HISTORY_DAYS = 3  # before DAY: a backfill of one chunk per day, two chunks aggregated at once


def executor_nodes() -> list[str]:
    """Node ids of the live Spark executors (from the GCS actor table: no dashboard here)."""
    from ray._private import state

    actors = state.actors().values()
    return sorted(
        a["Address"]["NodeID"] for a in actors if a.get("State") == "ALIVE" and "Executor" in (a.get("ActorClassName") or "")
    )


def control_nodes() -> dict[str, str]:
    """Where the Spark driver and the actors of Ray Workflows run."""
    from ray._private import state

    wanted = ("SparkService", "WorkflowManagementActor", "Manager")
    return {a["ActorClassName"]: a["Address"]["NodeID"] for a in state.actors().values()
            if a.get("State") == "ALIVE" and a.get("ActorClassName") in wanted}


def overlapping_aggregations(journal, workflow_id: str, chunks: int) -> list[list[int]]:
    """Pairs of chunks whose aggregations ran at the same time (from their journal entries)."""
    spans = []
    for index in range(chunks):
        attempt = journal.read_step(workflow_id, f"aggregate-{index:04d}")["attempts"][-1]
        spans.append((datetime.fromisoformat(attempt["started"]), datetime.fromisoformat(attempt["ended"])))
    return [[i, j] for i in range(chunks) for j in range(i + 1, chunks) if spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]]


def concurrent_backfill(settings, work: Path, result: dict) -> None:
    """Three small days, a chunk each, two in flight: the commits still go in time order."""
    from ohlcv import timeframes
    from ohlcv.catalog import open_catalog
    from ohlcv.generate import GenerateSpec, generate, write_trades
    from ohlcv.ingest import ingest_files
    from ohlcv.windows import plan_backfill
    from workflows.orchestration import dags, ids, journal, runs

    first = DAY - timedelta(days=HISTORY_DAYS)
    path = write_trades(generate(GenerateSpec(first, DAY, symbols=3, exchanges=2, trades_per_day=20_000, seed=6)),
                        work / "history.parquet")
    ingest_files(open_catalog(settings), settings.namespace, [str(path)], "us", datetime.now(timezone.utc))
    tfs = timeframes.resolve("all")
    chunks = plan_backfill(tfs, first, DAY)  # no trade estimates: a chunk per day
    workflow_id = ids.backfill_workflow_id(tfs, first, DAY, datetime.now(timezone.utc))
    commits = runs.wait(workflow_id, runs.connect(settings).run_async(dags.backfill_dag(settings, chunks, in_flight=2),
                                                                      workflow_id=workflow_id))
    result["concurrent_chunks"] = len(chunks)
    result["concurrent_overlaps"] = overlapping_aggregations(journal, workflow_id, len(chunks))
    commit_ends = [journal.read_step(workflow_id, f"commit-{i:04d}")["attempts"][-1]["ended"] for i in range(len(chunks))]
    result["commits_in_order"] = commit_ends == sorted(commit_ends) and [c.range.start for c in commits[::len(tfs)]] == [
        first + timedelta(days=i) for i in range(len(chunks))]


def main(work: Path, mode: str) -> dict:
    warnings.simplefilter("ignore", DeprecationWarning)
    import ray
    from ray.cluster_utils import Cluster

    from ohlcv import timeframes
    from ohlcv.catalog import ensure_tables, open_catalog
    from ohlcv.generate import GenerateSpec, generate, write_trades
    from ohlcv.ingest import ingest_files
    from ohlcv.settings import from_environment
    from ohlcv.windows import plan_backfill
    from workflows.orchestration import dags, ids, journal, runs
    from workflows.spark.service import spark_service

    # The head has no CPU: executors (which ask for CPUs) can only land on the two workers;
    # the service, the workflow manager and the steps ask for none and stay on the head.
    # These days are small enough for the driver's own engine: driver_max_trades=0 sends every
    # request to Spark's executors, whose spread and loss this script is about.
    settings = from_environment().with_overrides(
        driver_max_trades=0,
        spark_executors=2, spark_executor_cores=1, spark_executor_memory="1g", spark_placement="SPREAD",
        step_retry_delay=1.0, step_timeout=180.0, step_retries=3,
    )
    storage = settings.ray_storage_uri
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "storage": storage, "include_dashboard": False})
    # Every node must know the workflow storage (a `ray start` worker learns it from the head).
    workers = [cluster.add_node(num_cpus=2, storage=storage) for _ in range(2)]
    ray.init(address=cluster.address, namespace="ohlcv", log_to_driver=False)
    result: dict = {"worker_nodes": sorted(w.node_id for w in workers)}
    try:
        catalog = open_catalog(settings)
        ensure_tables(catalog, settings.namespace)
        path = write_trades(generate(GenerateSpec(DAY, DAY + timedelta(days=1), symbols=3, exchanges=2,
                                                  trades_per_day=500_000 if mode == "node-loss" else 200_000, seed=5)),
                            work / "day.parquet")
        ingest_files(catalog, settings.namespace, [str(path)], "us", datetime.now(timezone.utc))
        spark_service(settings)
        deadline = time.monotonic() + 120  # executors register a moment after the session starts
        while len(executor_nodes()) < settings.spark_executors and time.monotonic() < deadline:
            time.sleep(0.5)
        result["executor_nodes"] = executor_nodes()
        result["control_nodes"] = control_nodes()
        result["head_node"] = cluster.head_node.node_id
        concurrent_backfill(settings, work, result)

        tfs = timeframes.resolve("all")
        chunks = plan_backfill(tfs, DAY, DAY + timedelta(days=1))
        workflow_id = ids.backfill_workflow_id(tfs, DAY, DAY + timedelta(days=1), datetime.now(timezone.utc))
        workflow = runs.connect(settings)
        ref = workflow.run_async(dags.backfill_dag(settings, chunks), workflow_id=workflow_id)
        if mode == "node-loss":
            # Wait for the step's Spark job itself: a fixed delay after the step started was
            # too long once the day's aggregation got faster (the step had ended).
            service, deadline = spark_service(settings), time.monotonic() + 300
            while time.monotonic() < deadline:
                step = journal.read_step(workflow_id, "aggregate-0000")
                if step and step.get("attempts") and ray.get(service.info.remote())["active_jobs"]:
                    break
                time.sleep(0.1)
            time.sleep(0.5)  # its tasks are on the executors now
            # Not the node this driver process is attached to (all raylets share one address here,
            # and Ray picked one of the workers'): killing that one would kill the test itself.
            driver_socket = ray._private.worker._global_node._raylet_socket_name
            victim = next(w for w in workers if w.node_id in result["executor_nodes"] and w._raylet_socket_name != driver_socket)
            cluster.remove_node(victim, allow_graceful=False)
            result["removed_node"] = victim.node_id
            result["removed_while"] = (journal.read_step(workflow_id, "aggregate-0000") or {}).get("status")
        runs.wait(workflow_id, ref)
        result["status"] = workflow.get_status(workflow_id).name
        result["control_nodes_after"] = control_nodes()
        attempts = journal.read_step(workflow_id, "aggregate-0000")["attempts"]
        result["aggregate_attempts"] = [a["outcome"] for a in attempts]
        result["aggregate_errors"] = [a.get("error") for a in attempts]
        # Ray marks a killed node's actors dead only once its health checks fail (seconds): a
        # run that Spark finished on the other executor can end before that.
        deadline = time.monotonic() + 90
        while result.get("removed_node") in executor_nodes() and time.monotonic() < deadline:
            time.sleep(1)
        result["executors_after"] = executor_nodes()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])), flush=True)
