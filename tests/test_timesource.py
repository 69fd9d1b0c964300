"""Records are stamped by the best clock available, and say which one."""
from datetime import datetime, timezone

from smartcity.edge.timesource import TimeSource, system_clock_synchronised


class Ticker:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_synchronised_system_clock_wins():
    src = TimeSource(synchronised=lambda: True, wall=lambda: 1_700_000_000.5)
    ts, clock = src.now()
    assert clock == "system" and ts == datetime.fromtimestamp(1_700_000_000.5, tz=timezone.utc)


def test_without_sync_gps_time_is_carried_forward_on_the_monotonic_clock():
    mono = Ticker()
    src = TimeSource(synchronised=lambda: False, monotonic=mono, wall=lambda: 0.0)
    gps = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
    src.on_gps_time(gps)
    mono.t += 2.25
    ts, clock = src.now()
    assert clock == "gps" and (ts - gps).total_seconds() == 2.25


def test_without_sync_or_gps_the_record_says_unsynced():
    ts, clock = TimeSource(synchronised=lambda: False, wall=lambda: 86400.0).now()
    assert clock == "unsynced" and ts.year == 1970


def test_sync_state_is_rechecked_not_asked_every_time():
    calls = []
    mono = Ticker()
    src = TimeSource(synchronised=lambda: calls.append(1) or True, monotonic=mono, recheck_s=30)
    for _ in range(5):
        src.now()
    mono.t += 31
    src.now()
    assert len(calls) == 2


def test_kernel_query_answers_a_bool_here():
    assert system_clock_synchronised() in (True, False)
