"""`smartcity-lake compact --dt/--hour`: partition values are checked, never put in a path raw.

Specification: a date that is not a calendar date written YYYY-MM-DD, an hour outside 0-23 or an
unknown topic ends the CLI with a message naming the argument and exit code 2, before a Spark
session or any file; compact_hour refuses the same values (ValueError) before touching the lake.
"""
from __future__ import annotations

import pytest

from smartcity.spark_jobs.__main__ import main
from smartcity.spark_jobs.partitions import partition_dt, partition_hour

BAD_DT = ["2026-13-01", "2026-02-30", "../x", "2026-11-28/../..", "2026-1-01", "20261128",
          "2026-W48-6", "２０２６-１１-２８", "2026-11-28 ", "", "dt=2026-11-28"]
BAD_HOUR = ["24", "-1", "99", "1a", "007", "", " 1", "../00", "١"]


@pytest.mark.parametrize("value", BAD_DT)
def test_bad_dates_are_refused(value):
    with pytest.raises(ValueError, match="dt"):
        partition_dt(value)


@pytest.mark.parametrize("value", BAD_HOUR + [True, None, 7.0])
def test_bad_hours_are_refused(value):
    with pytest.raises(ValueError, match="hour must be 00-23"):
        partition_hour(value)


def test_good_values_come_back_as_the_lake_writes_them():
    assert partition_dt("2028-02-29") == "2028-02-29"
    assert [partition_hour(h) for h in ("0", "7", "07", "23", 5)] == ["00", "07", "07", "23", "05"]


@pytest.fixture
def no_spark(monkeypatch):
    """Fail the test if the CLI gets as far as starting Spark."""
    import smartcity.spark_jobs.session as session
    monkeypatch.setattr(session, "build_session",
                        lambda *a, **k: pytest.fail("a Spark session was started"))


@pytest.mark.parametrize("args, message", [
    (["--dt", "2026-13-01", "--hour", "1"], "argument --dt: dt '2026-13-01' is not a calendar date"),
    (["--dt", "../x", "--hour", "1"], "argument --dt: dt must be a date written YYYY-MM-DD"),
    (["--dt", "2026-11-28", "--hour", "24"], "argument --hour: hour must be 00-23, not '24'"),
    (["--dt", "2026-11-28", "--hour", "../../etc"], "argument --hour: hour must be 00-23"),
    (["--dt", "2026-11-28", "--hour", "1", "--topic", "../../x"], "argument --topic: unknown record type"),
    (["--dt", "2026-11-28"], "compact needs --dt and --hour, or --all"),
    (["--all", "--hour", "3"], "compact needs --dt and --hour, or --all"),
])
def test_the_cli_exits_2_with_a_clear_message(args, message, tmp_path, no_spark, capsys):
    lake = tmp_path / "lake"
    with pytest.raises(SystemExit) as e:
        main(["compact", "--topic", "gps_data", "--lake", str(lake), *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not lake.exists()


def test_the_cli_passes_checked_values_on(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyspark")
    import smartcity.spark_jobs.compact as compact
    import smartcity.spark_jobs.session as session
    calls = []
    monkeypatch.setattr(session, "build_session", lambda *a, **k: "spark")
    monkeypatch.setattr(compact, "compact_hour", lambda spark, s, *args: calls.append(args) or {})
    assert main(["compact", "--topic", "gps", "--dt", "2026-11-28", "--hour", "7",
                 "--lake", str(tmp_path / "lake")]) == 0
    assert calls == [("gps_data", "2026-11-28", "07")]


def test_compact_hour_refuses_raw_values_before_touching_the_lake(tmp_path):
    pytest.importorskip("pyspark")
    from smartcity.spark_jobs.compact import compact_hour, hours
    from smartcity.spark_jobs.settings import LakeSettings
    s = LakeSettings(lake=str(tmp_path / "lake"))
    for dt, hour in (("../../x", "01"), ("2026-11-28", "../..")):
        with pytest.raises(ValueError):
            compact_hour(None, s, "gps_data", dt, hour)
    assert not (tmp_path / "lake").exists()
    # --all lists partitions on disk: a folder the job did not write is skipped, not compacted.
    for name in ("dt=2026-11-28/hour=05", "dt=2026-11-28/hour=99", "dt=junk/hour=01"):
        (tmp_path / "lake" / "data" / "gps_data" / name).mkdir(parents=True)
    assert hours(s, "gps") == [("2026-11-28", "05")]
