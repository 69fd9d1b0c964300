"""Decode one NMEA 0183 line into a small typed record.

The checksum is mandatory: a line without `*hh` is rejected even though pynmea2 would parse it.
Every talker (GP, GN, GL, GA, BD, GB, QZ, ...) goes to the same decoder for a sentence type.
Only the sentences the fix builder needs are decoded (RMC, GGA, GNS, GLL, VTG, GSA, ZDA, and
GBS for its time of day);
proprietary ($P...), other standard (GSV, TXT, ...) and unknown sentences are counted and
ignored. A malformed field becomes None and is counted; no exception leaves `Decoder.decode`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date

import pynmea2

log = logging.getLogger(__name__)

KNOTS_TO_KMH = 1.852


@dataclass(slots=True)
class Rmc:
    talker: str
    tod_us: int | None          # time of day, microseconds since 00:00 UTC
    valid: bool                 # status A/D and FAA mode not N
    lat: float | None
    lon: float | None
    speed_kn: float | None
    track_deg: float | None
    date: date | None
    date_malformed: bool


@dataclass(slots=True)
class Gga:
    talker: str
    tod_us: int | None
    quality: int | None         # 0 = no fix
    lat: float | None
    lon: float | None
    sats_used: int | None
    hdop: float | None
    alt_m: float | None         # above mean sea level


@dataclass(slots=True)
class Gns:
    talker: str
    tod_us: int | None
    valid: bool                 # first mode char not N/empty and nav status not U/V
    unsafe: bool                # nav status U/V: gpsd takes nothing but the time from it
    lat: float | None
    lon: float | None
    sats_used: int | None
    hdop: float | None
    alt_m: float | None


@dataclass(slots=True)
class Gll:
    talker: str
    tod_us: int | None
    valid: bool                 # status A and FAA mode not N
    lat: float | None
    lon: float | None


@dataclass(slots=True)
class Vtg:
    talker: str
    valid: bool                 # true track present and FAA mode not N/E (else ignored)
    track_deg: float | None
    speed_kmh: float | None


@dataclass(slots=True)
class Gsa:
    talker: str
    fix_type: int | None        # 1 no fix, 2 2D, 3 3D
    sats_used: int              # PRNs listed as used
    hdop: float | None


@dataclass(slots=True)
class Zda:
    talker: str
    tod_us: int | None
    date: date | None


@dataclass(slots=True)
class Gbs:
    """Only its time of day is used: gpsd counts it in end-of-cycle detection (receivers that
    send it last in the cycle are reported at it)."""
    talker: str
    tod_us: int | None


Sentence = Rmc | Gga | Gns | Gll | Vtg | Gsa | Zda | Gbs


class FieldError(ValueError):
    pass


def _num(s: str) -> float | None:
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        raise FieldError(s) from None
    if not math.isfinite(v):  # float() accepts "nan" and "inf"
        raise FieldError(s)
    return v


def _int(s: str) -> int | None:
    if not s:
        return None
    if not s.isdigit():
        raise FieldError(s)
    return int(s)


def parse_tod(s: str) -> int | None:
    """hhmmss[.sss] -> microseconds since midnight; '' -> None."""
    if not s:
        return None
    if len(s) < 6 or not s[:6].isdigit():
        raise FieldError(s)
    h, m, sec = int(s[0:2]), int(s[2:4]), int(s[4:6])
    if h > 23 or m > 59 or sec > 60:
        raise FieldError(s)
    us = 0
    if len(s) > 6:
        frac = s[7:]
        if s[6] != "." or (frac and not frac.isdigit()):
            raise FieldError(s)
        if frac:
            us = int((frac + "000000")[:6])
    if sec == 60:  # leap second: report as the last instant of the minute
        sec, us = 59, 999999
    return ((h * 60 + m) * 60 + sec) * 1_000_000 + us


def two_digit_year(yy: int) -> int:
    # NMEA RMC carries yy only. Like gpsd, years below 69 are 20yy, others 19yy.
    return 2000 + yy if yy < 69 else 1900 + yy


def parse_ddmmyy(s: str) -> date | None:
    if not s:
        return None
    if len(s) != 6 or not s.isdigit():
        raise FieldError(s)
    try:
        return date(two_digit_year(int(s[4:6])), int(s[2:4]), int(s[0:2]))
    except ValueError:
        raise FieldError(s) from None


def _coord(value: str, hemi: str, pos: str, neg: str, limit: float) -> float | None:
    """NMEA (d)ddmm.mmmm + hemisphere letter -> signed degrees."""
    if not value or not hemi:
        return None
    if hemi not in (pos, neg):
        raise FieldError(hemi)
    v = _num(value)
    if v is None or v < 0:
        raise FieldError(value)
    deg = int(v // 100)
    minutes = v - deg * 100
    if minutes >= 60:
        raise FieldError(value)
    d = deg + minutes / 60.0
    if d > limit:
        raise FieldError(value)
    return -d if hemi == neg else d


def _lat(data: list[str], i: int) -> float | None:
    return _coord(data[i], data[i + 1], "N", "S", 90.0)


def _lon(data: list[str], i: int) -> float | None:
    return _coord(data[i], data[i + 1], "E", "W", 180.0)


def _get(data: list[str], i: int) -> str:
    return data[i] if i < len(data) else ""


class _Fields:
    """Reads fields of one sentence; a malformed field is counted and becomes None, so one bad
    field does not discard what the rest of the sentence says."""

    __slots__ = ("data", "errors")

    def __init__(self, data: list[str]) -> None:
        self.data = data
        self.errors = 0

    def get(self, fn, *args):
        try:
            return fn(*args)
        except (FieldError, IndexError, ValueError):
            self.errors += 1
            return None


def _dec_rmc(talker: str, f: _Fields) -> Rmc:
    d = f.data
    status = _get(d, 1)
    faa = _get(d, 11)
    valid = status in ("A", "D") and faa != "N"
    date_malformed = False
    dt = None
    raw_date = _get(d, 8)
    if raw_date:
        try:
            dt = parse_ddmmyy(raw_date)
        except FieldError:
            f.errors += 1
            date_malformed = True
    return Rmc(talker, f.get(parse_tod, _get(d, 0)), valid,
               f.get(_lat, d, 2), f.get(_lon, d, 4),
               f.get(_num, _get(d, 6)), f.get(_num, _get(d, 7)), dt, date_malformed)


def _dec_gga(talker: str, f: _Fields) -> Gga:
    d = f.data
    return Gga(talker, f.get(parse_tod, _get(d, 0)), f.get(_int, _get(d, 5)),
               f.get(_lat, d, 1), f.get(_lon, d, 3),
               f.get(_int, _get(d, 6)), f.get(_num, _get(d, 7)), f.get(_num, _get(d, 8)))


def _dec_gns(talker: str, f: _Fields) -> Gns:
    d = f.data
    mode = _get(d, 5)
    nav_status = _get(d, 12)
    unsafe = nav_status in ("U", "V")
    valid = bool(mode) and mode[0] != "N" and not unsafe
    return Gns(talker, f.get(parse_tod, _get(d, 0)), valid, unsafe,
               f.get(_lat, d, 1), f.get(_lon, d, 3),
               f.get(_int, _get(d, 6)), f.get(_num, _get(d, 7)), f.get(_num, _get(d, 8)))


def _dec_gll(talker: str, f: _Fields) -> Gll:
    d = f.data
    valid = _get(d, 5) == "A" and _get(d, 6) != "N"
    return Gll(talker, f.get(parse_tod, _get(d, 4)), valid, f.get(_lat, d, 0), f.get(_lon, d, 2))


def _dec_vtg(talker: str, f: _Fields) -> Vtg:
    """Speed from the knots field as gpsd takes it (receivers round knots and km/h separately:
    6.2 kn sent beside 11.4 km/h is 11.48 km/h); the km/h field only when knots is missing.
    A VTG without a true track is ignored (gpsd: speed then comes from RMC)."""
    d = f.data
    track = f.get(_num, _get(d, 0))
    if len(d) > 2 and d[1] != "T" and d[1] != "":
        # NMEA 1.x VTG: track, magnetic track, knots, km/h without unit letters
        kn = f.get(_num, _get(d, 2))
        return Vtg(talker, track is not None, track,
                   kn * KNOTS_TO_KMH if kn is not None else None)
    mode = _get(d, 8)
    kn = f.get(_num, _get(d, 4))
    kmh = kn * KNOTS_TO_KMH if kn is not None else f.get(_num, _get(d, 6))
    return Vtg(talker, track is not None and mode != "N" and mode != "E", track, kmh)


def _dec_gsa(talker: str, f: _Fields) -> Gsa:
    d = f.data
    used = sum(1 for s in d[2:14] if s)
    return Gsa(talker, f.get(_int, _get(d, 1)), used, f.get(_num, _get(d, 15)))


def _dec_zda(talker: str, f: _Fields) -> Zda:
    d = f.data
    dt = None
    if _get(d, 1) and _get(d, 2) and _get(d, 3):
        y, m, day = f.get(_int, d[3]), f.get(_int, d[2]), f.get(_int, d[1])
        if y is not None and m is not None and day is not None:
            try:
                dt = date(y, m, day) if 1980 <= y <= 2200 else None
            except ValueError:
                dt = None
            if dt is None:
                f.errors += 1
    return Zda(talker, f.get(parse_tod, _get(d, 0)), dt)


def _dec_gbs(talker: str, f: _Fields) -> Gbs:
    return Gbs(talker, f.get(parse_tod, _get(f.data, 0)))


_DECODERS = {"RMC": _dec_rmc, "GGA": _dec_gga, "GNS": _dec_gns, "GLL": _dec_gll,
             "VTG": _dec_vtg, "GSA": _dec_gsa, "ZDA": _dec_zda, "GBS": _dec_gbs}


def checksum(body: str) -> int:
    """XOR of the characters between `$`/`!` and `*`."""
    c = 0
    for b in body.encode("ascii", "replace"):
        c ^= b
    return c


def has_valid_checksum(line: str) -> bool:
    if len(line) < 4 or line[-3] != "*":
        return False
    try:
        return int(line[-2:], 16) == checksum(line[1:-3])
    except ValueError:
        return False


class Decoder:
    """Stateless apart from its counters, which the agent exports as metrics."""

    __slots__ = ("sentences_ok", "checksum_errors", "parse_errors", "field_errors",
                 "unknown_sentences", "ignored_sentences", "proprietary_sentences")

    def __init__(self) -> None:
        self.sentences_ok = 0          # decoded sentences of a type the fix builder uses
        self.checksum_errors = 0       # missing or wrong *hh
        self.parse_errors = 0          # line pynmea2 cannot make sense of
        self.field_errors = 0          # malformed fields inside otherwise good sentences
        self.unknown_sentences = 0     # well-formed, but a type nobody here knows
        self.ignored_sentences = 0     # known standard sentences not needed for a fix (GSV, TXT)
        self.proprietary_sentences = 0

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def decode(self, line: str) -> Sentence | None:
        # pynmea2 parses a sentence with no "*hh" at all; NMEA over a serial line without a
        # checksum is indistinguishable from line noise, so it is rejected here.
        n = len(line)
        if n < 7 or line[-3] != "*":
            self.checksum_errors += 1
            return None
        if line[1] == "P":
            if has_valid_checksum(line):
                self.proprietary_sentences += 1
            else:
                self.checksum_errors += 1
            return None
        kind = line[3:6]
        dec = _DECODERS.get(kind)
        if dec is None or line[6] != ",":
            if not has_valid_checksum(line):
                self.checksum_errors += 1
            elif kind in _KNOWN_UNUSED and line[6] == ",":
                self.ignored_sentences += 1
            else:
                self.unknown_sentences += 1
                log.debug("gps: unknown sentence", extra={"sentence": line[:10]})
            return None
        try:
            msg = pynmea2.parse(line, check=True)
        except pynmea2.ChecksumError:
            self.checksum_errors += 1
            return None
        except Exception as e:  # pynmea2 raises ParseError/ValueError/... on odd lines
            self.parse_errors += 1
            log.debug("gps: unparseable sentence", extra={"sentence": line, "error": str(e)})
            return None
        f = _Fields(msg.data)
        try:
            out = dec(line[1:3], f)
        except Exception as e:  # a decoder bug must not take the GPS down
            self.parse_errors += 1
            log.warning("gps: decoder failed", extra={"sentence": line, "error": str(e)})
            return None
        if f.errors:
            self.field_errors += f.errors
            log.debug("gps: malformed fields", extra={"fields": f.errors, "sentence": line})
        self.sentences_ok += 1
        return out


_KNOWN_UNUSED = frozenset({
    "GSV", "TXT", "GST", "GRS", "HDT", "HDG", "RMB", "RMA", "DTM", "ALM", "BOD", "BWC",
    "XTE", "APB", "RTE", "WPL", "ROT", "THS", "VHW", "MWV", "DBT", "DPT", "MTW", "AAM",
})
