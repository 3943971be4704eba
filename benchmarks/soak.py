"""The soak run: the full schedule (five crons and the daily upkeep) for simulated days, on a
real local Ray with real workflows and the warm Spark service, with faults.

    python -m benchmarks.soak [--days 3] [--step-minutes 120] [--trades-per-day 20000]
                              [--out benchmarks/results/soak.json] [--keep DIR]

How it runs:
- `ohlcv up` starts a local Ray head and the Spark service (in a scratch folder, with its own
  state folder, so a user's own `ohlcv up` is untouched).
- Day 0 is history: ingested, then backfilled with `ohlcv backfill`, as a new deployment would.
- The scheduler runs in a process of its own (`--scheduler-process`) whose clock is a file
  this process writes. Each step moves the clock forward by `--step-minutes`; the scheduler
  coalesces the ticks that passed, as after any stall. Before each step the trades of that
  step land (`ingest_files`, stamped with the simulated time), and now and then:
  - late files: held-back trades of earlier hours and days (up to 2 days late), and a
    re-sent file with other prices (a later version, which must lose);
  - transient failures, by failpoint, of a Spark step and of a commit (retried in place);
  - once, a SIGKILL of the scheduler while its ticks run, then a restart.
- Every simulated day starts with a fresh scheduler process, so its start-up is timed each day
  with the run history growing; the history window (OHLCV_RUN_HISTORY_DAYS) is 1 day, so
  workflow storage must stop growing after day 2.
- At the end, every candle table is compared with DuckDB's candles from the rows this process
  sent (benchmarks/reference.py), every closed window, field by field.

It reports storage bytes per simulated day, scheduler start-up per day, p50/p99 tick latency
(fired to finished, wall time) and the oracle's verdict, and exits non-zero if a table differs,
a tick failed, or workflow storage grew after the history window.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FIRST_DAY = datetime(2024, 6, 1, tzinfo=timezone.utc)  # day 0, the history; the soak starts a day later
HISTORY_DAYS = 1  # OHLCV_RUN_HISTORY_DAYS for the run: pruning shows within 3 simulated days
LATE_SHARE = 0.01  # of each day's trades, held back and sent late
STEP_TIMEOUT = 900.0  # seconds a step may take before the soak gives up
# Storage may wobble with the hour of day; "flat" means the last day within this of the one before.
FLAT_TOLERANCE = 0.10
# A candle table's manifests may grow with the partitions it holds (a day's files land in their
# own), not with its commits: pyiceberg's overwrite kept one more manifest a commit, which every
# later commit read (ohlcv/data_files.py, _ReplaceFiles).
MANIFESTS_PER_DAY = 4


def log(message: str) -> None:
    print(f"[soak] {message}", flush=True)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------- the scheduler process
def scheduler_process(folder: Path) -> None:
    """The scheduler as `ohlcv schedule` runs it, with the clock read from `folder/clock`.

    It appends its events (with wall times) to `folder/events.jsonl` and writes the clock
    value to `folder/idle` each time it has polled at that value with no tick in flight.
    """
    from ohlcv import timeframes
    from ohlcv.settings import from_environment
    from workflows.orchestration.ids import UPKEEP
    from workflows.scheduling.cron import Job
    from workflows.scheduling.launcher import WorkflowLauncher
    from workflows.scheduling.loop import Scheduler

    clock_file, idle_file, events_file = folder / "clock", folder / "idle", folder / "events.jsonl"
    now = [datetime.fromisoformat(clock_file.read_text().strip())]
    events = open(events_file, "a", buffering=1)

    def record(event) -> None:
        events.write(json.dumps({"wall": time.time(), "at": iso(event.at), "timeframe": event.timeframe, "kind": event.kind,
                                 "tick": iso(event.tick) if event.tick else None, "detail": event.detail}) + "\n")

    started = time.perf_counter()
    settings = from_environment()
    jobs = [*timeframes.resolve("all"), Job(UPKEEP, settings.upkeep_cron)]
    scheduler = Scheduler(jobs, WorkflowLauncher(settings), lambda: now[0], settings.catchup, settings.overlap, on_event=record)
    connected = time.perf_counter()
    scheduler.start_up()
    events.write(json.dumps({"wall": time.time(), "kind": "started", "at": iso(now[0]),
                             "connect_seconds": round(connected - started, 3),
                             "start_up_seconds": round(time.perf_counter() - connected, 3)}) + "\n")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: scheduler.stop())
    while not scheduler.stopping:
        now[0] = datetime.fromisoformat(clock_file.read_text().strip())
        scheduler.poll()
        if not scheduler.in_flight():
            idle_file.write_text(iso(now[0]))
        time.sleep(0.25)


# ----------------------------------------------------------------------------- the trades
@dataclass
class Trades:
    """Every row the soak sends, with the simulated time it was sent: the oracle's input."""

    folder: Path
    sent: list[pa.Table] = field(default_factory=list)
    files: int = 0

    def send(self, catalog, namespace: str, rows: pa.Table, at: datetime, label: str, clean: bool = True) -> None:
        from ohlcv.ingest import ingest_files

        if rows.num_rows == 0:
            return
        self.files += 1
        path = self.folder / f"{self.files:05d}-{label}-{at:%Y%m%dT%H%M}.parquet"
        pq.write_table(rows, path)
        [report] = ingest_files(catalog, namespace, [path], "us", at)
        if clean and report.quarantined:  # a re-sent version may be refused; generated trades may not
            raise RuntimeError(f"{path}: {report.quarantined} generated rows quarantined: {report}")
        self.sent.append(rows.append_column("ingested_at", pa.array([at] * rows.num_rows, pa.timestamp("us", tz="UTC"))))


def between(rows: pa.Table, start: datetime, end: datetime) -> pa.Table:
    """The rows whose trade time lies in [start, end)."""
    ts = rows.column("timestamp")
    return rows.filter(pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)), pc.less(ts, pa.scalar(end, ts.type))))


def a_later_version(rows: pa.Table) -> pa.Table:
    """The same trades re-sent with other prices: the first version ingested must win."""
    price = pc.multiply(rows.column("price"), 1.01)
    return rows.set_column(rows.schema.get_field_index("price"), "price", price)


# ---------------------------------------------------------------------------- the run
@dataclass
class Soak:
    root: Path
    days: int
    step: timedelta
    trades_per_day: int
    env: dict[str, str] = field(default_factory=dict)
    scheduler: subprocess.Popen | None = None
    results: dict = field(default_factory=dict)

    @property
    def control(self) -> Path:
        return self.root / "scheduler"

    def setup(self) -> None:
        from ohlcv.catalog import ensure_tables, open_catalog
        from ohlcv.settings import from_environment

        for name in ("warehouse", "scheduler", "files", "failpoints", "state"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OHLCV_", "RAY_"))}
        self.env.update(
            OHLCV_WAREHOUSE=str(self.root / "warehouse"),
            OHLCV_WORKFLOW_STORAGE=str(self.root / "workflows"),
            OHLCV_RUN_HISTORY_DAYS=str(HISTORY_DAYS),
            OHLCV_FAILPOINT_DIR=str(self.root / "failpoints"),
            OHLCV_STEP_RETRY_DELAY="1",
            OHLCV_SNAPSHOT_DAYS="1",  # the upkeep expires snapshots within the run, too
            XDG_STATE_HOME=str(self.root / "state"),  # `ohlcv up`'s record of its head: this run's own
        )
        self.settings = from_environment(self.env)
        self.catalog = open_catalog(self.settings)
        ensure_tables(self.catalog, self.settings.namespace)
        self.trades = Trades(self.root / "files")

    def ohlcv(self, *args: str) -> float:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "workflows.cli", *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ohlcv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return round(time.monotonic() - started, 2)

    # -- the scheduler process
    def set_clock(self, moment: datetime) -> None:
        (self.control / "clock.tmp").write_text(iso(moment))
        (self.control / "clock.tmp").replace(self.control / "clock")

    def start_scheduler(self) -> None:
        (self.control / "idle").unlink(missing_ok=True)  # the last process's word is not this one's
        with open(self.control / "scheduler.log", "a") as scheduler_log:
            self.scheduler = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.soak", "--scheduler-process", str(self.control)],
                env=self.env, cwd=ROOT.parent, stdout=scheduler_log, stderr=subprocess.STDOUT,
            )

    def send(self, rows: pa.Table, at: datetime, label: str, clean: bool = True) -> None:
        self.trades.send(self.catalog, self.settings.namespace, rows, at, label, clean)

    def stop_scheduler(self, sig: int = signal.SIGTERM) -> None:
        if self.scheduler is None:
            return
        self.scheduler.send_signal(sig)
        self.scheduler.wait(timeout=120)
        self.scheduler = None

    def events(self) -> list[dict]:
        path = self.control / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def wait_idle(self, moment: datetime) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        idle = self.control / "idle"
        while not (idle.exists() and idle.read_text() == iso(moment)):
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError(f"the scheduler exited ({self.scheduler.returncode}); see {self.control / 'scheduler.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ticks of {iso(moment)} did not finish within {STEP_TIMEOUT:.0f} s")
            time.sleep(0.2)

    def wait_fired(self, moment: datetime) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not any(e["kind"] == "fired" and e["at"] == iso(moment) for e in self.events()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing fired at {iso(moment)}")
            time.sleep(0.2)

    # -- the phases
    def history(self, on_time: pa.Table) -> None:
        first, soak_start = FIRST_DAY, FIRST_DAY + timedelta(days=1)
        self.send(between(on_time, first, soak_start), soak_start - timedelta(minutes=30), "history")
        self.results["backfill_history_seconds"] = self.ohlcv("backfill", "--timeframe", "all", "--start", iso(first), "--end", iso(soak_start))

    def run(self) -> None:
        from ohlcv.generate import GenerateSpec, generate
        from workflows.orchestration import failpoints

        soak_start = FIRST_DAY + timedelta(days=1)
        soak_end = soak_start + timedelta(days=self.days)
        everything = generate(GenerateSpec(FIRST_DAY, soak_end, trades_per_day=self.trades_per_day, seed=11))
        rng = np.random.default_rng(5)
        held_back = rng.random(everything.num_rows) < LATE_SHARE
        log(f"{everything.num_rows} trades over day 0 and {self.days} simulated days; {int(held_back.sum())} held back to arrive late")

        on_time, late = everything.filter(pa.array(~held_back)), everything.filter(pa.array(held_back))
        self.results["up_seconds"] = self.ohlcv("up")
        self.history(on_time)
        log(f"history day backfilled in {self.results['backfill_history_seconds']} s")

        steps_per_day = timedelta(days=1) // self.step
        moment, previous_file = soak_start, None
        self.set_clock(moment)
        storage: list[dict] = []
        killed_at = None
        step = 0
        # The last step lands 20 minutes into the day after: by then every timeframe's cron
        # (1d at 00:05, 1h at :15) has fired a tick that closes every window of the soak.
        final = soak_end + timedelta(minutes=20)
        while moment < final:
            day = (moment - soak_start).days
            if moment == soak_start + timedelta(days=day) and self.scheduler is not None:
                # At midnight each time: a day's storage compares with the day before's.
                storage.append(self.measure_storage(day))
                self.stop_scheduler()  # each simulated day starts a fresh scheduler: its start-up is timed
            if self.scheduler is None:
                self.set_clock(moment)
                self.start_scheduler()
                self.wait_idle(moment)
            following = min(moment + self.step, final)
            rows = between(on_time, moment, following)
            self.send(rows, following, "on-time")
            # Late: at noon, the held-back trades of the simulated day before (12 to 36 hours
            # late); on the second day also those of day 0 (over 2 days late: beyond every
            # lookback); the last day's with the last step. Each held-back trade is sent once.
            if following.hour == 12 and following.minute == 0:
                late_rows = between(late, max(following - timedelta(hours=36), soak_start), following - timedelta(hours=12))
                if day == 1:
                    late_rows = pa.concat_tables([late_rows, between(late, FIRST_DAY, soak_start)])
                self.send(late_rows, following, "late")
            if step % 5 == 2 and previous_file is not None:
                self.send(a_later_version(previous_file), following, "re-sent", clean=False)
            if following == final:  # the rest of the held-back trades, with the last step
                self.send(between(late, soak_end - timedelta(days=1), soak_end), following, "late")
            previous_file = rows
            if step % 6 == 1:
                failpoints.arm(self.env["OHLCV_FAILPOINT_DIR"], "aggregate", "transient")
            if step % 6 == 4:
                failpoints.arm(self.env["OHLCV_FAILPOINT_DIR"], "commit", "transient")

            self.set_clock(following)
            if killed_at is None and day == 1 and following.hour >= 12:
                self.wait_fired(following)
                log(f"SIGKILL of the scheduler at {iso(following)}, its ticks in flight")
                self.stop_scheduler(signal.SIGKILL)
                killed_at = following
                self.start_scheduler()
            self.wait_idle(following)
            step += 1
            moment = following
            if step % steps_per_day == 0 or moment >= final:
                log(f"{iso(moment)}: {step} steps, {self.trades.files} files sent")
        self.stop_scheduler()
        self.results.update(killed_at=iso(killed_at) if killed_at else None, storage=storage, files_sent=self.trades.files)
        self.summarize_events()
        self.results["oracle"] = self.compare(soak_end, self.closed_by_ticks())

    def measure_storage(self, day: int) -> dict:
        def size(path: Path) -> int:
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

        warehouse = self.root / "warehouse"
        metadata = sum(size(folder) for folder in warehouse.rglob("metadata") if folder.is_dir())
        found = {"days_done": day, "workflow_storage_bytes": size(self.root / "workflows"),
                 "warehouse_bytes": size(warehouse), "warehouse_metadata_bytes": metadata,
                 "candle_manifests": self.candle_manifests()}
        log(f"after {day} simulated day(s): workflow storage {found['workflow_storage_bytes'] / 1e6:.2f} MB, "
            f"warehouse {found['warehouse_bytes'] / 1e6:.2f} MB (metadata {metadata / 1e6:.2f} MB), "
            f"manifests per candle table {found['candle_manifests']}")
        return found

    def candle_manifests(self) -> dict[str, int]:
        """The manifests each candle table's current snapshot lists: what every commit reads."""
        from ohlcv.catalog import load_candles
        from ohlcv.timeframes import TIMEFRAMES

        counts = {}
        for tf in TIMEFRAMES.values():
            table = load_candles(self.catalog, self.settings.namespace, tf)
            snapshot = table.current_snapshot()
            counts[tf.name] = len(snapshot.manifests(table.io)) if snapshot is not None else 0
        return counts

    def summarize_events(self) -> None:
        events = self.events()
        fired = {(e["timeframe"], e["tick"]): e["wall"] for e in events if e["kind"] == "fired"}
        latencies = sorted(e["wall"] - fired[(e["timeframe"], e["tick"])] for e in events
                           if e["kind"] == "finished" and (e["timeframe"], e["tick"]) in fired)
        starts = [e for e in events if e["kind"] == "started"]
        failed = [e for e in events if e["kind"] == "failed"]
        kinds: dict[str, int] = {}
        for e in events:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        self.results.update(
            ticks_finished=len(latencies),
            events=kinds,
            failed=[f"{e['timeframe']} {e['tick']}: {e['detail']}" for e in failed],
            tick_latency_seconds={"p50": round(float(np.percentile(latencies, 50)), 2), "p99": round(float(np.percentile(latencies, 99)), 2),
                                  "max": round(latencies[-1], 2)} if latencies else None,
            scheduler_start_ups=[{"at": e["at"], "connect_seconds": e["connect_seconds"], "start_up_seconds": e["start_up_seconds"]} for e in starts],
        )

    def closed_by_ticks(self) -> dict[str, datetime]:
        """Per timeframe, the end of the closed windows its newest finished tick recomputed."""
        from ohlcv.timeframes import TIMEFRAMES
        from ohlcv.windows import tick_range

        closed = {}
        for e in self.events():
            if e["kind"] == "finished" and e["timeframe"] in TIMEFRAMES and e["tick"]:
                end = tick_range(TIMEFRAMES[e["timeframe"]], datetime.fromisoformat(e["tick"])).end
                closed[e["timeframe"]] = max(end, closed.get(e["timeframe"], end))
        return closed

    def compare(self, soak_end: datetime, closed: dict[str, datetime]) -> dict:
        """Every candle table against DuckDB over the rows sent: every window that ends by the
        end of the soak (each timeframe's last tick must have closed them all)."""
        from benchmarks.reference import CANDLE_COLUMNS, duckdb_candles
        from ohlcv.catalog import load_candles
        from ohlcv.timeframes import TIMEFRAMES

        sent = pa.concat_tables(self.trades.sent)
        oracle_file = self.root / "sent.parquet"
        pq.write_table(sent, oracle_file)
        widths = {name: tf.width // timedelta(microseconds=1) for name, tf in TIMEFRAMES.items()}
        expected = duckdb_candles([str(oracle_file)], 0, micros(soak_end), widths, threads=2)
        verdict = {}
        for name, tf in TIMEFRAMES.items():
            table = load_candles(self.catalog, self.settings.namespace, tf)
            stored = table.scan().to_arrow().select(CANDLE_COLUMNS)
            differences = differ(stored, expected[name], soak_end)
            if closed.get(name, EPOCH) < soak_end:
                differences.insert(0, f"its last tick closed windows up to {closed.get(name)}, not {soak_end}")
            verdict[name] = {"windows": expected[name].num_rows, "differences": len(differences), "first": differences[:5]}
            log(f"{name}: {expected[name].num_rows} windows, {len(differences)} differences" + (f", e.g. {differences[0]}" if differences else ""))
        return verdict


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def as_frame(candles: pa.Table):
    """Times as microseconds since the epoch: DuckDB's and Iceberg's time zones then compare equal."""
    for name in ("window_start", "window_end"):
        us = pc.cast(pc.cast(candles.column(name), pa.timestamp("us", tz="UTC")), pa.int64())
        candles = candles.set_column(candles.schema.get_field_index(name), name, us)
    return candles.to_pandas()


def differ(stored: pa.Table, expected: pa.Table, end: datetime) -> list[str]:
    """Field-by-field differences over windows that end by `end` (volume and vwap to 1e-9)."""
    key = ["exchange", "symbol", "window_start"]
    got, want = (as_frame(t).pipe(lambda f: f[f.window_end <= micros(end)]).set_index(key).sort_index() for t in (stored, expected))
    problems = [f"missing {k}" for k in want.index.difference(got.index)[:5]]
    problems += [f"unexpected {k}" for k in got.index.difference(want.index)[:5]]
    both = want.index.intersection(got.index)
    for column in ("window_end", "open_price", "high_price", "low_price", "close_price", "trade_count", "volume", "vwap"):
        a, b = got.loc[both, column], want.loc[both, column]
        if column in ("volume", "vwap"):
            bad = ~np.isclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9, atol=0.0)
        else:
            bad = (a != b).to_numpy()
        problems += [f"{k} {column}: {a[k]!r} != {b[k]!r}" for k in both[bad][:5]]
    if got.index.has_duplicates:
        problems.append("duplicate candle keys")
    return problems


def verdicts(results: dict) -> list[str]:
    """What makes the soak fail; empty when it passed."""
    problems = [f"{name}: {v['differences']} differences from the oracle" for name, v in results["oracle"].items() if v["differences"]]
    problems += [f"tick failed: {line}" for line in results["failed"]]
    storage = [s["workflow_storage_bytes"] for s in results["storage"]]
    if len(storage) >= 3 and storage[-1] > storage[-2] * (1 + FLAT_TOLERANCE):
        problems.append(f"workflow storage still grows after the history window: {storage}")
    manifests = [s["candle_manifests"] for s in results["storage"]]
    for before, after in zip(manifests, manifests[1:]):
        grown = {name: after[name] - before[name] for name in after if after[name] - before[name] > MANIFESTS_PER_DAY}
        if grown:
            problems.append(f"candle tables gained more than {MANIFESTS_PER_DAY} manifests in a day: {grown}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--step-minutes", type=int, default=120)
    parser.add_argument("--trades-per-day", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "soak.json")
    parser.add_argument("--keep", type=Path, help="Run in this folder and keep it (default: a temporary one, removed).")
    parser.add_argument("--scheduler-process", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scheduler_process:
        scheduler_process(args.scheduler_process)
        return 0
    if (timedelta(days=1) // timedelta(minutes=args.step_minutes)) * args.step_minutes != 1440:
        parser.error("--step-minutes must divide a day")
    root = args.keep or Path(tempfile.mkdtemp(prefix="ohlcv-soak-"))
    soak = Soak(root, args.days, timedelta(minutes=args.step_minutes), args.trades_per_day)
    started = time.monotonic()
    try:
        soak.setup()
        soak.run()
    finally:
        soak.stop_scheduler(signal.SIGKILL)
        subprocess.run([sys.executable, "-m", "workflows.cli", "down"], env=soak.env, capture_output=True)
    results = {"days": args.days, "step_minutes": args.step_minutes, "trades_per_day": args.trades_per_day,
               "history_days": HISTORY_DAYS, "wall_seconds": round(time.monotonic() - started, 1), **soak.results}
    problems = verdicts(results)
    results["passed"], results["problems"] = not problems, problems
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"results in {args.out}: " + ("PASSED" if not problems else "FAILED: " + "; ".join(problems)))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
