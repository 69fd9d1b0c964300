"""FixBuilder: gpsd's reporting-cycle model (report points, cycle starts, learnt end-of-cycle
kinds) with gpsd's no-fix and date rules. The receiver classes of issue 14 are in
test_gps_cycles.py."""
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from smartcity.contracts import schema
from smartcity.contracts.validate import validate
from smartcity.edge.gps import NmeaPipeline
from smartcity.edge.gps.fix import Fix, FixBuilder
from smartcity.edge.gps.sentences import Decoder

REPO = Path(__file__).resolve().parents[1]


def nmea(body: str) -> str:
    cs = 0
    for ch in body:
        cs ^= ord(ch)
    return f"${body}*{cs:02X}"


def run(*bodies: str, builder: FixBuilder | None = None) -> list[Fix]:
    d, b = Decoder(), builder or FixBuilder()
    out = []
    for body in bodies:
        s = d.decode(nmea(body))
        assert s is not None, body
        out += b.feed(s)
    return out + b.flush()


def last(*bodies: str) -> Fix:
    """The last report of a single cycle. Before any end of cycle is learnt, gpsd reports after
    every sentence that brings a position or a mode; the last report carries the whole merge."""
    fixes = run(*bodies)
    assert fixes, bodies
    return fixes[-1]


def rmc(t="123519.00", status="A", lat="4807.038", ns="N", lon="01131.000", ew="E",
        kn="022.4", trk="084.4", date="230394", faa="A"):
    return f"GPRMC,{t},{status},{lat},{ns},{lon},{ew},{kn},{trk},{date},,,{faa}"


def gga(t="123519.00", q="1", sats="08", hdop="0.9", alt="545.4", lat="4807.038",
        lon="01131.000", talker="GP"):
    return f"{talker}GGA,{t},{lat},N,{lon},E,{q},{sats},{hdop},{alt},M,46.9,M,,"


def test_gga_and_rmc_of_one_cycle_merge_into_one_fix():
    fix = last(gga(), rmc())
    assert fix.ts == datetime(1994, 3, 23, 12, 35, 19, tzinfo=timezone.utc)
    assert fix.fix_mode == 3
    assert fix.lat == pytest.approx(48 + 7.038 / 60) and fix.lon == pytest.approx(11 + 31 / 60)
    assert fix.alt_m == 545.4 and fix.sats_used == 8 and fix.hdop == 0.9
    assert fix.speed_kmh == pytest.approx(22.4 * 1.852) and fix.heading_deg == 84.4


def test_vtg_after_the_end_of_cycle_is_reported_with_its_knots_field():
    # RMC is the cycle's last timed sentence: once learnt, the cycle is reported at it, and
    # again at the VTG right after it, which brings new data. Speed from VTG's knots field
    # (022.5 kn = 41.67 km/h), not its separately rounded km/h field (gpsd's processVTG).
    vtg = "GPVTG,084.4,T,,M,022.5,N,041.5,K,A"
    fixes = run(gga(t="123519.00"), rmc(t="123519.00"), vtg,
                gga(t="123520.00"), rmc(t="123520.00"), vtg)
    second = [f for f in fixes if f.ts and f.ts.second == 20]
    assert [f.speed_kmh for f in second] == [pytest.approx(22.4 * 1.852),
                                             pytest.approx(22.5 * 1.852)]


def test_void_rmc_is_not_a_fix():
    fix = last(rmc(status="V"))
    assert fix.fix_mode == 1 and fix.lat is None and fix.lon is None and fix.speed_kmh is None


def test_rmc_with_faa_mode_not_valid_is_not_a_fix():
    fix = last(rmc(faa="N"))
    assert fix.fix_mode == 1 and fix.lat is None


def test_gga_quality_zero_is_not_a_fix():
    fixes = run(rmc(status="V"), gga(q="0"))
    assert fixes and all(f.fix_mode == 1 and f.lat is None and f.alt_m is None for f in fixes)


@pytest.mark.parametrize("talker", ["GP", "GN"])
def test_gp_gn_gga_with_fewer_than_three_satellites_is_not_a_fix(talker):
    # gpsd: the latest sentence's mode is the fix's mode; RMC's report said 2D, the GGA's
    # report after it says no fix (and its altitude is not taken)
    fixes = run(rmc(), gga(sats="02", talker=talker))
    assert [f.fix_mode for f in fixes] == [2, 1] and fixes[-1].alt_m is None
    assert last(rmc(status="V"), gga(sats="02", talker=talker)).fix_mode == 1


def test_glonass_gga_counts_only_its_own_satellites_so_two_are_enough():
    fix = last(rmc(status="V"), gga(sats="02", talker="GL"))
    assert fix.fix_mode == 2 and fix.lat is not None


@pytest.mark.parametrize("hdop,expected", [("99.99", None), ("0.00", None), ("90.0", None),
                                           ("89.99", 89.99), ("0.01", 0.01)])
def test_hdop_outside_0_01_to_89_99_is_unknown(hdop, expected):
    assert last(rmc(), gga(hdop=hdop)).hdop == expected


def test_mode_is_3d_with_altitude_and_four_satellites():
    assert last(rmc(), gga(sats="04")).fix_mode == 3
    assert last(rmc(), gga(sats="03")).fix_mode == 2
    assert last(rmc(), gga(alt="")).fix_mode == 2
    assert last(rmc()).fix_mode == 2


def test_gsa_saying_3d_makes_the_fix_3d():
    fix = last(rmc(), "GPGSA,A,3,01,02,03,,,,,,,,,,2.0,1.0,1.5")
    assert fix.fix_mode == 3 and fix.sats_used == 3 and fix.hdop == 1.0


def test_gsa_saying_no_fix_makes_the_report_no_fix():
    # gpsd: a GSA's fix type sets the mode like any other sentence
    fixes = run(rmc(), "GPGSA,A,1,,,,,,,,,,,,,,,")
    assert [f.fix_mode for f in fixes] == [2, 1]


def test_gll_and_gns_give_positions_and_their_invalid_flags_do_not():
    assert last(rmc(status="V"), "GPGLL,4916.45,N,12311.12,W,123519.00,A,A").fix_mode == 2
    assert last(rmc(status="V"), "GPGLL,4916.45,N,12311.12,W,123519.00,V,N").fix_mode == 1
    fix = last(rmc(status="V"), "GNGNS,123519.00,3333.4268304,N,11153.3538273,W,AA,09,0.9,406.1,-26.3,,,S")
    assert fix.fix_mode == 3 and fix.alt_m == 406.1
    assert last(rmc(status="V"), "GNGNS,123519.00,3333.42,N,11153.35,W,NN,00,,,,,,V").fix_mode == 1


def test_gga_before_any_date_has_no_timestamp():
    fixes = run(gga(t="100000.00"), gga(t="100001.00"))
    assert [f.ts for f in fixes] == [None, None]
    assert all(f.fix_mode == 3 for f in fixes)


def test_gga_takes_its_date_from_an_earlier_rmc():
    fixes = run(rmc(t="100000.00", date="150726"), gga(t="100001.00"), gga(t="100002.00"),
                gga(t="100003.00"))
    # 10:00:01 starts the second cycle and teaches RMC as the end of cycle, so that GGA is
    # not reported; 10:00:02 teaches GGA, and from then on every GGA is reported (gpsd)
    assert [f.ts for f in fixes] == [datetime(2026, 7, 15, 10, 0, s, tzinfo=timezone.utc)
                                     for s in (0, 2, 3)]


def test_gga_takes_its_date_from_zda():
    fixes = run("GPZDA,095959.00,01,02,2031,00,00", gga(t="100000.00"), gga(t="100001.00"))
    assert [f.ts for f in fixes] == [datetime(2031, 2, 1, 10, 0, 1, tzinfo=timezone.utc)]


def test_void_rmc_date_is_not_used():
    # receivers without a fix send stale or invented dates
    fixes = run(rmc(t="100000.00", status="V", date="010180"), gga(t="100001.00"))
    assert fixes[-1].fix_mode == 3 and fixes[-1].ts is None


def test_malformed_rmc_date_gives_no_timestamp_but_keeps_the_position():
    [fix] = run(rmc(date="2208-1"))
    assert fix.ts is None and fix.fix_mode == 2 and fix.lat is not None


def test_carried_date_moves_on_at_midnight():
    # a deliberate difference: gpsd keeps the RMC's day for GGA times after midnight
    fixes = run(rmc(t="235959.00", date="311226"), gga(t="000000.00"), gga(t="000001.00"))
    assert [f.ts.isoformat() for f in fixes] == [
        "2026-12-31T23:59:59+00:00", "2027-01-01T00:00:01+00:00"]


def test_fractional_seconds_are_kept():
    assert last(rmc(t="101010.125")).ts.microsecond == 125000


def cycle(sec: int) -> list[str]:
    t = f"1200{sec:02d}.00"
    return [gga(t=t), rmc(t=t, date="010126"), "GPVTG,084.4,T,,M,022.4,N,041.5,K,A",
            "GPGSA,A,3,01,02,03,04,05,06,07,08,,,,,2.0,0.9,1.5"]


def test_one_fix_per_cycle_reported_as_soon_as_the_learnt_last_sentence_arrives():
    d, b = Decoder(), FixBuilder()
    per_line = []
    for sec in range(4):
        for body in cycle(sec):
            per_line.append(len(b.feed(d.decode(nmea(body)))))
    # cycle 0: no end of cycle known yet, so GGA (no date yet) and RMC are reported (VTG and
    # GSA change nothing). Cycle 1 starts with GGA and teaches RMC, the last timed sentence,
    # as the end of cycle: from then on each cycle is reported once, at its RMC; the VTG and
    # GSA after it would be reported too if they changed the fix.
    assert per_line == [1, 1, 0, 0,
                        0, 1, 0, 0,
                        0, 1, 0, 0,
                        0, 1, 0, 0]
    assert b.flush() == []
    assert b.fixes == 5 and b.cycles_reemitted == 1


def test_cycle_cut_off_before_its_end_is_not_reported():
    b = FixBuilder()
    bodies = cycle(0) + cycle(1) + cycle(2)[:1] + cycle(3)
    fixes = run(*bodies, builder=b)
    # the cut-off cycle had its GGA only: its RMC (the end of cycle) never came, and the next
    # cycle's start dropped it (gpsd's CLEAR_IS). As in gpsd, its GGA, the last timed sentence
    # before a cycle start, is learnt as another end of cycle: cycle 3 is reported at its GGA
    # and again, completed, at its RMC.
    assert [f.ts.second for f in fixes if f.ts] == [0, 1, 3, 3]
    assert fixes[-1].speed_kmh is not None and fixes[-2].speed_kmh is None
    assert b.cycles_incomplete == 1


def test_changed_sentence_order_loses_no_cycle():
    order_a = lambda s: cycle(s)                               # noqa: E731
    order_b = lambda s: [cycle(s)[i] for i in (1, 2, 0)]       # noqa: E731  RMC, VTG, GGA; no GSA
    fixes = run(*(order_a(0) + order_a(1) + order_b(2) + order_b(3) + order_b(4) + order_b(5)))
    secs = [f.ts.second for f in fixes if f.ts]
    assert secs == sorted(secs) and set(secs) == set(range(6))
    # RMC and then GGA were learnt as ends of cycle: each later cycle is reported at both,
    # the last report carrying the GGA's altitude
    assert secs[-2:] == [5, 5] and fixes[-1].alt_m == 545.4


def test_to_fields_uses_exactly_the_gps_data_payload_names_and_validates():
    fields = last(gga(), rmc()).to_fields()
    envelope = {f.name for f in schema.ENVELOPE}
    assert set(fields) == set(schema.GPS.field_names) - envelope
    record = schema.example("gps")
    record.update(fields)
    validate(schema.GPS, record)


def test_no_fix_record_validates_too():
    fix = last(rmc(status="V"))
    record = schema.example("gps")
    record.update(fix.to_fields())
    validate(schema.GPS, record)


def test_pipeline_takes_raw_bytes_with_noise():
    raw = b"\x00\xff\xfe garbage\r\n" + b"\r\n".join(nmea(x).encode() for x in cycle(0) + cycle(1))
    p = NmeaPipeline()
    fixes = p.feed(raw[:37]) + p.feed(raw[37:]) + p.flush()
    assert [f.ts.second for f in fixes if f.ts] == [0, 1]
    assert p.framer.rejected["garbage"] == 1


def test_replay_cli_prints_one_json_fix_per_line(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"# comment\n" + b"\r\n".join(nmea(x).encode() for x in cycle(0) + cycle(1)))
    out = subprocess.run([sys.executable, "-m", "smartcity.edge.gps", "replay", str(log)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    # the first cycle's GGA comes before any date: reported without one
    assert [r["ts"] for r in rows] == [None, "2026-01-01T12:00:00.000Z", "2026-01-01T12:00:01.000Z"]
    assert set(rows[0]) == {"ts", "fix_mode", "lat", "lon", "alt_m", "speed_kmh", "heading_deg",
                            "sats_used", "hdop"}


def test_replay_cli_never_crashes_on_garbage_and_names_a_missing_file(tmp_path):
    junk = tmp_path / "junk.log"
    junk.write_bytes(bytes(range(256)) * 50 + b"$GPRMC,,,,*\r\n$$$$*ZZ\n")
    out = subprocess.run([sys.executable, "-m", "smartcity.edge.gps", "replay", str(junk)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "", out.stderr
    # a file that cannot be read is the person's mistake: one line naming it, exit 2 (runtime.cli)
    missing = tmp_path / "missing.log"
    out = subprocess.run([sys.executable, "-m", "smartcity.edge.gps", "replay", str(missing)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.splitlines() == [f"python -m edge.gps: cannot read {missing}: No such file or directory"]


def test_receiver_without_time_reports_one_no_fix_per_cycle():
    empty = ["GPRMC,,V,,,,,,,,,,N", "GPVTG,,,,,,,,,N", "GPGGA,,,,,,0,00,99.99,,,,,,",
             "GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99", "GPGLL,,,,,,V,N", "GPZDA,,,,,00,00"]
    fixes = run(*(empty * 3))
    # RMC without time forces a report every cycle; in the first one the GGA adds its
    # satellite count (00), reported once more
    assert len(fixes) == 4
    assert all(f.fix_mode == 1 and f.ts is None and f.lat is None and f.hdop is None
               for f in fixes)


def test_cycle_that_began_before_any_date_stays_undated_once_the_order_is_known():
    # no-fix cycles teach the order (GGA last timed); the first fix's RMC comes after its GGA
    void = lambda t: [gga(t=t, q="0", sats="00"), rmc(t=t, status="V")]   # noqa: E731
    good = lambda t: [gga(t=t), rmc(t=t, date="010126")]                  # noqa: E731
    fixes = run(*(void("100000.00") + void("100001.00") + good("100002.00") + good("100003.00")))
    dated = [(f.ts.second if f.ts else None, f.fix_mode) for f in fixes if f.fix_mode >= 2]
    # gpsd reports 10:00:02 at its GGA, before the RMC brought the date: no time for it
    assert dated[0] == (None, 3)
    assert dated[-1] == (3, 3)
