"""The scheduler under a fake clock: cron times, no overlap (skip or wait), catch-up after a gap,
clean stop. The launcher here stands in for Ray Workflows with ticks that take fake time; the
real launcher is exercised by tests/test_cluster.py through `ray job submit`."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from support import utc
from ohlcv import timeframes
from workflows.scheduling.cron import catch_up, due_ticks, latest_tick, next_tick
from workflows.scheduling.loop import Scheduler

ONE, FIVE, THIRTY, HOUR, DAY = (timeframes.get(n) for n in ("1m", "5m", "30m", "1h", "1d"))


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=max(seconds, 0.001))


class FakeLauncher:
    """Ticks that take `durations[tf]` of fake time; refuses to start an overlapping tick."""

    def __init__(self, clock: FakeClock, durations=None, history=None, failing=()) -> None:
        self.clock, self.durations = clock, durations or {}
        self._history = history or {}
        self.failing = set(failing)
        self.started: list[tuple[str, datetime, datetime]] = []  # (timeframe, tick, started at)
        self.live: dict[str, tuple] = {}

    def history(self):
        return dict(self._history)

    def resume_interrupted(self):
        return {}

    def start(self, tf, tick):
        assert not (tf.name in self.live and self.running(self.live[tf.name])), f"two {tf.name} ticks at once"
        handle = (tf.name, tick, self.clock() + self.durations.get(tf.name, timedelta(seconds=20)))
        self.live[tf.name] = handle
        self.started.append((tf.name, tick, self.clock()))
        return handle

    def running(self, handle):
        return self.clock() < handle[2]

    def finished(self, handle):
        return f"{handle[0]} failed on purpose" if handle[0] in self.failing else "succeeded"


def run_for(scheduler: Scheduler, clock: FakeClock, until: datetime) -> None:
    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock() >= until:
            scheduler.stop()

    scheduler.run(sleep=sleep)


def ticks_of(launcher: FakeLauncher, name: str) -> list[datetime]:
    return [tick for tf, tick, _ in launcher.started if tf == name]


def test_cron_arithmetic_of_each_timeframe():
    hour = (utc(2024, 5, 1, 10), utc(2024, 5, 1, 11))
    assert [t.minute for t in due_ticks(FIVE, *hour)] == [5, 20, 35, 50]
    assert [t.minute for t in due_ticks(THIRTY, *hour)] == [10, 40]
    assert len(due_ticks(ONE, *hour)) == 12
    assert next_tick(DAY, utc(2024, 5, 1, 0, 5)) == utc(2024, 5, 2, 0, 5)
    assert latest_tick(HOUR, utc(2024, 5, 1, 10, 15)) == utc(2024, 5, 1, 10, 15)
    assert latest_tick(HOUR, utc(2024, 5, 1, 10, 14, 59)) == utc(2024, 5, 1, 9, 15)


@pytest.mark.parametrize(("policy", "fired", "not_fired"), [("coalesce", 1, 11), ("all", 12, 0), ("skip", 0, 12)])
def test_catch_up_policies(policy, fired, not_fired):
    fire, missed = catch_up(ONE, utc(2024, 5, 1, 10), utc(2024, 5, 1, 11, 2), policy)
    assert (len(fire), missed) == (fired, not_fired)
    if policy == "coalesce":
        assert fire == [utc(2024, 5, 1, 11)]
    assert catch_up(HOUR, None, utc(2024, 5, 1, 11, 2), policy)[0] == ([] if policy == "skip" else [utc(2024, 5, 1, 10, 15)])


def test_an_hour_of_ticks_at_the_cron_times():
    clock = FakeClock(utc(2024, 5, 1, 10, 0, 30))
    launcher = FakeLauncher(clock, history={tf.name: latest_tick(tf, clock()) for tf in timeframes.resolve("all")})
    scheduler = Scheduler(timeframes.resolve("all"), launcher, clock)
    run_for(scheduler, clock, utc(2024, 5, 1, 11, 0, 30))
    assert ticks_of(launcher, "1m") == [utc(2024, 5, 1, 10, 5) + timedelta(minutes=5 * i) for i in range(12)]
    assert [t.minute for t in ticks_of(launcher, "5m")] == [5, 20, 35, 50]
    assert [t.minute for t in ticks_of(launcher, "30m")] == [10, 40]
    assert ticks_of(launcher, "1h") == [utc(2024, 5, 1, 10, 15)]
    assert ticks_of(launcher, "1d") == []
    # Each tick starts at its time (within the loop's wake-up precision), not later.
    assert all(timedelta(0) <= started - tick < timedelta(seconds=1) for _, tick, started in launcher.started)


def test_a_slow_tick_makes_the_next_one_skip():
    clock = FakeClock(utc(2024, 5, 1, 10, 0, 30))
    launcher = FakeLauncher(clock, durations={"1m": timedelta(minutes=7)}, history={"1m": utc(2024, 5, 1, 10)})
    scheduler = Scheduler([ONE], launcher, clock, overlap="skip")
    run_for(scheduler, clock, utc(2024, 5, 1, 10, 31))
    # 10:05 runs to 10:12, so 10:10 is skipped; 10:15 runs to 10:22, so 10:20 is skipped; ...
    assert [t.minute for t in ticks_of(launcher, "1m")] == [5, 15, 25]
    skipped = [e.tick.minute for e in scheduler.events if e.kind == "skipped"]
    assert skipped == [10, 20, 30]


def test_a_slow_tick_makes_the_next_one_wait():
    clock = FakeClock(utc(2024, 5, 1, 10, 0, 30))
    launcher = FakeLauncher(clock, durations={"1m": timedelta(minutes=7)}, history={"1m": utc(2024, 5, 1, 10)})
    scheduler = Scheduler([ONE], launcher, clock, overlap="wait")
    run_for(scheduler, clock, utc(2024, 5, 1, 10, 31))
    started = [(tick.minute, at) for name, tick, at in launcher.started]
    # 10:05 runs to 10:12; 10:10 waits and starts at 10:12, runs to 10:19; 10:15 waits, starts
    # at 10:19, runs to 10:26; 10:20 waits, but 10:25 supersedes it (one waiting tick, the
    # newest: its lookback covers the older one), and starts at 10:26.
    assert [minute for minute, _ in started] == [5, 10, 15, 25]
    assert utc(2024, 5, 1, 10, 12) <= started[1][1] < utc(2024, 5, 1, 10, 12, 6)
    assert utc(2024, 5, 1, 10, 26) <= started[3][1] < utc(2024, 5, 1, 10, 26, 6)


def test_catch_up_after_a_gap_coalesces_to_the_newest_tick():
    clock = FakeClock(utc(2024, 5, 1, 10, 2))
    history = {"1m": utc(2024, 5, 1, 8, 55), "1h": utc(2024, 5, 1, 7, 15), "1d": utc(2024, 5, 1, 0, 5)}
    launcher = FakeLauncher(clock, history=history)
    scheduler = Scheduler([ONE, HOUR, DAY], launcher, clock)
    scheduler.start_up()
    assert launcher.started == [("1m", utc(2024, 5, 1, 10), clock()), ("1h", utc(2024, 5, 1, 9, 15), clock())]
    coalesced = {e.timeframe: e.detail for e in scheduler.events if e.kind == "coalesced"}
    assert coalesced == {"1m": "12 missed tick(s) not fired", "1h": "1 missed tick(s) not fired"}  # 09:00..10:00 = 13, one fired


def test_a_late_wake_up_coalesces_the_ticks_it_slept_through():
    clock = FakeClock(utc(2024, 5, 1, 10, 0, 30))
    launcher = FakeLauncher(clock, history={"1m": utc(2024, 5, 1, 10)})
    scheduler = Scheduler([ONE], launcher, clock)
    scheduler.start_up()
    clock.now = utc(2024, 5, 1, 10, 21)  # the process was suspended for twenty minutes
    scheduler.poll()
    assert ticks_of(launcher, "1m") == [utc(2024, 5, 1, 10, 20)]
    assert [e.detail for e in scheduler.events if e.kind == "coalesced"] == ["3 missed tick(s) not fired"]


def test_stop_is_clean_and_leaves_started_ticks_to_finish():
    clock = FakeClock(utc(2024, 5, 1, 10, 4, 50))
    launcher = FakeLauncher(clock, durations={"1m": timedelta(minutes=3)}, history={"1m": utc(2024, 5, 1, 10)})
    scheduler = Scheduler([ONE], launcher, clock)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock() >= utc(2024, 5, 1, 10, 6):
            scheduler.stop()  # what the SIGTERM handler does

    scheduler.run(sleep=sleep)
    assert ticks_of(launcher, "1m") == [utc(2024, 5, 1, 10, 5)]
    assert scheduler.in_flight() == {"1m": utc(2024, 5, 1, 10, 5)}
    clock.now = utc(2024, 5, 1, 10, 30)
    assert len(launcher.started) == 1  # nothing fires after the stop


def test_failures_are_reported_and_do_not_stop_the_schedule():
    clock = FakeClock(utc(2024, 5, 1, 10, 0, 30))
    launcher = FakeLauncher(clock, history={"5m": utc(2024, 5, 1, 9, 50)}, failing={"5m"})
    scheduler = Scheduler([FIVE], launcher, clock)
    run_for(scheduler, clock, utc(2024, 5, 1, 10, 40))
    assert [t.minute for t in ticks_of(launcher, "5m")] == [5, 20, 35]
    assert [e.detail for e in scheduler.events if e.kind == "failed"] == ["5m failed on purpose"] * 3


def test_catching_up_after_months_counts_back_only_to_the_limit():
    from workflows.scheduling.cron import CATCH_UP_LIMIT

    fire, missed = catch_up(ONE, utc(2024, 1, 1), utc(2026, 11, 26, 16, 2), "coalesce")
    assert fire == [utc(2026, 11, 26, 16)]
    assert missed == CATCH_UP_LIMIT - 1  # a lower bound: the count stops at the limit
    assert due_ticks(ONE, utc(2026, 11, 26, 15), utc(2026, 11, 26, 15, 10)) == [utc(2026, 11, 26, 15, 5), utc(2026, 11, 26, 15, 10)]
