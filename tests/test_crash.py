"""Crash detection: a collision-like speed drop raises one incident; braking never does."""
from datetime import datetime, timedelta, timezone

import pytest

import smartcity.contracts as contracts
from smartcity.edge.crash import CrashDetector, severity_for_delta_v
from smartcity.sim.trip import TripSimulator

T0 = datetime(2026, 11, 28, 3, 0, tzinfo=timezone.utc)
LAT, LON = 13.36, 101.045


def profile(*legs, hz=10.0):
    """Speed samples from legs of (duration_s, start_kmh, end_kmh), linear within a leg."""
    out, t = [], 0.0
    for dur, v0, v1 in legs:
        n = max(1, round(dur * hz))
        for i in range(n):
            out.append((T0 + timedelta(seconds=t), v0 + (v1 - v0) * i / n))
            t += 1.0 / hz
    return out


def run(det, samples):
    events = []
    for ts, v in samples:
        e = det.feed(ts, v, LAT, LON)
        if e:
            events.append((ts, e))
    return events


def test_a_collision_raises_one_active_crash_incident():
    det = CrashDetector()
    events = run(det, profile((5, 80, 80), (0.2, 80, 0), (10, 0, 0)))
    assert len(events) == 1
    ts, e = events[0]
    assert e["type"] == "crash" and e["status"] == "Active" and e["severity"] == "critical"
    assert (e["lat"], e["lon"]) == (LAT, LON)
    assert timedelta(seconds=1.9) <= ts - (T0 + timedelta(seconds=5)) <= timedelta(seconds=2.6)
    assert det.active_incident_id == e["incident_id"]


def test_a_collision_is_seen_in_one_hertz_samples_too():
    events = run(CrashDetector(), profile((10, 70, 70), (1, 70, 0), (10, 0, 0), hz=1.0))
    assert [e["status"] for _, e in events] == ["Active"]
    assert events[0][1]["severity"] == "high"


@pytest.mark.parametrize("decel_ms2", [4.0, 6.0, 9.5])
def test_braking_to_a_stop_is_not_a_crash_even_an_emergency_stop(decel_ms2):
    v0 = 100.0
    dur = v0 / 3.6 / decel_ms2
    det = CrashDetector()
    assert run(det, profile((5, v0, v0), (dur, v0, 0), (10, 0, 0))) == []
    assert det.counters["crashes"] == 0


def test_a_single_glitched_speed_sample_is_dismissed():
    samples = profile((5, 80, 80))
    samples.append((samples[-1][0] + timedelta(seconds=0.1), 0.0))          # GPS dropout
    samples += [(samples[-1][0] + timedelta(seconds=0.1 * (i + 1)), 80.0) for i in range(50)]
    det = CrashDetector()
    assert run(det, samples) == []
    assert det.counters["candidates"] == 1 and det.counters["dismissed"] == 1


def test_slow_bumps_are_below_the_minimum_speed():
    assert run(CrashDetector(), profile((5, 25, 25), (0.1, 25, 0), (10, 0, 0))) == []


def test_resolved_when_the_vehicle_drives_on_with_the_same_id():
    det = CrashDetector(moving_for_s=10)
    events = run(det, profile((5, 60, 60), (0.2, 60, 0), (120, 0, 0), (4, 0, 40), (15, 40, 40)))
    assert [e["status"] for _, e in events] == ["Active", "Resolved"]
    assert events[0][1]["incident_id"] == events[1][1]["incident_id"]
    assert events[1][1]["severity"] == events[0][1]["severity"] == "high"
    assert det.active_incident_id is None


def test_resolved_after_the_timeout_if_the_vehicle_never_moves():
    det = CrashDetector(resolve_after_s=300)
    events = run(det, profile((5, 50, 50), (0.2, 50, 0), (400, 0, 0), hz=1.0))
    assert [e["status"] for _, e in events] == ["Active", "Resolved"]
    gap = events[1][0] - events[0][0]
    assert timedelta(seconds=295) <= gap <= timedelta(seconds=300)


def test_resolve_closes_on_request_and_only_once():
    det = CrashDetector()
    (_, active), = run(det, profile((5, 90, 90), (0.2, 90, 0), (5, 0, 0)))
    done = det.resolve(T0 + timedelta(minutes=3), "driver confirmed OK")
    assert done["status"] == "Resolved" and done["incident_id"] == active["incident_id"]
    assert "driver confirmed OK" in done["description"]
    assert det.resolve(T0 + timedelta(minutes=4)) is None


def test_incident_id_is_derived_from_the_crash_time():
    samples = profile((5, 80, 80), (0.2, 80, 0), (10, 0, 0))
    a = run(CrashDetector(), samples)[0][1]["incident_id"]
    b = run(CrashDetector(), samples)[0][1]["incident_id"]
    assert a == b and a.startswith("crash-20261128T030005")
    later = [(ts + timedelta(hours=1), v) for ts, v in samples]
    assert run(CrashDetector(), later)[0][1]["incident_id"] != a


def test_a_second_crash_after_resolution_gets_a_new_id():
    det = CrashDetector(moving_for_s=5)
    legs = ((5, 60, 60), (0.2, 60, 0), (10, 0, 0), (3, 0, 60), (10, 60, 60), (0.2, 60, 0), (5, 0, 0))
    events = run(det, profile(*legs))
    assert [e["status"] for _, e in events] == ["Active", "Resolved", "Active"]
    assert events[0][1]["incident_id"] != events[2][1]["incident_id"]


def test_severity_grows_with_delta_v():
    assert [severity_for_delta_v(v) for v in (25, 40, 60, 100)] == ["low", "medium", "high", "critical"]


def test_bad_samples_are_counted_not_fatal():
    det = CrashDetector()
    assert det.feed(T0, None) is None
    assert det.feed(T0, float("nan")) is None
    assert det.feed(T0, -5.0) is None
    assert det.feed(T0.replace(tzinfo=None), 50.0) is None
    det.feed(T0 + timedelta(seconds=1), 50.0)
    assert det.feed(T0, 50.0) is None                      # goes back in time
    assert det.counters["rejected"] == 5 and det.counters["samples"] == 1


def test_crash_records_fit_the_emergency_contract():
    det = CrashDetector(moving_for_s=5)
    events = run(det, profile((5, 80, 80), (0.2, 80, 0), (10, 0, 0), (3, 0, 50), (10, 50, 50)))
    assert len(events) == 2
    for ts, e in events:
        rec = contracts.example("emergency")
        rec.update(e, ts=contracts.format_ts(ts))
        contracts.validate("emergency", rec)


def test_the_whole_simulated_trip_raises_no_crash():
    trip = TripSimulator(seed=7, start_utc=T0)
    det = CrashDetector()
    while True:
        st = trip.advance(0.1)
        assert det.feed(st.ts, st.speed_kmh, st.lat, st.lon) is None
        if st.finished:
            break
    assert det.counters["candidates"] == 0 and det.counters["samples"] > 40_000
