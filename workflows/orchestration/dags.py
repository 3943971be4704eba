"""The workflow DAGs: a tick, a backfill and the daily upkeep, built from the timeframe table.

A tick is plan -> aggregate -> validate -> commit; its plan is made inside the run, from the
snapshot logs (ohlcv/late.py). A backfill is ONE workflow: plan, then aggregate -> validate ->
commit per chunk, then summarize, as a pipeline: Spark aggregates `chunks_in_flight` chunks at
once (more on a larger cluster, where one chunk leaves executors idle), and while it does, the
chunks before are audited and committed. Commits go one after another in time order: each
replaces its ranges against the table's current watermark, and a resumed run skips the chunks
already committed. At most twice `chunks_in_flight` chunks' candles are held at a time.
No per-timeframe code: the chunks carry their timeframes.
"""

from __future__ import annotations

from datetime import datetime

from ohlcv.settings import Settings
from ohlcv.timeframes import Timeframe
from ohlcv.windows import Chunk
from workflows.orchestration.steps import (
    UPKEEP_STEPS,
    aggregate_step,
    commit_step,
    plan_step,
    summarize_step,
    tick_plan_step,
    upkeep_step,
    validate_step,
)
from workflows.runtime import import_ray, import_workflow

__all__ = ["tick_dag", "backfill_dag", "upkeep_dag", "chunks_in_flight", "MAX_CHUNKS_IN_FLIGHT", "SLOTS_PER_CHUNK"]


def _options(settings: Settings, task_id: str) -> dict:
    """Ray options of a step: no CPU, Ray retries for a dead worker, our own for errors."""
    workflow = import_workflow()
    ray = import_ray()
    options = dict(
        num_cpus=0,
        max_retries=max(1, settings.step_retries),  # the step's own worker dying (SIGKILL, OOM)
        retry_exceptions=False,  # errors are retried by workflows/orchestration/retry.py, with its delay
        **workflow.options(task_id=task_id, checkpoint=True),
    )
    # Steps run under the workflow management actor, not the submitting job: hand them the
    # job's runtime_env (a `ray job submit --working-dir` upload) explicitly.
    runtime_env = ray.get_runtime_context().runtime_env
    if runtime_env:
        options["runtime_env"] = dict(runtime_env)
    return options


def tick_dag(settings: Settings, tf: Timeframe, as_of: datetime):
    """plan (lookback plus late windows, from the snapshot logs) -> aggregate -> validate -> commit."""
    plan = tick_plan_step.options(**_options(settings, "plan")).bind(settings, tf, as_of)
    candles = aggregate_step.options(**_options(settings, "aggregate")).bind(settings, plan)
    audit = validate_step.options(**_options(settings, "validate")).bind(settings, plan, candles)
    return commit_step.options(**_options(settings, "commit")).bind(settings, plan, candles, audit)


MAX_CHUNKS_IN_FLIGHT = 4  # the Spark service serves 8 requests at once: room for ticks and cancels
SLOTS_PER_CHUNK = 8  # a chunk of the default trade budget splits into tasks for this many slots and more


def chunks_in_flight(settings: Settings) -> int:
    """How many chunks of a backfill Spark aggregates at once: the setting, or one per
    SLOTS_PER_CHUNK Spark slots of the cluster, 1 to MAX_CHUNKS_IN_FLIGHT. On 2 cores one chunk
    keeps both busy, and a second one at once only halves each (measured: the next chunk's
    aggregation overlapping this one's audit and commit is what pays)."""
    if settings.backfill_concurrency:
        return settings.backfill_concurrency
    from workflows.spark.sizing import plan_sizing

    resources = import_ray().cluster_resources()
    slots = plan_sizing(settings, resources.get("CPU", 1), resources.get("memory", 2**32)).slots
    return max(1, min(slots // SLOTS_PER_CHUNK, MAX_CHUNKS_IN_FLIGHT))


def backfill_dag(settings: Settings, chunks: list[Chunk], in_flight: int | None = None):
    """`in_flight`: chunks Spark aggregates at once (default `chunks_in_flight`). Chunk i's
    aggregation waits for chunk i - in_flight's aggregation and chunk i - 2 x in_flight's commit;
    its commit waits for chunk i - 1's."""
    in_flight = in_flight or chunks_in_flight(settings)
    plan = plan_step.options(**_options(settings, "plan")).bind(settings, chunks)
    aggregates, commits = [], []
    for index, chunk in enumerate(chunks):
        suffix = f"{index:04d}"
        after = [plan]
        if index >= in_flight:
            after.append(aggregates[index - in_flight])
        if index >= 2 * in_flight:
            after.append(commits[index - 2 * in_flight])
        candles = aggregate_step.options(**_options(settings, f"aggregate-{suffix}")).bind(settings, chunk, *after)
        aggregates.append(candles)
        audit = validate_step.options(**_options(settings, f"validate-{suffix}")).bind(settings, chunk, candles)
        previous = commits[-1] if commits else plan
        commits.append(commit_step.options(**_options(settings, f"commit-{suffix}")).bind(settings, chunk, candles, audit, False, previous))
    return summarize_step.options(**_options(settings, "summarize")).bind(settings, chunks, *commits)


def upkeep_dag(settings: Settings, at: datetime):
    previous = None
    for step in UPKEEP_STEPS:
        previous = upkeep_step.options(**_options(settings, step)).bind(settings, step, at, previous)
    return previous
