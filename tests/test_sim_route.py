"""The simulated road: real places, plausible length, consistent lookups."""
import json
import math

import pytest

from smartcity.sim.route import (DEFAULT_ROUTE_PATH, Route, Waypoint, bearing_deg, default_route,
                       haversine_m)

VICTORY_MONUMENT = (13.7649, 100.5383)
PATTAYA_CENTRE = (12.93, 100.88)


def test_haversine_matches_known_distance():
    # one degree of latitude is ~110.6 km near the equator
    assert haversine_m(13.0, 100.0, 14.0, 100.0) == pytest.approx(110_700, rel=0.005)
    assert haversine_m(13.0, 100.0, 13.0, 100.0) == 0.0


def test_bearing_points_the_right_way():
    assert bearing_deg(13.0, 100.0, 14.0, 100.0) == pytest.approx(0.0, abs=1e-6)
    assert bearing_deg(13.0, 100.0, 13.0, 101.0) == pytest.approx(90.0, abs=0.2)
    assert bearing_deg(13.0, 100.0, 12.0, 100.0) == pytest.approx(180.0, abs=1e-6)
    assert bearing_deg(13.0, 100.0, 13.0, 99.0) == pytest.approx(270.0, abs=0.2)


def test_route_starts_in_central_bangkok_and_ends_in_pattaya():
    r = default_route()
    first, last = r.waypoints[0], r.waypoints[-1]
    assert haversine_m(first.lat, first.lon, *VICTORY_MONUMENT) < 500
    assert haversine_m(last.lat, last.lon, *PATTAYA_CENTRE) < 2000
    assert 40 <= len(r.waypoints) <= 80


def test_route_length_is_that_of_the_real_drive():
    assert 130_000 <= default_route().length_m <= 150_000


def test_route_uses_motorway_7_at_120_and_city_streets_at_city_limits():
    r = default_route()
    limits = {w.speed_limit_kmh for w in r.waypoints}
    assert 120 in limits and min(limits) == 50
    assert r.waypoints[0].urban and r.waypoints[-2].urban                # Bangkok, Pattaya
    assert r.speed_limit_at(r.length_m * 0.5) == 120 and not r.urban_at(r.length_m * 0.5)
    names = " ".join(w.name for w in r.waypoints)
    for place in ("Suvarnabhumi", "Bang Pakong", "Chon Buri", "Si Racha", "Laem Chabang", "Pattaya"):
        assert place in names


def test_route_heads_south_east_overall():
    r = default_route()
    a, b = r.waypoints[0], r.waypoints[-1]
    assert 120 < bearing_deg(a.lat, a.lon, b.lat, b.lon) < 180


def test_position_interpolates_between_waypoints():
    r = default_route()
    for i in (0, 10, 30):
        s0, s1 = r.cum_m[i], r.cum_m[i + 1]
        lat, lon, _ = r.position_at((s0 + s1) / 2)
        a, b = r.waypoints[i], r.waypoints[i + 1]
        assert lat == pytest.approx((a.lat + b.lat) / 2) and lon == pytest.approx((a.lon + b.lon) / 2)
        # the distance to the start of the segment is half the segment
        assert haversine_m(a.lat, a.lon, lat, lon) == pytest.approx((s1 - s0) / 2, rel=1e-3)


def test_heading_is_the_bearing_of_motion():
    r = default_route()
    for s in range(500, int(r.length_m) - 500, 7_000):
        i = r.segment_index(s)
        if r.cum_m[i + 1] - s < 100:
            continue
        la1, lo1, _ = r.position_at(s)
        la2, lo2, _ = r.position_at(s + 50)
        moved = bearing_deg(la1, lo1, la2, lo2)
        assert abs((r.heading_at(s) - moved + 180) % 360 - 180) < 0.5
        assert 0 <= r.heading_at(s) < 360


def test_lookups_clamp_to_the_route_ends():
    r = default_route()
    assert r.position_at(-10)[:2] == (r.waypoints[0].lat, r.waypoints[0].lon)
    assert r.position_at(r.length_m + 10)[:2] == (r.waypoints[-1].lat, r.waypoints[-1].lon)


def test_nearest_s_finds_a_point_back_on_the_route():
    r = default_route()
    for s in (1234.0, 50_000.0, 120_000.0):
        lat, lon, _ = r.position_at(s)
        assert r.nearest_s(lat, lon) == pytest.approx(s, abs=5)


def test_stops_include_traffic_lights_in_bangkok_and_a_toll_plaza():
    r = default_route()
    kinds = {st.kind for st in r.stops}
    assert kinds == {"traffic_light", "toll_plaza"}
    assert any(st.kind == "traffic_light" and st.s_m < 15_000 for st in r.stops)


def test_limit_drops_are_where_the_limit_goes_down():
    r = default_route()
    for s, lim in r.limit_drops():
        assert r.speed_limit_at(s) == lim and r.speed_limit_at(s - 1) > lim


def test_bad_route_data_is_a_clear_error(tmp_path):
    wp = Waypoint("a", 13.0, 100.0, 0, 50, True, None)
    with pytest.raises(ValueError, match="at least two"):
        Route([wp])
    with pytest.raises(ValueError, match="coincide"):
        Route([wp, wp])
    with pytest.raises(ValueError, match="stop must be"):
        Route([wp, Waypoint("b", 13.1, 100.0, 0, 50, True, "roundabout")])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"waypoints": [{"lat": 1}]}))
    with pytest.raises(ValueError, match="malformed"):
        Route.load(bad)


def test_packaged_data_file_is_the_default():
    data = json.loads(DEFAULT_ROUTE_PATH.read_text())
    assert len(data["waypoints"]) == len(default_route().waypoints)
    assert all(math.isfinite(w["lat"]) and math.isfinite(w["lon"]) for w in data["waypoints"])
