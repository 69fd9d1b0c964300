"""The simulated drive: deterministic, physically consistent, and it gets to Pattaya."""
import statistics
import time
from datetime import datetime, timedelta, timezone

import pytest

import smartcity.contracts as contracts
from smartcity.sim.route import bearing_deg, haversine_m
from smartcity.sim.trip import ACCEL_MAX_MS2, BRAKE_MAX_MS2, IDLE_RPM, TripSimulator

START = datetime(2026, 11, 28, 1, 0, 0, tzinfo=timezone.utc)   # 08:00 in Bangkok
DT_S = 0.1


@pytest.fixture(scope="module")
def trip():
    """The whole trip at 10 Hz, once for the module: (simulator, [initial state, ...], wall s)."""
    sim = TripSimulator(seed=7, start_utc=START)
    t0 = time.perf_counter()
    states = [sim.state]
    while not states[-1].finished:
        states.append(sim.advance(DT_S))
        assert len(states) < 6 * 3600 * 10, "trip did not finish within 6 h"
    return sim, states, time.perf_counter() - t0


def _run(seed, n, dt=DT_S):
    sim = TripSimulator(seed=seed, start_utc=START)
    return [sim.advance(dt) for _ in range(n)]


def test_same_seed_same_states():
    assert _run(3, 3000) == _run(3, 3000)


def test_different_seed_different_trip():
    assert _run(3, 3000)[-1].odometer_m != _run(4, 3000)[-1].odometer_m


def test_coarse_steps_give_the_same_states_as_fine_steps():
    fine = _run(5, 3000, 0.1)
    coarse = _run(5, 300, 1.0)
    assert coarse == fine[9::10]


def test_advance_zero_returns_the_current_state_and_negative_is_refused():
    sim = TripSimulator(seed=1, start_utc=START)
    s0 = sim.advance(0.0)
    assert s0.ts == START and s0.odometer_m == 0.0 and s0.speed_kmh == 0.0
    with pytest.raises(ValueError):
        sim.advance(-1.0)
    with pytest.raises(ValueError):
        TripSimulator(seed=1, start_utc=START.replace(tzinfo=None))


def test_trip_reaches_pattaya_with_plausible_distance_and_duration(trip):
    sim, states, wall_s = trip
    end = states[-1]
    assert end.finished and end.speed_kmh == 0.0
    assert end.odometer_m == pytest.approx(sim.route.length_m, abs=3.0)
    assert 130 <= end.odometer_m / 1000 <= 150
    assert haversine_m(end.lat, end.lon, 12.93, 100.88) < 2000
    assert 1.2 * 3600 <= end.elapsed_s <= 3.0 * 3600
    avg_kmh = end.odometer_m / end.elapsed_s * 3.6
    assert 50 <= avg_kmh <= 100
    print(f"\ntrip: {end.odometer_m / 1000:.1f} km in {end.elapsed_s / 60:.1f} min "
          f"(avg {avg_kmh:.1f} km/h), {len(states)} steps at 10 Hz simulated in {wall_s:.2f} s")


def test_whole_trip_at_10_hz_simulates_in_seconds(trip):
    _, states, wall_s = trip
    assert len(states) > 40_000
    assert wall_s < 5.0   # ~1 s on a quiet machine; generous for a loaded CI box


def test_timestamps_are_start_plus_simulated_time(trip):
    _, states, _ = trip
    for i in (1, 1000, len(states) - 1):
        st = states[i]
        assert st.ts.tzinfo is not None and st.ts.utcoffset() == timedelta(0)
        assert st.ts == START + timedelta(seconds=round(i * DT_S, 6))
        assert st.elapsed_s == pytest.approx(i * DT_S)


def test_odometer_is_the_integral_of_speed(trip):
    _, states, _ = trip
    integral = 0.0
    for a, b in zip(states, states[1:]):
        integral += (a.speed_kmh + b.speed_kmh) / 2 / 3.6 * DT_S
    assert integral == pytest.approx(states[-1].odometer_m, rel=1e-9, abs=1e-3)


def test_distance_between_positions_matches_the_odometer(trip):
    sim, states, _ = trip
    same_segment = 0
    for a, b in zip(states[::50], states[50::50]):   # every 5 s
        moved = haversine_m(a.lat, a.lon, b.lat, b.lon)
        driven = b.odometer_m - a.odometer_m
        assert moved <= driven + 0.05                  # a corner in between cuts it short
        if sim.route.segment_index(a.odometer_m) == sim.route.segment_index(b.odometer_m):
            same_segment += 1
            assert moved == pytest.approx(driven, rel=1e-3, abs=0.05)
    assert same_segment > 1000


def test_heading_is_the_route_bearing_and_the_direction_of_motion(trip):
    sim, states, _ = trip
    route = sim.route
    for st in states[::10]:
        assert st.heading_deg == route.heading_at(st.odometer_m)
        assert 0 <= st.heading_deg < 360
    for a, b in zip(states[::100], states[5::100]):
        if b.odometer_m - a.odometer_m > 5 and route.segment_index(a.odometer_m) == \
                route.segment_index(b.odometer_m):
            moved = bearing_deg(a.lat, a.lon, b.lat, b.lon)
            assert abs((b.heading_deg - moved + 180) % 360 - 180) < 1.0


def test_acceleration_and_braking_stay_within_vehicle_limits(trip):
    _, states, _ = trip
    accels = [(b.speed_kmh - a.speed_kmh) / 3.6 / DT_S for a, b in zip(states, states[1:])]
    assert max(accels) <= ACCEL_MAX_MS2 + 1e-6
    assert min(accels) >= -BRAKE_MAX_MS2 - 1e-6
    assert max(accels) > 1.5 and min(accels) < -1.5   # it does accelerate and brake


def test_speed_never_exceeds_the_limit(trip):
    _, states, _ = trip
    assert all(st.speed_kmh <= st.speed_limit_kmh + 1.0 for st in states)


def test_slows_down_before_a_lower_limit(trip):
    sim, states, _ = trip
    for s_drop, new_limit in sim.route.limit_drops():
        at = next(st for st in states if st.odometer_m >= s_drop)
        assert at.speed_kmh <= new_limit + 1.0


def test_city_traffic_stops_and_goes_and_the_motorway_flows(trip):
    _, states, _ = trip
    stops = sum(1 for a, b in zip(states, states[1:]) if a.speed_kmh > 0 and b.speed_kmh == 0)
    urban_stops = sum(1 for a, b in zip(states, states[1:])
                      if a.speed_kmh > 0 and b.speed_kmh == 0 and b.urban)
    assert stops >= 5 and urban_stops >= 3
    motorway = [st.speed_kmh for st in states if st.speed_limit_kmh == 120]
    city = [st.speed_kmh for st in states if st.urban]
    assert 95 <= statistics.median(motorway) <= 120
    assert statistics.mean(city) < 40


def test_vehicle_stops_at_the_toll_plaza(trip):
    sim, states, _ = trip
    for stop in (s for s in sim.route.stops if s.kind == "toll_plaza"):
        near = [st for st in states if abs(st.odometer_m - stop.s_m) < 5]
        assert any(st.speed_kmh == 0 for st in near), stop.name
        standing = sum(1 for st in near if st.speed_kmh == 0) * DT_S
        assert standing >= 8


def test_engine_figures_follow_the_driving(trip):
    _, states, _ = trip
    first, end = states[0], states[-1]
    idle = [st for st in states if st.gear == 0 and not st.finished]
    assert idle and all(st.rpm == IDLE_RPM for st in idle)
    cruising = [st for st in states if st.speed_kmh > 100 and abs(st.accel_ms2) < 0.2]
    assert cruising and all(st.gear == 6 and 1800 < st.rpm < 3000 for st in cruising)
    assert all(0 <= st.throttle_pct <= 100 and 0 <= st.engine_load_pct <= 100 for st in states)
    assert all(13.8 <= st.battery_v <= 14.4 for st in states[:-1])
    # warms up from ambient to the thermostat's range within a quarter of an hour
    assert first.coolant_c < 40
    assert 85 <= next(st for st in states if st.elapsed_s >= 900).coolant_c <= 96
    fuel = [st.fuel_level_pct for st in states]
    assert all(b <= a for a, b in zip(fuel, fuel[1:]))
    assert 8 <= first.fuel_level_pct - end.fuel_level_pct <= 35   # ~5-10 l of a 50 l tank


def test_after_the_finish_time_goes_on_and_the_car_is_parked(trip):
    sim, states, _ = trip
    after = sim.advance(60.0)
    assert after.finished and after.speed_kmh == 0 and after.rpm == 0
    assert after.odometer_m == states[-1].odometer_m
    assert after.ts == states[-1].ts + timedelta(seconds=60)


def test_states_fill_valid_gps_and_vehicle_records(trip):
    _, states, _ = trip
    for st in states[::500]:
        gps = contracts.example("gps")
        gps.update(lat=st.lat, lon=st.lon, alt_m=st.alt_m, speed_kmh=st.speed_kmh,
                   heading_deg=st.heading_deg, fix_mode=3, sats_used=st.sats_used, hdop=st.hdop,
                   ts=contracts.format_ts(st.ts))
        contracts.validate("gps", gps)
        veh = contracts.example("vehicle")
        veh.update(speed_kmh=st.speed_kmh, rpm=st.rpm, coolant_c=st.coolant_c,
                   fuel_level_pct=st.fuel_level_pct, throttle_pct=st.throttle_pct,
                   engine_load_pct=st.engine_load_pct, battery_v=st.battery_v,
                   lat=st.lat, lon=st.lon)
        contracts.validate("vehicle", veh)
