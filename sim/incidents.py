"""City incidents near the route, each with a lifecycle: Active, maybe an update, then Resolved.

A handful of incidents are planned from the seed at places along the route. Each becomes known
(first Active record) when the vehicle is within `notice_m` before it, may be updated once while
active (severity re-assessed), and is Resolved a seeded while later. The incident_id is stable
across all records of one incident so downstream can fold the lifecycle.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from .route import Route

URBAN_TYPES = ("accident", "fire", "medical", "police", "flood")
MOTORWAY_TYPES = ("accident", "roadworks", "medical", "police")
SEVERITIES = ("low", "medium", "high", "critical")
# fractions of the route where incidents are planned: Bangkok, motorway x3, Pattaya
BANDS = ((0.03, 0.07), (0.2, 0.33), (0.42, 0.58), (0.66, 0.8), (0.955, 0.975))

# (description, where it makes sense: "urban", "motorway" or "any")
_WHAT = {
    "accident": (("Collision between two cars", "any"), ("Motorcycle down after a collision", "urban"),
                 ("Pickup truck overturned", "motorway")),
    "fire": (("Shophouse fire, smoke over the road", "urban"), ("Vehicle fire on the roadside", "any")),
    "medical": (("Pedestrian collapsed, ambulance on scene", "urban"),
                ("Driver taken ill, car stopped on the shoulder", "any")),
    "police": (("Police checkpoint, one lane open", "any"), ("Police operation, expect delays", "any")),
    "flood": (("Flash flooding after heavy rain, road partly under water", "any"),),
    "roadworks": (("Lane closure for resurfacing", "any"),
                  ("Emergency repair of the crash barrier", "motorway")),
}


@dataclass
class _Incident:
    incident_id: str
    type: str
    severity: str
    what: str
    place: str
    lat: float
    lon: float
    s_m: float
    duration_s: float
    update_after_s: float | None
    updated_severity: str
    activated_at: datetime | None = None
    updated: bool = False
    resolved: bool = False

    def record(self, status: str, note: str) -> dict:
        return {"incident_id": self.incident_id, "type": self.type, "status": status,
                "severity": self.severity, "description": f"{self.what} near {self.place}{note}",
                "lat": self.lat, "lon": self.lon}


class IncidentSimulator:
    def __init__(self, route: Route, seed: int, notice_m: float = 4000.0, id_prefix: str = "inc"):
        self.route = route
        self.seed = seed
        self.notice_m = notice_m
        rng = random.Random(f"{seed}:incidents")
        self.incidents: list[_Incident] = []
        for n, (lo, hi) in enumerate(BANDS, start=1):
            s = route.length_m * rng.uniform(lo, hi)
            urban = route.urban_at(s)
            kind = rng.choice(URBAN_TYPES if urban else MOTORWAY_TYPES)
            lat, lon, _ = route.position_at(s)
            # beside the carriageway, not exactly on the polyline
            lat += rng.uniform(-0.0008, 0.0008)
            lon += rng.uniform(-0.0008, 0.0008)
            sev_i = rng.choices(range(4), weights=(0.35, 0.35, 0.2, 0.1))[0]
            step = 1 if sev_i == 0 else -1 if sev_i == 3 else rng.choice((-1, 1))
            upd_sev = SEVERITIES[sev_i + step]
            where = "urban" if urban else "motorway"
            what = rng.choice([w for w, ok in _WHAT[kind] if ok in ("any", where)])
            duration = rng.uniform(6 * 60, 20 * 60)
            self.incidents.append(_Incident(
                incident_id=f"{id_prefix}-{seed}-{n:03d}", type=kind, severity=SEVERITIES[sev_i],
                what=what, place=route.waypoints[route.segment_index(s)].name,
                lat=round(lat, 6), lon=round(lon, 6), s_m=s, duration_s=duration,
                update_after_s=duration * rng.uniform(0.3, 0.6) if rng.random() < 0.6 else None,
                updated_severity=upd_sev))

    def updates(self, state) -> list[dict]:
        """emergency_data fields (no envelope) of every lifecycle step that happened by state.ts.
        When the trip has finished, incidents still open are closed so every lifecycle is whole."""
        out = []
        for inc in self.incidents:
            if inc.resolved:
                continue
            if inc.activated_at is None:
                if state.odometer_m >= inc.s_m - self.notice_m:
                    inc.activated_at = state.ts
                    out.append(inc.record("Active", ""))
                continue
            age_s = (state.ts - inc.activated_at).total_seconds()
            if age_s >= inc.duration_s or state.finished:
                inc.resolved = True
                out.append(inc.record("Resolved", ", cleared"))
            elif inc.update_after_s is not None and not inc.updated and age_s >= inc.update_after_s:
                inc.updated = True
                inc.severity = inc.updated_severity
                out.append(inc.record("Active", f", severity re-assessed as {inc.severity}"))
        return out
