"""Roadside cameras: fixed places on the route, one observation per interval while near."""
from datetime import datetime, timezone

import pytest

import smartcity.contracts as contracts
from smartcity.sim.cameras import CameraNetwork, place_cameras
from smartcity.sim.route import default_route, haversine_m
from smartcity.sim.trip import TripSimulator

START = datetime(2026, 11, 28, 1, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def trip_observations():
    trip = TripSimulator(seed=7, start_utc=START)
    net = CameraNetwork(trip.route, seed=7)
    out = []
    while True:
        st = trip.advance(1.0)
        out += [(st, obs) for obs in net.observe(st)]
        if st.finished:
            return net, out


def test_cameras_stand_along_the_route_in_the_city_and_on_the_motorway():
    route = default_route()
    cams = place_cameras(route)
    ids = [c.camera_id for c in cams]
    assert len(ids) == len(set(ids)) and ids[0] == "cam-bkk-001"
    assert any(i.startswith("cam-pty-") for i in ids) and any(i.startswith("cam-m7-") for i in ids)
    for c in cams:
        lat, lon, _ = route.position_at(c.s_m)
        assert haversine_m(lat, lon, c.lat, c.lon) < 1
    assert place_cameras(route) == cams


def test_every_observation_is_a_valid_traffic_record(trip_observations):
    _, out = trip_observations
    assert len(out) > 20
    for st, obs in out:
        rec = contracts.example("traffic")
        rec.update(obs, ts=contracts.format_ts(st.ts))
        contracts.validate("traffic", rec)
        assert obs["snapshot_uri"] == (f"s3://smartcity-snapshots/{obs['camera_id']}/"
                                       f"{int(round(st.ts.timestamp() * 1000))}.jpg")


def test_cameras_report_only_while_the_vehicle_is_near(trip_observations):
    net, out = trip_observations
    for st, obs in out:
        assert haversine_m(st.lat, st.lon, obs["lat"], obs["lon"]) <= net.radius_m
    assert {obs["camera_id"] for _, obs in out} == {c.camera_id for c in net.cameras}


def test_at_most_one_observation_per_camera_per_interval(trip_observations):
    net, out = trip_observations
    slots = [(obs["camera_id"], int(st.ts.timestamp() // net.interval_s)) for st, obs in out]
    assert len(slots) == len(set(slots))


def test_city_traffic_is_slow_and_motorway_traffic_fast(trip_observations):
    net, out = trip_observations
    urban = {c.camera_id for c in net.cameras if c.urban}
    city = [o["avg_speed_kmh"] for _, o in out if o["camera_id"] in urban and o["avg_speed_kmh"]]
    motorway = [o["avg_speed_kmh"] for _, o in out if o["camera_id"] not in urban]
    assert city and motorway
    assert sum(city) / len(city) < 45 < 75 < sum(motorway) / len(motorway)
    assert all(o["vehicle_count"] > 0 for _, o in out)     # daytime roads are never empty


def test_observations_do_not_depend_on_who_asks_or_how_often():
    route = default_route()
    a, b = CameraNetwork(route, seed=7), CameraNetwork(route, seed=7)
    trip = TripSimulator(seed=7, start_utc=START)
    coarse, fine = [], []
    for i in range(1200):
        st = trip.advance(0.5)
        fine += b.observe(st)
        if i % 4 == 3:            # every 2 s
            coarse += a.observe(st)
    key = lambda o: (o["camera_id"], o["vehicle_count"], o["avg_speed_kmh"])  # noqa: E731
    assert sorted(map(key, coarse)) == sorted(map(key, fine))
    assert CameraNetwork(route, seed=8).observation(a.cameras[0], 1, 0) != \
        a.observation(a.cameras[0], 1, 0)
