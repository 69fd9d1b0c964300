"""NMEA 0183 output of a simulated GPS receiver: one reporting cycle at a time.

Pure functions: the simulator decides where the vehicle is, this module turns it into the
bytes a u-blox-like receiver would send (RMC, GGA, VTG, GSA, GSV; CRLF; valid checksums).
Positions are written with 6 decimals of minutes (~2 cm), so a parser recovers them to
better than 1e-6 degrees.
"""
from __future__ import annotations

from datetime import datetime, timezone

KMH_PER_KNOT = 1.852
_MAX_GSA_PRNS = 12


def checksum(body: str) -> int:
    """NMEA checksum: XOR of every character between `$` and `*` (pass the part in between)."""
    c = 0
    for b in body.encode("ascii"):
        c ^= b
    return c


def sentence(body: str) -> bytes:
    """`body` without `$` and `*hh` -> the complete sentence with checksum and CRLF."""
    return f"${body}*{checksum(body):02X}\r\n".encode("ascii")


def _coord(value: float, width: int, pos: str, neg: str) -> tuple[str, str]:
    # integer micro-minutes avoid a 60.000000 minutes field from float rounding
    umin = round(abs(value) * 60_000_000)
    deg, rem = divmod(umin, 60_000_000)
    minutes = f"{rem // 1_000_000:02d}.{rem % 1_000_000:06d}"
    return f"{deg:0{width}d}{minutes}", (neg if value < 0 else pos)


def _hhmmss(t: datetime) -> str:
    return t.strftime("%H%M%S") + f".{t.microsecond // 1000:03d}"


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def nmea_cycle(utc: datetime, lat: float | None, lon: float | None, alt_m: float | None,
               speed_kmh: float | None, heading_deg: float | None, sats_used: int,
               hdop: float | None, fix: bool = True, talker: str = "GP",
               sats_in_view: int | None = None) -> bytes:
    """The sentences of one reporting cycle. `utc` must be timezone-aware; times are written
    to the millisecond (as SiRF and MediaTek receivers do).
    With fix=False the receiver reports no position (RMC V, GGA quality 0, GSA mode 1)."""
    if utc.tzinfo is None:
        raise ValueError("utc must be a timezone-aware datetime")
    utc = utc.astimezone(timezone.utc)
    tod = _hhmmss(utc)
    ddmmyy = utc.strftime("%d%m%y")
    have_pos = fix and lat is not None and lon is not None
    if have_pos:
        la, ns = _coord(lat, 2, "N", "S")
        lo, ew = _coord(lon, 3, "E", "W")
    else:
        la = ns = lo = ew = ""
    knots = None if speed_kmh is None or not have_pos else speed_kmh / KMH_PER_KNOT
    track = heading_deg if have_pos else None
    used = max(0, int(sats_used)) if fix else 0
    hd = hdop if fix else None
    out = [
        sentence(f"{talker}RMC,{tod},{'A' if have_pos else 'V'},{la},{ns},{lo},{ew},"
                 f"{_fmt(knots, '.3f')},{_fmt(track, '.2f')},{ddmmyy},,,{'A' if have_pos else 'N'}"),
        sentence(f"{talker}GGA,{tod},{la},{ns},{lo},{ew},{1 if have_pos else 0},{used:02d},"
                 f"{_fmt(hd, '.2f')},{_fmt(alt_m if have_pos else None, '.2f')},M,0.0,M,,"),
        sentence(f"{talker}VTG,{_fmt(track, '.2f')},T,,M,{_fmt(knots, '.3f')},N,"
                 f"{_fmt(speed_kmh if have_pos else None, '.3f')},K,{'A' if have_pos else 'N'}"),
    ]
    prns = [str(p) for p in range(1, min(used, _MAX_GSA_PRNS) + 1)]
    prns += [""] * (_MAX_GSA_PRNS - len(prns))
    mode = (3 if alt_m is not None else 2) if have_pos else 1
    pdop = None if hd is None else round(hd * 1.6, 2)
    vdop = None if hd is None else round(hd * 1.3, 2)
    out.append(sentence(f"{talker}GSA,A,{mode},{','.join(prns)},{_fmt(pdop, '.2f')},"
                        f"{_fmt(hd, '.2f')},{_fmt(vdop, '.2f')}"))
    out += _gsv(talker, max(used, sats_in_view or 0))
    return b"".join(out)


def _gsv(talker: str, n: int) -> list[bytes]:
    if n <= 0:
        return [sentence(f"{talker}GSV,1,1,00")]
    total = (n + 3) // 4
    out = []
    for i in range(total):
        sats = []
        for prn in range(i * 4 + 1, min(n, i * 4 + 4) + 1):
            # a fixed, plausible sky: elevation, azimuth and SNR derived from the PRN
            sats.append(f"{prn:02d},{(prn * 37) % 80 + 5:02d},{(prn * 71) % 360:03d},"
                        f"{30 + (prn * 13) % 20:02d}")
        out.append(sentence(f"{talker}GSV,{total},{i + 1},{n:02d},{','.join(sats)}"))
    return out
