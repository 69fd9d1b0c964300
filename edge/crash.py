"""Crash detection from the speed trace (GPS or OBD), with an incident lifecycle.

A crash shows as a speed drop no brake can produce: tyres on a dry road give at most about 1 g
(9.8 m/s^2), a typical emergency stop 7-9 m/s^2, hard everyday braking 4-6 m/s^2. A collision
takes the car from 50 km/h to 0 in a fraction of a second. So: a speed drop, between any two
samples up to ~1 s apart (`window_s`), from above `min_speed_kmh` at a mean deceleration above
`threshold_ms2` (default 11 m/s^2, beyond tyre grip; spans shorter than `min_dt_s` count as
`min_dt_s` so speed noise between close samples cannot fake it), and the vehicle still (nearly)
stopped `confirm_s` later. The confirmation keeps a single glitched speed sample (a GPS dropout
reading 0) from raising an alarm. The sample rate limits what can be seen: at 1 Hz a drop from
below ~40 km/h looks the same as an emergency stop and is not reported.

Pure: feed(ts, speed_kmh, lat, lon) with the samples as they come; no clock, no I/O.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from smartcity.contracts import format_ts

log = logging.getLogger("smartcity.edge.crash")


@dataclass
class _Candidate:
    ts: datetime
    v_before_kmh: float
    v_after_kmh: float
    decel_ms2: float
    lat: float | None
    lon: float | None


@dataclass
class _Active:
    incident_id: str
    severity: str
    description: str
    ts: datetime
    lat: float | None
    lon: float | None
    moving_since: datetime | None = None


def severity_for_delta_v(delta_v_kmh: float) -> str:
    """Injury risk grows steeply with the change of velocity in the impact."""
    if delta_v_kmh < 30:
        return "low"
    if delta_v_kmh < 50:
        return "medium"
    if delta_v_kmh < 80:
        return "high"
    return "critical"


class CrashDetector:
    def __init__(self, threshold_ms2: float = 11.0, min_speed_kmh: float = 30.0,
                 window_s: float = 1.0, min_dt_s: float = 0.25, confirm_s: float = 2.0,
                 stopped_kmh: float = 10.0,
                 moving_kmh: float = 15.0, moving_for_s: float = 10.0,
                 resolve_after_s: float = 15 * 60, id_prefix: str = "crash"):
        self.threshold_ms2 = threshold_ms2
        self.min_speed_kmh = min_speed_kmh
        self.window_s = window_s
        self.min_dt_s = min_dt_s
        self.confirm_s = confirm_s
        self.stopped_kmh = stopped_kmh
        self.moving_kmh = moving_kmh
        self.moving_for_s = moving_for_s
        self.resolve_after_s = resolve_after_s
        self.id_prefix = id_prefix
        self._hist: deque[tuple[float, float]] = deque()  # (unix s, km/h)
        self._candidate: _Candidate | None = None
        self._active: _Active | None = None
        self._last_ts: datetime | None = None
        self.counters = {"samples": 0, "rejected": 0, "candidates": 0, "dismissed": 0,
                         "crashes": 0, "resolved": 0}

    @property
    def active_incident_id(self) -> str | None:
        return self._active.incident_id if self._active else None

    def feed(self, ts: datetime, speed_kmh: float | None, lat: float | None = None,
             lon: float | None = None) -> dict | None:
        """emergency_data fields (no envelope) when a crash is confirmed or resolved, else None."""
        if speed_kmh is None or ts.tzinfo is None or speed_kmh < 0 or speed_kmh != speed_kmh:
            self.counters["rejected"] += 1
            log.debug("crash detector: unusable sample", extra={"sample_ts": ts, "speed_kmh": speed_kmh})
            return None
        if self._last_ts is not None and ts <= self._last_ts:
            self.counters["rejected"] += 1
            log.debug("crash detector: sample not after the previous one",
                      extra={"sample_ts": ts, "previous_ts": self._last_ts})
            return None
        self._last_ts = ts
        self.counters["samples"] += 1

        if self._active is not None:
            return self._track_active(ts, speed_kmh)

        if self._candidate is not None:
            c = self._candidate
            if speed_kmh > max(self.stopped_kmh, 0.3 * c.v_before_kmh):
                self.counters["dismissed"] += 1      # it drove on: a glitch, not a crash
                log.info("crash candidate dismissed: the speed came back", extra={"speed_kmh": speed_kmh})
                self._candidate = None
            elif (ts - c.ts).total_seconds() < self.confirm_s:
                c.v_after_kmh = min(c.v_after_kmh, speed_kmh)   # delta-v is to where it ended
                return None
            else:
                c.v_after_kmh = min(c.v_after_kmh, speed_kmh)
                self._candidate = None
                self._hist.clear()
                return self._raise(c)

        now_s = ts.timestamp()
        hist = self._hist
        hist.append((now_s, speed_kmh))
        horizon = self.window_s * 1.5  # tolerate sample spacing around the window
        while len(hist) > 1 and now_s - hist[0][0] > horizon:
            hist.popleft()
        # cheap test first: no drop in the window can reach the threshold even over min_dt_s
        if (max(v for _, v in hist) - speed_kmh) / 3.6 <= self.threshold_ms2 * self.min_dt_s:
            return None
        for t0, v0 in hist:
            dt = now_s - t0
            if dt <= 0 or v0 < self.min_speed_kmh:
                continue
            decel = (v0 - speed_kmh) / 3.6 / max(dt, self.min_dt_s)
            if decel > self.threshold_ms2:
                self.counters["candidates"] += 1
                self._candidate = _Candidate(ts, v0, speed_kmh, decel, lat, lon)
                break
        return None

    def resolve(self, ts: datetime, reason: str = "resolved") -> dict | None:
        """Close the active incident now (e.g. the driver confirmed all is well)."""
        if self._active is None:
            return None
        a, self._active = self._active, None
        self.counters["resolved"] += 1
        return {"incident_id": a.incident_id, "type": "crash", "status": "Resolved",
                "severity": a.severity, "description": f"{a.description}; {reason}",
                "lat": a.lat, "lon": a.lon}

    # --- internals ---

    def _raise(self, c: _Candidate) -> dict:
        delta_v = c.v_before_kmh - c.v_after_kmh
        severity = severity_for_delta_v(delta_v)
        stamp = format_ts(c.ts).replace("-", "").replace(":", "").replace(".", "")
        incident_id = f"{self.id_prefix}-{stamp}"
        desc = (f"Crash suspected: {c.v_before_kmh:.0f} to {c.v_after_kmh:.0f} km/h, "
                f"deceleration {c.decel_ms2:.1f} m/s2")
        self._active = _Active(incident_id, severity, desc, c.ts, c.lat, c.lon)
        self.counters["crashes"] += 1
        log.warning("crash detected", extra={"incident_id": incident_id, "delta_v_kmh": delta_v})
        return {"incident_id": incident_id, "type": "crash", "status": "Active",
                "severity": severity, "description": desc, "lat": c.lat, "lon": c.lon}

    def _track_active(self, ts: datetime, speed_kmh: float) -> dict | None:
        a = self._active
        assert a is not None
        if (ts - a.ts).total_seconds() >= self.resolve_after_s:
            return self.resolve(ts, f"closed after {self.resolve_after_s / 60:.0f} min")
        if speed_kmh >= self.moving_kmh:
            if a.moving_since is None:
                a.moving_since = ts
            elif (ts - a.moving_since).total_seconds() >= self.moving_for_s:
                return self.resolve(ts, "vehicle moving again")
        else:
            a.moving_since = None
        return None
