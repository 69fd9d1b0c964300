"""Roadside traffic cameras along the route, reporting counts while the vehicle is near them.

A real deployment would get these from the city's camera feed; here every camera's observation
for a reporting interval is drawn from `Random(seed, camera, interval)`, so it does not depend on
who asks, how often, or in which order. Counts and speeds follow the road type and time of day
(Bangkok arterials crawl in the rush hours, the motorway flows).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .route import Route, haversine_m

SNAPSHOT_BUCKET = "smartcity-snapshots"
LOCAL_UTC_OFFSET_H = 7
URBAN_SPACING_M = 3000.0
MOTORWAY_SPACING_M = 15000.0


@dataclass(frozen=True)
class Camera:
    camera_id: str
    lat: float
    lon: float
    s_m: float
    urban: bool


def _area(lat: float, lon: float) -> str:
    if lat > 13.55 and lon < 100.9:
        return "bkk"
    if lat < 13.0 and lon < 100.97:
        return "pty"
    return "m7"


def place_cameras(route: Route) -> list[Camera]:
    """Deterministic placement: every 3 km on city streets, every 15 km on the motorway, and at
    least one on every stretch of city street however short."""
    runs: list[tuple[float, float, bool]] = []   # (s_start, s_end, urban) of same-kind stretches
    for i in range(route.n_segments):
        urban = route.waypoints[i].urban
        if runs and runs[-1][2] == urban:
            runs[-1] = (runs[-1][0], route.cum_m[i + 1], urban)
        else:
            runs.append((route.cum_m[i], route.cum_m[i + 1], urban))
    cams: list[Camera] = []
    counters: dict[str, int] = {}
    for s0, s1, urban in runs:
        spacing = URBAN_SPACING_M if urban else MOTORWAY_SPACING_M
        length = s1 - s0
        n = max(1, int(length // spacing)) if urban else int(length // spacing)
        for k in range(n):
            s = s0 + length * (k + 0.5) / n
            lat, lon, _ = route.position_at(s)
            area = _area(lat, lon)
            counters[area] = counters.get(area, 0) + 1
            cams.append(Camera(f"cam-{area}-{counters[area]:03d}", round(lat, 6), round(lon, 6),
                               s, urban))
    return cams


class CameraNetwork:
    def __init__(self, route: Route, seed: int, interval_s: float = 60.0, radius_m: float = 2000.0,
                 cameras: list[Camera] | None = None):
        if interval_s <= 0 or radius_m <= 0:
            raise ValueError("interval_s and radius_m must be positive")
        self.route = route
        self.seed = seed
        self.interval_s = interval_s
        self.radius_m = radius_m
        self.cameras: list[Camera] = cameras if cameras is not None else place_cameras(route)
        self._last_slot: dict[str, int] = {}
        self._dlat = radius_m / 111_000.0 * 1.2   # cheap pre-filter before haversine

    def observe(self, state) -> list[dict]:
        """traffic_data fields (no envelope) of every camera within radius_m that has not yet
        reported in the current interval. Stamp the records with state.ts: the snapshot URI
        carries that time."""
        out = []
        epoch_s = state.ts.timestamp()
        slot = math.floor(epoch_s / self.interval_s)
        for cam in self.cameras:
            if abs(cam.lat - state.lat) > self._dlat or abs(cam.lon - state.lon) > self._dlat * 1.1:
                continue
            if haversine_m(cam.lat, cam.lon, state.lat, state.lon) > self.radius_m:
                continue
            if self._last_slot.get(cam.camera_id) == slot:
                continue
            self._last_slot[cam.camera_id] = slot
            out.append(self.observation(cam, slot, int(round(epoch_s * 1000))))
        return out

    def observation(self, cam: Camera, slot: int, epoch_ms: int) -> dict:
        rng = random.Random(f"{self.seed}:{cam.camera_id}:{slot}")
        local = (slot * self.interval_s / 3600.0 + LOCAL_UTC_OFFSET_H) % 24.0
        rush = 7.0 <= local < 9.5 or 16.0 <= local < 19.5
        night = local >= 23.0 or local < 5.0
        demand = 0.3 if night else (1.4 if rush else 1.0)
        scale = self.interval_s / 60.0
        if cam.urban:  # both directions of a Bangkok/Pattaya arterial
            mean = 30.0 * demand * scale
            speed = (18.0 if rush else 32.0 if not night else 45.0) + rng.gauss(0.0, 4.0)
        else:          # the motorway, both carriageways
            mean = 45.0 * demand * scale
            speed = (82.0 if rush else 96.0) + rng.gauss(0.0, 6.0)
        count = max(0, int(round(rng.gauss(mean, math.sqrt(mean)))))
        return {
            "camera_id": cam.camera_id,
            "lat": cam.lat,
            "lon": cam.lon,
            "vehicle_count": count,
            "avg_speed_kmh": round(min(max(speed, 3.0), 160.0), 1) if count else None,
            "snapshot_uri": f"s3://{SNAPSHOT_BUCKET}/{cam.camera_id}/{epoch_ms}.jpg",
        }
