"""The workflow steps: plan -> aggregate -> validate -> commit (-> summarize for a backfill).

Each step is a Ray remote function run by Ray Workflows, which checkpoints its output: the
aggregate step's candles are stored, so a resumed workflow does not recompute them. A step's
work lives in a `_..._work` function that runs under the retry policy (`workflows.orchestration.retry`),
in a child task that a timeout can cancel. Steps ask for no CPU: they wait on the Spark service,
whose executors hold the cores.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import ray

from ohlcv.catalog import load_candles, load_trades, open_catalog
from ohlcv.late import TickPlan, plan_tick
from ohlcv.settings import Settings
from ohlcv.store import CommitResult, plan_trade_files
from ohlcv.timeframes import TIMEFRAMES, Timeframe
from ohlcv.validate import AuditFailed, audit_candles
from ohlcv.publish import candles_in, commit_chunk
from ohlcv.windows import Chunk, WindowRange
from ohlcv.upkeep import TABLE_UPKEEP_STEPS, run_upkeep_step
from workflows import _ray_compat
from workflows.observability import logs, metrics
from workflows.orchestration import failpoints
from workflows.orchestration.retry import StepContext, StepPolicy, run_step
from workflows.spark.client import Aggregated, aggregate_chunk, cancel_request, count_group

__all__ = ["plan_step", "tick_plan_step", "aggregate_step", "validate_step", "commit_step", "summarize_step", "upkeep_step", "UPKEEP_STEPS"]

log = logging.getLogger(__name__)

# The daily upkeep: the table upkeep in its order, then the run history older than its window.
UPKEEP_STEPS = (*TABLE_UPKEEP_STEPS, "runs")


def _context(step: str, chunks: list[Chunk], job: str | None = None) -> StepContext:
    """Who this step is (for its journal, metrics and log lines): its workflow, task and job,
    which is the chunk's timeframes unless named (the daily upkeep)."""
    workflow_id, task_id = _ray_compat.current_workflow_step()
    logs.bind(workflow_id, task_id)
    if job is None:
        present = {tf.name for chunk in chunks for tf in chunk.timeframes}
        job = ",".join(name for name in TIMEFRAMES if name in present)
    return StepContext(workflow_id, task_id, step, job)


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
    """A backfill's plan: its chunks exist before the run; check the tables and count files."""
    ctx = _context("plan", chunks)
    return run_step(ctx, StepPolicy.from_settings(settings), _plan_work, (settings, chunks), summarize=lambda r: r)


def _tick_plan_work(settings: Settings, tf: Timeframe, as_of: datetime) -> TickPlan:
    failpoints.hit(settings, "plan")
    catalog = open_catalog(settings)
    trades = load_trades(catalog, settings.namespace)  # a missing table fails the run here, at once
    plan = plan_tick(trades, load_candles(catalog, settings.namespace, tf), tf, as_of,
                     timedelta(days=settings.recompute_limit_days))
    for note in plan.notes:
        log.warning("%s", note)
    return plan


@ray.remote
def tick_plan_step(settings: Settings, tf: Timeframe, as_of: datetime) -> TickPlan:
    """A tick's plan: its lookback plus the old windows new trades touched, from the snapshot
    logs (ohlcv/late.py); checkpointed, so a resumed tick reads the same trades snapshot."""
    ctx = _context("plan", [], job=tf.name)
    return run_step(ctx, StepPolicy.from_settings(settings), _tick_plan_work, (settings, tf, as_of),
                    summarize=lambda plan: plan.summary())


def _chunk(work: Chunk | TickPlan) -> Chunk:
    """The chunk a step works on: a backfill passes its chunks, a tick its plan's."""
    return work.chunk if isinstance(work, TickPlan) else work


# ------------------------------------------------------------------------------------- aggregate


def _aggregate_work(settings: Settings, chunk: Chunk, request_id: str) -> Aggregated:
    armed = failpoints.hit(settings, "aggregate")
    aggregated = aggregate_chunk(settings, chunk, request_id)
    if armed is not None:  # a test proving that the audit refuses bad candles
        first = chunk.timeframes[0].name
        aggregated.candles[first] = failpoints.corrupt(aggregated.candles[first], armed["kinds"])
    return aggregated


def _aggregate_summary(result: Aggregated) -> dict:
    return {
        "candles": {name: table.num_rows for name, table in result.candles.items()},
        "trade_files": result.files,
        "trade_bytes": result.bytes,
        "read_mode": result.read_mode,
        "deduplicated": result.deduplicated,
        "candle_order": result.candle_order,
        "engine": result.engine,
        "spark_seconds": round(result.seconds, 3),
    }


@ray.remote
def aggregate_step(settings: Settings, work: Chunk | TickPlan, *after: object) -> Aggregated:
    """`after`: outputs of the steps this one must follow (the plan, earlier chunks' steps)."""
    chunk = _chunk(work)
    ctx = _context("aggregate", [chunk])
    request_id = f"{ctx.workflow_id}/{ctx.task_id}"
    return run_step(
        ctx, StepPolicy.from_settings(settings), _aggregate_work, (settings, chunk, request_id),
        on_timeout=lambda: cancel_request(settings, request_id), summarize=_aggregate_summary,
    )


# -------------------------------------------------------------------------------------- validate


def _validate_work(settings: Settings, chunk: Chunk, aggregated: Aggregated) -> list[dict]:
    """The audit before publish: nothing is committed unless every check passes."""
    failpoints.hit(settings, "validate")
    reports = [
        audit_candles(
            candles_in(aggregated.candles[tf.name], chunk.ranges_of(tf)), tf, _ranges_label(chunk.ranges_of(tf)),
            source_counts=aggregated.source_counts[count_group(chunk, tf)], sample_spec=settings.audit_sample,
        )
        for tf in chunk.timeframes
    ]
    for report in reports:
        for check in report.failures:
            metrics.validation_failed(report.timeframe, check.name, check.failed)
    failed = [r for r in reports if not r.passed]
    if failed:
        raise AuditFailed(failed[0])
    return [r.to_dict() for r in reports]


def _ranges_label(ranges: list) -> str:
    """One range as itself; a tick's lookback with late windows as their count and hull."""
    if len(ranges) == 1:
        return str(ranges[0])
    return f"{len(ranges)} ranges within {WindowRange(ranges[0].start, ranges[-1].end)}"


@ray.remote
def validate_step(settings: Settings, work: Chunk | TickPlan, aggregated: Aggregated) -> list[dict]:
    chunk = _chunk(work)
    ctx = _context("validate", [chunk])
    return run_step(
        ctx, StepPolicy.from_settings(settings), _validate_work, (settings, chunk, aggregated),
        summarize=lambda reports: {r["timeframe"]: f"{r['candles']} candles, {len(r['checks'])} checks passed" for r in reports},
    )


# ---------------------------------------------------------------------------------------- commit


def _commit_work(settings: Settings, chunk: Chunk, aggregated: Aggregated, scheduled: bool) -> list[CommitResult]:
    failpoints.hit(settings, "commit")
    # The wall clock stamps created_at/updated_at: when the candle was really written.
    now = datetime.now(timezone.utc)
    results = commit_chunk(settings, chunk, aggregated.candles, now, aggregated.trades_snapshot)
    for tf, result in zip(chunk.timeframes, results):
        metrics.candles_written(tf.name, result.inserted + result.updated)
        if scheduled:  # a backfill of last year says nothing about how fresh the tables are
            metrics.freshness_lag(tf.name, (now - result.range.end).total_seconds())
    return results


def _commit_summary(results: list[CommitResult]) -> dict:
    return {
        r.table: {"range": str(r.range), "inserted": r.inserted, "updated": r.updated, "unchanged": r.unchanged,
                  "deleted": r.deleted, "snapshot_id": r.snapshot_id, "ranges": r.ranges, "watermark": r.watermark}
        for r in results
    }


@ray.remote
def commit_step(
    settings: Settings, work: Chunk | TickPlan, aggregated: Aggregated, audit: list[dict], final: bool = True, after: object = None,
) -> list[CommitResult]:
    """`audit` is the validate step's output: its presence means the candles passed; `after`:
    the output of the commit this one must follow (a backfill commits its chunks in order)."""
    chunk = _chunk(work)
    ctx = _context("commit", [chunk])
    scheduled = isinstance(work, TickPlan)
    results = run_step(ctx, StepPolicy.from_settings(settings), _commit_work, (settings, chunk, aggregated, scheduled),
                       summarize=_commit_summary)
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


# ---------------------------------------------------------------------------------------- upkeep


def _upkeep_work(settings: Settings, step: str, at: datetime) -> dict:
    failpoints.hit(settings, step)
    if step == "runs":
        from workflows.orchestration import history

        return history.prune(at - timedelta(days=settings.run_history_days)).summary()
    return run_upkeep_step(step, open_catalog(settings), settings.namespace, at, settings.snapshot_days)


@ray.remote
def upkeep_step(settings: Settings, step: str, at: datetime, after: object = None) -> dict:
    """One step of the daily upkeep: retention, compact, expire, orphans or runs (in that order)."""
    ctx = _context(step, [], job="upkeep")
    result = run_step(ctx, StepPolicy.from_settings(settings), _upkeep_work, (settings, step, at), summarize=lambda r: r)
    if step == UPKEEP_STEPS[-1]:
        metrics.run_finished("upkeep", "succeeded")
    return result
