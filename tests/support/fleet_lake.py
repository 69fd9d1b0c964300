"""A generated fleet in the lake's Iceberg tables, for the analysts' queries: many vehicles over
several days at the rates the agent publishes (GPS 1 Hz, OBD 0.5 Hz, weather each minute,
cameras and incidents now and then), with the lineage columns the lake job adds, a few
quarantined records, a seq counter per device across topics and some seq gaps.

Rows are generated with pyarrow.compute (no per-row Python for the big tables) and staged as
Parquet; the lake job's own code then creates the tables (create_or_evolve) and Spark appends
the staged rows, in a child process whose JVM exits before anything else runs. Deterministic for
a given seed.

    from tests.support.fleet_lake import generate
    counts = generate(lake, devices=100, days=3, hours_per_day=8)
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
TOPIC_ORDER = ("gps_data", "vehicle_data", "weather_data", "traffic_data", "emergency_data")
INCIDENT_TYPES = ("crash", "accident", "fire", "medical", "police", "flood", "roadworks")
SEVERITIES = ("low", "medium", "high", "critical")
CONDITIONS = ("clear", "cloudy", "rain", "storm", "fog", "haze")
# Bangkok, where every simulated vehicle starts its day (spread over ~20 km).
HOME_LAT, HOME_LON = 13.7563, 100.5018


# The lake job's own code creates the tables and writes the rows (Spark, like the stream writes).
_SPARK_WRITER = """
import sys
from pathlib import Path
from pyspark.sql import functions as F
from smartcity.catalog.location import table_identifier
from smartcity.spark_jobs import iceberg_tables as IT
from smartcity.spark_jobs.session import build_session
from smartcity.spark_jobs.settings import LakeSettings
s = LakeSettings(lake=sys.argv[1])
spark = build_session(s, "fleet-lake", iceberg=True)
IT.create_or_evolve(spark, s)
for td in IT.table_defs():
    staged = Path(sys.argv[2]) / td.name if sys.argv[2] else None
    if staged is not None and staged.exists():
        df = spark.read.parquet(str(staged))
        # The derived columns (boot_id) computed by their SQL, as the lake job computes them.
        df.select(*[F.expr(td.derived[c.name]).alias(c.name) if c.name in td.derived
                    else df[c.name].cast(c.type) for c in td.columns]).writeTo(
            table_identifier(s, td.name)).append()
if sys.argv[3] == "refresh":   # the rollups, as smartcity-lake maintain refreshes them
    import json
    from smartcity.spark_jobs.rollups import refresh_all
    print(json.dumps(refresh_all(spark, s)))
for statement in sys.argv[4:]:
    spark.sql(statement)
spark.stop()
"""


def spark_write(lake: str | Path, staged: str | Path | None = None, timeout_s: float = 1800,
                refresh: bool = True, then_sql: tuple[str, ...] = ()) -> dict | None:
    """In a child process (its JVM exits with it): the lake's tables by create_or_evolve, then
    each table's staged Parquet files (staged/<table>/*.parquet) appended by Spark, then (refresh)
    the rollups refreshed (spark_jobs/rollups.py; its result returned), then `then_sql` run."""
    p = subprocess.run([sys.executable, "-c", _SPARK_WRITER, str(lake), str(staged or ""),
                        "refresh" if refresh else "-", *then_sql], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"the Spark writer failed:\n{p.stderr[-3000:]}")
    lines = p.stdout.strip().splitlines()
    return json.loads(lines[-1]) if refresh and lines else None


def create_tables(lake: str | Path) -> None:
    """The lake's tables, empty."""
    spark_write(lake, refresh=False)


def _ts(base: datetime, seconds: pa.Array) -> pa.Array:
    """base + seconds (double) as timestamp[us, UTC]."""
    micros = pc.cast(pc.round(pc.multiply(seconds, 1e6)), pa.int64())
    start = int(base.timestamp() * 1e6)
    return pc.cast(pc.add(micros, start), pa.timestamp("us", tz="UTC"))


def _rand(rng: random.Random, n: int, lo: float = 0.0, hi: float = 1.0) -> pa.Array:
    return pa.array([lo + (hi - lo) * rng.random() for _ in range(n)], pa.float64()) if n < 5000 else \
        pc.add(pc.multiply(pc.random(n, initializer=rng.randrange(2**31)), hi - lo), lo)


def _drive(rng: random.Random, n: int, phase: float) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """n one-second steps of a vehicle: speed (km/h, smooth, with stops), heading (deg), lat, lon."""
    t = pa.array(range(n), pa.float64())
    wave = pc.sin(pc.add(pc.divide(t, 240.0), phase))
    slow = pc.sin(pc.add(pc.divide(t, 1900.0), phase * 2))
    speed = pc.add(pc.add(pc.multiply(wave, 45.0), pc.multiply(slow, 25.0)), 40.0)
    speed = pc.add(speed, _rand(rng, n, -2.0, 2.0))
    speed = pc.max_element_wise(speed, 0.0)
    heading = pc.add(pc.multiply(pc.sin(pc.add(pc.divide(t, 700.0), phase)), 120.0), 150.0 + phase * 10)
    rad = pc.multiply(heading, math.pi / 180)
    step_deg = pc.divide(pc.divide(speed, 3600.0), 111.32)   # km per second -> degrees
    dlat = pc.multiply(step_deg, pc.cos(rad))
    dlon = pc.divide(pc.multiply(step_deg, pc.sin(rad)), math.cos(math.radians(HOME_LAT)))
    lat = pc.add(pc.cumulative_sum(dlat), HOME_LAT + rng.uniform(-0.1, 0.1))
    lon = pc.add(pc.cumulative_sum(dlon), HOME_LON + rng.uniform(-0.1, 0.1))
    return speed, pc.subtract(heading, pc.multiply(pc.floor(pc.divide(heading, 360.0)), 360.0)), lat, lon


def _device_day(rng: random.Random, device: str, day: int, hours: float) -> dict[str, dict[str, pa.Array]]:
    """Every topic's contract columns (no lineage yet) for one device's driving day."""
    n = int(hours * 3600)
    # 08:00-10:00 in Bangkok, in whole milliseconds like the agent's timestamps.
    start = DAY0 + timedelta(days=day, milliseconds=round(rng.uniform(1, 3) * 3_600_000))
    speed, heading, lat, lon = _drive(rng, n, phase=rng.uniform(0, 6.28))
    secs = pa.array(range(n), pa.float64())
    out: dict[str, dict[str, pa.Array]] = {}
    out["gps_data"] = {"ts": _ts(start, secs), "lat": lat, "lon": lon,
                       "alt_m": pc.add(_rand(rng, n, 0, 3), 5.0), "speed_kmh": speed, "heading_deg": heading,
                       "fix_mode": pa.array([3] * n, pa.int32()),
                       "sats_used": pc.cast(pc.add(pc.round(_rand(rng, n, 0, 6)), 6), pa.int32()),
                       "hdop": pc.round(_rand(rng, n, 0.7, 1.6), 2)}
    # OBD every 2 s; a harsh stop now and then: the speed falls ~15 km/h per second for 3 s.
    vi = pa.array(range(0, n, 2), pa.int64())
    vspeed = pc.take(speed, vi)
    m = len(vi)
    vs = vspeed.to_pylist()
    fast = [i for i, v in enumerate(vs) if v >= 60] or [0]   # a harsh stop from speed
    brakes = {rng.choice(fast) for _ in range(max(1, m // 2000))}
    for b in brakes:
        for k in range(1, 4):
            if b + k < m:
                vs[b + k] = max(0.0, vs[b] - 30.0 * k)
    vspeed = pa.array([min(255.0, v) for v in vs], pa.float64())
    fuel = pc.subtract(80.0 - day * 5.0, pc.multiply(pa.array(range(m), pa.float64()), 30.0 / max(m, 1)))
    out["vehicle_data"] = {"ts": _ts(start, pc.cast(vi, pa.float64())), "make": pa.array(["Toyota"] * m),
                           "model": pa.array(["Hiace"] * m), "year": pa.array([2022] * m, pa.int32()),
                           "fuel_type": pa.array(["diesel"] * m), "vin": pa.array([f"JTF{device[-6:]:>014}"[:17]] * m),
                           "speed_kmh": vspeed, "rpm": pc.add(pc.multiply(vspeed, 28.0), 750.0),
                           "coolant_c": pc.add(_rand(rng, m, 85, 104), pc.multiply(_rand(rng, m, 0, 1), 4.0)),
                           "fuel_level_pct": fuel, "throttle_pct": pc.round(_rand(rng, m, 5, 60), 1),
                           "engine_load_pct": pc.round(_rand(rng, m, 15, 80), 1),
                           "battery_v": pc.round(_rand(rng, m, 13.4, 14.2), 2),
                           "lat": pc.take(lat, vi), "lon": pc.take(lon, vi)}
    wi = pa.array(range(0, n, 60), pa.int64())
    k = len(wi)
    out["weather_data"] = {"ts": _ts(start, pc.add(pc.cast(wi, pa.float64()), 0.5)),
                           "temperature_c": pc.round(_rand(rng, k, 28, 35), 1),
                           "humidity_pct": pc.round(_rand(rng, k, 55, 90), 1),
                           "precipitation_mm": pc.round(_rand(rng, k, 0, 2), 1),
                           "wind_speed_kmh": pc.round(_rand(rng, k, 0, 25), 1),
                           "air_quality_index": pa.array([rng.randrange(20, 160) for _ in range(k)], pa.int32()),
                           "weather_condition": pa.array([rng.choice(CONDITIONS) for _ in range(k)]),
                           "lat": pc.take(lat, wi), "lon": pc.take(lon, wi)}
    ci = pa.array(range(137, n, 300), pa.int64())
    c = len(ci)
    clat, clon = pc.take(lat, ci).to_pylist(), pc.take(lon, ci).to_pylist()
    cams = [f"cam-{round(a, 2):.2f}-{round(o, 2):.2f}" for a, o in zip(clat, clon)]
    out["traffic_data"] = {"ts": _ts(start, pc.add(pc.cast(ci, pa.float64()), 0.25)), "camera_id": pa.array(cams),
                           "lat": pa.array([round(a, 2) for a in clat]), "lon": pa.array([round(o, 2) for o in clon]),
                           "vehicle_count": pa.array([rng.randrange(0, 80) for _ in range(c)], pa.int32()),
                           "avg_speed_kmh": pc.round(_rand(rng, c, 20, 90), 1),
                           "snapshot_uri": pa.array([f"s3://smartcity-snapshots/{cam}/{day}-{i}.jpg"
                                                     for i, cam in enumerate(cams)])}
    # Two incidents a day near the route, each reported Active and later Resolved.
    rows: dict[str, list] = {f: [] for f in ("ts", "incident_id", "type", "status", "severity",
                                              "description", "lat", "lon")}
    for j in range(2):
        lo = min(600, n // 6)   # a short drive (under 40 min) still gets its two incidents
        at = rng.randrange(lo, max(lo + 1, n - 1200))
        iid = f"inc-{device}-{day}-{j}"
        ilat, ilon = lat[at].as_py() + rng.uniform(-0.004, 0.004), lon[at].as_py() + rng.uniform(-0.004, 0.004)
        kind, sev = rng.choice(INCIDENT_TYPES), rng.choice(SEVERITIES)
        for status, dt in (("Active", -300), ("Resolved", 900)):
            rows["ts"].append(start + timedelta(seconds=at + dt + 0.75))
            rows["incident_id"].append(iid)
            rows["type"].append(kind)
            rows["status"].append(status)
            rows["severity"].append(sev)
            rows["description"].append(f"{kind} reported by {device}")
            rows["lat"].append(ilat)
            rows["lon"].append(ilon)
    out["emergency_data"] = {f: pa.array(v, pa.timestamp("us", tz="UTC") if f == "ts" else None)
                             for f, v in rows.items()}
    return out


def _with_envelope(device: str, boot: str, day_tables: dict[str, dict[str, pa.Array]], seq0: int,
                   drop_every: int) -> tuple[dict[str, pa.Table], int]:
    """Envelope and lineage columns: one seq counter for the device across topics, in ts order
    (every drop_every-th seq is skipped: a reading the agent rejected); ingest 1-6 s after ts."""
    lengths = {t: len(cols["ts"]) for t, cols in day_tables.items()}
    all_ts = pa.concat_arrays([pc.cast(day_tables[t]["ts"], pa.int64()) for t in TOPIC_ORDER])
    # The rank of each record in ts order: the inverse of the sorting permutation.
    rank = pc.cast(pc.sort_indices(pc.sort_indices(all_ts)), pa.int64())
    skipped = pc.divide(rank, drop_every) if drop_every else 0   # integer division
    seq_all = pc.add(pc.add(rank, skipped), seq0)
    out, off = {}, 0
    for t in TOPIC_ORDER:
        cols, n = day_tables[t], lengths[t]
        seq = seq_all.slice(off, n)
        off += n
        seq_s = pc.cast(seq, pa.string())
        event_id = pc.binary_join_element_wise(pa.array([device] * n), pa.array([boot] * n), seq_s, ":")
        ts = cols["ts"]
        delay = _rand(random.Random(f"{device}:{boot}:{t}"), n, 1.0, 6.0)
        kafka_ts = _ts(datetime(1970, 1, 1, tzinfo=UTC), pc.add(pc.divide(pc.cast(pc.cast(ts, pa.int64()), pa.float64()), 1e6), 0.2))
        ingest_ts = _ts(datetime(1970, 1, 1, tzinfo=UTC), pc.add(pc.divide(pc.cast(pc.cast(ts, pa.int64()), pa.float64()), 1e6), delay))
        env = {"event_id": event_id, "device_id": pa.array([device] * n), "ts": ts,
               "clock": pa.array(["gps"] * n), "seq": pc.cast(seq, pa.int64()), "source": pa.array(["sim"] * n),
               "schema_version": pa.array([1] * n, pa.int32())}
        lineage = {"kafka_topic": pa.array([t] * n), "kafka_partition": pa.array([0] * n, pa.int32()),
                   "kafka_offset": pc.cast(seq, pa.int64()), "kafka_ts": kafka_ts, "ingest_ts": ingest_ts}
        out[t] = {**env, **{k: v for k, v in cols.items() if k != "ts"}, **lineage}
    return out, int(pc.max(seq_all).as_py()) + 1


def generate(lake: str | Path, devices: int = 3, days: int = 1, hours_per_day: float = 1.0,
             seed: int = 7, quarantined_per_day: int = 5, drop_every: int = 5000,
             staging: str | Path | None = None, rollups: bool = True) -> dict[str, int]:
    """The lake's tables holding a generated fleet: staged as Parquet (one file per table per
    day), then created and written by Spark (spark_write), the rollups refreshed unless
    rollups=False (then they are empty). Rows per table."""
    import pyarrow.parquet as pq
    staging = Path(staging or Path(str(lake)).parent / "fleet-staging")
    counts = {t: 0 for t in TOPIC_ORDER + ("quarantine",)}
    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    for day in range(days):
        batch: dict[str, list[pa.Table]] = {t: [] for t in counts}
        for d in range(devices):
            device = f"bus-{d:04d}"
            boot = f"{(seed * 7919 + d * 104729 + day) % (2**32):08x}"
            raw = _device_day(rng, device, day, hours_per_day)
            full, seqs[device] = _with_envelope(device, boot, raw, seqs.get(device, 0), drop_every)
            for t, cols in full.items():
                batch[t].append(pa.table(cols))
        batch["quarantine"] += [_quarantined(day, quarantined_per_day)] if quarantined_per_day else []
        for t, parts in batch.items():
            if parts:
                data = pa.concat_tables(parts)
                (staging / t).mkdir(parents=True, exist_ok=True)
                pq.write_table(data, staging / t / f"day-{day:03d}.parquet")
                counts[t] += data.num_rows
    spark_write(lake, staging, refresh=rollups)
    return counts


def _quarantined(day: int, n: int) -> pa.Table:
    """n records as the lake quarantines them: half bad JSON, half contract violations."""
    rows = []
    for i in range(n):
        at = DAY0 + timedelta(days=day, hours=2, minutes=i * 7)
        rows.append({"raw_value": '{"device_id": "bus-x", "speed_kmh": -5}', "raw_value_b64": None,
                     "error_kind": "contract" if i % 2 else "bad_json",
                     "reason": "speed_kmh=-5: below minimum 0" if i % 2 else "Expecting value: line 1 column 1",
                     "event_id": None, "kafka_topic": TOPIC_ORDER[i % 5], "kafka_partition": 0,
                     "kafka_offset": day * 1000 + i, "kafka_ts": at, "ingest_ts": at + timedelta(seconds=2)})
    ts = pa.timestamp("us", tz="UTC")
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("raw_value", pa.string()), ("raw_value_b64", pa.string()), ("error_kind", pa.string()),
        ("reason", pa.string()), ("event_id", pa.string()), ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()), ("kafka_ts", ts), ("ingest_ts", ts)]))
