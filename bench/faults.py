"""python -m bench faults [--agents N] [--seconds S] [--ack-timeout-s T] [--cases a,b,...]

The fault matrix of issue 9, once, against real processes on loopback: a fleet of simulated edge
agents (`smartcity-edge --simulate`, each its own process and queue) -> Mosquitto -> bridges ->
Kafka -> the Spark lake job (`python -m spark_jobs stream`, its own driver process). Each case gets
its own Mosquitto, bridges and device ids; Kafka and the lake job are shared (the Spark case kills
the job and restarts it exactly once, and the later cases run on the restarted job).

Cases:
- broker_kill9_agent_first: Mosquitto kill -9 while the fleet publishes, restarted after 1 s; the
  bridges' reconnect is held back 6 s so the agents are back first and publish into a topic with no
  subscriber (PUBACK 0x10: counted in `not_delivered`).
- bridge_restart_default_id: one bridge started with default settings (no --bridge-id), SIGTERM
  and started again the same way while the fleet publishes.
- one_of_two_bridges_killed: two bridges in one group, one kill -9 and never restarted: its share
  stays in its offline session; the agents' resends after ack_timeout_s deliver it.
- spark_driver_kill9_one_restart: the lake job's driver (and its JVM) kill -9 mid-stream, restarted
  exactly once; it must keep running to the end.
- bad_payload_corpus: while the fleet publishes, a device sends payloads that must end in the DLQ
  (not JSON, duplicate keys, deep nesting, NaN, invalid UTF-8, contract violations, a spoofed
  device, oversized user properties); the bridges must stay up, the good readings all land.

Per case, counted in the lake's Iceberg tables through the catalog (catalog.reader: pyiceberg, as
a non-Spark reader sees them):
`published` (seqs the agents allocated), `in_lake` (distinct of them in the lake), `lost`,
`duplicates` (rows beyond one per event_id), `recovery_s` (from the fault until every reading
allocated before it is in the lake), plus what the case itself needs to be believed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from smartcity.runtime.cli import ArgumentParser

from deploy.local.process import Process

ROOT = Path(__file__).resolve().parents[1]
DATA_TOPICS = ("gps_data", "vehicle_data", "weather_data", "traffic_data", "emergency_data")
CASES = ("broker_kill9_agent_first", "bridge_restart_default_id", "one_of_two_bridges_killed",
         "spark_driver_kill9_one_restart", "bad_payload_corpus")


def _wait(cond, timeout_s: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def _metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            name = series.split("{")[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


class Proc(Process):
    """A child process run from the checkout with its log; `group=True` makes it a process-group
    leader so a kill -9 takes its children (the lake driver's JVM) with it."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 group: bool = False):
        super().__init__(Path(log).stem, cmd, log, env={"PYTHONPATH": str(ROOT), **(env or {})},
                         cwd=ROOT, new_session=group, kill_group=group)

    def terminate(self, timeout_s: float = 90.0) -> int | None:
        return super().terminate(timeout_s)


class Agent:
    def __init__(self, work: Path, device_id: str, mqtt_port: int, ack_timeout_s: float,
                 gps_rate_hz: float, speedup: float):
        from deploy.local.mosquitto import free_port
        self.device_id, self.data_dir = device_id, work / "agents" / device_id
        self.http_port = free_port()
        self.proc = Proc([sys.executable, "-m", "smartcity.edge.agent", "--simulate", "--device-id", device_id,
                          "--data-dir", str(self.data_dir), "--mqtt-port", str(mqtt_port),
                          "--speedup", str(speedup), "--gps-rate-hz", str(gps_rate_hz),
                          "--http-port", str(self.http_port)],
                         work / "logs" / f"agent-{device_id}.log",
                         env={"SMARTCITY_EDGE_MQTT__ACK_TIMEOUT_S": str(ack_timeout_s),
                              "SMARTCITY_EDGE_MQTT__RECONNECT_MIN_S": "0.3",
                              "SMARTCITY_EDGE_MQTT__RECONNECT_MAX_S": "2",
                              "SMARTCITY_EDGE_DRAIN_TIMEOUT_S": "180"})

    def metric(self, name: str) -> float:
        return _metrics(self.http_port).get(name, 0.0)

    def last_seq(self) -> int:
        """The last seq this device allocated, read from its queue file (WAL: readable live)."""
        import sqlite3
        db = self.data_dir / "queue.sqlite3"
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0] - 1
        finally:
            con.close()

    def queued(self) -> int:
        import sqlite3
        con = sqlite3.connect(f"file:{self.data_dir / 'queue.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        finally:
            con.close()


class Rig:
    """Kafka and the lake job for the whole run; Mosquitto, bridges and agents per case."""

    def __init__(self, work: Path, agents: int, seconds: float, ack_timeout_s: float,
                 gps_rate_hz: float = 2.0, speedup: float = 5.0, trigger_s: float = 2.0):
        self.work, self.n_agents, self.seconds = work, agents, seconds
        self.ack_timeout_s, self.gps_rate_hz, self.speedup = ack_timeout_s, gps_rate_hz, speedup
        self.trigger_s = trigger_s
        self.run_id = uuid.uuid4().hex[:6]
        self.lake = work / "lake"
        self.kafka = None
        self.lake_job: Proc | None = None
        self.lake_starts = 0

    # shared services -------------------------------------------------------------------------
    def start(self) -> "Rig":
        from deploy.local.kafka import KafkaServer
        self.kafka = KafkaServer(self.work / "kafka").start()
        self.kafka.create_topics(partitions=3)
        self.start_lake()
        return self

    def start_lake(self) -> None:
        self.lake_starts += 1
        self.lake_job = Proc([sys.executable, "-m", "smartcity.spark_jobs", "stream", "--lake", str(self.lake),
                              "--bootstrap", self.kafka.bootstrap, "--trigger-s", str(self.trigger_s)],
                             self.work / "logs" / f"lake-{self.lake_starts}.log", group=True).start()

    def stop(self) -> None:
        if self.lake_job:
            self.lake_job.terminate(60)
        if self.kafka:
            self.kafka.stop()

    def lake_events(self, devices: set[str]) -> dict[str, list[tuple[str, int]]]:
        """device -> [(event_id, seq)] for every row of these devices in the lake's data tables."""
        from smartcity.catalog.reader import read_table
        from smartcity.spark_jobs.settings import LakeSettings
        s = LakeSettings(lake=str(self.lake))
        out: dict[str, list[tuple[str, int]]] = {d: [] for d in devices}
        for topic in DATA_TOPICS:
            # A snapshot is read whole or not at all: no retry for files swapped while listing.
            t = read_table(s, topic, ["event_id", "device_id", "seq"])
            if t is None:
                continue
            for e, d, seq in zip(*(t.column(c).to_pylist() for c in ("event_id", "device_id", "seq"))):
                if d in out:
                    out[d].append((e, seq))
        return out

    # per case --------------------------------------------------------------------------------
    def mosquitto(self, case: str):
        from deploy.local.mosquitto import MosquittoServer
        return MosquittoServer(self.work / case / "mosquitto").start()

    def bridge(self, case: str, port: int, bridge_id: str | None, env: dict | None = None) -> Proc:
        from deploy.local.mosquitto import free_port
        http = free_port()
        cmd = [sys.executable, "-m", "smartcity.bridge", "--mqtt-port", str(port),
               "--kafka-bootstrap", self.kafka.bootstrap, "--http-port", str(http),
               "--group", f"g-{case}-{self.run_id}"]
        if bridge_id is not None:
            cmd += ["--bridge-id", bridge_id]
        p = Proc(cmd, self.work / "logs" / f"bridge-{case}-{bridge_id or 'default'}.log", env=env)
        p.http_port = http
        return p

    def wait_subscribed(self, bridge: Proc, timeout_s: float = 30) -> None:
        bridge.wait_for(lambda: _metrics(bridge.http_port).get("bridge_mqtt_subscribed") == 1,
                        "the bridge's subscription", timeout_s, step=0.2)

    def subscribed_bridges(self, case: str, port: int, members: tuple, env: dict | None = None) -> list[Proc]:
        """Bridges of the case's group started and subscribed: member n is bridge id
        {case}-b{n}-{run_id}, None the bridge's default id (no --bridge-id)."""
        bs = [self.bridge(case, port, None if n is None else f"{case}-b{n}-{self.run_id}", env=env).start()
              for n in members]
        for b in bs:
            self.wait_subscribed(b)
        return bs

    def fleet(self, case: str, port: int) -> list[Agent]:
        return [Agent(self.work, f"{case[:12]}-{i}-{self.run_id}", port, self.ack_timeout_s,
                      self.gps_rate_hz, self.speedup) for i in range(self.n_agents)]

    def run_case(self, case: str, fault, bridges_setup) -> dict:
        """bridges_setup(port) -> list of started bridges; fault(ctx) injects and returns extras."""
        broker = self.mosquitto(case)
        bridges = bridges_setup(broker.port)
        agents = self.fleet(case, broker.port)
        ctx = {"broker": broker, "bridges": bridges, "agents": agents}
        try:
            for a in agents:
                a.proc.start()
            if not _wait(lambda: all(a.metric("smartcity_mqtt_publish_acks_total") > 0 for a in agents),
                         60):
                raise RuntimeError(f"{case}: agents never confirmed end to end:\n"
                                   + agents[0].proc.log_tail())
            time.sleep(self.seconds / 3)
            before = {a.device_id: a.last_seq() for a in agents}
            t_fault = time.monotonic()
            extra = fault(ctx) or {}
            devices = set(before)

            def caught_up() -> bool:
                got = self.lake_events(devices)
                return all(set(range(1, before[d] + 1)) <= {s for _, s in got[d]} for d in devices)
            recovered = _wait(caught_up, 240, step=1.0)
            recovery_s = time.monotonic() - t_fault if recovered else None
            left = self.seconds - (time.monotonic() - t_fault)
            if left > 0:
                time.sleep(left)
            resends = sum(a.metric("smartcity_mqtt_resends_total") for a in agents)
            for a in agents:
                a.proc.terminate(240)
            # A stop waits up to 180 s for its last readings to be confirmed (a resend that the
            # broker hands to a dead group member waits a doubled ack timeout before the next
            # try). What is still queued after that is sent by a restart.
            for a in agents:
                while a.queued():
                    a.proc.start()
                    _wait(lambda: a.queued() == 0, 90, step=0.5)
                    a.proc.terminate(240)
            published = {a.device_id: a.last_seq() for a in agents}
            want = sum(published.values())

            def all_in() -> bool:
                got = self.lake_events(devices)
                return all(set(range(1, published[d] + 1)) <= {s for _, s in got[d]} for d in devices)
            _wait(all_in, 180, step=1.0)
            got = self.lake_events(devices)
            rows = sum(len(v) for v in got.values())
            distinct = {e for v in got.values() for e, _ in v}
            in_lake = sum(len(set(range(1, published[d] + 1)) & {s for _, s in got[d]}) for d in devices)
            invented = sum(1 for d in devices for _, s in got[d] if not 1 <= s <= published[d])
            return {"published": want, "in_lake": in_lake, "lost": want - in_lake,
                    "duplicates": rows - len(distinct), "invented": invented,
                    "recovery_s": None if recovery_s is None else round(recovery_s, 1),
                    "resends": resends,
                    **extra}
        finally:
            for a in agents:
                a.proc.kill()
            for b in ctx["bridges"]:
                b.kill()
            broker.kill()


# the cases ----------------------------------------------------------------------------------
def case_broker_kill9_agent_first(rig: Rig) -> dict:
    name = "broker_kill9_agent_first"
    slow = {"SMARTCITY_BRIDGE_MQTT__RECONNECT_MIN_S": "6", "SMARTCITY_BRIDGE_MQTT__RECONNECT_MAX_S": "6"}

    def bridges(port):
        return rig.subscribed_bridges(name, port, (1, 2), env=slow)

    def fault(ctx):
        broker, agents = ctx["broker"], ctx["agents"]
        before = sum(a.metric("smartcity_mqtt_not_delivered_total") for a in agents)
        broker.kill()
        time.sleep(1.0)
        broker.start()
        _wait(lambda: sum(a.metric("smartcity_mqtt_not_delivered_total") for a in agents) > before, 10)
        for b in ctx["bridges"]:
            rig.wait_subscribed(b, 30)
        return {"not_delivered": sum(a.metric("smartcity_mqtt_not_delivered_total")
                                     for a in agents) - before}
    return rig.run_case(name, fault, bridges)


def case_bridge_restart_default_id(rig: Rig) -> dict:
    name = "bridge_restart_default_id"

    def bridges(port):
        return rig.subscribed_bridges(name, port, (None,))

    def fault(ctx):
        b = ctx["bridges"][0]
        rc = b.terminate(60)
        b.start()
        rig.wait_subscribed(b, 30)
        return {"bridge_exit_code": rc}
    return rig.run_case(name, fault, bridges)


def case_one_of_two_bridges_killed(rig: Rig) -> dict:
    name = "one_of_two_bridges_killed"

    def bridges(port):
        return rig.subscribed_bridges(name, port, (1, 2))

    def fault(ctx):
        ctx["bridges"][1].kill()   # and never restarted
        return {"ack_timeout_s": rig.ack_timeout_s}
    return rig.run_case(name, fault, bridges)


def case_spark_driver_kill9_one_restart(rig: Rig) -> dict:
    name = "spark_driver_kill9_one_restart"

    def bridges(port):
        return rig.subscribed_bridges(name, port, (1,))

    def fault(ctx):
        rig.lake_job.kill()
        rig.start_lake()
        return {}
    out = rig.run_case(name, fault, bridges)
    out["lake_job_running_after_one_restart"] = rig.lake_job.running()
    if not rig.lake_job.running():
        out["lake_log_tail"] = rig.lake_job.log_tail(15)
    return out


def bad_payloads(device: str) -> list[tuple[bytes, list[tuple[str, str]] | None]]:
    """(payload, user properties) that must each end in the DLQ, never in the lake."""
    from smartcity.contracts.schema import example
    good = example("gps_data")
    good.update(device_id=device, event_id=f"{device}:bad:1", seq=1)
    spoofed = dict(good, device_id="someone-else", event_id="someone-else:bad:1")
    invalid = dict(good, lat=123.0)
    dup = json.dumps(good)[:-1] + ', "event_id": "x:y:1"}'
    return [(b"not json", None), (dup.encode(), None),
            (b"[" * 6000 + b"]" * 6000, None), (json.dumps(dict(good, lat=float("nan"))).encode(), None),
            (b'{"event_id": "\xff\xfe"}', None), (json.dumps(invalid).encode(), None),
            (json.dumps(spoofed).encode(), None),
            (json.dumps(good).encode(), [("k", "v" * 8192)])]


def case_bad_payload_corpus(rig: Rig) -> dict:
    name = "bad_payload_corpus"

    def bridges(port):
        return rig.subscribed_bridges(name, port, (1,))

    def fault(ctx):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        b = ctx["bridges"][0]
        dlq0 = _metrics(b.http_port).get("bridge_dlq_total", 0.0)
        device = f"corpus-{rig.run_id}"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", ctx["broker"].port)
        c.loop_start()
        corpus = bad_payloads(device)
        for payload, ups in corpus:
            props = None
            if ups:
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = ups
            c.publish(f"smartcity/v1/{device}/gps", payload, qos=1, properties=props).wait_for_publish(10)
        c.disconnect()
        c.loop_stop()
        _wait(lambda: _metrics(b.http_port).get("bridge_dlq_total", 0.0) - dlq0 >= len(corpus), 30)
        return {"corpus": len(corpus), "corpus_device": device,
                "dead_lettered": int(_metrics(b.http_port).get("bridge_dlq_total", 0.0) - dlq0),
                "bridge_up": b.running()}
    out = rig.run_case(name, fault, bridges)
    device = out.pop("corpus_device")
    out["corpus_rows_in_lake"] = len(rig.lake_events({device})[device])
    return out


def run(argv: list[str]) -> dict:
    p = ArgumentParser(prog="python -m bench faults")
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0, help="per case, fault a third of the way in")
    p.add_argument("--ack-timeout-s", type=float, default=10.0)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, lake)")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="smartcity-faults-"))
    rig = Rig(work, a.agents, a.seconds, a.ack_timeout_s)
    out: dict = {"agents": a.agents, "seconds_per_case": a.seconds, "ack_timeout_s": a.ack_timeout_s,
                 "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
                 "cases": {}}
    t0 = time.monotonic()
    try:
        rig.start()
        for case in a.cases.split(","):
            fn = globals()[f"case_{case}"]
            try:
                out["cases"][case] = fn(rig)
            except Exception as e:  # one broken case must not hide the others' results
                out["cases"][case] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            print(json.dumps({case: out["cases"][case]}), file=sys.stderr, flush=True)
    finally:
        rig.stop()
        if a.keep:
            out["work"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    out["total_s"] = round(time.monotonic() - t0, 1)
    out["all_zero_loss_zero_duplicates"] = all(
        c.get("lost") == 0 and c.get("duplicates") == 0 and c.get("invented") == 0
        for c in out["cases"].values())
    return out
