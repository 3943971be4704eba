"""What a long run history costs the commands that read it: scheduler start-up, `ohlcv status`
and `ohlcv workflows list`, with a few runs in storage and then with 10,000 (three weeks of
ticks), and the daily upkeep's prune of them.

    python -m benchmarks.run_history [--runs 10000] [--out benchmarks/results/run_history.json]

The runs are real Ray workflows under the platform's ids: a few are run, then their storage is
copied under the ids of older ticks (with the status index Ray Workflows keeps), which is what
months of operation leave behind. Each measurement is the command's own work on a connected
driver, the median of 3; the targets are 2 s or less with 10,000 runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ohlcv import timeframes
from ohlcv.catalog import ensure_tables, open_catalog
from ohlcv.settings import Settings
from workflows.orchestration import history, ids

ROOT = Path(__file__).resolve().parent
TARGET_SECONDS = 2.0


def log(message: str) -> None:
    print(f"[run-history] {message}", flush=True)


def timed(action, repeats: int = 3) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return round(statistics.median(seconds), 3)


def seed_runs(workflow, now: datetime) -> list[str]:
    import ray

    @ray.remote(num_cpus=0)
    def done() -> int:
        return 1

    seeds = [ids.tick_workflow_id(timeframes.get(name), now - timedelta(minutes=minutes))
             for name, minutes in (("1m", 1), ("5m", 5), ("1h", 60))]
    for workflow_id in seeds:
        workflow.run(done.bind(), workflow_id=workflow_id)
    return seeds


def clone_runs(storage_root: Path, seed: str, count: int, now: datetime) -> None:
    """`count` copies of a finished run under the ids of older 1m ticks, 3 minutes apart (10,000
    reach three weeks back), each with its entry in Ray Workflows' status index. Hard links: the
    files are identical."""
    workflows_dir = storage_root / "workflows"
    index = workflows_dir / "__status__" / "SUCCESSFUL"
    one_minute = timeframes.get("1m")
    for number in range(count):
        workflow_id = ids.tick_workflow_id(one_minute, now - timedelta(minutes=2 + 3 * number))
        shutil.copytree(workflows_dir / seed, workflows_dir / workflow_id, copy_function=os.link)
        (index / workflow_id).touch()


def measure(settings: Settings, now: datetime) -> dict[str, float]:
    from workflows.cli.main import main
    from workflows.scheduling.cron import Job
    from workflows.scheduling.launcher import WorkflowLauncher
    from workflows.scheduling.loop import Scheduler
    from workflows.runtime import import_workflow

    workflow = import_workflow()

    def start_up() -> None:
        jobs = [*timeframes.resolve("all"), Job(ids.UPKEEP, settings.upkeep_cron)]
        # catch-up "skip": the start-up reads the history (resume, newest tick per job) and fires nothing
        Scheduler(jobs, WorkflowLauncher(settings), lambda: now, catchup="skip").start_up()

    def cli(*args: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(list(args))
            except SystemExit as stop:
                assert stop.code in (0, None), stop.code

    return {
        "scheduler start-up": timed(start_up),
        "status": timed(lambda: cli("status")),
        "workflows list": timed(lambda: cli("workflows", "list")),
        "listed": len(workflow.list_all()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "run_history.json")
    args = parser.parse_args(argv)

    import ray

    from workflows.runtime import import_workflow

    scratch = Path(tempfile.mkdtemp(prefix="ohlcv-run-history-"))
    storage = scratch / "workflow-storage"
    settings = Settings(warehouse=str(scratch / "warehouse"), workflow_storage=storage.as_uri())
    ensure_tables(open_catalog(settings), settings.namespace)
    os.environ.update(OHLCV_WAREHOUSE=settings.warehouse, OHLCV_WORKFLOW_STORAGE=settings.workflow_storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, storage=storage.as_uri(), namespace="ohlcv")
    results: dict = {"runs": args.runs, "target_seconds": TARGET_SECONDS}
    try:
        workflow = import_workflow()
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        seeds = seed_runs(workflow, now)
        results["few runs"] = measure(settings, now)
        log(f"with {len(seeds)} runs: {results['few runs']}")
        started = time.perf_counter()
        clone_runs(storage, seeds[0], args.runs, now)
        log(f"{args.runs} runs written in {time.perf_counter() - started:.0f}s")
        results["many runs"] = measure(settings, now)
        log(f"with {args.runs + len(seeds)} runs: {results['many runs']}")
        started = time.perf_counter()
        pruned = history.prune(now - timedelta(days=settings.run_history_days))
        results["prune"] = {"removed": len(pruned.removed), "seconds": round(time.perf_counter() - started, 1),
                            "left": len(workflow.list_all())}
        log(f"prune: {results['prune']}")
        results["met"] = all(results["many runs"][key] <= TARGET_SECONDS for key in ("scheduler start-up", "status", "workflows list"))
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
