"""The workflow DAGs: a tick, a backfill and the daily upkeep, built from the timeframe table.

A tick is plan -> aggregate -> validate -> commit; its plan is made inside the run, from the
snapshot logs (ohlcv/late.py). A backfill is ONE workflow: plan, then a chain of
aggregate -> validate -> commit per chunk in time order (resume skips the chunks
already committed, and only one chunk's candles are in flight at a time), then summarize.
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

__all__ = ["tick_dag", "backfill_dag", "upkeep_dag"]


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


def backfill_dag(settings: Settings, chunks: list[Chunk]):
    previous = plan_step.options(**_options(settings, "plan")).bind(settings, chunks)
    commits = []
    for index, chunk in enumerate(chunks):
        suffix = f"{index:04d}"
        candles = aggregate_step.options(**_options(settings, f"aggregate-{suffix}")).bind(settings, chunk, previous)
        audit = validate_step.options(**_options(settings, f"validate-{suffix}")).bind(settings, chunk, candles)
        previous = commit_step.options(**_options(settings, f"commit-{suffix}")).bind(settings, chunk, candles, audit, False)
        commits.append(previous)
    return summarize_step.options(**_options(settings, "summarize")).bind(settings, chunks, *commits)


def upkeep_dag(settings: Settings, at: datetime):
    previous = None
    for step in UPKEEP_STEPS:
        previous = upkeep_step.options(**_options(settings, step)).bind(settings, step, at, previous)
    return previous
