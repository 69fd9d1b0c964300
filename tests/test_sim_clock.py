"""Simulated time runs `speedup` times faster than the wall clock."""
import threading
from datetime import datetime, timedelta, timezone

import pytest

from smartcity.sim.clock import SimClock

START = datetime(2026, 11, 28, 1, 0, tzinfo=timezone.utc)


class FakeWall:
    def __init__(self):
        self.t = 1000.0
        self.slept = []

    def monotonic(self):
        return self.t

    def sleep(self, s):
        self.slept.append(s)
        self.t += s


def test_simulated_time_runs_speedup_times_faster():
    wall = FakeWall()
    clock = SimClock(START, speedup=60, monotonic=wall.monotonic, sleep=wall.sleep)
    assert clock.now() == START
    wall.t += 2.0
    assert clock.now() == START + timedelta(minutes=2)


def test_sleep_until_sleeps_the_wall_time_scaled_down():
    wall = FakeWall()
    clock = SimClock(START, speedup=10, monotonic=wall.monotonic, sleep=wall.sleep)
    assert clock.sleep_until(START + timedelta(seconds=30)) is True
    assert wall.slept == [pytest.approx(3.0)]
    assert clock.now() == START + timedelta(seconds=30)


def test_sleep_until_a_past_time_returns_at_once():
    wall = FakeWall()
    clock = SimClock(START, speedup=10, monotonic=wall.monotonic, sleep=wall.sleep)
    wall.t += 5
    clock.sleep_until(START + timedelta(seconds=10))
    assert wall.slept == []


def test_a_two_hour_trip_replays_in_two_minutes_at_speedup_60():
    wall = FakeWall()
    clock = SimClock(START, speedup=60, monotonic=wall.monotonic, sleep=wall.sleep)
    for minute in range(1, 121):
        clock.sleep_until(START + timedelta(minutes=minute))
    assert sum(wall.slept) == pytest.approx(120.0)


def test_real_sleep_is_interrupted_by_the_stop_event():
    clock = SimClock(START, speedup=1.0)
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    assert clock.sleep_until(START + timedelta(hours=1), stop) is False


def test_real_clock_paces_in_wall_time():
    clock = SimClock(START, speedup=100.0)
    target = START + timedelta(seconds=5)        # 50 ms of wall time
    clock.sleep_until(target)
    assert clock.now() >= target


def test_unpaced_clock_follows_the_simulation_without_sleeping():
    wall = FakeWall()
    clock = SimClock(START, speedup=float("inf"), monotonic=wall.monotonic, sleep=wall.sleep)
    clock.sleep_until(START + timedelta(hours=2))
    assert clock.now() == START + timedelta(hours=2) and wall.slept == []
    clock.sleep_until(START + timedelta(hours=1))  # never goes backwards
    assert clock.now() == START + timedelta(hours=2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        SimClock(START, speedup=0)
    with pytest.raises(ValueError):
        SimClock(START, speedup=float("nan"))
    with pytest.raises(ValueError):
        SimClock(START.replace(tzinfo=None))
    with pytest.raises(ValueError):
        SimClock(START).sleep_until(datetime(2026, 1, 1))
