"""The lake's rollups (gps_spans, vehicle_spans) and the two paths of the queries that read them.

Specification: trip_summary takes a span's row from smartcity.gps_spans only where it was computed
from exactly the fixes the table holds now for that span (and for the query's parameters and
window); every other span is computed from the fixes. So an absent, current or stale rollup gives
the same answer. harsh_events skips a span only where its current vehicle_spans row says it has
no harsh pair inside. `smartcity-lake maintain`'s refresh recomputes only the spans whose count
of source rows changed.

How the tests see which path a span took: after a refresh they falsify the rollup (1000 km added
to every gps_spans row; every vehicle_spans row made to say "no harsh pair"), so each span taken
from it shows in the answer, and a span computed from the source rows does not. A real Spark
(child processes), a real Iceberg catalog, DuckDB through the catalog.
"""
from __future__ import annotations

import math
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartcity.analytics.engines import DuckDBEngine  # noqa: E402
from smartcity.analytics.query import QuerySettings, run_named  # noqa: E402
from smartcity.catalog.reader import read_table  # noqa: E402
from smartcity.catalog.tables import GPS_SPANS_WIDTH_S, VEHICLE_SPANS_WIDTH_S  # noqa: E402
from tests.support.fleet_lake import generate, spark_write  # noqa: E402

MARK_KM = 1000.0
LATE_FIXES = 3
# Other than the rollup's 3 km/h, so no row is taken: every span from the fixes. Distances, fix
# counts and speeds do not depend on it.
FROM_FIXES = {"moving_kmh": "2.999999"}


def trips(engine, **params) -> dict[str, dict]:
    """trip_summary per device (each generated bus drives one trip)."""
    r = run_named("trip_summary", {**params}, engine=engine)
    rows = [dict(zip(r.columns, row)) for row in r.rows]
    assert len({x["device_id"] for x in rows}) == len(rows), rows
    return {x["device_id"]: x for x in rows}


def test_the_rollups_hold_the_queries_default_parameters():
    """The rollups are computed for the named queries' defaults (a query at its defaults is the
    one that can take their rows): the constants and the query files must say the same."""
    from smartcity.analytics import named
    from smartcity.catalog import tables as T
    trip, harsh = named.load("trip_summary"), named.load("harsh_events")
    assert float(trip.param("trip_gap_s").default) == T.GPS_SPANS_WIDTH_S
    assert float(trip.param("moving_kmh").default) == T.GPS_SPANS_MOVING_KMH
    assert float(harsh.param("brake_kmh_per_s").default) == T.VEHICLE_SPANS_BRAKE_KMH_PER_S
    assert float(harsh.param("accel_kmh_per_s").default) == T.VEHICLE_SPANS_ACCEL_KMH_PER_S
    assert float(harsh.param("max_step_s").default) == T.VEHICLE_SPANS_MAX_STEP_S
    width = f"{T.VEHICLE_SPANS_WIDTH_S:g}"          # harsh_events' span width is not a parameter
    assert f"to_unixtime(ts) / {width})" in harsh.sql and f"r.span_s = {width} " in harsh.sql


def span_keys(s: QuerySettings) -> tuple[dict[str, list[int]], dict[str, datetime]]:
    """The spans of each device's fixes with a position, in order, and its first fix's ts."""
    gps = read_table(s, "gps_data", ["device_id", "ts", "lat"]).filter(pc.is_valid(pc.field("lat")))
    pairs = list(zip(gps["device_id"].to_pylist(), gps["ts"].to_pylist()))
    keys = {(d, math.floor(t.timestamp() / GPS_SPANS_WIDTH_S)) for d, t in pairs}
    out: dict[str, list[int]] = {}
    for d, k in sorted(keys):
        out.setdefault(d, []).append(k)
    return out, {d: min(t for e, t in pairs if e == d) for d in out}


def late_fixes(s: QuerySettings, device: str) -> tuple[pa.Table, int, datetime]:
    """LATE_FIXES new fixes of `device`, a quarter second after the fixes before the last one of
    the span in the middle of its trip, off its track (new event_ids and seqs, as a Pi replaying
    its queue would send); the span; and the ts of that span's fourth fix."""
    gps = read_table(s, "gps_data").filter((pc.field("device_id") == device) & pc.is_valid(pc.field("lat")))
    gps = gps.sort_by([("ts", "ascending")])
    spans = [math.floor(t.timestamp() / GPS_SPANS_WIDTH_S) for t in gps["ts"].to_pylist()]
    span = spans[len(spans) // 2]
    first, last = spans.index(span), len(spans) - 1 - spans[::-1].index(span)
    assert last - first > 2 * LATE_FIXES + 4
    before_last = gps.slice(last - LATE_FIXES, LATE_FIXES)
    added = replayed(before_last, 10_000_000, lat=pc.add(before_last["lat"], 0.001))
    return added, span, gps["ts"][first + 3].as_py()


def replayed(rows: pa.Table, first_seq: int, **changed: pa.Array) -> pa.Table:
    """New readings a quarter second after `rows` (one device and boot), with new seqs from
    first_seq and their event_ids, as a Pi replaying its queue sends them; `changed` columns."""
    device, boot, _ = rows["event_id"][0].as_py().split(":")
    seqs = list(range(first_seq, first_seq + rows.num_rows))
    cols = {name: rows[name] for name in rows.column_names} | changed
    cols["seq"] = pa.array(seqs, pa.int64())
    cols["event_id"] = pa.array([f"{device}:{boot}:{q}" for q in seqs])
    cols["ts"] = pc.add(rows["ts"], pa.scalar(250_000, pa.duration("us")))
    return pa.table(cols)


def small_lake(tmp_path_factory) -> QuerySettings:
    """Two buses, half an hour each, the rollups created and empty."""
    path = tmp_path_factory.mktemp("rollups") / "lake"
    generate(path, devices=2, days=1, hours_per_day=0.5, rollups=False)
    return QuerySettings(lake=str(path))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return small_lake(tmp_path_factory)


def test_trip_summary_is_the_same_with_the_rollup_absent_current_and_stale(lake, tmp_path):
    engine = DuckDBEngine(lake)
    try:
        assert engine.run("SELECT count(*) FROM smartcity.gps_spans").rows == [(0,)]
        absent = trips(engine)                                   # every span from the fixes
        assert len(absent) == 2
        assert {d: (t["fixes"], t["distance_km"]) for d, t in absent.items()} == \
               {d: (t["fixes"], t["distance_km"]) for d, t in trips(engine, **FROM_FIXES).items()}
        spans, first_ts = span_keys(lake)

        # Current: every span from the rollup (each marked), every other column as from the fixes.
        refreshed = spark_write(lake.lake, refresh=True, then_sql=(
            f"UPDATE lake.smartcity.gps_spans SET km = coalesce(km, 0) + {MARK_KM}",))
        assert refreshed["gps_spans"]["spans_refreshed"] == sum(len(k) for k in spans.values())
        current = trips(engine)
        for device, trip in current.items():
            assert trip["distance_km"] == pytest.approx(
                absent[device]["distance_km"] + MARK_KM * len(spans[device]), abs=0.002)
            assert {k: v for k, v in trip.items() if k != "distance_km"} == \
                   {k: v for k, v in absent[device].items() if k != "distance_km"}

        # A window that starts after a device's first fix, inside its first span: that span from
        # the fixes in the window, the rest from the rollup.
        for device, keys in spans.items():
            window = {"devices": device, "start": (first_ts[device] + timedelta(milliseconds=500)).isoformat()}
            (cut,) = trips(engine, **window).values()
            (truth,) = trips(engine, **window, **FROM_FIXES).values()
            assert 0 < cut["fixes"] == truth["fixes"] < current[device]["fixes"]
            assert cut["distance_km"] == pytest.approx(truth["distance_km"] + MARK_KM * (len(keys) - 1),
                                                       abs=0.002)

        # Stale: fixes landed late in one span of one bus; that span alone comes from the fixes.
        device = sorted(spans)[0]
        staged = tmp_path / "late"
        added, late_span, fourth_ts = late_fixes(lake, device)
        (staged / "gps_data").mkdir(parents=True)
        pq.write_table(added, staged / "gps_data" / "late.parquet")
        spark_write(lake.lake, staged, refresh=False)
        truth = trips(engine, **FROM_FIXES)
        assert truth[device]["fixes"] == absent[device]["fixes"] + LATE_FIXES
        assert truth[device]["distance_km"] > absent[device]["distance_km"]   # the detour counts
        stale = trips(engine)
        for d, trip in stale.items():
            from_rollup = len(spans[d]) - (1 if d == device else 0)
            assert trip["fixes"] == truth[d]["fixes"]
            assert trip["distance_km"] == pytest.approx(truth[d]["distance_km"] + MARK_KM * from_rollup,
                                                        abs=0.002), d

        # A window without the stale span's first three fixes holds as many of its fixes as the
        # stale row counts, but not the same ones: from the fixes (the row is not inside it).
        window = {"devices": device, "start": fourth_ts.isoformat()}
        (cut,) = trips(engine, **window).values()
        (cut_truth,) = trips(engine, **window, **FROM_FIXES).values()
        later = len([k for k in spans[device] if k > late_span])
        assert cut["fixes"] == cut_truth["fixes"]
        assert cut["distance_km"] == pytest.approx(cut_truth["distance_km"] + MARK_KM * later, abs=0.002)

        # The refresh recomputes that span only; its new row is taken, unmarked.
        assert spark_write(lake.lake, refresh=True)["gps_spans"]["spans_refreshed"] == 1
        row = engine.run(f"SELECT fixes, km FROM smartcity.gps_spans WHERE device_id = '{device}' "
                         f"AND span = {late_span}")
        assert len(row.rows) == 1 and row.rows[0][1] < MARK_KM
        again = trips(engine)
        assert again[device]["distance_km"] == pytest.approx(stale[device]["distance_km"], abs=0.002)
        assert {d: t for d, t in again.items() if d != device} == {d: t for d, t in stale.items() if d != device}
        assert {t: r["spans_refreshed"] for t, r in spark_write(lake.lake, refresh=True).items()} == \
            {"gps_spans": 0, "vehicle_spans": 0}   # nothing changed since
    finally:
        engine.close()


# ---- harsh_events and vehicle_spans ------------------------------------------------------------------

# Other than the rollup's 5 s, so no row is taken; OBD readings here are 2 s apart, so the pairs
# compared are the same.
FROM_READINGS = {"max_step_s": "5.000001"}


def events(engine, **params) -> list[tuple]:
    r = run_named("harsh_events", params, engine=engine)
    return [tuple(row) for row in r.rows]


def span_of(ts: datetime) -> int:
    return math.floor(ts.timestamp() / VEHICLE_SPANS_WIDTH_S)


@pytest.fixture(scope="module")
def obd_lake(tmp_path_factory):
    return small_lake(tmp_path_factory)


def test_harsh_events_skip_only_the_spans_the_rollup_vouches_for(obd_lake, tmp_path):
    """Every row of vehicle_spans is made to say "no harsh pair inside" (a lie for the spans that
    have one): the query then finds only the pairs across span starts, except in a span whose
    reading count is no longer the row's, which it computes from the readings."""
    s = obd_lake
    engine = DuckDBEngine(s)
    try:
        absent = events(engine)
        assert absent and absent == events(engine, **FROM_READINGS)
        refreshed = spark_write(s.lake, refresh=True)
        assert refreshed["vehicle_spans"]["spans_refreshed"] > 0
        assert events(engine) == absent                          # current, and honest

        first_ts = {(d, k): t for d, k, t in engine.run(
            "SELECT device_id, span, first_ts FROM smartcity.vehicle_spans").rows}
        inside = [e for e in absent if first_ts[(e[0], span_of(e[1]))] != e[1]]
        assert inside, "no harsh pair inside a span: nothing would show the rollup is used"
        spark_write(s.lake, refresh=False, then_sql=("UPDATE lake.smartcity.vehicle_spans SET harsh_pairs = 0",))
        lied = events(engine)
        assert lied == [e for e in absent if e not in inside]

        # Late readings in the span of one inside pair: that span is computed from its readings
        # again, the late harsh jump included; the other spans stay as the rollup says.
        device, ts = inside[0][0], inside[0][1]
        obd = read_table(s, "vehicle_data").filter((pc.field("device_id") == device) & (pc.field("ts") == ts))
        late = replayed(obd, 20_000_000, speed_kmh=pc.add(obd["speed_kmh"], 50.0))   # +50 km/h in 0.25 s
        boot = obd["event_id"][0].as_py().split(":")[1]
        staged = tmp_path / "late"
        (staged / "vehicle_data").mkdir(parents=True)
        pq.write_table(late, staged / "vehicle_data" / "late.parquet")
        spark_write(s.lake, staged, refresh=False)
        truth = events(engine, **FROM_READINGS)
        in_span = [e for e in truth if e[0] == device and span_of(e[1]) == span_of(ts)]
        assert any(e[2] == f"{device}:{boot}:20000000" for e in in_span)
        stale = events(engine)
        assert stale == sorted(set(lied) | set(in_span), key=lambda e: (e[0], e[1], e[2]))

        # The refresh recomputes that span only, honestly this time.
        again = spark_write(s.lake, refresh=True)
        assert again["vehicle_spans"]["spans_refreshed"] == 1
        assert events(engine) == stale
    finally:
        engine.close()
