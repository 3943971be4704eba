"""The workflow steps: plan -> aggregate -> validate -> commit (-> summarize for a backfill).

Each step is a Ray remote function run by Ray Workflows, which checkpoints its output: the
aggregate step's candles are stored, so a resumed workflow does not recompute them. A step's
work lives in a `_..._work` function that runs under the retry policy (workflows/attempts.py),
in a child task that a timeout can cancel. Steps ask for no CPU: they wait on the Spark service,
whose executors hold the cores.
"""

from __future__ import annotations

from datetime import datetime, timezone

import ray

from ohlcv.catalog import load_candles, load_trades, open_catalog
from ohlcv.settings import Settings
from ohlcv.store import CommitResult, plan_trade_files
from ohlcv.timeframes import TIMEFRAMES
from ohlcv.validate import AuditFailed, audit_candles
from ohlcv.windows import Chunk
from workflows import failpoints, logs, metrics
from workflows.attempts import StepContext, StepPolicy, run_step
from workflows.runtime import import_workflow
from workflows.pipeline import Aggregated, aggregate_chunk, cancel_request, candles_in, commit_chunk

__all__ = ["plan_step", "aggregate_step", "validate_step", "commit_step", "summarize_step"]


def _context(step: str, chunks: list[Chunk]) -> StepContext:
    import_workflow()
    from ray.workflow import workflow_context

    workflow_id, task_id = workflow_context.get_current_workflow_id(), workflow_context.get_current_task_id()
    logs.bind(workflow_id, task_id)
    present = {tf.name for chunk in chunks for tf in chunk.timeframes}
    return StepContext(workflow_id, task_id, step, ",".join(name for name in TIMEFRAMES if name in present))


# ------------------------------------------------------------------------------------------ plan


def _plan_work(settings: Settings, chunks: list[Chunk]) -> dict:
    failpoints.hit(settings, "plan")
    catalog = open_catalog(settings)
    trades = load_trades(catalog, settings.namespace)  # a missing table fails the run here, at once
    for tf in {tf for chunk in chunks for tf in chunk.timeframes}:
        load_candles(catalog, settings.namespace, tf)
    files = [len(plan_trade_files(trades, chunk.read)) for chunk in chunks[:50]]
    return {
        "chunks": len(chunks),
        "first": str(chunks[0].read) if chunks else None,
        "last": str(chunks[-1].read) if chunks else None,
        "trade_files_first_50_chunks": sum(files),
    }


@ray.remote
def plan_step(settings: Settings, chunks: list[Chunk]) -> dict:
    ctx = _context("plan", chunks)
    return run_step(ctx, StepPolicy.from_settings(settings), _plan_work, (settings, chunks), summarize=lambda r: r)


# ------------------------------------------------------------------------------------- aggregate


def _aggregate_work(settings: Settings, chunk: Chunk, request_id: str) -> Aggregated:
    failpoints.hit(settings, "aggregate")
    return aggregate_chunk(settings, chunk, request_id)


def _aggregate_summary(result: Aggregated) -> dict:
    return {
        "candles": {name: table.num_rows for name, table in result.candles.items()},
        "trade_files": result.files,
        "trade_bytes": result.bytes,
        "read_mode": result.read_mode,
        "spark_seconds": round(result.seconds, 3),
    }


@ray.remote
def aggregate_step(settings: Settings, chunk: Chunk, after: object = None) -> Aggregated:
    """`after`: the output of the step this one must follow (the plan, or the previous chunk)."""
    ctx = _context("aggregate", [chunk])
    request_id = f"{ctx.workflow_id}/{ctx.task_id}"
    return run_step(
        ctx, StepPolicy.from_settings(settings), _aggregate_work, (settings, chunk, request_id),
        on_timeout=lambda: cancel_request(settings, request_id), summarize=_aggregate_summary,
    )


# -------------------------------------------------------------------------------------- validate


def _validate_work(settings: Settings, chunk: Chunk, aggregated: Aggregated) -> list[dict]:
    failpoints.hit(settings, "validate")
    reports = [audit_candles(candles_in(aggregated.candles[tf.name], rng), tf, str(rng)) for tf, rng in chunk.targets]
    for report in reports:
        for check in report.failures:
            metrics.validation_failed(report.timeframe, check.name, check.failed)
    failed = [r for r in reports if not r.passed]
    if failed:
        raise AuditFailed(failed[0])
    return [r.to_dict() for r in reports]


@ray.remote
def validate_step(settings: Settings, chunk: Chunk, aggregated: Aggregated) -> list[dict]:
    ctx = _context("validate", [chunk])
    return run_step(
        ctx, StepPolicy.from_settings(settings), _validate_work, (settings, chunk, aggregated),
        summarize=lambda reports: {r["timeframe"]: f"{r['candles']} candles, {len(r['checks'])} checks passed" for r in reports},
    )


# ---------------------------------------------------------------------------------------- commit


def _commit_work(settings: Settings, chunk: Chunk, aggregated: Aggregated) -> list[CommitResult]:
    failpoints.hit(settings, "commit")
    # The wall clock stamps created_at/updated_at: when the candle was really written.
    now = datetime.now(timezone.utc)
    results = commit_chunk(settings, chunk, aggregated, now)
    for (tf, rng), result in zip(chunk.targets, results):
        metrics.candles_written(tf.name, result.inserted + result.updated)
        metrics.freshness_lag(tf.name, (now - rng.end).total_seconds())
    return results


def commit_summary(results: list[CommitResult]) -> dict:
    return {
        r.table: {"range": str(r.range), "inserted": r.inserted, "updated": r.updated, "unchanged": r.unchanged,
                  "deleted": r.deleted, "snapshot_id": r.snapshot_id}
        for r in results
    }


@ray.remote
def commit_step(settings: Settings, chunk: Chunk, aggregated: Aggregated, audit: list[dict], final: bool = True) -> list[CommitResult]:
    """`audit` is the validate step's output: its presence means the candles passed."""
    ctx = _context("commit", [chunk])
    results = run_step(ctx, StepPolicy.from_settings(settings), _commit_work, (settings, chunk, aggregated), summarize=commit_summary)
    if final:
        for tf in chunk.timeframes:
            metrics.run_finished(tf.name, "succeeded")
    return results


@ray.remote
def summarize_step(settings: Settings, chunks: list[Chunk], *commits: list[CommitResult]) -> list[CommitResult]:
    """The end of a backfill: every commit result, in chunk order."""
    ctx = _context("summarize", chunks)
    for name in ctx.timeframe.split(","):
        metrics.run_finished(name, "succeeded")
    return [result for chunk_results in commits for result in chunk_results]
