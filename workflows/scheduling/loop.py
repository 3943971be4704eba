"""The cron scheduler: fires each timeframe's tick workflow on its cron, as a long-running Ray job.

Rules:
- a timeframe never has two ticks running at once; a tick that falls due while the previous
  one still runs is skipped (its lookback is covered by the next) or waits, per `overlap`;
- on start-up it resumes workflows a cluster failure interrupted, and catches up ticks missed
  while it was down per `catchup`: "coalesce" (default) fires only the newest missed tick of
  each timeframe, whose lookback covers the others, "all" fires each, "skip" none;
- it stops cleanly on SIGTERM (`ray job stop`): no new tick starts; ticks already started
  finish on their own (workflows are durable and each commit is atomic, so no table is left
  half-written).

The decisions (`workflows.scheduling.cron`) are pure functions of times; the loop takes its clock,
its sleep and its launcher as arguments, so tests drive it with a fake clock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from workflows.scheduling.cron import CATCH_UP_LIMIT, Scheduled, catch_up, due_ticks, next_tick

__all__ = ["Launcher", "Event", "Scheduler", "EVENTS_KEPT"]

log = logging.getLogger(__name__)
EVENTS_KEPT = 1000


class Launcher(Protocol):
    """Starts tick workflows and reports on them (`workflows.scheduling.launcher` is the real one)."""

    def history(self) -> dict[str, datetime]: ...  # newest tick ever started, per timeframe name
    def resume_interrupted(self) -> dict[str, object]: ...  # timeframe name -> handle of a resumed tick
    def start(self, tf: Scheduled, tick: datetime) -> object: ...  # handle
    def running(self, handle: object) -> bool: ...
    def finished(self, handle: object) -> str: ...  # "succeeded" or the failure's one line


@dataclass
class Event:
    at: datetime
    timeframe: str
    kind: str  # fired, skipped, queued, coalesced, resumed, finished, failed
    tick: datetime | None = None
    detail: str = ""


@dataclass
class Scheduler:
    jobs: list[Scheduled]
    launcher: Launcher
    clock: Callable[[], datetime]
    catchup: str = "coalesce"
    overlap: str = "skip"
    max_sleep: float = 30.0
    # The newest events only: a scheduler runs for months, firing about 460 ticks a day.
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    on_event: Callable[[Event], None] | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._running: dict[str, tuple[datetime | None, object]] = {}
        self._waiting: dict[str, datetime] = {}
        self._next: dict[str, datetime] = {}

    # ------------------------------------------------------------------ events and control
    def _emit(self, now: datetime, tf: str, kind: str, tick: datetime | None = None, detail: str = "") -> None:
        event = Event(now, tf, kind, tick, detail)
        self.events.append(event)
        log.info("%s %s %s %s", tf, kind, tick.isoformat() if tick else "", detail)
        if self.on_event is not None:
            self.on_event(event)

    def stop(self) -> None:
        """Ask the loop to stop (safe from a signal handler); started ticks finish on their own."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def in_flight(self) -> dict[str, datetime | None]:
        return {name: tick for name, (tick, _) in self._running.items()}

    # -------------------------------------------------------------------------- the steps
    def start_up(self) -> None:
        now = self.clock()
        for name, handle in self.launcher.resume_interrupted().items():
            self._running[name] = (None, handle)
            self._emit(now, name, "resumed")
        history = self.launcher.history()
        for tf in self.jobs:
            fire, coalesced = catch_up(tf, history.get(tf.name), now, self.catchup)
            if coalesced:
                at_least = "at least " if coalesced + len(fire) >= CATCH_UP_LIMIT else ""
                self._emit(now, tf.name, "coalesced", fire[-1] if fire else None, f"{at_least}{coalesced} missed tick(s) not fired")
            for tick in fire:
                if self.stopping:  # a SIGTERM during a long catch-up: stop firing at once
                    break
                self._fire(tf, tick, now)
            self._next[tf.name] = next_tick(tf, now)

    def _fire(self, tf: Scheduled, tick: datetime, now: datetime) -> None:
        if tf.name in self._running:
            if self.overlap == "wait":
                self._waiting[tf.name] = tick  # only the newest waiting tick matters
                self._emit(now, tf.name, "queued", tick, "previous tick still running")
            else:
                self._emit(now, tf.name, "skipped", tick, "previous tick still running")
            return
        self._running[tf.name] = (tick, self.launcher.start(tf, tick))
        self._emit(now, tf.name, "fired", tick)

    def _reap(self, now: datetime) -> None:
        for name, (tick, handle) in list(self._running.items()):
            if self.launcher.running(handle):
                continue
            del self._running[name]
            outcome = self.launcher.finished(handle)
            self._emit(now, name, "finished" if outcome == "succeeded" else "failed", tick, "" if outcome == "succeeded" else outcome)
        for tf in self.jobs:
            if tf.name in self._waiting and tf.name not in self._running:
                self._fire(tf, self._waiting.pop(tf.name), now)

    def poll(self) -> None:
        """One pass: collect finished ticks, fire the ones due (several passed ones coalesce)."""
        now = self.clock()
        self._reap(now)
        for tf in self.jobs:
            if self._next[tf.name] <= now:
                # Normally one tick is due; after a stall (a suspended process) several are,
                # and the newest covers the others, as at start-up.
                due = due_ticks(tf, self._next[tf.name] - timedelta(microseconds=1), now)
                if len(due) > 1:
                    self._emit(now, tf.name, "coalesced", due[-1], f"{len(due) - 1} missed tick(s) not fired")
                self._fire(tf, due[-1], now)
                self._next[tf.name] = next_tick(tf, now)

    def seconds_to_next(self) -> float:
        now = self.clock()
        soonest = min(self._next.values())
        return max(0.0, min(self.max_sleep, (soonest - now).total_seconds()))

    def run(self, sleep: Callable[[float], object] | None = None) -> None:
        """Start up (unless `start_up` ran already), then poll until stopped.

        `sleep(seconds)` defaults to an interruptible wait.
        """
        wait = sleep or (lambda seconds: self._stop.wait(seconds))
        if not self._next:  # start_up sets every job's next tick
            self.start_up()
        while not self.stopping:
            self.poll()
            if self.stopping:
                break
            # Wake at the next tick, or sooner to notice finished ticks.
            wait(min(self.seconds_to_next(), 5.0) if self._running else self.seconds_to_next())

    def drain(self, sleep: Callable[[float], object], timeout: timedelta | None = None) -> None:
        """Wait until no tick runs (for --once); fires queued ticks as their turn comes."""
        deadline = None if timeout is None else self.clock() + timeout
        while self._running or self._waiting:
            self._reap(self.clock())
            if not (self._running or self._waiting):
                break
            if deadline is not None and self.clock() >= deadline:
                break
            sleep(1.0)
