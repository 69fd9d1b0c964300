"""Assemble decoded sentences into one position fix per receiver reporting cycle.

A receiver sends several sentences per cycle (GGA, RMC, GSA, VTG, ...), each with part of the
picture. Like gpsd, sentences that share one time of day form a cycle; the cycle's fix merges
them (the last valid position wins, altitude from GGA/GNS, speed and track from RMC/VTG, DOP and
satellites from GGA/GNS/GSA). A fix is completed when a sentence with a new time of day starts
the next cycle, or earlier, as soon as the sentence that ended the previous cycle arrives again
(the receiver's cycle order is learnt, so a 1 Hz receiver is not reported a second late).

No-fix rules (from gpsd): RMC status V, GGA quality 0, GLL status V, GNS mode N ignore their
position; a GP/GN GGA with fewer than 3 satellites is no fix; HDOP outside 0.01..89.99 is
unknown. GGA/GLL/GNS carry only a time of day and take their date from an earlier RMC or ZDA;
without one the fix has no timestamp (ts None).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from .sentences import KNOTS_TO_KMH, Gga, Gll, Gns, Gsa, Rmc, Sentence, Vtg, Zda

_DAY_US = 86_400_000_000
_HALF_DAY_US = _DAY_US // 2
# Sentences of one cycle may differ by rounding in their time fields (.99 vs .997)
_SAME_CYCLE_US = 10_000
_MIN_HDOP, _MAX_HDOP = 0.01, 89.99


@dataclass(slots=True)
class Fix:
    ts: datetime | None        # aware UTC; None until a date is known (no RMC/ZDA yet)
    fix_mode: int              # 1 no fix, 2 2D, 3 3D
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None         # above mean sea level
    speed_kmh: float | None = None
    heading_deg: float | None = None   # course over ground, true
    sats_used: int | None = None
    hdop: float | None = None

    def to_fields(self) -> dict:
        """The gps_data payload fields of contracts.schema.GPS (the envelope, ts included, is
        the publisher's business)."""
        return {"lat": self.lat, "lon": self.lon, "alt_m": self.alt_m,
                "speed_kmh": self.speed_kmh, "heading_deg": self.heading_deg,
                "fix_mode": self.fix_mode, "sats_used": self.sats_used, "hdop": self.hdop}


class _Cycle:
    __slots__ = ("tod_us", "date", "lat", "lon", "valid", "alt_m", "speed_kn", "track_deg",
                 "sats_used", "gsa_sats", "gga_hdop", "other_hdop", "gsa_3d", "keys", "has_data")

    def __init__(self) -> None:
        self.tod_us: int | None = None
        self.date: date | None = None     # date given by a sentence of this cycle
        self.lat = self.lon = None
        self.valid = False
        self.alt_m = self.speed_kn = self.track_deg = None
        self.sats_used: int | None = None
        self.gsa_sats: int | None = None
        self.gga_hdop = self.other_hdop = None
        self.gsa_3d = False
        self.keys: list[tuple[str, int]] = []   # sentence order, for learning the cycle ender
        self.has_data = False


def _hdop(v: float | None) -> float | None:
    return v if v is not None and _MIN_HDOP <= v <= _MAX_HDOP else None


class FixBuilder:
    def __init__(self) -> None:
        self._cyc = _Cycle()
        self._date: date | None = None       # last date from RMC/ZDA
        self._date_tod: int | None = None    # time of day that date belongs to
        self._ender: tuple[str, int] | None = None
        self._emitted: Fix | None = None     # this cycle's fix, if already reported early
        self.fixes = 0
        self.cycles_reemitted = 0

    # -- public -----------------------------------------------------------------------------
    def feed(self, s: Sentence) -> list[Fix]:
        out: list[Fix] = []
        tod = getattr(s, "tod_us", None)
        cyc = self._cyc
        if tod is not None and not isinstance(s, Zda):
            if cyc.tod_us is None:
                cyc.tod_us = tod
            elif abs(tod - cyc.tod_us) > _SAME_CYCLE_US:
                self._close(out, learn=True)
                cyc = self._cyc
                cyc.tod_us = tod
        kind = type(s).__name__
        n = sum(1 for k in cyc.keys if k[0] == kind) + 1
        key = (kind, n)
        cyc.keys.append(key)
        self._apply(cyc, s)
        if key == self._ender and cyc.has_data:
            fix = self._make_fix(cyc)
            if fix is not None and self._emitted != fix:
                self._emitted = fix
                self.fixes += 1
                out.append(fix)
        return out

    def flush(self) -> list[Fix]:
        out: list[Fix] = []
        self._close(out, learn=False)
        return out

    # -- cycle handling ---------------------------------------------------------------------
    def _close(self, out: list[Fix], learn: bool) -> None:
        cyc = self._cyc
        if cyc.has_data:
            fix = self._make_fix(cyc)
            if fix is not None and fix != self._emitted:
                if self._emitted is not None:
                    # data arrived after the learnt ender: the order changed, learn it again
                    self.cycles_reemitted += 1
                    self._ender = None
                out.append(fix)
                self.fixes += 1
            if learn and cyc.keys and (self._ender is None or self._emitted is None):
                self._ender = cyc.keys[-1]
        if cyc.tod_us is not None and self._date is not None and cyc.date is None:
            self._advance_date(cyc.tod_us)
        self._cyc = _Cycle()
        self._emitted = None

    def _advance_date(self, tod: int) -> None:
        # A time-only cycle after midnight: the carried date moves on with the clock.
        if self._date_tod is not None and tod < self._date_tod - _HALF_DAY_US:
            self._date += timedelta(days=1)
        self._date_tod = tod

    def _set_date(self, cyc: _Cycle, d: date, tod: int | None) -> None:
        self._date = d
        self._date_tod = tod
        if tod is None or cyc.tod_us is None or abs(tod - cyc.tod_us) <= _SAME_CYCLE_US:
            cyc.date = d

    def _apply(self, cyc: _Cycle, s: Sentence) -> None:
        if isinstance(s, Gga):
            cyc.has_data = True
            hd = _hdop(s.hdop)
            if hd is not None:
                cyc.gga_hdop = hd
            if s.sats_used is not None:
                cyc.sats_used = s.sats_used
            if not s.quality or s.lat is None or s.lon is None:
                return
            if s.talker in ("GP", "GN") and (s.sats_used or 0) < 3:
                return
            self._position(cyc, s.lat, s.lon)
            if s.alt_m is not None and -1000.0 <= s.alt_m <= 20000.0:
                cyc.alt_m = s.alt_m
        elif isinstance(s, Rmc):
            cyc.has_data = True
            if s.date is not None and s.tod_us is not None:
                self._set_date(cyc, s.date, s.tod_us)
            if not s.valid or s.lat is None or s.lon is None:
                return
            self._position(cyc, s.lat, s.lon)
            if s.speed_kn is not None:
                cyc.speed_kn = s.speed_kn
            if s.track_deg is not None:
                cyc.track_deg = s.track_deg
        elif isinstance(s, Vtg):
            if not s.valid:
                return
            cyc.has_data = True
            if s.speed_kn is not None:
                cyc.speed_kn = s.speed_kn
            if s.track_deg is not None:
                cyc.track_deg = s.track_deg
        elif isinstance(s, Gsa):
            cyc.has_data = True
            cyc.gsa_sats = (cyc.gsa_sats or 0) + s.sats_used
            if s.fix_type == 3:
                cyc.gsa_3d = True
            hd = _hdop(s.hdop)
            if hd is not None:
                cyc.other_hdop = hd
        elif isinstance(s, Gns):
            cyc.has_data = True
            hd = _hdop(s.hdop)
            if hd is not None:
                cyc.other_hdop = hd
            if s.sats_used is not None and cyc.sats_used is None:
                cyc.sats_used = s.sats_used
            if not s.valid or s.lat is None or s.lon is None:
                return
            self._position(cyc, s.lat, s.lon)
            if s.alt_m is not None and -1000.0 <= s.alt_m <= 20000.0:
                cyc.alt_m = s.alt_m
        elif isinstance(s, Gll):
            cyc.has_data = True
            if s.valid and s.lat is not None and s.lon is not None:
                self._position(cyc, s.lat, s.lon)
        elif isinstance(s, Zda):
            if s.date is not None and s.tod_us is not None:
                self._set_date(cyc, s.date, s.tod_us)

    @staticmethod
    def _position(cyc: _Cycle, lat: float, lon: float) -> None:
        cyc.lat, cyc.lon, cyc.valid = lat, lon, True

    def _make_fix(self, cyc: _Cycle) -> Fix | None:
        ts = None
        if cyc.tod_us is not None:
            d = cyc.date
            if d is None and self._date is not None:
                d = self._date
                if self._date_tod is not None and cyc.tod_us < self._date_tod - _HALF_DAY_US:
                    d = d + timedelta(days=1)
            if d is not None:
                ts = datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(
                    microseconds=cyc.tod_us)
        sats = cyc.sats_used if cyc.sats_used is not None else cyc.gsa_sats
        if sats is not None and not 0 <= sats <= 255:
            sats = None
        hdop = cyc.gga_hdop if cyc.gga_hdop is not None else cyc.other_hdop
        if not cyc.valid:
            return Fix(ts, 1, sats_used=sats, hdop=hdop)
        mode = 3 if cyc.gsa_3d or (cyc.alt_m is not None and (sats or 0) >= 4) else 2
        speed = cyc.speed_kn * KNOTS_TO_KMH if cyc.speed_kn is not None else None
        if speed is not None and not 0.0 <= speed <= 2000.0:
            speed = None
        track = cyc.track_deg
        if track is not None and not 0.0 <= track <= 360.0:
            track = None
        return Fix(ts, mode, cyc.lat, cyc.lon, cyc.alt_m, speed, track, sats, hdop)
