"""Issue 14's receiver classes: synthetic captures (fresh coordinates, valid checksums) with the
exact fixes gpsd's reporting-cycle model gives (docs/gps.md). Each row is one reported fix:
(ts, fix_mode, lat, lon, alt_m, speed_kmh, heading_deg, sats_used, hdop), as the replay CLI
prints it (lat/lon to 9 decimals, speed to 4)."""
import json

import pytest

from smartcity.edge.gps import NmeaPipeline
from smartcity.edge.gps.__main__ import fix_json

FIELDS = ("ts", "fix_mode", "lat", "lon", "alt_m", "speed_kmh", "heading_deg", "sats_used", "hdop")


def replay(capture: str) -> list[tuple]:
    p = NmeaPipeline()
    fixes = p.feed(capture.strip().replace("\n", "\r\n").encode() + b"\r\n") + p.flush()
    return [tuple(json.loads(fix_json(f))[k] for k in FIELDS) for f in fixes]


# 1. VTG speed: knots field first (6.2 kn = 11.4824 km/h, not the rounded 11.4 km/h field);
#    a VTG without true track is ignored, speed comes from the RMC (0.0, not VTG's 0.1 km/h).
VTG_SPEED = """
$GPRMC,081500.00,A,4723.1000,N,00832.5000,E,6.2,045.0,150324,,,A*59
$GPVTG,045.0,T,,M,6.2,N,11.4,K,A*3C
$GPRMC,081501.00,A,4723.1030,N,00832.5040,E,0.0,,150324,,,A*74
$GPVTG,,T,,M,0.0,N,0.1,K,A*22
"""
VTG_SPEED_FIXES = [
    ("2024-03-15T08:15:00.000Z", 2, 47.385, 8.541666667, None, 11.4824, 45.0, None, None),
    ("2024-03-15T08:15:01.000Z", 2, 47.38505, 8.541733333, None, 0.0, None, None, None),
]

# 2. Time stamps 10 ms apart are one cycle; every timed sentence moves the fix's time, so the
#    second position is reported under its own time, not under .990. (First cycle: no end of
#    cycle known, so RMC and GGA are each reported.)
MS_APART = """
$GPRMC,101500.990,A,3412.2000,S,15043.6000,E,3.0,120.0,150324,,*19
$GPGGA,101500.990,3412.2000,S,15043.6000,E,1,05,1.2,40.0,M,20.0,M,,*77
$GPRMC,101501.000,A,3412.2021,S,15043.6019,E,3.0,120.0,150324,,*13
$GPGGA,101501.000,3412.2021,S,15043.6019,E,1,05,1.2,40.0,M,20.0,M,,*7D
"""
MS_APART_FIXES = [
    ("2024-03-15T10:15:00.990Z", 2, -34.203333333, 150.726666667, None, 5.556, 120.0, None, None),
    ("2024-03-15T10:15:00.990Z", 3, -34.203333333, 150.726666667, 40.0, 5.556, 120.0, 5, 1.2),
    ("2024-03-15T10:15:01.000Z", 3, -34.203368333, 150.726698333, 40.0, 5.556, 120.0, 5, 1.2),
]

# 3. Cycles started by GLL teach no end of cycle: every position sentence is reported with its
#    own time (the first GLL comes before any date: no ts).
GLL_FIRST = """
$GPGLL,6110.4000,N,01046.2000,E,201500.296,A*3C
$GPRMC,201500.30,A,6110.4000,N,01046.2000,E,0.0,000.0,150324,,*34
$GPGLL,6110.4010,N,01046.2000,E,201501.303,A*31
$GPRMC,201501.30,A,6110.4010,N,01046.2000,E,0.0,000.0,150324,,*34
"""
GLL_FIRST_FIXES = [
    (None, 2, 61.173333333, 10.77, None, None, None, None, None),
    ("2024-03-15T20:15:00.300Z", 2, 61.173333333, 10.77, None, 0.0, 0.0, None, None),
    ("2024-03-15T20:15:01.303Z", 2, 61.17335, 10.77, None, None, None, None, None),
    ("2024-03-15T20:15:01.300Z", 2, 61.17335, 10.77, None, 0.0, 0.0, None, None),
]

# 4a. RMC at even, GLL at odd seconds. :02's RMC teaches GLL as the end of cycle; the :02
#     cycle never reaches a GLL and is dropped when :03 starts.
NO_END_MARKER = """
$GPRMC,223000,A,4130.0000,S,17310.0000,E,000.0,090.0,150324,,*09
$GPGLL,4130.0000,S,17310.0000,E,223001,A*37
$GPRMC,223002,A,4130.0000,S,17310.0000,E,000.0,090.0,150324,,*0B
$GPGLL,4130.0000,S,17310.0000,E,223003,A*35
"""
NO_END_MARKER_FIXES = [
    ("2024-03-15T22:30:00.000Z", 2, -41.5, 173.166666667, None, 0.0, 90.0, None, None),
    ("2024-03-15T22:30:01.000Z", 2, -41.5, 173.166666667, None, None, None, None, None),
    ("2024-03-15T22:30:03.000Z", 2, -41.5, 173.166666667, None, None, None, None, None),
]

# 4b. Cycle shape changing at start-up: .1 teaches RMC (not reported: not an end of cycle),
#     .2 teaches GGA and is reported, as is .3.
SHAPE_CHANGE = """
$GPRMC,154000.00,A,3905.10000,N,07702.20000,W,9.000,30.0,150324,,,D*7C
$GPGGA,154000.10,3905.10100,N,07702.19900,W,2,08,1.0,120.0,M,,,,*29
$GPGGA,154000.20,3905.10200,N,07702.19800,W,2,08,1.0,120.0,M,,,,*28
$GPGGA,154000.30,3905.10300,N,07702.19700,W,2,08,1.0,120.0,M,,,,*27
"""
SHAPE_CHANGE_FIXES = [
    ("2024-03-15T15:40:00.000Z", 2, 39.085, -77.036666667, None, 16.668, 30.0, None, None),
    ("2024-03-15T15:40:00.200Z", 3, 39.085033333, -77.036633333, 120.0, None, None, 8, 1.0),
    ("2024-03-15T15:40:00.300Z", 3, 39.08505, -77.036616667, 120.0, None, None, 8, 1.0),
]

# 5. RMC stamped a second ahead of GGA: :01 is reported at its RMC (the learnt end of cycle);
#    the GGA with the same time after it changes the position but is never reported.
SAME_TIME_AFTER_END = """
$GPGGA,093000,5301.0000,N,00501.0000,E,1,10,0.8,2.0,M,46.0,M,,*42
$GPRMC,093000,A,5301.0000,N,00501.0000,E,5.0,230.0,150324,,,A*7C
$GPRMC,093001,A,5300.9990,N,00500.9980,E,5.0,230.0,150324,,,A*7C
$GPGGA,093001,5300.9982,N,00500.9962,E,1,10,0.8,2.0,M,46.0,M,,*4D
$GPRMC,093002,A,5300.9982,N,00500.9962,E,5.0,230.0,150324,,,A*70
"""
SAME_TIME_AFTER_END_FIXES = [
    (None, 3, 53.016666667, 5.016666667, 2.0, None, None, 10, 0.8),
    ("2024-03-15T09:30:00.000Z", 3, 53.016666667, 5.016666667, 2.0, 9.26, 230.0, 10, 0.8),
    ("2024-03-15T09:30:01.000Z", 2, 53.01665, 5.016633333, None, 9.26, 230.0, None, None),
    ("2024-03-15T09:30:02.000Z", 2, 53.016636667, 5.016603333, None, 9.26, 230.0, None, None),
]


@pytest.mark.parametrize("capture,expected", [
    pytest.param(VTG_SPEED, VTG_SPEED_FIXES, id="1-vtg-speed"),
    pytest.param(MS_APART, MS_APART_FIXES, id="2-ms-apart"),
    pytest.param(GLL_FIRST, GLL_FIRST_FIXES, id="3-gll-starts-cycles"),
    pytest.param(NO_END_MARKER, NO_END_MARKER_FIXES, id="4a-no-end-marker"),
    pytest.param(SHAPE_CHANGE, SHAPE_CHANGE_FIXES, id="4b-shape-change"),
    pytest.param(SAME_TIME_AFTER_END, SAME_TIME_AFTER_END_FIXES, id="5-same-time-after-end"),
])
def test_receiver_class_gives_gpsds_fixes(capture, expected):
    assert replay(capture) == expected


def test_checksums_of_the_captures_are_valid():
    # the examples must reach the fix builder whole: no line is rejected on its way
    for capture in (VTG_SPEED, MS_APART, GLL_FIRST, NO_END_MARKER, SHAPE_CHANGE,
                    SAME_TIME_AFTER_END):
        p = NmeaPipeline()
        p.feed(capture.strip().encode() + b"\n")
        p.flush()
        lines = len(capture.strip().splitlines())
        assert p.decoder.sentences_ok == lines and p.decoder.checksum_errors == 0


def nmea(body: str) -> str:
    cs = 0
    for ch in body:
        cs ^= ord(ch)
    return f"${body}*{cs:02X}"


def test_gll_without_time_after_the_end_of_cycle_is_reported_with_that_cycle():
    # GGA, RMC (the learnt end), then a GLL without time and with a newer position: gpsd
    # reports it under the cycle's time (untimed data right after the end of cycle), and the
    # untimed GLL takes over as the end of cycle until the next cycle's start learns RMC again
    def cycle(sec):
        t = f"1200{sec:02d}"
        return [f"GPGGA,{t},5301.0000,N,00501.0000,E,1,10,0.8,2.0,M,46.0,M,,",
                f"GPRMC,{t},A,5301.0000,N,00501.0000,E,5.0,230.0,150324,,,A",
                "GPGLL,5301.0060,N,00501.0000,E,,A"]
    rows = replay("\n".join(nmea(b) for sec in range(3) for b in cycle(sec)))
    assert [(r[0], r[2]) for r in rows] == [
        (None, 53.016666667),
        ("2024-03-15T12:00:00.000Z", 53.016666667),
        ("2024-03-15T12:00:00.000Z", 53.016766667),     # first cycle: every position is reported
        ("2024-03-15T12:00:01.000Z", 53.016666667),
        ("2024-03-15T12:00:01.000Z", 53.016766667),
        ("2024-03-15T12:00:02.000Z", 53.016666667),
        ("2024-03-15T12:00:02.000Z", 53.016766667),
    ]
