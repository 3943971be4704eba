"""Run one workflow step's work with the platform's retry policy: tries, delay, timeout.

Each try runs in a child Ray task, so that a try past its timeout can really be stopped: the
child is force-cancelled (its worker killed), and an `on_timeout` hook can stop work the child
started elsewhere (the Spark job it asked the Spark service for). Retry decisions follow the
error's type (`failure_kinds`): a terminal error fails the step at once, a transient one is tried
again after `delay` seconds, up to `retries` more times. Ray's own `max_retries` still covers
the step's own worker dying: the step then starts over, journal and all.

Ray's retries cannot wait between tries, and the original platform waited 60 s, hence this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ohlcv.errors import OhlcvError, TerminalError, TransientError
from ohlcv.settings import Settings
from workflows.observability import metrics
from workflows.orchestration import failure_kinds, journal

__all__ = ["StepPolicy", "StepContext", "run_step"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class StepPolicy:
    retries: int
    delay: float
    timeout: float
    arrow_threads: int = 0  # Settings.arrow_threads, for the process each try runs in

    @classmethod
    def from_settings(cls, settings: Settings) -> "StepPolicy":
        return cls(settings.step_retries, settings.step_retry_delay, settings.step_timeout, settings.arrow_threads)


@dataclass(frozen=True)
class StepContext:
    workflow_id: str
    task_id: str
    step: str  # plan, aggregate, validate, commit, summarize
    timeframe: str  # the timeframe, or a comma list for a multi-timeframe chunk ("upkeep" for the upkeep)

    @property
    def timeframes(self) -> list[str]:
        """One name each: every metric carries a single timeframe label."""
        return self.timeframe.split(",")


def _run_in_child(workflow_id: str, task_id: str, fn: Callable[..., Any], args: tuple, arrow_threads: int) -> Any:
    from workflows.observability import logs
    from workflows.runtime import use_arrow_threads

    logs.bind(workflow_id, task_id)
    use_arrow_threads(arrow_threads)
    return fn(*args)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _classify(exc: BaseException) -> tuple[str, BaseException]:
    """(outcome, the error people should see) for an exception from a child try."""
    error = failure_kinds.classify(exc)
    return ("terminal" if isinstance(error, TerminalError) else "transient"), error


def run_step(
    ctx: StepContext,
    policy: StepPolicy,
    fn: Callable[..., Any],
    args: tuple,
    *,
    on_timeout: Callable[[], None] | None = None,
    summarize: Callable[[Any], dict] | None = None,
) -> Any:
    """`fn(*args)` under the retry policy; returns its result or raises the step's final error."""
    import ray

    child = ray.remote(_run_in_child).options(num_cpus=0, max_retries=0, name=f"{ctx.task_id}-try")
    # A resumed step keeps the tries of earlier runs in its journal; its retry budget is new.
    earlier = (journal.read_step(ctx.workflow_id, ctx.task_id) or {}).get("attempts", [])
    attempts: list[dict] = list(earlier)
    entry = {"task_id": ctx.task_id, "step": ctx.step, "timeframe": ctx.timeframe, "status": "RUNNING", "attempts": attempts}
    entry.pop("error", None)
    for number in range(1, policy.retries + 2):
        started = time.monotonic()
        attempt = {"attempt": len(earlier) + number, "started": _now()}
        attempts.append(attempt)
        journal.record(ctx.workflow_id, ctx.task_id, entry)
        ref = child.remote(ctx.workflow_id, ctx.task_id, fn, args, policy.arrow_threads)
        try:
            result = ray.get(ref, timeout=policy.timeout)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            if on_timeout is not None:
                on_timeout()
            outcome, error = "timeout", TransientError(f"{ctx.step} timed out after {policy.timeout:g}s and was cancelled")
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            outcome, error = _classify(exc)
        else:
            seconds = time.monotonic() - started
            attempt.update(ended=_now(), seconds=round(seconds, 3), outcome="ok")
            entry.update(status="SUCCESSFUL", summary=summarize(result) if summarize else None)
            journal.record(ctx.workflow_id, ctx.task_id, entry)
            for name in ctx.timeframes:  # a chunk's step took this long for each of its timeframes
                metrics.step_finished(name, ctx.step, seconds)
            log.info("done in %.2fs (try %d)", seconds, attempt["attempt"])
            return result

        attempt.update(ended=_now(), seconds=round(time.monotonic() - started, 3), outcome=outcome, error=str(error))
        last = number == policy.retries + 1
        if outcome == "terminal" or last:
            if outcome != "terminal" and number > 1:
                error = TransientError(f"{ctx.step} failed {number} times; last: {error}")
            elif not isinstance(error, OhlcvError):
                error = TerminalError(str(error))
            entry.update(status="FAILED", error=str(error))
            if hasattr(error, "report"):  # an audit failure: keep every check, count and example
                entry["report"] = error.report.to_dict()
            journal.record(ctx.workflow_id, ctx.task_id, entry)
            for name in ctx.timeframes:
                metrics.run_finished(name, "failed")
            log.error("%s failed (%s after %d tries): %s", ctx.task_id, outcome, number, error)
            raise error
        log.warning("%s try %d failed (%s), retrying in %gs: %s", ctx.task_id, number, outcome, policy.delay, error)
        journal.record(ctx.workflow_id, ctx.task_id, entry)
        time.sleep(policy.delay)
    raise AssertionError("unreachable")
