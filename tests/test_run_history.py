"""Run history retention: finished runs older than the window go with their checkpoints and
journals, failed ones stay until resolved, and listing costs the same however long it is."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import ray

from ohlcv import timeframes
from support import ohlcv
from workflows.orchestration import history, ids, journal
from workflows.scheduling.loop import EVENTS_KEPT, Scheduler
from workflows.scheduling.cron import latest_tick


@ray.remote(num_cpus=0)  # the session's Spark executors hold its CPUs
def _done() -> int:
    return 1


@ray.remote(num_cpus=0)  # the session's Spark executors hold its CPUs
def _fails() -> int:
    raise ValueError("failed on purpose")


def _run(workflow, workflow_id: str, ok: bool = True) -> None:
    try:
        workflow.run((_done if ok else _fails).bind(), workflow_id=workflow_id)
    except Exception:  # noqa: BLE001 - the failed run is the point
        assert not ok


@pytest.fixture
def history_runs(workflows, fast, monkeypatch):
    """Real (trivial) workflows under the platform's ids: old and new, succeeded and failed,
    and one whose id the platform did not make."""
    monkeypatch.setenv("OHLCV_WAREHOUSE", fast.warehouse)
    now = datetime.now(timezone.utc)
    one_minute = timeframes.get("1m")
    runs = {
        "old tick": ids.tick_workflow_id(one_minute, latest_tick(one_minute, now - timedelta(days=20))),
        "old backfill": ids.backfill_workflow_id([one_minute], now - timedelta(days=40), now - timedelta(days=39), now - timedelta(days=16)),
        "old upkeep": ids.upkeep_workflow_id(now - timedelta(days=15)),
        "old failure": ids.tick_workflow_id(timeframes.get("5m"), now - timedelta(days=30)),
        "new tick": ids.tick_workflow_id(one_minute, latest_tick(one_minute, now - timedelta(days=1))),
        "foreign": "someone-elses-workflow",
    }
    for name, workflow_id in runs.items():
        _run(workflows, workflow_id, ok=name != "old failure")
    journal.record(runs["old tick"], "commit", {"status": "SUCCESSFUL", "attempts": []})
    return runs


def _present(workflows) -> set[str]:
    return {workflow_id for workflow_id, _ in workflows.list_all()}


def test_prune_removes_old_finished_runs_with_their_journals_and_keeps_failed_ones(history_runs, workflows, capsys):
    runs = history_runs
    code, out, _ = ohlcv(capsys, "workflows", "prune", "--dry-run")
    assert code == 0 and "3 run(s) older than 14 days would be removed" in out, out
    assert _present(workflows) == set(runs.values())  # a dry run removes nothing

    code, out, _ = ohlcv(capsys, "workflows", "prune")
    assert code == 0 and "3 run(s) older than 14 days removed" in out
    assert f"1 failed run(s) older than that kept, e.g. {runs['old failure']}" in out
    assert "ohlcv workflows resume ID" in out and "--include-failed" in out
    assert _present(workflows) == {runs["old failure"], runs["new tick"], runs["foreign"]}
    assert journal.read_workflow(runs["old tick"]) == {}  # the journal went with the run

    code, out, _ = ohlcv(capsys, "workflows", "prune", "--include-failed", "--older-than", "0.5")
    assert code == 0 and "2 run(s) older than 0.5 days removed" in out, out
    assert _present(workflows) == {runs["foreign"]}  # an id the platform did not make stays


def test_listing_is_newest_first_by_the_time_in_the_ids_and_reads_only_what_it_shows(history_runs, workflows, capsys):
    runs = history_runs
    shown, total = history.newest(workflows, 2)
    assert total == len(runs)
    assert [workflow_id for workflow_id, _ in shown] == [runs["new tick"], runs["old upkeep"]]
    failed, total_failed = history.newest(workflows, 10, "FAILED")
    assert failed == [(runs["old failure"], "FAILED")] and total_failed == 1
    code, out, _ = ohlcv(capsys, "workflows", "list", "--limit", "2")
    assert code == 0 and runs["new tick"] in out and runs["old tick"] not in out
    assert f"{len(runs) - 2} older run(s) not shown" in out


def test_prune_acts_as_of_the_time_it_is_given(history_runs, workflows):
    """The upkeep prunes as of its own tick, so a simulated clock (the soak run) prunes too."""
    runs = history_runs
    result = history.prune(datetime.now(timezone.utc) - timedelta(days=17))
    assert result.removed == [runs["old tick"]] and result.failed_kept == [runs["old failure"]]
    assert _present(workflows) == set(runs.values()) - {runs["old tick"]}


def test_scheduler_events_are_bounded():
    class Idle:
        def history(self):
            return {}

        def resume_interrupted(self):
            return {}

    scheduler = Scheduler([], Idle(), clock=lambda: datetime(2024, 1, 1, tzinfo=timezone.utc))
    for minute in range(EVENTS_KEPT + 50):
        scheduler._emit(datetime(2024, 1, 1, tzinfo=timezone.utc), "1m", "fired", detail=str(minute))
    assert len(scheduler.events) == EVENTS_KEPT
    assert scheduler.events[-1].detail == str(EVENTS_KEPT + 49)  # the newest are the ones kept
