"""A deterministic drive from Bangkok to Pattaya: kinematics, traffic, stops and the engine.

The vehicle moves along `sim.route.Route` by distance s. Each integration step picks an
acceleration (driver wants a cruise speed, traffic may say otherwise, upcoming lower limits and
stops cap the speed so that comfortable braking reaches them), then integrates speed and distance
with the trapezoid rule, so the odometer is exactly the integral of the reported speeds.
Position and heading are looked up on the route at the new s, so they can never disagree with it.

All randomness comes from one `random.Random(seed)` drawn in simulated-time order: the same seed and
the same sequence of `advance` calls give the same states, bit for bit.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .route import Route, default_route

MAX_STEP_S = 0.1           # integration step: advance(1.0) runs ten 0.1 s steps
ACCEL_MAX_MS2 = 3.0        # full-throttle acceleration of a mid-size car at low speed
BRAKE_COMFORT_MS2 = 2.0    # what the driver plans with before limits and stops
BRAKE_TRAFFIC_MS2 = 2.5    # slowing for the car in front
BRAKE_MAX_MS2 = 4.5        # hard but normal braking; never exceeded in normal driving
LOOKAHEAD_M = 1500.0       # more than the braking distance from 120 km/h at BRAKE_COMFORT_MS2
STOP_REACHED_M = 3.0
LOCAL_UTC_OFFSET_H = 7     # Indochina Time, for rush hours

# A 1.5 l petrol sedan with a 6-speed automatic (plausible figures, not a particular model).
MASS_KG = 1450.0
CDA_M2 = 0.68
CRR = 0.011
AIR_DENSITY = 1.2
GEAR_RATIOS = (3.58, 2.02, 1.35, 1.00, 0.81, 0.68)
FINAL_DRIVE = 3.55
WHEEL_RADIUS_M = 0.317
IDLE_RPM = 750.0
MAX_POWER_W = 88_000.0
MAX_POWER_RPM = 6000.0
BSFC_G_PER_KWH = 260.0
FUEL_DENSITY_G_PER_L = 745.0
IDLE_FUEL_L_PER_H = 0.7
TANK_L = 50.0
THERMOSTAT_C = 90.0
_RPM_PER_MS = 60.0 * FINAL_DRIVE / (2 * math.pi * WHEEL_RADIUS_M)


@dataclass(frozen=True, slots=True)
class VehicleState:
    ts: datetime             # aware UTC: trip start + simulated elapsed time
    lat: float
    lon: float
    alt_m: float
    speed_kmh: float
    heading_deg: float       # degrees true, the route's bearing at the vehicle
    odometer_m: float        # distance driven since the trip started
    gear: int                # 0 stationary, 1..6 driving
    rpm: float
    throttle_pct: float
    engine_load_pct: float
    coolant_c: float
    fuel_level_pct: float
    battery_v: float
    finished: bool
    sats_used: int           # GPS quality a receiver at this place would report
    hdop: float
    elapsed_s: float
    accel_ms2: float
    speed_limit_kmh: float
    urban: bool


@dataclass(frozen=True)
class _Constraint:
    s_m: float
    v_ms: float               # speed allowed at s_m
    dwell_s: float            # > 0: stop here for this long (red light, toll booth)
    kind: str


class TripSimulator:
    def __init__(self, seed: int, start_utc: datetime, route: Route | None = None,
                 ambient_c: float = 28.0):
        if start_utc.tzinfo is None:
            raise ValueError("start_utc must be timezone-aware")
        self.seed = seed
        self.route = route or default_route()
        self.start_utc = start_utc.astimezone(timezone.utc)
        self._rng = random.Random(seed)
        rng = self._rng
        self._constraints = self._plan_constraints(rng)
        self._ci = 0                      # first constraint not yet passed
        self._dwell_left_s = 0.0
        self._dwell_at = 0
        # vehicle state
        self._elapsed_us = 0
        self._s = 0.0
        self._v = 0.0
        self._a = 0.0
        self._seg = 0
        self._gear = 0
        self._finished = False
        self._coolant_c = ambient_c + rng.uniform(-1.0, 2.0)
        self._ambient_c = ambient_c
        self._fuel_l = TANK_L * rng.uniform(0.62, 0.9)
        self._power_w = 0.0
        # driver and traffic
        self._cruise_factor = rng.uniform(0.9, 0.97)
        self._next_cruise_change_s = rng.uniform(60, 240)
        self._phase = "flow"
        self._phase_speed_ms = 0.0
        self._phase_until_s = 0.0
        self._new_phase(0.0)
        self._sats = 8
        self._hdop = 1.2
        self._gps_next_s = 0.0
        self._update_gps_quality(0.0)
        self._state = self._snapshot()

    # --- public ---

    @property
    def state(self) -> VehicleState:
        return self._state

    def advance(self, dt_s: float) -> VehicleState:
        """Move the simulation dt_s simulated seconds forward and return the new state.
        advance(0) returns the current state unchanged."""
        if dt_s < 0 or not math.isfinite(dt_s):
            raise ValueError(f"dt_s must be a finite non-negative number, got {dt_s!r}")
        if dt_s == 0:
            return self._state
        n = max(1, math.ceil(dt_s / MAX_STEP_S - 1e-9))
        h = dt_s / n
        for _ in range(n):
            self._step(h)
        self._state = self._snapshot()
        return self._state

    def run_to_end(self, dt_s: float = 1.0, max_s: float = 6 * 3600) -> VehicleState:
        while not self._state.finished and self._state.elapsed_s < max_s:
            self.advance(dt_s)
        return self._state

    # --- planning ---

    def _plan_constraints(self, rng: random.Random) -> list[_Constraint]:
        route = self.route
        cs = [_Constraint(s, lim / 3.6, 0.0, "limit") for s, lim in route.limit_drops()]
        for stop in route.stops:
            if stop.kind == "toll_plaza":
                cs.append(_Constraint(stop.s_m, 0.0, rng.uniform(8, 20), stop.kind))
            elif rng.random() < 0.6:  # red when we get there; a green light is just driven through
                cs.append(_Constraint(stop.s_m, 0.0, rng.uniform(15, 60), stop.kind))
        cs.append(_Constraint(route.length_m, 0.0, 0.0, "end"))
        cs.sort(key=lambda c: c.s_m)
        return cs

    def _local_hour(self, t_s: float) -> float:
        t = self.start_utc + timedelta(seconds=t_s)
        return (t.hour + t.minute / 60 + LOCAL_UTC_OFFSET_H) % 24

    def _new_phase(self, t_s: float) -> None:
        """City traffic as a chain of phases: flowing, crawling in a queue, standing still."""
        rng = self._rng
        h = self._local_hour(t_s)
        rush = 7 <= h < 9.5 or 16 <= h < 19.5
        p_halt, p_slow = (0.3, 0.4) if rush else (0.15, 0.3)
        r = rng.random()
        if self._phase != "halt" and r < p_halt:
            self._phase, self._phase_speed_ms = "halt", 0.0
            dur = rng.uniform(5, 25)
        elif r < p_halt + p_slow:
            self._phase, self._phase_speed_ms = "slow", rng.uniform(8, 25) / 3.6
            dur = rng.uniform(20, 90)
        else:
            self._phase, self._phase_speed_ms = "flow", -1.0  # -1: follow the speed limit
            dur = rng.uniform(30, 120)
        self._phase_until_s = t_s + dur

    def _update_gps_quality(self, t_s: float) -> None:
        rng = self._rng
        if self.route.waypoints[self._seg].urban:  # street canyons: fewer satellites
            self._sats, self._hdop = rng.randint(6, 9), round(rng.uniform(1.1, 2.2), 2)
        else:
            self._sats, self._hdop = rng.randint(9, 12), round(rng.uniform(0.7, 1.1), 2)
        self._gps_next_s = t_s + rng.uniform(20, 60)

    # --- integration ---

    def _step(self, h: float) -> None:
        self._elapsed_us += round(h * 1e6)
        t = self._elapsed_us / 1e6
        if self._finished:
            self._v = self._a = self._power_w = 0.0
            self._gear = 0
            self._thermal(h, running=False)
            return
        route = self.route
        wp = route.waypoints[self._seg]
        v, s = self._v, self._s

        if self._dwell_left_s > 0:  # waiting at a red light or a toll booth
            self._dwell_left_s -= h
            if self._dwell_left_s <= 0:
                del self._constraints[self._dwell_at]
            self._a = 0.0
            self._engine(h, v_new=0.0, a=0.0, grade=0.0)
            return

        limit_ms = wp.speed_limit_kmh / 3.6
        if wp.urban:
            if t >= self._phase_until_s:
                self._new_phase(t)
            target = limit_ms * self._cruise_factor if self._phase_speed_ms < 0 else min(
                self._phase_speed_ms, limit_ms)
        else:
            if t >= self._next_cruise_change_s:
                self._cruise_factor = self._rng.uniform(0.86, 0.98)
                self._next_cruise_change_s = t + self._rng.uniform(60, 300)
            target = limit_ms * self._cruise_factor
        if t >= self._gps_next_s:
            self._update_gps_quality(t)

        a_acc = max(0.6, ACCEL_MAX_MS2 - 0.065 * v)
        a = min(max((target - v) / h, -BRAKE_TRAFFIC_MS2), a_acc)

        # Upcoming lower limits and stops: never be faster than comfortable braking allows.
        probe = s + v * h
        cs = self._constraints
        for j in range(self._ci, len(cs)):
            c = cs[j]
            d = c.s_m - probe
            if c.kind == "limit" and c.s_m <= s:
                if j == self._ci:
                    self._ci += 1
                continue
            if d > LOOKAHEAD_M:
                break
            allowed = math.sqrt(c.v_ms * c.v_ms + 2 * BRAKE_COMFORT_MS2 * max(0.0, d))
            if c.v_ms == 0.0 and c.s_m - s < STOP_REACHED_M and v < 0.3:
                allowed = 0.0
            a = min(a, (allowed - v) / h)
        a = max(a, -BRAKE_MAX_MS2)

        v_new = v + a * h
        if v_new < 0.0:
            v_new, a = 0.0, -v / h
        ds = (v + v_new) * 0.5 * h
        s_new = min(s + ds, route.length_m)
        seg = self._seg
        while seg < route.n_segments - 1 and s_new >= route.cum_m[seg + 1]:
            seg += 1
        if seg != self._seg:
            self._seg = seg
        grade = 0.0
        if ds > 0:
            a_wp, b_wp = route.waypoints[seg], route.waypoints[seg + 1]
            grade = (b_wp.alt_m - a_wp.alt_m) / (route.cum_m[seg + 1] - route.cum_m[seg])
        self._s, self._v, self._a = s_new, v_new, a

        if v_new == 0.0:
            j = self._ci
            while j < len(cs) and cs[j].s_m - s_new < STOP_REACHED_M:
                if cs[j].v_ms == 0.0:
                    if cs[j].kind == "end":
                        self._finished = True
                    else:
                        self._dwell_left_s, self._dwell_at = cs[j].dwell_s, j
                    break
                j += 1
        self._engine(h, v_new, a, grade)

    def _engine(self, h: float, v_new: float, a: float, grade: float) -> None:
        v = v_new
        # automatic gearbox: shift up early when cruising, later when accelerating hard
        if v < 0.3:
            gear = 0 if a <= 0 else 1
        else:
            gear = max(self._gear, 1)
            up_rpm = 2200.0 + 500.0 * max(0.0, a)
            while gear < 6 and v * _RPM_PER_MS * GEAR_RATIOS[gear - 1] > up_rpm:
                gear += 1
            while gear > 1 and v * _RPM_PER_MS * GEAR_RATIOS[gear - 1] < 1150.0:
                gear -= 1
        self._gear = gear
        force = MASS_KG * a + 0.5 * AIR_DENSITY * CDA_M2 * v * v + \
            (CRR * MASS_KG * 9.81 + MASS_KG * 9.81 * grade if v > 0 else 0.0)
        self._power_w = force * v
        self._fuel_l -= (max(self._power_w, 0.0) / 1000.0 * BSFC_G_PER_KWH / 3600.0
                         / FUEL_DENSITY_G_PER_L + IDLE_FUEL_L_PER_H / 3600.0) * h
        self._fuel_l = max(self._fuel_l, 0.0)
        self._thermal(h, running=True)

    def _thermal(self, h: float, running: bool) -> None:
        c = self._coolant_c
        if running:
            load = min(max(self._power_w / MAX_POWER_W, 0.0), 1.0)
            if c < THERMOSTAT_C - 2:
                c += (0.09 + 0.5 * load) * h    # warming up: about 6 minutes to operating temp
            else:                                 # thermostat open: holds 88-94
                c += (THERMOSTAT_C + 4.0 * load - c) * h / 60.0
        else:
            c += (self._ambient_c - c) * h / 1800.0
        self._coolant_c = c

    def _rpm(self) -> float:
        if self._finished:
            return 0.0
        g = self._gear
        if g == 0:
            return IDLE_RPM
        geared = self._v * _RPM_PER_MS * GEAR_RATIOS[g - 1]
        if g == 1:  # torque converter slips when pulling away
            return max(geared, IDLE_RPM + 250.0 * max(0.0, self._a))
        return max(geared, IDLE_RPM)

    def _snapshot(self) -> VehicleState:
        route = self.route
        lat, lon, alt = route.position_in_segment(self._seg, self._s)
        wp = route.waypoints[self._seg]
        rpm = self._rpm()
        t = self._elapsed_us / 1e6
        if self._finished:
            throttle = load = 0.0
            battery = 12.6
        else:
            available = MAX_POWER_W * min(1.0, rpm / MAX_POWER_RPM)
            frac = min(max(self._power_w / available, 0.0), 1.0) if available > 0 else 0.0
            if self._power_w > 0:
                load = 18.0 + 82.0 * frac
                throttle = 4.0 + 90.0 * frac
            else:  # idling or coasting with the throttle closed
                load = 20.0 if self._gear == 0 else 8.0
                throttle = 0.0
            battery = 14.2 + 0.08 * math.sin(t / 37.0) - (0.15 if self._gear == 0 else 0.0)
        return VehicleState(
            ts=self.start_utc + timedelta(microseconds=self._elapsed_us),
            lat=lat, lon=lon, alt_m=alt,
            speed_kmh=self._v * 3.6,
            heading_deg=route.segment_heading_deg[self._seg],
            odometer_m=self._s,
            gear=self._gear, rpm=rpm,
            throttle_pct=round(throttle, 1), engine_load_pct=round(load, 1),
            coolant_c=round(self._coolant_c, 1),
            fuel_level_pct=100.0 * self._fuel_l / TANK_L,
            battery_v=round(battery, 2),
            finished=self._finished,
            sats_used=self._sats, hdop=self._hdop,
            elapsed_s=t, accel_ms2=self._a,
            speed_limit_kmh=wp.speed_limit_kmh, urban=wp.urban,
        )
