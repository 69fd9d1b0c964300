"""python -m bench bridge [--devices 20] [--seconds 10]: MQTT -> bridge -> Kafka throughput.

Starts its own Mosquitto and Kafka on free loopback ports, then runs three phases with the same
load, each with fresh device ids and a fresh shared-subscription group:

1. raw: a bare paho subscriber (QoS 1, automatic acks, does nothing): the ceiling Python MQTT
   allows here;
2. one bridge process;
3. two bridge processes in one shared group.

Load: publisher processes (one per 10 devices, max 2) publish contract-valid records at QoS 1 as
fast as the broker acknowledges for --seconds. Rates are counted where the data lands (the raw
subscriber's receive times; Kafka's LogAppendTime of the bridged records, topics are created with
it) over the span from first to last arrival. Latency is MQTT publish -> Kafka append, which on a
single-node broker with acks=all is when the bridge's acknowledgement is sent. CPU is the bridge
processes' user+system time per 1,000 records forwarded. Lost = published (PUBACKed by the broker)
and never seen in Kafka; duplicates = seen more than once.

Live phases measure the whole machine: on 2 cores the publishers, Mosquitto, Kafka and the
consumer compete, so a consumer that costs more CPU also slows the publishers that feed it. The
drain phases (--drain N) measure the consumer alone: the consumer joins its group and leaves, N
records are published and queued by the broker for its persistent session, then the consumer
comes back and empties the backlog with no publisher running. raw vs one bridge vs two bridges
drain the same backlog size; rates are from first to last arrival (Kafka append time for bridges).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from smartcity.runtime.cli import ArgumentParser

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK_TCK
    except (OSError, IndexError):
        return 0.0


def _runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (/proc schedstat)."""
    total = 0.0
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((t / "schedstat").read_text().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        pass
    return total


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return sum(f) - idle, sum(f)


def _cores_busy(j0: tuple[int, int], j1: tuple[int, int]) -> float | None:
    total = j1[1] - j0[1]
    return round((j1[0] - j0[0]) / total * (os.cpu_count() or 1), 2) if total > 0 else None


def _pctl(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# child processes ---------------------------------------------------------------------------
def publisher_main(port: int, devices: list[str], seconds: float, out: str, per_device: int = 0) -> None:
    """Publish for `seconds`, or exactly `per_device` records per device when it is given."""
    from tests.support.harness import FleetPublisher
    pub = FleetPublisher(port, devices, max_inflight=1000)
    if per_device:
        pub.publish(per_device)
    else:
        pub.publish_for(seconds)
    pub.wait_acked(60)
    with open(out, "w") as fh:
        for s in pub.sent:
            fh.write(f"{s.event_id} {s.t_sent:.6f}\n")
    pub.close()


def _bare_subscriber(port: int, client_id: str, group: str, stats: dict):
    """The bare minimum a bridge must also do: persistent session, shared subscription, QoS 1
    (paho acknowledges on arrival); counts arrivals into `stats` and does nothing else."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    stats.update(n=0, first=None, last=None, subscribed=False)

    def on_message(client, userdata, msg):
        now = time.time()
        if stats["first"] is None:
            stats["first"] = now
        stats["last"] = now
        stats["n"] += 1

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.on_connect = lambda cl, *a: cl.subscribe(f"$share/{group}/smartcity/v1/+/+", qos=1)
    c.on_subscribe = lambda *a: stats.update(subscribed=True)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 2000
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    return c


def raw_subscriber_main(port: int, group: str, out: str) -> None:
    """Live phase: receive until SIGTERM."""
    stats: dict = {}
    c = _bare_subscriber(port, f"raw-{group}", group, stats)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    c.loop_start()
    while not stop:
        time.sleep(0.05)
    c.loop_stop()
    Path(out).write_text(json.dumps(stats))


def raw_drain_main(port: int, group: str, n: int, out: str, join_only: bool = False) -> None:
    """Join: create the persistent shared-subscription session and leave. Drain: come back and
    receive the n messages the broker queued meanwhile, as fast as bare paho can."""
    stats: dict = {}
    c = _bare_subscriber(port, f"rawdrain-{group}", group, stats)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (stats["subscribed"] if join_only else stats["n"] >= n):
        c.loop(0.01)
    for _ in range(20):  # let the last PUBACKs out
        c.loop(0.005)
    c.disconnect()
    Path(out).write_text(json.dumps(stats))


# phases ------------------------------------------------------------------------------------
def _spawn(fn: str, *args) -> subprocess.Popen:
    code = f"import sys, json; from bench.bridge import {fn}; {fn}(*json.loads(sys.argv[1]))"
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(list(args))], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait(p: subprocess.Popen, timeout_s: float, what: str) -> None:
    _, err = p.communicate(timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed rc={p.returncode}: {err.decode(errors='replace')[-1500:]}")


def _publish(port: int, devices: list[str], seconds: float, tmp: Path, per_device: int = 0) -> dict[str, float]:
    chunks = [devices[i::min(2, max(1, len(devices) // 10))] for i in range(min(2, max(1, len(devices) // 10)))]
    procs, outs = [], []
    for i, ds in enumerate(chunks):
        out = tmp / f"pub-{uuid.uuid4().hex[:6]}-{i}.txt"
        outs.append(out)
        procs.append(_spawn("publisher_main", port, ds, seconds, str(out), per_device))
    for p in procs:
        _wait(p, seconds + 120, "publisher")
    sent = {}
    for out in outs:
        for line in out.read_text().splitlines():
            eid, t = line.split()
            sent[eid] = float(t)
    return sent


def phase_raw(port: int, n_devices: int, seconds: float, tmp: Path) -> dict:
    run = uuid.uuid4().hex[:6]
    out = tmp / f"raw-{run}.json"
    sub = _spawn("raw_subscriber_main", port, f"raw{run}", str(out))
    try:
        time.sleep(1.0)
        sent = _publish(port, [f"raw{i}-{run}" for i in range(n_devices)], seconds, tmp)
        time.sleep(2.0)  # let the subscriber drain what the broker still holds
        cpu_s = _cpu_s(sub.pid)
        sub.send_signal(signal.SIGTERM)
        _wait(sub, 30, "raw subscriber")
    finally:
        if sub.poll() is None:
            sub.kill()
    st = json.loads(out.read_text())
    span = (st["last"] or 0) - (st["first"] or 0)
    return {"published": len(sent), "received": st["n"],
            "cpu_ms_per_1k_msgs": round(cpu_s * 1000 / (st["n"] / 1000), 1) if st["n"] else None,
            "msgs_per_s": round(st["n"] / span, 1) if span > 0 else None}


def phase_bridges(port: int, bootstrap: str, n_devices: int, seconds: float, n_bridges: int,
                  tmp: Path) -> dict:
    from tests.support.harness import BridgeProcess, Collector
    from deploy.local.kafka import DATA_TOPICS
    run = uuid.uuid4().hex[:6]
    bridges = [BridgeProcess(port, bootstrap, tmp, bridge_id=f"bench{i}-{run}", group=f"g{run}",
                             extra_args=["--log-level", "WARNING"]).start() for i in range(n_bridges)]
    col = Collector(bootstrap, list(DATA_TOPICS))
    try:
        cpu0 = sum(_cpu_s(b.proc.pid) for b in bridges)
        sent = _publish(port, [f"dev{i}-{run}" for i in range(n_devices)], seconds, tmp)
        mine = (lambda m: m.key is not None and m.key.endswith(run.encode()))
        col.wait_for(lambda ms: len(ms) >= len(sent), 120, pred=mine)
        time.sleep(1.0)  # duplicates, if any, arrive after the last original
        cpu = sum(_cpu_s(b.proc.pid) for b in bridges) - cpu0
        got = col.snapshot(mine)
    finally:
        col.close()
        for b in bridges:
            b.terminate(10)
            b.kill()
    res = _tally(got, sent, cpu)
    lat_ms = res.pop("latencies_ms")
    res.update(latency_p50_ms=round(_pctl(lat_ms, 0.50), 1) if lat_ms else None,
               latency_p99_ms=round(_pctl(lat_ms, 0.99), 1) if lat_ms else None)
    return res


def _tally(got: list, sent: dict[str, float], cpu_s: float) -> dict:
    """What reached Kafka against what was published: rate over the span of Kafka append times,
    loss, duplicates, bridge CPU per 1k, and each first arrival's publish -> append latency."""
    seen: dict[str, int] = {}
    lat_ms = []
    for m in got:
        eid = json.loads(m.value)["event_id"]
        seen[eid] = seen.get(eid, 0) + 1
        if seen[eid] == 1 and eid in sent:
            lat_ms.append(m.ts_ms - sent[eid] * 1000.0)
    ts = [m.ts_ms for m in got]
    span_s = (max(ts) - min(ts)) / 1000.0 if len(ts) > 1 else 0
    return {"published": len(sent), "forwarded": len(got),
            "msgs_per_s": round(len(got) / span_s, 1) if span_s > 0 else None,
            "lost": len(set(sent) - set(seen)), "duplicates": sum(c - 1 for c in seen.values()),
            "cpu_ms_per_1k_msgs": round(cpu_s * 1000 / (len(got) / 1000), 1) if got else None,
            "latencies_ms": lat_ms}


def phase_drain_raw(port: int, n_devices: int, n: int, tmp: Path) -> dict:
    """A bare paho subscriber draining a backlog of n queued messages: nothing else runs."""
    run = uuid.uuid4().hex[:6]
    out = tmp / f"rawdrain-{run}.json"
    _wait(_spawn("raw_drain_main", port, f"rd{run}", n, str(out), True), 30, "raw subscriber join")
    sent = _publish(port, [f"rd{i}-{run}" for i in range(n_devices)], 0, tmp, per_device=n // n_devices)
    j0 = _machine_jiffies()
    _wait(_spawn("raw_drain_main", port, f"rd{run}", len(sent), str(out)), 300, "raw subscriber drain")
    j1 = _machine_jiffies()
    st = json.loads(out.read_text())
    span = (st["last"] or 0) - (st["first"] or 0)
    return {"received": st["n"], "msgs_per_s": round(st["n"] / span, 1) if span > 0 else None,
            "machine_cores_busy": _cores_busy(j0, j1)}


def phase_drain_bridges(port: int, bootstrap: str, n_devices: int, n: int, n_bridges: int, tmp: Path,
                        service_pids: dict[str, int] | None = None) -> dict:
    """The same backlog drained by bridge processes into Kafka: rate from Kafka's append times
    of the first and last record; the check for loss runs after the drain, not during it."""
    from tests.support.harness import BridgeProcess, Collector
    from deploy.local.kafka import DATA_TOPICS
    run = uuid.uuid4().hex[:6]
    bridges = [BridgeProcess(port, bootstrap, tmp, bridge_id=f"drain{i}-{run}", group=f"d{run}",
                             extra_args=["--log-level", "WARNING"]) for i in range(n_bridges)]
    try:
        for b in bridges:      # join the group (persistent sessions), then leave
            b.start()
        for b in bridges:
            b.terminate(30)
        sent = _publish(port, [f"dd{i}-{run}" for i in range(n_devices)], 0, tmp, per_device=n // n_devices)
        for b in bridges:
            b.start(wait=False)
        for b in bridges:      # its HTTP server is up just before it connects to MQTT: start the clock
            while b.running():
                try:
                    b.http_get("/healthz", timeout=0.5)
                    break
                except OSError:
                    time.sleep(0.02)
        j0, t0 = _machine_jiffies(), time.monotonic()
        svc0 = {k: _cpu_s(pid) for k, pid in (service_pids or {}).items()}
        br0 = sum(_cpu_s(b.proc.pid) for b in bridges)
        rq0 = sum(_runqueue_wait_s(b.proc.pid) for b in bridges)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if sum(b.metrics().get("bridge_acked_total", 0) for b in bridges) >= len(sent):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        cpu = sum(_cpu_s(b.proc.pid) for b in bridges)
        j1, wall = _machine_jiffies(), time.monotonic() - t0
        # Cores each party kept busy over the drain: where the 2 cores went.
        cores = {k: round((_cpu_s(pid) - svc0[k]) / wall, 2) for k, pid in (service_pids or {}).items()}
        cores["bridges"] = round((cpu - br0) / wall, 2)
        # Runnable but not running: > 0 means the bridges wanted CPU the machine did not have.
        cores["bridges_waiting_for_cpu"] = round((sum(_runqueue_wait_s(b.proc.pid) for b in bridges) - rq0) / wall, 2)
    finally:
        for b in bridges:
            b.terminate(30)
            b.kill()
    col = Collector(bootstrap, list(DATA_TOPICS))
    try:
        mine = (lambda m: m.key is not None and m.key.endswith(run.encode()))
        col.wait_for(lambda ms: len(ms) >= len(sent), 120, pred=mine)
        got = col.snapshot(mine)
    finally:
        col.close()
    res = _tally(got, sent, cpu)
    del res["latencies_ms"]  # a backlog's waiting time, not a latency
    res.update(machine_cores_busy=_cores_busy(j0, j1), cores_by_process=cores)
    return res


def run(args: list[str]) -> dict:
    ap = ArgumentParser(prog="python -m bench bridge")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--skip-raw", action="store_true")
    ap.add_argument("--skip-two", action="store_true")
    ap.add_argument("--drain", type=int, default=100_000,
                    help="backlog size of the drain phases (0 = skip them)")
    a = ap.parse_args(args)
    from deploy.local.kafka import KafkaServer
    from deploy.local.mosquitto import MosquittoServer
    tmp = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    kafka = KafkaServer(tmp / "kafka").start()
    kafka.create_topics(partitions=a.partitions,
                        extra_config={"message.timestamp.type": "LogAppendTime"})
    broker = MosquittoServer(tmp / "mosquitto").start()
    try:
        empty = {"msgs_per_s": None, "received": None, "cpu_ms_per_1k_msgs": None, "lost": None,
                 "duplicates": None, "published": None}
        raw = empty if a.skip_raw else phase_raw(broker.port, a.devices, a.seconds, tmp)
        one = phase_bridges(broker.port, kafka.bootstrap, a.devices, a.seconds, 1, tmp)
        two = empty if a.skip_two else phase_bridges(broker.port, kafka.bootstrap, a.devices, a.seconds, 2, tmp)
        drain = {}
        if a.drain:
            drain["raw"] = phase_drain_raw(broker.port, a.devices, a.drain, tmp)
            pids = {"mosquitto": broker.proc.pid, "kafka": kafka.proc.pid}
            drain["one"] = phase_drain_bridges(broker.port, kafka.bootstrap, a.devices, a.drain, 1, tmp, pids)
            if not a.skip_two:
                drain["two"] = phase_drain_bridges(broker.port, kafka.bootstrap, a.devices, a.drain, 2, tmp, pids)
    finally:
        broker.stop()
        kafka.stop()
    res = {k: one[k] for k in ("msgs_per_s", "lost", "duplicates", "latency_p50_ms", "latency_p99_ms",
                               "cpu_ms_per_1k_msgs", "published", "forwarded")}
    res.update(raw_subscriber_msgs_per_s=raw["msgs_per_s"], raw_subscriber_received=raw["received"],
               raw_subscriber_cpu_ms_per_1k_msgs=raw["cpu_ms_per_1k_msgs"],
               raw_subscriber_published=raw["published"],
               two_bridges_msgs_per_s=two["msgs_per_s"], two_bridges_lost=two["lost"],
               two_bridges_duplicates=two["duplicates"],
               two_bridges_cpu_ms_per_1k_msgs=two["cpu_ms_per_1k_msgs"],
               devices=a.devices, seconds=a.seconds, partitions=a.partitions, cores=os.cpu_count())
    if raw["msgs_per_s"] and one["msgs_per_s"]:
        res["bridge_vs_raw"] = round(one["msgs_per_s"] / raw["msgs_per_s"], 3)
    if one["msgs_per_s"] and two["msgs_per_s"]:
        res["two_vs_one"] = round(two["msgs_per_s"] / one["msgs_per_s"], 3)
    for name, d in drain.items():
        for k, v in d.items():
            res[f"drain_{name}_{k}"] = v
    if drain.get("raw", {}).get("msgs_per_s") and drain.get("one", {}).get("msgs_per_s"):
        res["drain_bridge_vs_raw"] = round(drain["one"]["msgs_per_s"] / drain["raw"]["msgs_per_s"], 3)
    if drain.get("two", {}).get("msgs_per_s") and drain.get("one", {}).get("msgs_per_s"):
        res["drain_two_vs_one"] = round(drain["two"]["msgs_per_s"] / drain["one"]["msgs_per_s"], 3)
    return res


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:]), sort_keys=True))
