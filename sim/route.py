"""The simulated trip's road: a polyline of real waypoints with per-segment speed limits.

Positions are linearly interpolated in lat/lon inside a segment. Segments are at most a few km
long, so the straight lat/lon line and the great circle differ by centimetres and the segment's
great-circle bearing is the heading of every point on it.
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

EARTH_RADIUS_M = 6371008.8  # mean radius (IUGG)
DEFAULT_ROUTE_PATH = Path(__file__).with_name("data") / "motorway7.json"
STOP_KINDS = ("traffic_light", "toll_plaza")


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees true in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


@dataclass(frozen=True)
class Waypoint:
    name: str
    lat: float
    lon: float
    alt_m: float
    speed_limit_kmh: float  # of the segment that starts here
    urban: bool             # of the segment that starts here: city traffic, stop-and-go
    stop: str | None        # a place the vehicle may have to stop: traffic_light, toll_plaza


@dataclass(frozen=True)
class Stop:
    s_m: float
    kind: str
    name: str


class Route:
    def __init__(self, waypoints: list[Waypoint], name: str = "route"):
        if len(waypoints) < 2:
            raise ValueError("a route needs at least two waypoints")
        for w in waypoints:
            if not (-90 <= w.lat <= 90 and -180 <= w.lon <= 180):
                raise ValueError(f"waypoint {w.name!r}: lat/lon out of range ({w.lat}, {w.lon})")
            if w.speed_limit_kmh <= 0:
                raise ValueError(f"waypoint {w.name!r}: speed limit must be positive")
            if w.stop is not None and w.stop not in STOP_KINDS:
                raise ValueError(f"waypoint {w.name!r}: stop must be one of {STOP_KINDS}")
        self.name = name
        self.waypoints: tuple[Waypoint, ...] = tuple(waypoints)
        cum = [0.0]
        headings = []
        for a, b in zip(waypoints, waypoints[1:]):
            d = haversine_m(a.lat, a.lon, b.lat, b.lon)
            if d <= 0:
                raise ValueError(f"waypoints {a.name!r} and {b.name!r} coincide")
            cum.append(cum[-1] + d)
            headings.append(bearing_deg(a.lat, a.lon, b.lat, b.lon))
        self.cum_m: tuple[float, ...] = tuple(cum)
        self.segment_heading_deg: tuple[float, ...] = tuple(headings)
        self.length_m: float = cum[-1]
        self.n_segments = len(waypoints) - 1
        self.stops: tuple[Stop, ...] = tuple(
            Stop(cum[i], w.stop, w.name) for i, w in enumerate(waypoints) if w.stop)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_ROUTE_PATH) -> "Route":
        data = json.loads(Path(path).read_text())
        try:
            wps = [Waypoint(str(w["name"]), float(w["lat"]), float(w["lon"]), float(w["alt_m"]),
                            float(w["speed_limit_kmh"]), bool(w["urban"]), w.get("stop"))
                   for w in data["waypoints"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: malformed waypoint data: {e!r}") from e
        return cls(wps, data.get("name", Path(path).stem))

    # --- lookups by distance along the route (s, metres from the first waypoint) ---

    def segment_index(self, s_m: float) -> int:
        """Index i of the segment [waypoint i, waypoint i+1] containing s (clamped to the route)."""
        i = bisect.bisect_right(self.cum_m, s_m) - 1
        return min(max(i, 0), self.n_segments - 1)

    def position_at(self, s_m: float) -> tuple[float, float, float]:
        """(lat, lon, alt_m) at distance s along the route."""
        return self.position_in_segment(self.segment_index(s_m), s_m)

    def position_in_segment(self, i: int, s_m: float) -> tuple[float, float, float]:
        a, b = self.waypoints[i], self.waypoints[i + 1]
        s0, s1 = self.cum_m[i], self.cum_m[i + 1]
        f = min(max((s_m - s0) / (s1 - s0), 0.0), 1.0)
        return (a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f,
                a.alt_m + (b.alt_m - a.alt_m) * f)

    def heading_at(self, s_m: float) -> float:
        return self.segment_heading_deg[self.segment_index(s_m)]

    def speed_limit_at(self, s_m: float) -> float:
        return self.waypoints[self.segment_index(s_m)].speed_limit_kmh

    def urban_at(self, s_m: float) -> bool:
        return self.waypoints[self.segment_index(s_m)].urban

    def limit_drops(self) -> list[tuple[float, float]]:
        """(s_m, new_limit_kmh) wherever the speed limit goes down: places to slow down before."""
        out = []
        for i in range(1, self.n_segments):
            prev, cur = self.waypoints[i - 1].speed_limit_kmh, self.waypoints[i].speed_limit_kmh
            if cur < prev:
                out.append((self.cum_m[i], cur))
        return out

    def nearest_s(self, lat: float, lon: float) -> float:
        """Distance along the route of the route point nearest to (lat, lon) (local flat projection
        per segment: fine at these scales)."""
        best = (math.inf, 0.0)
        k = math.cos(math.radians(lat))
        for i in range(self.n_segments):
            a, b = self.waypoints[i], self.waypoints[i + 1]
            ax, ay = (a.lon - lon) * k, a.lat - lat
            bx, by = (b.lon - lon) * k, b.lat - lat
            dx, dy = bx - ax, by - ay
            f = min(max(-(ax * dx + ay * dy) / (dx * dx + dy * dy), 0.0), 1.0)
            px, py = ax + f * dx, ay + f * dy
            d2 = px * px + py * py
            if d2 < best[0]:
                best = (d2, self.cum_m[i] + f * (self.cum_m[i + 1] - self.cum_m[i]))
        return best[1]


@lru_cache(maxsize=1)
def default_route() -> Route:
    """Bangkok (Victory Monument) -> Pattaya (Beach Road) via Motorway 7."""
    return Route.load(DEFAULT_ROUTE_PATH)
