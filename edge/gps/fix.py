"""Assemble decoded sentences into position fixes the way gpsd reports them.

gpsd's reporting-cycle model (docs/gps.md has the whole picture):

- A *timed* sentence (valid RMC with its date, GGA, GLL, GNS, GBS, ZDA with a date) whose time
  of day differs by more than 10 ms from the previous timed sentence starts a new cycle: what the
  fix had gathered is dropped (gpsd's CLEAR_IS), and the kind of the previous timed sentence is
  learnt as an *end-of-cycle* kind, unless the sentence starting the cycle is a GLL (GLL
  continues cycles in gpsd's sentence table). Time stamps a few ms apart stay one cycle, and
  every timed sentence moves the fix's time to its own (the report carries the latest).
- A fix is reported at every sentence of a learnt end-of-cycle kind, and at untimed sentences
  (VTG, GSA, ...) that bring data right after one. Sentences after the end-of-cycle sentence
  with the same time are merged but reported only if another report follows in that cycle.
- While no end-of-cycle kind is known (the first cycle, receivers whose cycles start with GLL,
  or after an RMC/GGA without any time), the cycle end is unreliable and a fix is reported
  after every sentence that brings a position or a fix mode.
- A void RMC without time or date, or a GGA of quality 0 without time, forces a report,
  forgets the date and makes the cycle end unreliable until a new end-of-cycle kind is learnt
  (gpsd's handling of receivers without a fix). A GLL without time becomes the end of cycle.

Within one cycle, a report identical to the previous one is not repeated. So a receiver with a
fixed sentence order gives one fix per cycle once its first cycle is over.

No-fix rules (from gpsd): RMC status V, GGA quality 0, GLL status V, GNS mode N ignore their
position; a GP/GN GGA with fewer than 3 satellites is no fix; a GSA's fix type sets the mode;
HDOP outside 0.01..89.99 is unknown. GGA/GLL/GNS carry only a time of day and take their date
from an earlier RMC or ZDA; without one the fix has no timestamp (ts None).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from .sentences import KNOTS_TO_KMH, Gbs, Gga, Gll, Gns, Gsa, Rmc, Sentence, Vtg, Zda

_DAY_US = 86_400_000_000
_HALF_DAY_US = _DAY_US // 2
# gpsd: a new cycle starts when the time of day moves by more than 10 ms
_SAME_CYCLE_US = 10_000
_MIN_HDOP, _MAX_HDOP = 0.01, 89.99
_UTC = timezone.utc


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


def _hdop(v: float | None) -> float | None:
    return v if v is not None and _MIN_HDOP <= v <= _MAX_HDOP else None


class _Acc:
    """What the fix has gathered since the cycle started (gpsd's gpsdata.fix)."""

    __slots__ = ("tod_us", "date", "fix", "lat", "lon", "alt_m", "speed_kmh", "track_deg",
                 "gga_sats", "gsa_sats", "gga_hdop", "other_hdop", "gsa_3d", "touched")

    def __init__(self) -> None:
        self.tod_us: int | None = None    # time of the latest timed sentence with a date
        self.date: date | None = None
        self.fix = False                  # the latest fix mode said 2D/3D
        self.lat = self.lon = None
        self.alt_m = self.speed_kmh = self.track_deg = None
        self.gga_sats: int | None = None
        self.gsa_sats: int | None = None
        self.gga_hdop = self.other_hdop = None
        self.gsa_3d = False
        self.touched = False              # a position or a mode arrived in this cycle


_TIME_OF_DAY = (Gga, Gll, Gns, Gbs)   # timed by their time field alone
_POSITION_KINDS = frozenset({Rmc, Gga, Gll, Gns})


class FixBuilder:
    """Sentences in, fixes out, at the sentences where gpsd reports (see the module doc).

    Counters: `fixes` reported; `cycles_incomplete`, cycles with a position or mode that the
    start of the next one (or the end of input) dropped unreported (cut off before their
    end-of-cycle sentence);
    `cycles_reemitted`, extra reports of one cycle that changed what the first one said.

    Dates: only a valid RMC or a ZDA sets the date; time-only sentences use the last date,
    moved on at midnight (gpsd keeps the old day there).
    """

    def __init__(self) -> None:
        self._acc = _Acc()
        self._date: date | None = None       # last date from a valid RMC or a ZDA
        self._date_tod: int | None = None    # latest time of day seen since that date
        self._tod: int | None = None         # time of day of the last timed sentence
        self._lasttag: type | None = None    # kind of the last timed sentence
        self._enders: set[type] = set()      # learnt end-of-cycle kinds
        self._reliable = False               # an end-of-cycle kind is known and trusted
        self._emitted: tuple | None = None   # what the last report of this cycle said
        self._untimed_seen: set[type] = set()
        self._prev: type | None = None       # kind of the previous sentence (GSA runs)
        self.fixes = 0
        self.cycles_incomplete = 0
        self.cycles_reemitted = 0

    # -- public -----------------------------------------------------------------------------
    def feed(self, s: Sentence) -> list[Fix]:
        t = type(s)
        tod = None          # the time this sentence registers for cycle detection
        forced = False
        if t is Rmc:
            if s.valid:
                if s.date is not None:
                    tod = s.tod_us
            elif s.tod_us is None or (s.date is None and not s.date_malformed):
                forced = True
        elif t in _TIME_OF_DAY:
            tod = s.tod_us
            if tod is None and t is Gga and s.quality == 0:
                forced = True
        elif t is Zda:
            if s.date is not None:
                tod = s.tod_us
        enders = self._enders
        if forced:
            # gpsd: no time breaks the cycle detector; report now, forget the date
            self._date = self._date_tod = None
            self._reliable = False
        if tod is not None:
            last = self._tod
            self._tod = tod
            if last is None or abs(tod - last) > _SAME_CYCLE_US:
                lt = self._lasttag
                if lt is not None and t is not Gll and lt not in enders:
                    enders.add(lt)
                    self._reliable = True
                self._new_cycle()
        elif t in _POSITION_KINDS:
            # no time at all: a repeated position sentence is the receiver's next cycle, as
            # far as repeating an identical report goes (gpsd clears nothing here)
            seen = self._untimed_seen
            if t in seen:
                seen.clear()
                self._emitted = None
            seen.add(t)

        acc = self._acc
        data, pos_or_mode = self._apply(acc, s, t, tod)
        self._prev = t
        if pos_or_mode:
            acc.touched = True

        report = forced
        if tod is None:
            if data and self._lasttag in enders:
                report = True           # new data right after the end of the cycle
            if t is Gll:
                # an untimed GLL extends the cycle: it becomes the end-of-cycle kind
                enders.discard(self._lasttag)
                enders.add(Gll)
                self._reliable = True
                report = True
        else:
            if t in enders:
                report = True
            self._lasttag = t
        if not report and pos_or_mode and not self._reliable:
            report = True
        if report:
            return self._report()
        return []

    def flush(self) -> list[Fix]:
        """End of input. gpsd reports nothing more: a cycle that did not reach its report
        point is dropped (counted as incomplete)."""
        if self._acc.touched and self._emitted is None:
            self.cycles_incomplete += 1
        self._acc = _Acc()
        self._emitted = None
        return []

    # -- cycle handling ---------------------------------------------------------------------
    def _new_cycle(self) -> None:
        if self._acc.touched and self._emitted is None:
            self.cycles_incomplete += 1
        self._acc = _Acc()
        self._emitted = None
        self._untimed_seen.clear()

    def _report(self) -> list[Fix]:
        acc = self._acc
        sats = acc.gga_sats if acc.gga_sats is not None else acc.gsa_sats
        if sats is not None and not 0 <= sats <= 255:
            sats = None
        hdop = acc.gga_hdop if acc.gga_hdop is not None else acc.other_hdop
        if acc.fix and acc.lat is not None:
            mode = 3 if acc.gsa_3d or (acc.alt_m is not None and (sats or 0) >= 4) else 2
            key = (acc.tod_us, acc.date, mode, acc.lat, acc.lon, acc.alt_m, acc.speed_kmh,
                   acc.track_deg, sats, hdop)
        else:
            mode = 1
            key = (acc.tod_us, acc.date, 1, sats, hdop)
        # the same report again (an untimed sentence that changed nothing) is not repeated
        if key == self._emitted:
            return []
        if self._emitted is not None:
            self.cycles_reemitted += 1
        self._emitted = key
        self.fixes += 1
        ts = None
        if acc.tod_us is not None and acc.date is not None:
            d = acc.date
            ts = datetime(d.year, d.month, d.day, tzinfo=_UTC) + timedelta(
                microseconds=acc.tod_us)
        if mode == 1:
            return [Fix(ts, 1, sats_used=sats, hdop=hdop)]
        speed = acc.speed_kmh
        if speed is not None and not 0.0 <= speed <= 2000.0:
            speed = None
        track = acc.track_deg
        if track is not None and not 0.0 <= track <= 360.0:
            track = None
        return [Fix(ts, mode, acc.lat, acc.lon, acc.alt_m, speed, track, sats, hdop)]

    def _carried_date(self, tod: int) -> date | None:
        """The date for a time of day from a sentence without a date."""
        if self._date is None:
            return None
        if self._date_tod is not None and tod < self._date_tod - _HALF_DAY_US:
            self._date += timedelta(days=1)   # the clock passed midnight since that date
        self._date_tod = tod
        return self._date

    def _apply(self, acc: _Acc, s: Sentence, t: type, tod: int | None) -> tuple[bool, bool]:
        """Merge one sentence. Returns (it brought data, it set a position or a fix mode)."""
        if t is Gga:
            if tod is not None and self._date is not None:
                acc.date = self._carried_date(tod)
                acc.tod_us = tod
            hd = _hdop(s.hdop)
            if hd is not None:
                acc.gga_hdop = hd
            if s.sats_used is not None:
                acc.gga_sats = s.sats_used
            if not s.quality or s.lat is None or s.lon is None:
                acc.fix = False
                return True, True
            acc.lat, acc.lon = s.lat, s.lon
            acc.fix = not (s.talker in ("GP", "GN") and (s.sats_used or 0) < 3)
            if acc.fix and s.alt_m is not None and -1000.0 <= s.alt_m <= 20000.0:
                acc.alt_m = s.alt_m
            return True, True
        if t is Rmc:
            if not s.valid:
                acc.fix = False
                return True, True
            if tod is not None:
                self._date, self._date_tod = s.date, tod
                acc.date, acc.tod_us = s.date, tod
            if s.lat is None or s.lon is None:
                acc.fix = False
            else:
                acc.lat, acc.lon, acc.fix = s.lat, s.lon, True
            if s.speed_kn is not None:
                acc.speed_kmh = s.speed_kn * KNOTS_TO_KMH
            if s.track_deg is not None:
                acc.track_deg = s.track_deg
            return True, True
        if t is Vtg:
            if not s.valid:
                return False, False
            if s.speed_kmh is not None:
                acc.speed_kmh = s.speed_kmh
            acc.track_deg = s.track_deg
            return True, False
        if t is Gsa:
            if self._prev is not Gsa:
                acc.gsa_sats = 0          # a new run of GSAs (one per constellation)
            acc.gsa_sats = (acc.gsa_sats or 0) + s.sats_used
            hd = _hdop(s.hdop)
            if hd is not None:
                acc.other_hdop = hd
            ft = s.fix_type
            if ft is not None and 1 <= ft <= 3:
                acc.fix = ft >= 2
                acc.gsa_3d = ft == 3
                return True, True
            return True, False
        if t is Gll:
            if tod is not None and self._date is not None:
                acc.date = self._carried_date(tod)
                acc.tod_us = tod
            if s.valid and s.lat is not None and s.lon is not None:
                acc.lat, acc.lon, acc.fix = s.lat, s.lon, True
            else:
                acc.fix = False
            return True, True
        if t is Gns:
            if tod is not None and self._date is not None:
                acc.date = self._carried_date(tod)
                acc.tod_us = tod
            if s.unsafe:
                return tod is not None, False
            hd = _hdop(s.hdop)
            if hd is not None:
                acc.other_hdop = hd
            if not s.valid or s.lat is None or s.lon is None:
                acc.fix = False
                return True, True
            if s.sats_used is not None:
                acc.gga_sats = s.sats_used
            acc.lat, acc.lon, acc.fix = s.lat, s.lon, True
            if s.alt_m is not None and -1000.0 <= s.alt_m <= 20000.0:
                acc.alt_m = s.alt_m
            return True, True
        if t is Zda:
            if tod is None:
                return False, False
            self._date, self._date_tod = s.date, tod
            acc.date, acc.tod_us = s.date, tod
            return True, False
        return False, False
