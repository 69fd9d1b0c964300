"""Weather along the Bangkok - Pattaya corridor: Thai lowland climate with seeded rain spells.

Temperature follows a daily cycle (about 26 degC before dawn, 33 degC mid-afternoon, with a few
tenths of slow seeded wander), humidity runs the other way, showers cluster in the afternoon
and evening as convective rain does in Thailand. Everything is a continuous function of time and
position, so a moving vehicle sampling it at any rate sees smooth values, and the same seed gives
the same weather whoever asks and in whatever order.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

LOCAL_UTC_OFFSET_H = 7
T_MIN_C, T_MAX_C = 26.0, 33.0
T_MIN_HOUR, T_MAX_HOUR = 6.0, 14.5
BANGKOK = (13.75, 100.55)
CONDITIONS = ("clear", "cloudy", "rain", "storm", "fog", "haze")


@dataclass(frozen=True)
class RainSpell:
    start_h: float       # hours since the model epoch (local midnight of the spell's day)
    duration_h: float
    peak_mm_h: float
    storm: bool          # thunderstorm: gusts and the "storm" condition near the peak

    def intensity_mm_h(self, t_h: float) -> float:
        x = (t_h - self.start_h) / self.duration_h
        if not 0.0 < x < 1.0:
            return 0.0
        return self.peak_mm_h * math.sin(math.pi * x) ** 2

    def integral_mm(self, a_h: float, b_h: float) -> float:
        """Rain that fell between a_h and b_h (closed form of the sin^2 profile)."""
        lo, hi = max(a_h, self.start_h), min(b_h, self.start_h + self.duration_h)
        if hi <= lo:
            return 0.0
        d = self.duration_h

        def prim(t: float) -> float:
            x = t - self.start_h
            return x / 2 - d / (4 * math.pi) * math.sin(2 * math.pi * x / d)
        return self.peak_mm_h * (prim(hi) - prim(lo))


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dx = (lon2 - lon1) * 111.32 * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(dx, (lat2 - lat1) * 110.57)


class WeatherModel:
    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(f"{seed}:weather")
        # slow wander: a few incommensurate sinusoids, (amplitude, period_h, phase)
        self._t_wander = [(a, p, rng.uniform(0, 2 * math.pi))
                          for a, p in ((0.6, 31.0), (0.4, 53.0), (0.3, 7.3), (0.15, 1.7))]
        self._cloud_wander = [(a, p, rng.uniform(0, 2 * math.pi))
                              for a, p in ((0.25, 19.0), (0.15, 5.1), (0.1, 1.3))]
        self._wind_wander = [(a, p, rng.uniform(0, 2 * math.pi))
                             for a, p in ((2.0, 11.0), (1.5, 2.9), (0.8, 0.7))]
        self._aqi_wander = [(a, p, rng.uniform(0, 2 * math.pi)) for a, p in ((10.0, 37.0), (5.0, 4.3))]
        self._epoch = datetime(2000, 1, 1, tzinfo=timezone.utc) - timedelta(hours=LOCAL_UTC_OFFSET_H)

    # --- rain ---

    @lru_cache(maxsize=64)
    def spells_for_day(self, day: int) -> tuple[RainSpell, ...]:
        """Rain spells starting on local day `day` (days since 2000-01-01, local time)."""
        rng = random.Random(f"{self.seed}:rain:{day}")
        n = rng.choices((0, 1, 2, 3), weights=(0.3, 0.4, 0.25, 0.05))[0]
        out = []
        for _ in range(n):
            start = rng.uniform(13.0, 20.0) if rng.random() < 0.7 else rng.uniform(0.0, 24.0)
            peak = rng.uniform(1.0, 30.0)
            out.append(RainSpell(day * 24.0 + start, rng.uniform(0.5, 2.0), peak,
                                 storm=peak > 12.0 and rng.random() < 0.7))
        return tuple(sorted(out, key=lambda s: s.start_h))

    def spells_near(self, t_h: float) -> list[RainSpell]:
        day = int(t_h // 24)
        return [s for d in (day - 1, day, day + 1) for s in self.spells_for_day(d)]

    # --- the model ---

    def _hours(self, ts: datetime) -> float:
        if ts.tzinfo is None:
            raise ValueError("ts must be timezone-aware")
        return (ts - self._epoch).total_seconds() / 3600.0

    @staticmethod
    def _wave(terms, t_h: float) -> float:
        return sum(a * math.sin(2 * math.pi * t_h / p + ph) for a, p, ph in terms)

    @staticmethod
    def _diurnal_c(hour: float) -> float:
        """Dawn minimum, mid-afternoon maximum; cosine ramps so the curve has no kinks."""
        span = T_MAX_C - T_MIN_C
        if T_MIN_HOUR <= hour < T_MAX_HOUR:
            x = (hour - T_MIN_HOUR) / (T_MAX_HOUR - T_MIN_HOUR)
            return T_MIN_C + span * (1 - math.cos(math.pi * x)) / 2
        y = ((hour - T_MAX_HOUR) % 24.0) / (24.0 - (T_MAX_HOUR - T_MIN_HOUR))
        return T_MAX_C - span * (1 - math.cos(math.pi * y)) / 2

    def at(self, ts: datetime, lat: float, lon: float) -> dict:
        t_h = self._hours(ts)
        hour = t_h % 24.0
        spells = self.spells_near(t_h)
        intensity = sum(s.intensity_mm_h(t_h) for s in spells)
        last_hour_mm = sum(s.integral_mm(t_h - 1.0, t_h) for s in spells)
        storming = any(s.storm and s.intensity_mm_h(t_h) > 8.0 for s in spells)
        # nearest spell in time, for clouds building before and lingering after rain
        gap_h = min((max(s.start_h - t_h, t_h - s.start_h - s.duration_h, 0.0) for s in spells),
                    default=99.0)

        afternoon = max(0.0, math.sin(math.pi * (hour - 10.0) / 10.0)) if 10 <= hour <= 20 else 0.0
        coast = min(max((13.45 - lat) / 0.3, 0.0), 1.0) if lon > 100.85 else 0.0
        city = max(0.0, 1.0 - _km(lat, lon, *BANGKOK) / 30.0)
        night = 1.0 - afternoon

        temp = self._diurnal_c(hour) + self._wave(self._t_wander, t_h)
        temp += -1.2 * coast * afternoon + 0.8 * city * night   # sea breeze; urban heat island
        dry_temp = temp
        temp -= min(4.0, 0.35 * last_hour_mm)                    # rain-cooled air

        humidity = 86.0 - 4.0 * (dry_temp - T_MIN_C) + min(14.0, 3.0 * last_hour_mm) + 3.0 * coast
        humidity = min(max(humidity, 35.0), 99.0)

        wind = 7.0 + 9.0 * coast * afternoon + 3.0 * afternoon + self._wave(self._wind_wander, t_h)
        wind += min(45.0, 2.0 * intensity) * (1.0 if storming else 0.4)
        wind = max(wind, 0.0)

        rush = math.exp(-((hour - 8.0) / 1.5) ** 2) + 0.7 * math.exp(-((hour - 18.0) / 1.5) ** 2)
        aqi = 40.0 + 55.0 * city + 30.0 * city * rush + 15.0 * night * (1 - coast) + \
            self._wave(self._aqi_wander, t_h)
        aqi *= 1.0 - min(0.5, last_hour_mm / 20.0)               # rain washes particles out
        aqi_i = int(round(min(max(aqi, 0.0), 500.0)))

        cloud = 0.35 + self._wave(self._cloud_wander, t_h) + max(0.0, 0.6 - 0.4 * gap_h)
        if intensity >= 0.3:
            condition = "storm" if storming else "rain"
        elif 4.5 <= hour <= 8.0 and humidity >= 94.0 and wind < 6.0:
            condition = "fog"
        elif aqi_i >= 120:
            condition = "haze"
        elif cloud >= 0.6:
            condition = "cloudy"
        else:
            condition = "clear"
        return {
            "temperature_c": round(temp, 1),
            "humidity_pct": round(humidity, 1),
            "precipitation_mm": round(last_hour_mm, 1),
            "wind_speed_kmh": round(wind, 1),
            "air_quality_index": aqi_i,
            "weather_condition": condition,
        }
