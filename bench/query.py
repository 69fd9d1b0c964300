"""python -m bench query [--devices N] [--days D] [--hours H] [--runs R] [--lake DIR] [--keep]:
every named analyst query (analytics/queries/) on a generated fleet lake of >= 10 million rows,
on the embedded engine (DuckDB through the catalog) and on the local Athena (Trino 476 over the
same catalog). Issue 12's target: every query's DuckDB p50 <= 1 s, Trino p50 <= 10 s.

The lake: tests/support/fleet_lake.generate (default 100 buses x 3 days x 6.25 h: GPS 1 Hz, OBD
0.5 Hz, weather per minute, cameras, incidents; ~10.3 M rows), written by the lake job's own code
(Spark appends, days(ts) partitions; no compaction, so files are as the writer left them), then
the rollups refreshed as `smartcity-lake maintain` refreshes them (gps_spans, vehicle_spans:
trip_summary and harsh_events read them; `rollup_rows` in the output).
`--lake DIR` reuses a lake made by an earlier run (`--keep` keeps it).

Per engine, one warm-up run of each query (the first run reads the metadata and, on Trino, JITs
the plan), then --runs timed runs: p50 and max in ms. The baseline in the same run is
`SELECT count(*) FROM smartcity.gps_data` on each engine (the floor: planning plus a metadata-only
or footer-only scan), so a query's time can be read against the engine's own floor on this
machine at this moment. Spark is gone before Trino starts (2 cores). DuckDB's queries also report
`duckdb_cpu_ms_p50`, the CPU its threads used (this process's CPU time), steadier than the wall
time when other work shares the cores.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from smartcity.runtime.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
BASELINE_SQL = "SELECT count(*) FROM smartcity.gps_data"
DUCKDB_TARGET_MS, TRINO_TARGET_MS = 1000, 10000


def _time(engine, sql: str, runs: int) -> tuple[list[float], list[float], int]:
    """Wall ms per run, and this process's CPU ms per run (DuckDB runs in-process: its threads'
    CPU, which other work on the shared cores moves far less than the wall time; for Trino only
    the client's)."""
    engine.run(sql)   # warm-up
    times, cpu, rows = [], [], 0
    for _ in range(runs):
        c = time.process_time()
        r = engine.run(sql)
        cpu.append((time.process_time() - c) * 1000)
        times.append(r.elapsed_s * 1000)
        rows = len(r.rows)
    return times, cpu, rows


def _measure(engine, name: str, sql: str, runs: int, prefix: str) -> dict:
    """{prefix_ms_p50, prefix_ms_max, rows} or {prefix_error}: a query an engine cannot run (e.g.
    out of memory) is reported, and the others still measured."""
    from smartcity.analytics.engines import EngineError
    try:
        times, cpu, n = _time(engine, sql, runs)
    except EngineError as e:
        print(f"{name} on {engine.name}: {e}", file=sys.stderr, flush=True)
        return {f"{prefix}_error": str(e)[:300]}
    print(f"{name} on {engine.name}: p50 {statistics.median(times):.0f} ms", file=sys.stderr, flush=True)
    out = {f"{prefix}_ms_p50": round(statistics.median(times), 1), f"{prefix}_ms_max": round(max(times), 1),
           f"{prefix}_rows": n}
    if engine.name == "duckdb":
        out[f"{prefix}_cpu_ms_p50"] = round(statistics.median(cpu), 1)
    return out


def run(args: list[str]) -> dict:
    ap = ArgumentParser(prog="python -m bench query")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--hours", type=float, default=6.25, help="driving hours per device and day")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query and engine")
    ap.add_argument("--lake", help="reuse this lake (made by an earlier --keep run)")
    ap.add_argument("--keep", action="store_true", help="keep the generated lake")
    ap.add_argument("--no-trino", action="store_true", help="DuckDB only")
    ap.add_argument("--trino-heap-gb", type=int, default=8,
                    help="Trino's -Xmx; a query may use half of it (the local stack runs 2 GB / 1 GB)")
    a = ap.parse_args(args)
    sys.path.insert(0, str(ROOT))
    from smartcity.analytics import named
    from smartcity.analytics.engines import DuckDBEngine, TrinoEngine
    from smartcity.analytics.query import QuerySettings
    from smartcity.catalog.reader import load_table

    tmp = None
    out: dict = {"machine": f"{os.cpu_count()} cores", "load_avg_start": round(os.getloadavg()[0], 2)}
    if a.lake:
        lake = a.lake
    else:
        from tests.support.fleet_lake import generate
        tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
        lake = str(tmp / "lake")
        t = time.monotonic()
        counts = generate(lake, devices=a.devices, days=a.days, hours_per_day=a.hours)
        out["generate_s"] = round(time.monotonic() - t, 1)
        out["fleet"] = {"devices": a.devices, "days": a.days, "hours_per_day": a.hours}
    s = QuerySettings(lake=lake)
    rows_by_table = {}
    files = 0
    for table in ("gps_data", "vehicle_data", "weather_data", "traffic_data", "emergency_data", "quarantine"):
        t = load_table(s, table)
        snap = t.current_snapshot() if t is not None else None
        rows_by_table[table] = int(snap.summary["total-records"]) if snap else 0
        files += int(snap.summary["total-data-files"]) if snap else 0
    out["rows"] = sum(rows_by_table.values())
    out["rows_by_table"] = rows_by_table
    # The rollups trip_summary and harsh_events read (docs/lake.md, "Rollups"): refreshed by the
    # generator; a lake given with --lake has them as its last `smartcity-lake maintain` left them.
    rollups = {}
    for table in ("gps_spans", "vehicle_spans"):
        t = load_table(s, table)
        snap = t.current_snapshot() if t is not None else None
        rollups[table] = int(snap.summary["total-records"]) if snap else 0
    out["rollup_rows"] = rollups
    out["data_files"] = files
    queries = named.load_all()
    sql = {name: named.render(q).sql for name, q in queries.items()}
    per: dict[str, dict] = {name: {} for name in queries}

    duck = DuckDBEngine(s)
    try:
        times, _, _ = _time(duck, BASELINE_SQL, a.runs)
        out["duckdb_baseline_ms_p50"] = round(statistics.median(times), 1)
        for name in queries:
            per[name] |= _measure(duck, name, sql[name], a.runs, "duckdb")
    finally:
        duck.close()

    if not a.no_trino:
        from deploy.local.trino import DEFAULT_JVM_OPTS, TrinoServer
        from smartcity.spark_jobs.settings import LakeSettings
        trino_dir = Path(tempfile.mkdtemp(prefix="bench-query-trino-"))
        # The local stack's JVM options favour a fast start (C1 only, serial GC); a 10 M-row
        # query wants the full JIT and a parallel collector, as a Trino server runs.
        jvm = tuple(o for o in DEFAULT_JVM_OPTS if not o.startswith(("-Xmx", "-XX:TieredStopAtLevel", "-XX:+UseSerialGC"))
                    ) + (f"-Xmx{a.trino_heap_gb}G", "-XX:+UseParallelGC")
        srv = TrinoServer(trino_dir, LakeSettings(lake=lake), jvm_opts=jvm,
                          query_memory=f"{max(1, a.trino_heap_gb // 2)}GB")
        t = time.monotonic()
        srv.start()
        out["trino_startup_s"] = round(time.monotonic() - t, 1)
        try:
            engine = TrinoEngine(srv.endpoint)
            times, _, _ = _time(engine, BASELINE_SQL, a.runs)
            out["trino_baseline_ms_p50"] = round(statistics.median(times), 1)
            for name in queries:
                per[name] |= _measure(engine, name, sql[name], a.runs, "trino")
            out["trino_rss_gib"] = round((srv.rss_bytes() or 0) / 2**30, 2)
        finally:
            srv.stop()
            shutil.rmtree(trino_dir, ignore_errors=True)

    out["queries"] = per
    for engine, target in (("duckdb", DUCKDB_TARGET_MS), ("trino", TRINO_TARGET_MS)):
        if engine == "trino" and a.no_trino:
            continue
        p50 = [q.get(f"{engine}_ms_p50") for q in per.values()]
        out[f"{engine}_failed"] = sorted(n for n, q in per.items() if f"{engine}_error" in q)
        out[f"{engine}_p50_max_ms"] = max((x for x in p50 if x is not None), default=None)
        # Met only when every query ran and the slowest p50 is within the target.
        out[f"{engine}_target_met"] = not out[f"{engine}_failed"] and out[f"{engine}_p50_max_ms"] <= target
    out["load_avg_end"] = round(os.getloadavg()[0], 2)
    if tmp is not None:
        if a.keep:
            out["lake"] = lake
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
