"""City incidents: a handful along the trip, each Active then Resolved under one stable id."""
from collections import defaultdict
from datetime import datetime, timezone

import pytest

import smartcity.contracts as contracts
from smartcity.sim.incidents import IncidentSimulator
from smartcity.sim.trip import TripSimulator

START = datetime(2026, 11, 28, 1, 0, tzinfo=timezone.utc)


def _run(seed):
    trip = TripSimulator(seed=seed, start_utc=START)
    sim = IncidentSimulator(trip.route, seed=seed)
    out = []
    while True:
        st = trip.advance(1.0)
        out += [(st, u) for u in sim.updates(st)]
        if st.finished:
            return sim, out


@pytest.fixture(scope="module")
def lifecycle():
    return _run(7)


def test_a_handful_of_incidents_each_from_active_to_resolved(lifecycle):
    _, out = lifecycle
    by_id = defaultdict(list)
    for st, u in out:
        by_id[u["incident_id"]].append((st.ts, u))
    assert 3 <= len(by_id) <= 8
    for iid, steps in by_id.items():
        statuses = [u["status"] for _, u in steps]
        assert statuses[0] == "Active" and statuses[-1] == "Resolved"
        assert statuses.count("Resolved") == 1
        assert len({u["type"] for _, u in steps}) == 1           # the same incident throughout
        assert len({(u["lat"], u["lon"]) for _, u in steps}) == 1
        times = [t for t, _ in steps]
        assert times == sorted(times) and times[-1] > times[0]


def test_every_update_is_a_valid_emergency_record(lifecycle):
    _, out = lifecycle
    for st, u in out:
        rec = contracts.example("emergency")
        rec.update(u, ts=contracts.format_ts(st.ts))
        contracts.validate("emergency", rec)
        assert u["type"] != "crash"        # crashes come from the vehicle's own detector


def test_incidents_become_known_as_the_vehicle_approaches(lifecycle):
    sim, out = lifecycle
    for inc in sim.incidents:
        first = next(st for st, u in out if u["incident_id"] == inc.incident_id)
        assert inc.s_m - sim.notice_m <= first.odometer_m < inc.s_m - sim.notice_m + 100


def test_same_seed_same_incidents_other_seed_other_incidents():
    route = TripSimulator(seed=1, start_utc=START).route
    assert IncidentSimulator(route, 11).incidents == IncidentSimulator(route, 11).incidents
    def plan(seed):
        return [(i.type, i.lat, i.lon) for i in IncidentSimulator(route, seed).incidents]
    assert plan(11) != plan(12)


def test_open_incidents_are_closed_when_the_trip_ends():
    trip = TripSimulator(seed=7, start_utc=START)
    sim = IncidentSimulator(trip.route, seed=7, notice_m=1e9)   # all known from the start
    first = sim.updates(trip.advance(1.0))
    assert {u["status"] for u in first} == {"Active"}
    st = trip.run_to_end(dt_s=5.0)
    assert st.finished
    rest = sim.updates(st)
    assert all(inc.resolved for inc in sim.incidents)
    assert {u["incident_id"] for u in rest if u["status"] == "Resolved"} <= \
        {u["incident_id"] for u in first}
