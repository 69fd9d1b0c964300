"""Maintenance of the lake's Iceberg tables (spark_jobs/maintenance.py, `smartcity-lake maintain`).

Specification, checked on a real JDBC catalog on SQLite with one local Spark for the module:
- A run compacts a day partition's small files into one file sorted by ts (quarantine: ingest_ts);
  the rows and the set of event_ids are exactly the same before and after.
- Snapshots younger than the retention stay, older ones are expired but the current one is kept,
  and the files only expired snapshots referenced are deleted then.
- A file in the table's folder that no snapshot references is removed once older than the orphan
  age, never while it is fresh (a file being written is an orphan until its commit).
- A second run rewrites nothing and commits no snapshot.
- While a writer commits to the same table, maintenance loses and duplicates nothing; a conflict
  with a concurrent commit is retried, counted and logged.
- The CLI: one JSON line per table per run; bad flags end it with one line and exit 2 before any
  Spark session; --every-s runs until SIGTERM, which only sets a flag.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("pyspark")

from smartcity.contracts import example, record_type  # noqa: E402
from smartcity.spark_jobs import iceberg_tables as IT  # noqa: E402
from smartcity.spark_jobs import maintenance as M  # noqa: E402
from smartcity.spark_jobs.__main__ import main  # noqa: E402
from smartcity.catalog.location import table_identifier  # noqa: E402
from smartcity.spark_jobs.settings import LakeSettings, Maintenance  # noqa: E402
from tests.support.lake_rows import table_frame  # noqa: E402

UTC = timezone.utc
DAY1 = datetime(2026, 11, 28, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
GPS = IT.data_table(record_type("gps_data"))
QUARANTINE = IT.quarantine_table()


def gps_rows(ids_and_ts):
    out = []
    for eid, ts in ids_and_ts:
        rec = example("gps_data") | {"event_id": eid, "ts": ts}
        row = {**rec, "kafka_topic": "gps_data", "kafka_partition": 0, "kafka_offset": 0,
               "kafka_ts": ts, "ingest_ts": ts}
        out.append(row)
    return out


def quarantine_rows(ids_and_ts):
    return [{"raw_value": "{", "raw_value_b64": "ew==", "error_kind": "bad_json", "reason": "json",
             "event_id": eid, "kafka_topic": "gps_data", "kafka_partition": 0, "kafka_offset": 0,
             "kafka_ts": ts, "ingest_ts": ts} for eid, ts in ids_and_ts]


def append(spark, ident: str, td: IT.TableDef, rows) -> None:
    table_frame(spark, td, rows).writeTo(ident).append()


def event_ids(spark, ident: str) -> list[str]:
    return sorted(r.event_id for r in spark.sql(f"SELECT event_id FROM {ident}").collect())


def data_files(spark, ident: str) -> list:
    return spark.sql(f"SELECT file_path, partition, record_count FROM {ident}.files").collect()


def snapshots(spark, ident: str) -> list[int]:
    return [r.snapshot_id for r in spark.sql(f"SELECT snapshot_id FROM {ident}.snapshots "
                                             "ORDER BY committed_at").collect()]


def current_snapshot(spark, ident: str) -> int:
    return spark.sql(f"SELECT snapshot_id FROM {ident}.history WHERE is_current_ancestor "
                     "ORDER BY made_current_at DESC LIMIT 1").collect()[0].snapshot_id


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file:").removeprefix("//"))


# ---- without Spark ---------------------------------------------------------------------------

def test_settings_defaults_and_limits():
    m = Maintenance()
    assert (m.interval_s, m.target_file_mb, m.min_input_files, m.snapshot_retention_h, m.retain_last,
            m.orphan_age_h) == (3600.0, 512, 5, 24.0, 10, 72.0)
    assert LakeSettings().maintenance == m
    for bad, what in (({"orphan_age_h": 12}, "orphan_age_h must be >= 24"),
                      ({"min_input_files": 1}, "min_input_files"), ({"retain_last": 0}, "retain_last"),
                      ({"interval_s": 0}, "interval_s"), ({"snapshot_retention_h": 0}, "snapshot_retention_h")):
        with pytest.raises(ValueError, match=what):
            Maintenance(**bad)


def test_rewrite_sorts_by_the_partition_column_and_timestamps_are_utc():
    assert M.sort_order(GPS) == "ts ASC NULLS LAST"
    assert M.sort_order(QUARANTINE) == "ingest_ts ASC NULLS LAST"
    opts = M.rewrite_options(Maintenance(target_file_mb=128, min_input_files=7))
    assert opts["target-file-size-bytes"] == str(128 << 20) and opts["min-input-files"] == "7"
    assert opts["partial-progress.enabled"] == "true"
    athens = timezone(timedelta(hours=2))
    assert M.timestamp_sql(datetime(2026, 11, 28, 2, 0, tzinfo=athens)) == \
        "TIMESTAMP '2026-11-28 00:00:00.000000+00:00'"


class FakeSpark:
    """Answers maintain's SQL from a script: CALL results per procedure, in order; an Exception
    in the script is raised as Spark would (with the Java class name in its text)."""

    def __init__(self, script: dict[str, list]):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[str] = []

    def sql(self, text: str):
        self.calls.append(text)
        if text.startswith("SHOW TABLES"):
            rows = [SimpleNamespace(tableName=n) for n in ("gps_data", "quarantine")]
        elif text.startswith("SELECT snapshot_id"):
            rows = []
        else:
            proc = text.split(".system.")[1].split("(")[0]
            answer = self.script[proc].pop(0) if len(self.script[proc]) > 1 else self.script[proc][0]
            if isinstance(answer, Exception):
                raise answer
            rows = answer
        return SimpleNamespace(collect=lambda: rows)


def _rewrite(rewritten=0, added=0, failed=0):
    return [SimpleNamespace(rewritten_data_files_count=rewritten, added_data_files_count=added,
                            rewritten_bytes_count=100 * rewritten, failed_data_files_count=failed)]


QUIET = {"expire_snapshots": [[SimpleNamespace(deleted_data_files_count=0)]],
         "remove_orphan_files": [[]],
         "rewrite_manifests": [[SimpleNamespace(rewritten_manifests_count=0, added_manifests_count=0)]]}
CONFLICT = Exception("An error occurred while calling o1.sql.\n: org.apache.iceberg.exceptions."
                     "ValidationException: Cannot commit, found new delete for replaced data file")


def test_a_conflict_is_a_counted_logged_retry(tmp_path, caplog):
    s = LakeSettings(lake=str(tmp_path / "lake"))
    spark = FakeSpark({"rewrite_data_files": [CONFLICT, _rewrite(4, 1, failed=2), _rewrite(2, 1)], **QUIET})
    with caplog.at_level(logging.WARNING, logger=M.__name__):
        (r,) = M.maintain(spark, s, ["gps_data"])
    # the exception: re-run; failed groups (partial progress): re-run for them; then done
    assert sum("rewrite_data_files" in c for c in spark.calls) == 3
    assert (r["retries"], r["rewritten_files"], r["added_files"], r["failed_files"]) == (2, 6, 2, 0)
    assert "error" not in r and r["table"] == "lake.smartcity.gps_data"
    assert [rec.message for rec in caplog.records if rec.name == M.__name__] == [
        "maintenance: conflict with a concurrent commit, retrying",
        "maintenance: rewrite groups conflicted with a concurrent commit, retrying"]


def test_a_conflict_that_outlasts_its_retries_is_reported_and_the_next_table_is_maintained(tmp_path):
    s = LakeSettings(lake=str(tmp_path / "lake"))
    s.maintenance.conflict_retries = 2
    spark = FakeSpark({"rewrite_data_files": [CONFLICT, CONFLICT, CONFLICT, _rewrite()], **QUIET})
    first, second = M.maintain(spark, s, ["gps_data", "quarantine"])
    assert first["retries"] == 2 and "ValidationException" in first["error"]
    assert first["error"].startswith("rewrite_data_files: ")
    assert "error" not in second and second["table"] == "lake.smartcity.quarantine"


def test_other_errors_propagate(tmp_path):
    s = LakeSettings(lake=str(tmp_path / "lake"))
    with pytest.raises(RuntimeError, match="disk full"):
        M.maintain(FakeSpark({"rewrite_data_files": [RuntimeError("disk full")], **QUIET}), s)
    with pytest.raises(ValueError, match="unknown tables"):
        M.maintain(FakeSpark(QUIET), s, ["gps"])
    with pytest.raises(M.MissingTables, match="lake.smartcity.weather_data .*smartcity-lake tables"):
        M.maintain(FakeSpark(QUIET), s, ["gps_data", "weather_data"])


@pytest.fixture
def no_spark(monkeypatch):
    """Fail the test if the CLI gets as far as starting Spark."""
    import smartcity.spark_jobs.session as session
    monkeypatch.setattr(session, "build_session", lambda *a, **k: pytest.fail("a Spark session was started"))


@pytest.mark.parametrize("args, message", [
    (["--once", "--every-s", "5"], "argument --every-s: not allowed with argument --once"),
    (["--every-s", "0"], "argument --every-s: must be a number of seconds > 0"),
    (["--every-s", "soon"], "argument --every-s: not a number: 'soon'"),
    (["--table", "../x"], "argument --table: unknown table '../x'; known: vehicle_data, gps_data,"),
    (["--topic", "gps"], "unrecognized arguments: --topic gps"),
])
def test_cli_flag_errors_are_one_line_and_exit_2(args, message, tmp_path, no_spark, capsys):
    lake = tmp_path / "lake"
    with pytest.raises(SystemExit) as e:
        main(["maintain", "--lake", str(lake), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("smartcity-lake") and message in err, err
    assert not lake.exists()


def test_cli_settings_errors_are_one_line_and_exit_2(tmp_path, no_spark, capsys, monkeypatch):
    monkeypatch.setenv("SMARTCITY_LAKE_MAINTENANCE__ORPHAN_AGE_H", "1")
    assert main(["maintain", "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "orphan_age_h must be >= 24" in err, err
    monkeypatch.delenv("SMARTCITY_LAKE_MAINTENANCE__ORPHAN_AGE_H")
    assert main(["maintain", "--lake", "s3a://bucket/city"]) == 2   # a SQLite catalog on S3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "catalog.uri" in err, err


def test_cli_every_s_runs_until_sigterm_and_prints_a_line_per_table_per_run(tmp_path, monkeypatch, capsys):
    """SIGTERM arrives while a run is in progress: the run ends its table, no new one starts."""
    import smartcity.spark_jobs.session as session
    monkeypatch.setattr(session, "build_session", lambda *a, **k: "spark")
    runs = []

    def fake_maintain(spark, s, tables, stop, on_result):
        runs.append(time.monotonic())
        if len(runs) == 2:
            os.kill(os.getpid(), signal.SIGTERM)   # handled in this (main) thread: only a flag
        done = []
        for t in tables:
            if stop.is_set() and done:
                break
            done.append({"table": t, "run": len(runs)})
            on_result(done[-1])
        return done
    monkeypatch.setattr(M, "maintain", fake_maintain)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["maintain", "--lake", str(tmp_path / "lake"), "--every-s", "0.2",
                 "--table", "gps", "--table", "quarantine"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out == [{"table": "gps_data", "run": 1}, {"table": "quarantine", "run": 1},
                   {"table": "gps_data", "run": 2}]
    assert len(runs) == 2 and runs[1] - runs[0] >= 0.19   # start to start
    assert signal.getsignal(signal.SIGTERM) == before      # the handler is put back


# ---- against a real JDBC catalog on SQLite ---------------------------------------------------

@pytest.fixture(scope="module")
def spark_lake(tmp_path_factory):
    from smartcity.spark_jobs.session import build_session
    s = LakeSettings(lake=str(tmp_path_factory.mktemp("maintenance") / "lake"))
    spark = build_session(s, "test-lake-maintenance", iceberg=True)
    assert spark.conf.get("spark.sql.catalog.lake.type") == "jdbc", "a session without the catalog was reused"
    yield s, spark
    spark.stop()


@pytest.fixture(scope="module")
def maintained(spark_lake):
    """12 commits of 5 gps_data rows, alternating between two days (ts decreasing as they are
    written), 6 commits of 2 quarantine rows; two orphans planted; then maintain twice: now, and
    as if a day later. The state before, after the first run and after the second."""
    s, spark = spark_lake
    s = dataclasses.replace(s, maintenance=Maintenance(retain_last=1))
    IT.create_or_evolve(spark, s, [GPS, QUARANTINE])
    gps, q = table_identifier(s, "gps_data"), table_identifier(s, "quarantine")
    n = 0
    for c in range(12):
        day = DAY1 if c % 2 == 0 else DAY2
        batch = []
        for _ in range(5):
            batch.append((f"veh-{c % 3}:0000abcd:{n}", day + timedelta(seconds=80_000 - n * 600)))
            n += 1
        append(spark, gps, GPS, gps_rows(batch))
    for c in range(6):
        append(spark, q, QUARANTINE, quarantine_rows(
            [(f"bad:{c}:{i}", DAY2 + timedelta(hours=20 - c, minutes=i)) for i in range(2)]))
    folder = local(s.lake) / "warehouse" / s.catalog.namespace / "gps_data" / "data" / "ts_day=2026-11-28"
    old, fresh = folder / "00000-0-orphan-old.parquet", folder / "00000-0-orphan-fresh.parquet"
    for f in (old, fresh):
        f.write_bytes(b"PAR1 not referenced by any snapshot PAR1")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))

    def state():
        return {"gps_ids": event_ids(spark, gps), "q_ids": event_ids(spark, q),
                "gps_files": data_files(spark, gps), "q_files": data_files(spark, q),
                "gps_snapshots": snapshots(spark, gps), "gps_current": current_snapshot(spark, gps),
                "old_orphan": old.exists(), "fresh_orphan": fresh.exists()}
    before = state()
    run1 = {r["table"]: r for r in M.maintain(spark, s, ["gps_data", "quarantine"])}
    after1 = state()
    run2 = {r["table"]: r for r in M.maintain(spark, s, ["gps_data", "quarantine"],
                                              now=datetime.now(UTC) + timedelta(days=1))}
    after2 = state()
    print("maintain timings:", json.dumps({"run1": run1, "run2": run2}, indent=1))
    return SimpleNamespace(s=s, gps=gps, q=q, before=before, run1=run1, after1=after1, run2=run2,
                           after2=after2)


def test_rows_and_event_ids_are_unchanged(maintained):
    m = maintained
    assert len(m.before["gps_ids"]) == 60 and len(set(m.before["gps_ids"])) == 60
    assert len(m.before["q_ids"]) == 12
    for after in (m.after1, m.after2):
        assert after["gps_ids"] == m.before["gps_ids"] and after["q_ids"] == m.before["q_ids"]


def test_small_files_become_one_file_per_day_sorted_by_the_partition_column(maintained):
    m = maintained
    import pyarrow.parquet as pq
    assert len(m.before["gps_files"]) == 12 and len(m.before["q_files"]) == 6
    assert sorted(str(f.partition.ts_day) for f in m.after1["gps_files"]) == ["2026-11-28", "2026-11-29"]
    assert len(m.after1["q_files"]) == 1
    assert {k: m.run1[m.gps][k] for k in ("rewritten_files", "added_files", "failed_files")} == \
        {"rewritten_files": 12, "added_files": 2, "failed_files": 0}
    assert (m.run1[m.q]["rewritten_files"], m.run1[m.q]["added_files"]) == (6, 1)
    for f, col in [(f, "ts") for f in m.after1["gps_files"]] + [(f, "ingest_ts") for f in m.after1["q_files"]]:
        values = pq.read_table(local(f.file_path), columns=[col]).column(col).to_pylist()
        assert len(values) == f.record_count and values == sorted(values), f.file_path


def test_young_snapshots_stay_old_ones_expire_and_the_current_one_is_kept(maintained):
    m = maintained
    # First run: every snapshot is younger than 24 h, so none expires (retain_last is 1 here).
    assert m.run1[m.gps]["snapshots_expired"] == 0
    assert set(m.before["gps_snapshots"]) < set(m.after1["gps_snapshots"])
    # A day later: all but the current one are past the retention and expired.
    assert m.after2["gps_snapshots"] == [m.after1["gps_current"]] == [m.after2["gps_current"]]
    assert m.run2[m.gps]["snapshots_expired"] == len(m.after1["gps_snapshots"]) - 1
    # ... and with them the 12 small files they alone referenced, from the disk.
    assert m.run2[m.gps]["expired_files_deleted"] == 12
    assert not any(local(f.file_path).exists() for f in m.before["gps_files"])
    assert all(local(f.file_path).exists() for f in m.after2["gps_files"])


def test_an_old_orphan_is_removed_and_a_fresh_one_kept(maintained):
    m = maintained
    assert (m.before["old_orphan"], m.before["fresh_orphan"]) == (True, True)
    assert m.run1[m.gps]["orphans_removed"] == 1
    assert (m.after1["old_orphan"], m.after1["fresh_orphan"]) == (False, True)
    # A day later it is still younger than orphan_age_h (72 h): kept.
    assert m.run2[m.gps]["orphans_removed"] == 0 and m.after2["fresh_orphan"]


def test_a_second_run_rewrites_nothing_and_commits_no_snapshot(maintained):
    m = maintained
    for r in m.run2.values():
        assert (r["rewritten_files"], r["added_files"], r["manifests_rewritten"], r["retries"]) == (0, 0, 0, 0), r
        assert "error" not in r
    assert m.after2["gps_current"] == m.after1["gps_current"]
    assert sorted(f.file_path for f in m.after2["gps_files"]) == sorted(f.file_path for f in m.after1["gps_files"])


def test_cli_maintain_once_prints_a_json_line_per_table(maintained, capsys):
    """`smartcity-lake maintain` in this process (the module's session is reused): every table the
    catalog has, here gps_data and quarantine (already maintained: nothing to do)."""
    assert main(["maintain", "--lake", maintained.s.lake]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["table"] for d in out] == [maintained.gps, maintained.q]
    assert all(d["rewritten_files"] == 0 and d["seconds"] > 0 and "error" not in d for d in out)


def test_maintain_refreshes_the_rollup_of_the_spans_that_gained_fixes(spark_lake):
    """gps_spans (spark_jobs/rollups.py): the first run computes every span of 600 s that has fixes
    with a position, a run with nothing new recomputes none, a late fix recomputes its span only."""
    s, spark = spark_lake
    s = dataclasses.replace(s, catalog=dataclasses.replace(s.catalog, namespace="m_rollup"))
    spans_def = next(td for td in IT.table_defs() if td.name == "gps_spans")
    IT.create_or_evolve(spark, s, [GPS, spans_def])
    gps, spans = table_identifier(s, "gps_data"), table_identifier(s, "gps_spans")
    # Two devices; a fix every 100 s from 00:05:00 to 00:28:20: 3, 6 and 6 in the spans from
    # 00:00, 00:10 and 00:20.
    def fixes(ids_and_ts):
        """Rows with a position (a fix without one is in no span)."""
        return [r | {"device_id": r["event_id"].split(":")[0], "seq": int(r["event_id"].split(":")[2]),
                     "lat": 13.7, "lon": 100.5, "fix_mode": 3,
                     "speed_kmh": 30.0} for r in gps_rows(ids_and_ts)]
    append(spark, gps, GPS, fixes([(f"veh-{d}:0000abcd:{i}", DAY1 + timedelta(seconds=300 + 100 * i))
                                   for d in range(2) for i in range(15)]))
    append(spark, gps, GPS, gps_rows([("dev-1:0000abcd:500", DAY1 + timedelta(seconds=320))]))  # no fix
    (first,) = M.maintain(spark, s, ["gps_spans"])
    assert first["spans_refreshed"] == 6 and "error" not in first
    rows = spark.sql(f"SELECT device_id, span, fixes FROM {spans} ORDER BY device_id, span").collect()
    assert [(r.device_id, r.fixes) for r in rows] == [(f"veh-{d}", n) for d in range(2) for n in (3, 6, 6)]
    (second,) = M.maintain(spark, s, ["gps_spans"])
    assert second["spans_refreshed"] == 0
    append(spark, gps, GPS, fixes([("veh-1:0000abcd:99", DAY1 + timedelta(seconds=650))]))
    (third,) = M.maintain(spark, s, ["gps_spans"])
    assert third["spans_refreshed"] == 1
    after = spark.sql(f"SELECT device_id, span, fixes FROM {spans} ORDER BY device_id, span").collect()
    assert [(r.device_id, r.fixes) for r in after] == [("veh-0", 3), ("veh-0", 6), ("veh-0", 6),
                                                        ("veh-1", 3), ("veh-1", 7), ("veh-1", 6)]


def test_maintain_while_a_writer_commits_loses_and_duplicates_nothing(spark_lake):
    """A writer thread commits to the table through the same session for as long as maintenance
    runs on it (compaction, expiry as if a day later, orphans, manifests): small appends, and
    between them a few copy-on-write DELETEs of one row, which replace a whole data file and so
    can conflict with a rewrite of that file (either side may lose; a conflict is retried by
    maintain and counted; a DELETE that lost changed nothing)."""
    base, spark = spark_lake
    deletes_max = 4
    s = dataclasses.replace(base, catalog=dataclasses.replace(base.catalog, namespace="t_concurrent"),
                            maintenance=Maintenance(retain_last=1, conflict_retries=deletes_max + 1))
    IT.create_or_evolve(spark, s, [GPS])
    ident = table_identifier(s, "gps_data")
    written: list[str] = []
    for c in range(8):
        batch = [(f"seed:{c}:{i}", DAY1 + timedelta(hours=c, minutes=i)) for i in range(3)]
        append(spark, ident, GPS, gps_rows(batch))
        written += [e for e, _ in batch]
    done = threading.Event()
    errors: list[BaseException] = []
    deleted: list[str] = []
    lost_deletes: list[str] = []
    appends = [0]

    def writer():
        k = 0
        while not done.is_set() or k < 2:   # at least two batches, whatever the timing
            batch = [(f"live:{k}:{i}", DAY1 + timedelta(hours=12, seconds=k * 10 + i)) for i in range(3)]
            try:
                append(spark, ident, GPS, gps_rows(batch))
                written.extend(e for e, _ in batch)
                victim = f"seed:{k // 2}:0"
                if k % 2 == 1 and len(deleted) + len(lost_deletes) < deletes_max:
                    try:
                        spark.sql(f"DELETE FROM {ident} WHERE event_id = '{victim}'")
                        deleted.append(victim)
                    except Exception as e:  # noqa: BLE001 - a lost race is allowed, nothing else
                        if not M.CONFLICT_RE.search(str(e)):
                            raise
                        lost_deletes.append(victim)
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
                return
            k += 1
        appends[0] = k
    t = threading.Thread(target=writer, name="writer")
    t.start()
    try:
        (r,) = M.maintain(spark, s, ["gps_data"], now=datetime.now(UTC) + timedelta(days=1))
    finally:
        done.set()
        t.join(300)
    print("concurrent maintain:", json.dumps(r), "appends:", appends[0], "deletes:", deleted,
          "deletes that lost a race:", lost_deletes)
    assert not errors, errors
    assert "error" not in r, r
    assert r["rewritten_files"] >= 1
    ids = event_ids(spark, ident)
    assert len(ids) == len(set(ids)), "a duplicated row"
    assert ids == sorted(set(written) - set(deleted))
