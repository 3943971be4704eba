"""What a user exploring on one machine waits for: each command as a fresh process, the way it
is typed, with and without the warm local mode (`ohlcv up`).

    python -m benchmarks.local_mode [--repeats 3] [--out benchmarks/results/local_mode.json]

In a scratch folder: a day of 200k trades is generated, ingested and backfilled. Then, cold
(no `ohlcv up`): `candles` and `run --timeframe 1m`, each starting its own Ray and Spark. Then
`ohlcv up`, and the same commands again. Each figure is the median wall time of `--repeats`
runs of the whole command (interpreter start-up included); the ticks are for distinct times.
Targets (issue 13): `ohlcv up` 20 s or less; after it, `candles` and `run --timeframe 1m`
2 s or less each.

`up` and the warm commands are timed on a settled machine: the cold commands' Rays take seconds
to end after they return, and `up`'s keeper warms Spark up for about 8 s after `up` returns.
The first tick typed at once after `up` is reported too (`first_run_1m_after_up_seconds`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DAY = datetime(2024, 6, 3, tzinfo=timezone.utc)
TARGETS = {"up_seconds": 20.0, "warm_candles_seconds": 2.0, "warm_run_1m_seconds": 2.0}


def log(message: str) -> None:
    print(f"[local-mode] {message}", flush=True)


def command(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "workflows.cli", *args], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"ohlcv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return round(seconds, 2)


def wait_until_quiet(limit: float = 30.0, busy_below: float = 0.25) -> float:
    """Wait until this machine's CPUs are mostly idle (over one second), at most `limit` seconds;
    the seconds waited. A command's Ray takes seconds to end after the command returns, and its
    JVMs and workers would otherwise be timed as part of the next command."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = _cpu_times()
        time.sleep(1.0)
        after = _cpu_times()
        total = sum(after) - sum(before)
        idle = (after[3] + after[4]) - (before[3] + before[4])  # idle + iowait
        if total > 0 and 1 - idle / total < busy_below:
            break
    return round(time.monotonic() - started, 1)


def _cpu_times() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(value) for value in stat.readline().split()[1:]]


def keeper_warm(env: dict[str, str], limit: float = 60.0) -> float:
    """Wait until the keeper of `ohlcv up` says its warm-up is done (its log), at most `limit` s."""
    state = Path(env["XDG_STATE_HOME"]) / "ohlcv" / "local-ray.json"
    log_path = Path(json.loads(state.read_text())["temp_dir"]) / "keeper.log"
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if "warm" in (log_path.read_text() if log_path.exists() else ""):
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def median_of(env: dict[str, str], repeats: int, make_args) -> dict:
    seconds = [command(env, *make_args(index)) for index in range(repeats)]
    return {"median": round(statistics.median(seconds), 2), "all": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "local_mode.json")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ohlcv-local-mode-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OHLCV_", "RAY_"))}
    # The scratch folder's own warehouse and state: a user's own `ohlcv up` is not touched.
    env.update(OHLCV_WAREHOUSE=str(root / "warehouse"), XDG_STATE_HOME=str(root / "state"))
    trades = str(root / "trades.parquet")

    def candles(_: int) -> list[str]:
        return ["candles", "--symbol", "BTC-USDT", "--timeframe", "1m", "--limit", "60", "--format", "csv"]

    def tick(offset: int):
        def args_of(index: int) -> list[str]:
            as_of = DAY + timedelta(hours=12, minutes=offset + 5 * index)
            return ["run", "--timeframe", "1m", "--as-of", as_of.isoformat()]
        return args_of

    results: dict = {"repeats": args.repeats, "targets": TARGETS}
    try:
        command(env, "generate", "--out", trades, "--start", DAY.isoformat(), "--trades-per-day", "200000")
        command(env, "init")
        command(env, "ingest", trades)
        log("backfilling the day (cold)")
        results["cold_backfill_seconds"] = command(env, "backfill", "--timeframe", "all", "--start", DAY.isoformat(),
                                                   "--end", (DAY + timedelta(days=1)).isoformat())
        log("cold commands")
        results["cold_candles_seconds"] = median_of(env, args.repeats, candles)
        results["cold_run_1m_seconds"] = median_of(env, args.repeats, tick(0))
        results["quiet_before_up_seconds"] = wait_until_quiet()
        log("ohlcv up")
        results["up_seconds"] = command(env, "up")
        # What a user who types at once gets: the keeper still warms up (Spark's first job) then.
        results["first_run_1m_after_up_seconds"] = command(env, *tick(60)(0))
        results["keeper_warm_after_seconds"] = keeper_warm(env)
        results["quiet_before_warm_seconds"] = wait_until_quiet()
        log("warm commands")
        results["warm_candles_seconds"] = median_of(env, args.repeats, candles)
        results["warm_run_1m_seconds"] = median_of(env, args.repeats, tick(30))
        results["down_seconds"] = command(env, "down")
    finally:
        subprocess.run([sys.executable, "-m", "workflows.cli", "down"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    figures = {name: results[name]["median"] if isinstance(results[name], dict) else results[name] for name in TARGETS}
    results["met"] = {name: figures[name] <= target for name, target in TARGETS.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, target in TARGETS.items():
        log(f"{name}: {figures[name]} s (target {target} s){'' if results['met'][name] else '  MISSED'}")
    log(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
