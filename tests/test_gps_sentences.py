"""Decoder: one line -> typed record; checksum required; bad input counted, never raised."""
from datetime import date

import pytest

from smartcity.edge.gps.sentences import Decoder, Gbs, Gga, Gll, Gns, Gsa, Rmc, Vtg, Zda


def nmea(body: str) -> str:
    cs = 0
    for ch in body:
        cs ^= ord(ch)
    return f"${body}*{cs:02X}"


def test_rmc_fields_are_decoded():
    s = Decoder().decode(nmea("GPRMC,225446.33,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E,A"))
    assert isinstance(s, Rmc)
    assert s.talker == "GP" and s.valid
    assert s.tod_us == ((22 * 60 + 54) * 60 + 46) * 1_000_000 + 330_000
    assert s.lat == pytest.approx(49 + 16.45 / 60, abs=1e-12)
    assert s.lon == pytest.approx(-(123 + 11.12 / 60), abs=1e-12)
    assert s.speed_kn == 0.5 and s.track_deg == 54.7
    assert s.date == date(1994, 11, 19)


def test_gga_fields_are_decoded():
    s = Decoder().decode(nmea("GNGGA,123519.00,4807.038,S,01131.000,E,2,08,0.9,-12.5,M,46.9,M,,"))
    assert isinstance(s, Gga)
    assert (s.quality, s.sats_used, s.hdop, s.alt_m) == (2, 8, 0.9, -12.5)
    assert s.lat == pytest.approx(-(48 + 7.038 / 60))


def test_gns_gll_vtg_gsa_zda_are_decoded():
    d = Decoder()
    gns = d.decode(nmea("GNGNS,224749.00,3333.4268304,N,11153.3538273,W,DAN,19,0.6,406.110,-26.294,,,S"))
    assert isinstance(gns, Gns) and gns.valid and gns.sats_used == 19 and gns.alt_m == 406.11
    gll = d.decode(nmea("GPGLL,4916.45,N,12311.12,W,225444,A,A"))
    assert isinstance(gll, Gll) and gll.valid and gll.tod_us == (22 * 3600 + 54 * 60 + 44) * 10**6
    vtg = d.decode(nmea("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A"))
    # the knots field, as gpsd takes it (receivers round knots and km/h separately)
    assert isinstance(vtg, Vtg) and vtg.valid and vtg.track_deg == 54.7
    assert vtg.speed_kmh == pytest.approx(5.5 * 1.852)
    vtg = d.decode(nmea("GPVTG,054.7,T,034.4,M,,N,010.2,K,A"))
    assert vtg.valid and vtg.speed_kmh == 10.2      # km/h only when knots is missing
    gsa = d.decode(nmea("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"))
    assert isinstance(gsa, Gsa) and gsa.fix_type == 3 and gsa.sats_used == 5 and gsa.hdop == 1.3
    zda = d.decode(nmea("GPZDA,160012.71,11,03,2004,-1,00"))
    assert isinstance(zda, Zda) and zda.date == date(2004, 3, 11)
    assert d.sentences_ok == 6 and d.field_errors == 0


def test_vtg_without_true_track_or_with_mode_n_is_not_used():
    d = Decoder()
    assert not d.decode(nmea("GPVTG,,T,,M,0.0,N,0.1,K,A")).valid
    assert not d.decode(nmea("GPVTG,054.7,T,,M,5.5,N,10.2,K,N")).valid
    assert d.decode(nmea("GPVTG,054.7,034.4,005.5,010.2")).speed_kmh == pytest.approx(5.5 * 1.852)


def test_gns_navigation_status_unsafe_is_kept_apart_from_the_mode():
    d = Decoder()
    s = d.decode(nmea("GNGNS,224749.00,3333.42,N,11153.35,W,AA,09,0.9,406.1,-26.3,,,U"))
    assert s.unsafe and not s.valid and s.tod_us is not None
    s = d.decode(nmea("GNGNS,224749.00,3333.42,N,11153.35,W,NN,00,,,,,,S"))
    assert not s.unsafe and not s.valid


def test_gbs_is_decoded_for_its_time_of_day_only():
    s = Decoder().decode(nmea("GPGBS,194939.00,3.0,1.9,4.2,,,,"))
    assert isinstance(s, Gbs) and s.tod_us == (19 * 3600 + 49 * 60 + 39) * 10**6


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD", "GB", "QZ"])
def test_every_talker_goes_to_the_same_decoder(talker):
    s = Decoder().decode(nmea(f"{talker}GGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"))
    assert isinstance(s, Gga) and s.talker == talker and s.alt_m == 545.4


def test_wrong_checksum_is_rejected_and_counted():
    d = Decoder()
    line = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    bad = line[:-2] + ("00" if line[-2:] != "00" else "01")
    assert d.decode(bad) is None
    assert d.checksum_errors == 1 and d.sentences_ok == 0


def test_sentence_without_checksum_is_rejected_although_pynmea2_would_parse_it():
    d = Decoder()
    assert d.decode("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") is None
    assert d.checksum_errors == 1


def test_lowercase_hex_checksum_is_accepted():
    line = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    assert isinstance(Decoder().decode(line[:-2] + line[-2:].lower()), Gga)


def test_proprietary_and_unknown_and_unused_sentences_are_counted_not_decoded():
    d = Decoder()
    assert d.decode(nmea("PMTK001,604,3")) is None
    assert d.decode(nmea("GPXYZ,1,2,3")) is None
    assert d.decode(nmea("GPGSV,1,1,01,05,45,100,40")) is None
    assert (d.proprietary_sentences, d.unknown_sentences, d.ignored_sentences) == (1, 1, 1)


@pytest.mark.parametrize("body", [
    "GPGGA,12x519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",   # time
    "GPGGA,123519,48o7.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",   # latitude
    "GPGGA,123519,4807.038,Q,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",   # hemisphere
    "GPGGA,123519,4807.038,N,01131.000,E,1,8a,0.9,545.4,M,46.9,M,,",   # satellites
    "GPGGA,123519,4807.038,N,01131.000,E,1,08,nan,545.4,M,46.9,M,,",   # hdop
    "GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",   # 67 minutes
])
def test_malformed_field_is_counted_and_becomes_none(body):
    d = Decoder()
    s = d.decode(nmea(body))
    assert isinstance(s, Gga)
    assert d.field_errors == 1
    assert None in (s.tod_us, s.lat, s.lon, s.sats_used, s.hdop)


def test_short_and_empty_sentences_do_not_raise():
    d = Decoder()
    for body in ["GPRMC", "GPRMC,", "GPGGA,,,,,,", "GPGSA", "GPZDA,1", "GPVTG", "GPGLL,,", "GNGNS"]:
        d.decode(nmea(body))
    assert d.parse_errors + d.sentences_ok + d.unknown_sentences == 8


def test_rmc_malformed_date_is_flagged():
    d = Decoder()
    s = d.decode(nmea("GPRMC,000231.099,A,4829.0005,N,00022.0015,E,0.15,212.28,2208-1,,,A"))
    assert s.date is None and s.date_malformed and d.field_errors == 1
    s = d.decode(nmea("GPRMC,000231.099,A,4829.0005,N,00022.0015,E,0.15,212.28,310299,,,A"))
    assert s.date is None and s.date_malformed  # 31 February


def test_two_digit_years_pivot_at_69():
    d = Decoder()
    assert d.decode(nmea("GPRMC,000000,A,0000.0,N,00000.0,E,0,0,010168,,,A")).date.year == 2068
    assert d.decode(nmea("GPRMC,000000,A,0000.0,N,00000.0,E,0,0,010169,,,A")).date.year == 1969
    assert d.decode(nmea("GPRMC,000000,A,0000.0,N,00000.0,E,0,0,220899,,,A")).date.year == 1999


def test_faa_mode_n_makes_rmc_invalid():
    s = Decoder().decode(nmea("GPRMC,081434.590,A,5212.978993,N,00653.097906,E,0.052,0.00,230808,,,N"))
    assert not s.valid


def test_random_garbage_never_raises():
    import random
    rng = random.Random(7)
    d = Decoder()
    alphabet = "$GPRMCAVNSEW,.*0123456789-"
    for _ in range(3000):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        d.decode(body)
        d.decode(nmea("GP" + rng.choice(["RMC", "GGA", "GNS", "GLL", "VTG", "GSA", "ZDA"]) + "," + body))
    assert d.sentences_ok > 0
