"""Assemble decoded sentences into one position fix per receiver reporting cycle.

A receiver sends several sentences per cycle (GGA, RMC, GSA, VTG, ...), each with part of the
picture. Like gpsd, sentences that share one time of day form a cycle; the cycle's fix merges
them (the last valid position wins, altitude from GGA/GNS, speed and track from RMC/VTG, DOP and
satellites from GGA/GNS/GSA). A fix is completed when a sentence with a new time of day starts
the next cycle, or earlier, as soon as the sentence that ends the receiver's cycles arrives
(the cycle order is learnt, so a 1 Hz receiver is not reported a second late).

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
        # ddmm.mmmmmm -> degrees leaves binary noise (13.762424649999998); 9 decimals is 0.1 mm.
        return {"lat": _round(self.lat, 9), "lon": _round(self.lon, 9), "alt_m": self.alt_m,
                "speed_kmh": _round(self.speed_kmh, 4), "heading_deg": self.heading_deg,
                "fix_mode": self.fix_mode, "sats_used": self.sats_used, "hdop": self.hdop}


def _round(v: float | None, ndigits: int) -> float | None:
    return None if v is None else round(v, ndigits)


class _Cycle:
    __slots__ = ("tod_us", "date", "n_timed", "lat", "lon", "valid", "alt_m", "speed_kmh",
                 "track_deg", "sats_used", "gsa_sats", "gga_hdop", "other_hdop", "gsa_3d", "keys",
                 "has_data", "ender_seen", "pos_len", "emitted", "counts", "dirty")

    def __init__(self) -> None:
        self.tod_us: int | None = None
        self.date: date | None = None     # the date this cycle's fix is stamped with
        self.n_timed = 0                  # sentences with a time of day seen in this cycle
        self.lat = self.lon = None
        self.valid = False
        self.alt_m = self.speed_kmh = self.track_deg = None
        self.sats_used: int | None = None
        self.gsa_sats: int | None = None
        self.gga_hdop = self.other_hdop = None
        self.gsa_3d = False
        self.keys: list[tuple[str, int]] = []   # sentence order, for learning the cycle ender
        self.has_data = False
        self.ender_seen = False
        self.pos_len = 0        # sentences up to and including the last timed position one
        self.emitted: Fix | None = None
        self.counts: dict[str, int] = {}
        self.dirty = False      # sentences applied since the last report of this cycle


def _hdop(v: float | None) -> float | None:
    return v if v is not None and _MIN_HDOP <= v <= _MAX_HDOP else None


_MAX_ENDERS = 8
_POSITION_KINDS = frozenset({"Rmc", "Gga", "Gns", "Gll"})


class FixBuilder:
    """Sentences in, fixes out: one fix per reporting cycle (rarely a corrected second one
    with the same ts, when sentences of that cycle arrive after its learnt end and change it).

    Cycle ends are learnt as gpsd does: the last sentence of a complete cycle (by type and
    occurrence, e.g. the second GSA) becomes an "ender", and once enders are known a cycle's fix
    is reported as soon as one arrives. Before that, a cycle is reported when the next starts.
    A cycle that is the beginning of the receiver's usual cycle but stops before its usual last
    position sentence (bytes lost, receiver reset, end of input) was cut off: not reported,
    counted in `cycles_incomplete`. A cycle of a new shape is reported and its last sentence
    learnt as another ender, so a changed sentence order costs at most a late report.

    Dates (gpsd's rules): only a valid RMC or a ZDA sets the date; time-only cycles use the last
    date, moved on at midnight. Once enders are known, a cycle that began before any date stays
    without ts even if its own RMC brings one later, because gpsd reports it at the ender.
    """

    def __init__(self) -> None:
        self._cyc = _Cycle()
        self._date: date | None = None       # last date from a valid RMC or a ZDA
        self._date_tod: int | None = None    # latest time of day seen since that date
        self._enders: set[tuple[str, int]] = set()
        self._usual_keys: list[tuple[str, int]] = []   # sentence order of the last full cycle
        self._usual_pos_len = 0
        self.fixes = 0
        self.cycles_incomplete = 0
        self.cycles_reemitted = 0

    # -- public -----------------------------------------------------------------------------
    def feed(self, s: Sentence) -> list[Fix]:
        out: list[Fix] = []
        cyc = self._cyc
        tod = getattr(s, "tod_us", None)
        # ZDA is left out of cycle detection (some receivers send it late, with the next
        # second's time); it only supplies the date.
        kind = type(s).__name__
        if tod is not None and not isinstance(s, Zda):
            if cyc.tod_us is not None and abs(tod - cyc.tod_us) > _SAME_CYCLE_US:
                self._close(out, learn=True)
                cyc = self._cyc
            elif cyc.tod_us is None and cyc.has_data:
                # sentences without a time (receiver without a fix) were a cycle of their own
                self._close(out, learn=False)
                cyc = self._cyc
            if cyc.tod_us is None:
                cyc.tod_us = tod
                cyc.date = self._carried_date(tod)
            cyc.n_timed += 1
        elif cyc.tod_us is None and kind in _POSITION_KINDS and cyc.has_data:
            if kind in cyc.counts:
                # no times at all: a repeated GGA/RMC/... is the next cycle
                self._close(out, learn=False)
                cyc = self._cyc
        self._apply(cyc, s)
        cyc.dirty = True
        if kind == "Zda":
            # a date source only: it neither orders the cycle nor ends it
            return out
        n = cyc.counts.get(kind, 0) + 1
        cyc.counts[kind] = n
        key = (kind, n)
        cyc.keys.append(key)
        if tod is not None and kind in _POSITION_KINDS:
            cyc.pos_len = len(cyc.keys)
        if key in self._enders and cyc.has_data:
            cyc.ender_seen = True
            self._emit(cyc, out)
        return out

    def flush(self) -> list[Fix]:
        """End of input: report the pending cycle if it is complete."""
        out: list[Fix] = []
        self._close(out, learn=False)
        return out

    # -- cycle handling ---------------------------------------------------------------------
    def _emit(self, cyc: _Cycle, out: list[Fix]) -> None:
        if not cyc.dirty:
            return
        cyc.dirty = False
        fix = self._make_fix(cyc)
        if fix != cyc.emitted:
            if cyc.emitted is not None:
                self.cycles_reemitted += 1
            cyc.emitted = fix
            self.fixes += 1
            out.append(fix)

    def _close(self, out: list[Fix], learn: bool) -> None:
        cyc = self._cyc
        if cyc.has_data:
            keys, usual = cyc.keys, self._usual_keys
            # A cycle that is the beginning of the receiver's usual cycle and stops before the
            # usual last position sentence (bytes lost, receiver reset, end of input) is
            # incomplete: gpsd does not report it either.
            cut_off = (not cyc.ender_seen and cyc.tod_us is not None
                       and len(keys) < self._usual_pos_len and usual[:len(keys)] == keys)
            if cut_off:
                self.cycles_incomplete += 1
            else:
                self._emit(cyc, out)
                if learn and cyc.tod_us is not None:
                    self._usual_keys = keys
                    self._usual_pos_len = cyc.pos_len
                    if not cyc.ender_seen:
                        if len(self._enders) >= _MAX_ENDERS:
                            self._enders.clear()
                        self._enders.add(keys[-1])
        self._cyc = _Cycle()

    def _carried_date(self, tod: int) -> date | None:
        """The date for a cycle that starts with a time of day only."""
        if self._date is None:
            return None
        if self._date_tod is not None and tod < self._date_tod - _HALF_DAY_US:
            self._date += timedelta(days=1)   # the clock passed midnight since that date
        self._date_tod = tod
        return self._date

    def _set_date(self, cyc: _Cycle, d: date, tod: int, first: bool, retro: bool = True) -> None:
        self._date = d
        self._date_tod = tod
        # Once the cycle order is known, a cycle whose first timed sentence came before any date
        # stays without a timestamp, as gpsd reports it (at the learnt ender, before this RMC).
        if abs(tod - (cyc.tod_us if cyc.tod_us is not None else tod)) <= _SAME_CYCLE_US and (
                first or cyc.date is not None or (retro and not self._enders)):
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
            if not s.valid:
                # a receiver without a fix may send a stale or bogus date (MTK, Telit)
                return
            if s.date is not None and s.tod_us is not None:
                self._set_date(cyc, s.date, s.tod_us, first=cyc.n_timed == 1)
            if s.lat is None or s.lon is None:
                return
            self._position(cyc, s.lat, s.lon)
            if s.speed_kn is not None:
                cyc.speed_kmh = s.speed_kn * KNOTS_TO_KMH
            if s.track_deg is not None:
                cyc.track_deg = s.track_deg
        elif isinstance(s, Vtg):
            if not s.valid:
                return
            cyc.has_data = True
            if s.speed_kmh is not None:
                cyc.speed_kmh = s.speed_kmh
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
                # a ZDA after the cycle's position never dates it retroactively: gpsd does not
                # report on a ZDA alone
                self._set_date(cyc, s.date, s.tod_us, first=cyc.tod_us is None, retro=False)

    @staticmethod
    def _position(cyc: _Cycle, lat: float, lon: float) -> None:
        cyc.lat, cyc.lon, cyc.valid = lat, lon, True

    @staticmethod
    def _make_fix(cyc: _Cycle) -> Fix:
        ts = None
        if cyc.tod_us is not None and cyc.date is not None:
            d = cyc.date
            ts = datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(
                microseconds=cyc.tod_us)
        sats = cyc.sats_used if cyc.sats_used is not None else cyc.gsa_sats
        if sats is not None and not 0 <= sats <= 255:
            sats = None
        hdop = cyc.gga_hdop if cyc.gga_hdop is not None else cyc.other_hdop
        if not cyc.valid:
            return Fix(ts, 1, sats_used=sats, hdop=hdop)
        mode = 3 if cyc.gsa_3d or (cyc.alt_m is not None and (sats or 0) >= 4) else 2
        speed = cyc.speed_kmh
        if speed is not None and not 0.0 <= speed <= 2000.0:
            speed = None
        track = cyc.track_deg
        if track is not None and not 0.0 <= track <= 360.0:
            track = None
        return Fix(ts, mode, cyc.lat, cyc.lon, cyc.alt_m, speed, track, sats, hdop)
