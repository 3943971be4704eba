"""Failpoints: named places in the steps where a test can inject a failure or a pause.

Inert unless armed: `hit` returns at once when `settings.failpoint_dir` is None (the default),
and otherwise only acts on a failpoint whose file exists in that folder. A test arms one with
`arm(folder, name, action, times=...)`; each hit uses up one of its `times`.

Actions: "terminal" raises a TerminalError, "transient" a TransientError, "sleep" writes the
process id to `<name>.pid` and sleeps `seconds` (long enough for a test to kill the process),
and "corrupt" is returned to the step, which tampers its candles with `corrupt` (to prove that
the audit refuses them).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pyarrow as pa

from ohlcv.errors import TerminalError, TransientError
from ohlcv.settings import Settings

__all__ = ["arm", "hit", "pid_file", "corrupt"]


def arm(
    folder: str | os.PathLike[str], name: str, action: str, times: int = 1, seconds: float = 60.0, skip: int = 0,
    kinds: tuple[str, ...] = (),
) -> None:
    """Arm `name`: let the first `skip` hits pass, then act on the next `times` hits."""
    if action not in ("terminal", "transient", "sleep", "corrupt"):
        raise ValueError(f"unknown failpoint action {action!r}")
    Path(folder).mkdir(parents=True, exist_ok=True)
    spec = {"action": action, "times": times, "seconds": seconds, "skip": skip, "kinds": list(kinds)}
    (Path(folder) / name).write_text(json.dumps(spec))


def pid_file(folder: str | os.PathLike[str], name: str) -> Path:
    return Path(folder) / f"{name}.pid"


def _take(path: Path) -> dict | None:
    """Count one hit of a failpoint; its spec when this hit must act, else None."""
    try:
        handle = open(path, "r+")
    except FileNotFoundError:
        return None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        spec = json.loads(handle.read() or "{}")
        if spec.get("times", 0) <= 0:
            return None
        passing = spec.get("skip", 0) > 0
        if passing:
            spec["skip"] -= 1
        else:
            spec["times"] -= 1
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(spec))
    return None if passing else spec


def hit(settings: Settings, name: str) -> dict | None:
    """Act on an armed failpoint; returns the spec of an action the caller must carry out."""
    if settings.failpoint_dir is None:
        return None
    spec = _take(Path(settings.failpoint_dir) / name)
    if spec is None or spec["action"] == "corrupt":
        return spec
    if spec["action"] == "terminal":
        raise TerminalError(f"failpoint {name} (terminal)")
    if spec["action"] == "transient":
        raise TransientError(f"failpoint {name} (transient)")
    pid_file(settings.failpoint_dir, name).write_text(str(os.getpid()))
    time.sleep(spec["seconds"])
    return None


def corrupt(candles: pa.Table, kinds: list[str]) -> pa.Table:
    """Candles with the named defects, each in a different row (needs at least four rows)."""
    rows = candles.to_pylist()
    if "high_below_low" in kinds:
        rows[0]["high_price"] = rows[0]["low_price"] - 1.0
    if "bad_vwap" in kinds:
        rows[1]["vwap"] = rows[1]["high_price"] * 2
    if "duplicate_window" in kinds:
        rows.append(dict(rows[2]))
    if "trade_count" in kinds:
        rows[3]["trade_count"] += 1
    return pa.Table.from_pylist(rows, schema=candles.schema)
