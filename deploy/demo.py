"""The main job on embedded defaults: the whole pipeline on this machine, end to end.

    python -m deploy.demo [--speedup 60] [--run-dir run/demo] [--keep-running]

Starts the local stack (Mosquitto with passwords and ACL, Kafka with topics), the MQTT -> Kafka
bridge and the Spark Kafka -> lake job, then drives the agent in --simulate through a
time-compressed Bangkok -> Pattaya trip. It waits until every event_id the agent published is in
the lake (read through the Iceberg catalog, as Athena would, without Spark), prints a summary
computed from the lake's tables and the answers of three of the analysts' named queries (embedded
DuckDB, analytics/queries/), stops what it started and says where the data is and how to query it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from deploy.local.process import Process, ProcessError

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "demo-bus-01"
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class Proc(Process):
    """A child service, started at once, with a fresh log in the run folder."""

    def __init__(self, name: str, args: list[str], run_dir: Path, env: dict | None = None):
        super().__init__(name, args, run_dir / f"{name}.log", env=env, cwd=ROOT)
        self.log_path.unlink(missing_ok=True)
        self.start()

    def check(self) -> None:
        if not self.running():
            raise SystemExit(f"{self.name} exited with {self.returncode}; last log lines "
                             f"({self.log_path}):\n{self.log_tail(15)}")


class PublishedIds:
    """Every event_id the broker accepted from the device, per stream (a plain subscriber as the
    bridge user: the ground truth the lake is compared with)."""

    def __init__(self, port: int, password: str):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.ids: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-audit", protocol=mqtt.MQTTv5)
        c.username_pw_set("bridge", password)
        c.on_connect = lambda cl, *a: cl.subscribe(f"smartcity/v1/{DEVICE}/+", qos=1)
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        if not self._ready.wait(10):
            raise SystemExit("audit subscriber could not subscribe to Mosquitto")

    def _on_message(self, client, userdata, msg):
        stream = msg.topic.rsplit("/", 1)[1]
        if stream == "status":
            return
        try:
            eid = json.loads(msg.payload)["event_id"]
        except (ValueError, KeyError):
            return
        with self._lock:
            self.ids[f"{stream}_data"].add(eid)

    def snapshot(self) -> dict[str, set[str]]:
        with self._lock:
            return {k: set(v) for k, v in self.ids.items()}

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_subscribed(bridge: Proc, http_port: int, timeout_s: float = 60.0) -> None:
    import urllib.request

    def subscribed() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
                return "\nbridge_mqtt_subscribed 1" in r.read().decode()
        except OSError:
            return False
    try:
        bridge.wait_for(subscribed, "the bridge's subscription", timeout_s, step=0.2)
    except ProcessError as e:
        raise SystemExit(str(e)) from None


def lake_ids(lake: str, topic: str) -> list[str]:
    from smartcity.catalog.reader import event_ids
    from smartcity.spark_jobs.settings import LakeSettings
    return event_ids(LakeSettings(lake=lake), topic)


def summary(lake: str) -> dict:
    """Computed from the lake's Iceberg tables, read through the catalog as an analyst's engine
    reads them (pyiceberg: the current snapshot, no Spark)."""
    from smartcity.catalog.reader import load_catalog, read_table
    from smartcity.spark_jobs.settings import LakeSettings
    import smartcity.contracts as contracts
    s = LakeSettings(lake=lake)
    out: dict = {"records": {}, "files": {}}
    for rt in contracts.RECORD_TYPES:
        t = read_table(s, rt.name, columns=["event_id"])
        out["records"][rt.name] = 0 if t is None else t.num_rows
        table = load_catalog(s).load_table((s.catalog.namespace, rt.name))
        out["files"][rt.name] = sum(1 for _ in table.scan().plan_files())
    em = read_table(s, "emergency_data", columns=["incident_id", "type", "status"])
    if em is not None:
        rows = em.to_pylist()
        out["incidents"] = len({r["incident_id"] for r in rows})
        out["incidents_by_type"] = dict(Counter(t for _, t in {(r["incident_id"], r["type"])
                                                                for r in rows}))
        out["incidents_resolved"] = len({r["incident_id"] for r in rows
                                         if r["status"] == "Resolved"})
    q = read_table(s, "quarantine", columns=["event_id"])
    out["quarantined"] = 0 if q is None else q.num_rows
    return out


# What the README's main command ends with: the analysts' named queries on the trip just landed.
DEMO_QUERIES = ("trip_summary", "incidents_near_route", "seq_gaps")


def print_answers(lake: str) -> bool:
    """Run DEMO_QUERIES with the embedded engine (smartcity-query's DuckDB, through the catalog)
    and print their tables; False when one failed (its error printed)."""
    from smartcity.analytics.engines import DuckDBEngine, EngineError
    from smartcity.analytics.query import QuerySettings, format_table, run_named
    from smartcity.analytics import named
    engine = DuckDBEngine(QuerySettings(lake=lake))
    ok = True
    try:
        for name in DEMO_QUERIES:
            print(f"\n=== smartcity-query {name}: {named.load(name).answers}")
            try:
                print(format_table(run_named(name, engine=engine)))
            except EngineError as e:
                print(f"  FAILED: {e}")
                ok = False
    finally:
        engine.close()
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=ROOT / "run" / "demo")
    ap.add_argument("--speedup", type=float, default=60.0,
                    help="simulated seconds per wall second (the trip is ~100 simulated minutes)")
    ap.add_argument("--gps-rate-hz", type=float, default=1.0)
    ap.add_argument("--trigger-s", type=float, default=5.0)
    ap.add_argument("--lake-timeout-s", type=float, default=300.0)
    ap.add_argument("--fresh", action="store_true", help="delete the run folder first")
    a = ap.parse_args(argv)

    from deploy.local.mosquitto import free_port
    from deploy.local.stack import Stack

    run_dir = a.run_dir.resolve()
    if a.fresh and run_dir.exists():
        Stack(run_dir).down()
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lake = str(run_dir / "lake")
    stack = Stack(run_dir)
    procs: list[Proc] = []
    audit = None
    try:
        say("starting Mosquitto and Kafka on loopback (first start formats Kafka storage) ...")
        st = stack.up(mqtt_port=free_port(), kafka_port=free_port(),
                      kafka_controller_port=free_port(), devices=[DEVICE], with_s3=False)
        creds = stack.credentials([DEVICE])
        mqtt_port, bootstrap = st["mosquitto"]["port"], st["kafka"]["bootstrap"]
        say(f"stack up: mqtt 127.0.0.1:{mqtt_port}, kafka {bootstrap}")

        bridge_http = free_port()
        bridge = Proc("bridge", [sys.executable, "-m", "smartcity.bridge", "--bridge-id", "demo",
                                 "--mqtt-port", str(mqtt_port),
                                 "--mqtt-username", "bridge", "--kafka-bootstrap", bootstrap,
                                 "--http-port", str(bridge_http)], run_dir,
                      env={"SMARTCITY_BRIDGE_MQTT__PASSWORD": creds["mqtt"]["bridge"]})
        procs.append(bridge)
        # Mosquitto keeps messages only for subscriptions that exist: the agent must not publish
        # before the bridge group's subscription is granted (afterwards its session holds them).
        wait_subscribed(bridge, bridge_http)
        say(f"bridge subscribed (metrics on http://127.0.0.1:{bridge_http}/metrics)")
        say("starting the Spark job (Kafka -> lake); Spark takes a while to start ...")
        spark = Proc("spark", [sys.executable, "-m", "smartcity.spark_jobs", "stream", "--lake", lake,
                               "--bootstrap", bootstrap, "--trigger-s", str(a.trigger_s)], run_dir)
        procs.append(spark)
        audit = PublishedIds(mqtt_port, creds["mqtt"]["bridge"])

        say(f"agent --simulate: Bangkok -> Pattaya at {a.speedup:g}x ...")
        agent = Proc("agent", [sys.executable, "-m", "smartcity.edge.agent", "--simulate",
                               "--device-id", DEVICE, "--data-dir", str(run_dir / "edge"),
                               "--mqtt-port", str(mqtt_port), "--speedup", str(a.speedup),
                               "--gps-rate-hz", str(a.gps_rate_hz), "--http-port", "0"], run_dir,
                     env={"SMARTCITY_EDGE_MQTT__USERNAME": DEVICE,
                          "SMARTCITY_EDGE_MQTT__PASSWORD": creds["mqtt"][DEVICE]})
        procs.append(agent)
        last = 0.0
        while agent.running():
            for p in (bridge, spark):
                p.check()
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                pub = audit.snapshot()
                landed = sum(len(lake_ids(lake, t)) for t in pub)
                say(f"trip running: {sum(map(len, pub.values()))} records published, "
                    f"{landed} in the lake")
            time.sleep(0.5)
        if agent.returncode != 0:
            agent.check()
        say("trip finished (Pattaya); waiting until every published event_id is in the lake ...")

        deadline = time.monotonic() + a.lake_timeout_s
        while True:
            pub = audit.snapshot()
            missing = {t: ids - set(lake_ids(lake, t)) for t, ids in pub.items()}
            n_missing = sum(map(len, missing.values()))
            if not n_missing:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {n_missing} published records not in the lake "
                                 f"({ {t: len(m) for t, m in missing.items() if m} })")
            for p in (bridge, spark):
                p.check()
            say(f"{n_missing} records still on their way to the lake ...")
            time.sleep(5)
        published = sum(map(len, pub.values()))
        say(f"all {published} published records are in the lake, each exactly once")

        s = summary(lake)
        dup = {t: n - len(pub.get(t, ())) for t, n in s["records"].items() if n != len(pub.get(t, ()))}
        print()
        print("=== Bangkok -> Pattaya, from the lake's Iceberg tables ===")
        for t, n in s["records"].items():
            print(f"  {t:<15} {n:>7} records in {s['files'][t]} files")
        print(f"  incidents       {s.get('incidents', 0)} ({s.get('incidents_resolved', 0)} resolved): "
              f"{s.get('incidents_by_type', {})}")
        print(f"  quarantined     {s['quarantined']} records")
        if dup:
            print(f"  WARNING: lake row counts differ from published ids: {dup}")
        answered = print_answers(lake)
        print(f"\nlake:  Iceberg tables lake.smartcity.<topic> (catalog {lake}/_catalog/iceberg.sqlite, "
              f"data under {lake}/warehouse)"
              f"\nlogs:  {run_dir}/*.log"
              f"\nquery: .venv/bin/smartcity-query --list    (then NAME --lake {lake}; embedded DuckDB)"
              f"\nlocal Athena: .venv/bin/python -m deploy.local.trino --lake {lake} --port 8080, then "
              f"smartcity-query NAME --engine trino --trino 127.0.0.1:8080 (docs/analytics.md)")
        return 1 if dup or not answered else 0
    finally:
        if audit:
            audit.close()
        for p in reversed(procs):
            p.terminate(60)
        stack.down()
        say("stopped everything the demo started")


if __name__ == "__main__":
    sys.exit(main())
