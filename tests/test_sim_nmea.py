"""sim.nmea: the simulator's receiver output, checked by round trip through the real parser."""
from datetime import datetime, timedelta, timezone

import pytest

from smartcity.edge.gps import NmeaPipeline
from smartcity.edge.gps.sentences import has_valid_checksum
from smartcity.sim.nmea import checksum, nmea_cycle, sentence

T0 = datetime(2026, 11, 28, 23, 59, 58, 700000, tzinfo=timezone.utc)


def test_checksum_matches_the_nmea_reference_example():
    # the classic example from the NMEA documentation
    assert checksum("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == 0x47
    assert sentence("GPXYZ,1") == f"$GPXYZ,1*{checksum('GPXYZ,1'):02X}\r\n".encode()


def test_every_sentence_of_a_cycle_is_crlf_terminated_with_a_valid_checksum():
    raw = nmea_cycle(T0, 48.1, 11.5, 520.0, 36.0, 90.0, 9, 0.9)
    assert raw.endswith(b"\r\n")
    lines = raw.decode("ascii").split("\r\n")[:-1]
    kinds = [line[3:6] for line in lines]
    assert kinds[:4] == ["RMC", "GGA", "VTG", "GSA"] and set(kinds[4:]) == {"GSV"}
    assert all(has_valid_checksum(line) for line in lines)
    assert all(len(line) <= 82 for line in lines)


POINTS = [
    (48.1173, 11.516667), (-33.8688197, 151.2092955), (40.6892494, -74.0445004),
    (-0.0000004, -0.0000004), (89.9999999, 179.9999999), (-89.9999999, -179.9999999),
    (51.4778, -0.0014), (0.99999999, 0.99999999),
]


def test_round_trip_through_the_real_fix_builder():
    p = NmeaPipeline()
    raw = b""
    truth = []
    for i, (lat, lon) in enumerate(POINTS):
        t = T0 + timedelta(milliseconds=100 * i)   # crosses midnight
        args = dict(lat=lat, lon=lon, alt_m=-12.34 + i, speed_kmh=0.0 + 17.3 * i,
                    heading_deg=(359.99 * i / 7), sats_used=4 + i, hdop=0.5 + i / 10)
        truth.append((t, args))
        raw += nmea_cycle(t, **args)
    fixes = []
    for k in range(0, len(raw), 61):   # odd chunk size: sentences split across reads
        fixes += p.feed(raw[k:k + 61])
    fixes += p.flush()
    # gpsd's reporting model (docs/gps.md): until the end of a cycle is learnt, the first cycle is
    # reported after each sentence with a position, so it may appear twice; the last report of
    # each time is the cycle's complete fix.
    last_per_ts = list({f.ts: f for f in fixes}.values())
    assert len(last_per_ts) == len(POINTS) and len(fixes) <= len(POINTS) + 1
    for fix, (t, a) in zip(last_per_ts, truth):
        assert fix.ts == t.replace(microsecond=t.microsecond // 1000 * 1000)
        assert fix.fix_mode == 3
        assert abs(fix.lat - a["lat"]) < 1e-6 and abs(fix.lon - a["lon"]) < 1e-6
        assert fix.alt_m == pytest.approx(a["alt_m"], abs=0.005)
        assert fix.speed_kmh == pytest.approx(a["speed_kmh"], abs=0.002)
        assert fix.heading_deg == pytest.approx(a["heading_deg"], abs=0.005)
        assert fix.sats_used == a["sats_used"]
        assert fix.hdop == pytest.approx(a["hdop"], abs=0.005)
    assert p.decoder.checksum_errors == 0 and p.decoder.field_errors == 0


def test_no_fix_cycle_round_trips_as_fix_mode_1_with_time():
    p = NmeaPipeline()
    raw = b"".join(nmea_cycle(T0 + timedelta(seconds=i), 48.1, 11.5, 520.0, 36.0, 90.0, 0, None,
                              fix=False) for i in range(3))
    fixes = p.feed(raw) + p.flush()
    # a void RMC's date is not trusted, so a receiver without a fix gives no timestamp either;
    # the first cycle may be reported twice (gpsd's model: docs/gps.md)
    assert 3 <= len(fixes) <= 4 and all(f.fix_mode == 1 for f in fixes)
    assert all(f.lat is None and f.lon is None for f in fixes)


def test_losing_and_regaining_the_fix():
    p = NmeaPipeline()
    states = [True, True, False, False, True]
    raw = b"".join(nmea_cycle(T0 + timedelta(seconds=i), 10.0, 20.0, 30.0, 40.0, 50.0, 7, 1.1,
                              fix=ok) for i, ok in enumerate(states))
    fixes = p.feed(raw) + p.flush()
    modes = [f.fix_mode for f in fixes]
    lost, regained = modes.index(1), len(modes) - 1 - modes[::-1].index(1)
    assert 3 in modes[:lost] and set(modes[lost:regained + 1]) == {1} and modes[regained + 1:] == [3]
    with_fix = {f.ts for f in fixes if f.fix_mode == 3}
    assert with_fix == {(T0 + timedelta(seconds=i)).replace(microsecond=700000) for i in (0, 1, 4)}
    assert fixes[-1].ts == (T0 + timedelta(seconds=4)).replace(microsecond=700000)


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError):
        nmea_cycle(datetime(2026, 1, 1), 1.0, 2.0, 3.0, 4.0, 5.0, 6, 1.0)
